//! `StreamWriter`: one stream's plaintext written as files (frames, screen updates
//! composited, keystrokes as JSON lines), staged until its verdict says where they go.

use std::path::{Path, PathBuf};

use crate::protocol::payload::{Frame, keystroke_lines};
use crate::protocol::screen::{Compositor, is_update_name, png_name};
use crate::protocol::{Kind, StreamId};

use sha2::{Digest, Sha256};

use super::place::place_once;
use super::{ExportError, io_error};

/// A staging directory in `out` that no exported file or directory can have (a leading `.`
/// and a random part), where one stream's files wait for its verdict.
fn staging_dir(out: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("operating system random source failed");
    out.join(format!(".{}.partial", hex::encode(r)))
}

/// A whole frame's file name: its own, or one made from its number.
fn frame_name(seq: u64, name: &str) -> String {
    if name.is_empty() {
        format!("frame-{seq:08}.bin")
    } else {
        name.to_owned()
    }
}

/// Writes one stream's plaintext: frames as files, keystrokes as JSON lines, staged in a
/// directory of their own until `finish` puts them where the stream's verdict says.
pub(super) struct StreamWriter {
    out: PathBuf,
    /// The staging directory, made at the first file.
    staging: Option<PathBuf>,
    kind: Kind,
    stream: StreamId,
    unique: bool,
    /// Each file staged, relative to the session directory, with its SHA-256 and its capture
    /// time for frames.
    staged: Vec<Staged>,
    /// Frame file names used by this export (a repeated name gets the sequence number).
    names: std::collections::HashSet<String>,
    /// The keystroke file being written, its path relative to the session directory, and the
    /// SHA-256 of what was written so far.
    keystrokes: Option<(std::io::BufWriter<std::fs::File>, PathBuf, Sha256)>,
    /// Directories already made (one `mkdir` each, not one per file).
    made: std::collections::HashSet<PathBuf>,
    /// The screen this stream's screen updates have made (format.md "Compositing").
    screen: Compositor,
}

/// A file of the stream, waiting for its verdict: where it goes relative to the session
/// directory, its SHA-256, its capture time (frames), and where it is if not in the staging
/// directory under that name (a frame the export's first pass wrote).
struct Staged {
    rel: PathBuf,
    sha256: [u8; 32],
    capture_us: Option<i64>,
    from: Option<PathBuf>,
}

/// A file as written: its path relative to the output directory and its SHA-256.
pub(super) type Written = (String, [u8; 32]);

/// A stream's frames as written: each file and its capture time.
pub type FrameList = Vec<(PathBuf, i64)>;

impl StreamWriter {
    pub(super) fn new(out: &Path, kind: Kind, stream: StreamId, unique: bool) -> Self {
        StreamWriter {
            out: out.to_owned(),
            staging: None,
            kind,
            stream,
            unique,
            staged: Vec::new(),
            names: Default::default(),
            keystrokes: None,
            made: Default::default(),
            screen: Compositor::default(),
        }
    }

    /// The staged path of `rel` (relative to the session directory), its directory made.
    fn stage(&mut self, rel: &Path) -> Result<PathBuf, ExportError> {
        let staging = self
            .staging
            .get_or_insert_with(|| staging_dir(&self.out))
            .clone();
        let path = staging.join(rel);
        self.make_dir(path.parent().expect("a file in the staging directory"))?;
        Ok(path)
    }

    fn make_dir(&mut self, dir: &Path) -> Result<(), ExportError> {
        if !self.made.contains(dir) {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            self.made.insert(dir.to_owned());
        }
        Ok(())
    }

    /// Write one chunk's plaintext; `Ok(None)` if the payload does not parse.
    pub(super) fn write(
        &mut self,
        seq: u64,
        capture_us: i64,
        plain: &[u8],
    ) -> Result<Option<u64>, ExportError> {
        use std::io::Write;
        if plain.is_empty() {
            // An empty chunk carries nothing: it ends a stream or is a checkpoint (format.md).
            return Ok(Some(0));
        }
        match self.kind {
            Kind::Frame => {
                let Ok(frame) = Frame::decode(plain) else {
                    return Ok(None);
                };
                // A screen update is written as the whole screen it makes.
                let composited;
                let (name, image) = if is_update_name(frame.name) {
                    match self.screen.apply(frame.image) {
                        Ok(screen) => composited = screen.to_png(),
                        Err(_) => return Ok(None),
                    }
                    (png_name(frame.name), composited.as_slice())
                } else {
                    (frame_name(seq, frame.name), frame.image)
                };
                let rel = self.frame_rel(seq, name);
                let path = self.stage(&rel)?;
                std::fs::write(&path, image).map_err(io_error(&path))?;
                self.staged.push(Staged {
                    rel,
                    sha256: Sha256::digest(image).into(),
                    capture_us: Some(capture_us),
                    from: None,
                });
                Ok(Some(frame.image.len() as u64))
            }
            Kind::Keystrokes | Kind::Activity => {
                let Ok(lines) = keystroke_lines(plain) else {
                    return Ok(None);
                };
                if self.keystrokes.is_none() {
                    let base = self.kind.name();
                    let rel = if self.unique {
                        PathBuf::from(format!("{base}.jsonl"))
                    } else {
                        PathBuf::from(format!("{base}-{}.jsonl", self.stream))
                    };
                    let path = self.stage(&rel)?;
                    let f = std::fs::File::create(&path).map_err(io_error(&path))?;
                    self.keystrokes = Some((std::io::BufWriter::new(f), rel, Sha256::new()));
                }
                let (f, rel, sum) = self.keystrokes.as_mut().expect("opened above");
                for line in &lines {
                    f.write_all(line)
                        .and_then(|_| f.write_all(b"\n"))
                        .map_err(|source| ExportError::Write {
                            path: rel.clone(),
                            source,
                        })?;
                    sum.update(line);
                    sum.update(b"\n");
                }
                Ok(Some(plain.len() as u64))
            }
        }
    }

    /// A whole frame's image, already written to `from` (by the export's first pass, on the
    /// same file system): placed from there by `finish`, as `write` would have written it.
    pub(super) fn place_frame(
        &mut self,
        seq: u64,
        capture_us: i64,
        name: &str,
        from: PathBuf,
        sha256: [u8; 32],
    ) {
        let rel = self.frame_rel(seq, frame_name(seq, name));
        self.staged.push(Staged {
            rel,
            sha256,
            capture_us: Some(capture_us),
            from: Some(from),
        });
    }

    /// Where frame `name` goes, relative to the session directory; a name this stream has
    /// used already gets the sequence number.
    fn frame_rel(&mut self, seq: u64, mut name: String) -> PathBuf {
        let dir = if self.unique {
            PathBuf::from("frames")
        } else {
            PathBuf::from(format!("frames-{}", self.stream))
        };
        if !self.names.insert(name.clone()) {
            name = format!("{seq:08}-{name}");
            self.names.insert(name.clone());
        }
        dir.join(name)
    }

    /// Put the stream's files under `out/base/` (the session directory: `base` is
    /// `<agent>/<session>` for an ok stream, under `@quarantine/` for any other); returns
    /// them relative to the output directory with their SHA-256, and the frames with their
    /// capture times.
    pub(super) fn finish(mut self, base: &Path) -> Result<(Vec<Written>, FrameList), ExportError> {
        if let Some((f, rel, sum)) = self.keystrokes.take() {
            let f = f.into_inner().map_err(|e| ExportError::Write {
                path: rel.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(io_error(&rel))?;
            self.staged.push(Staged {
                rel,
                sha256: sum.finalize().into(),
                capture_us: None,
                from: None,
            });
        }
        let staging = self.staging.take();
        let mut files = Vec::with_capacity(self.staged.len());
        let mut frames = Vec::new();
        for s in std::mem::take(&mut self.staged) {
            let name = base.join(&s.rel);
            let path = self.out.join(&name);
            self.make_dir(path.parent().expect("a file in the output directory"))?;
            let from = match s.from {
                Some(from) => from,
                None => staging
                    .as_ref()
                    .expect("written files are staged")
                    .join(&s.rel),
            };
            place_once(&from, &path)?;
            files.push((name.display().to_string(), s.sha256));
            if let Some(t) = s.capture_us {
                frames.push((path, t));
            }
        }
        if let Some(staging) = staging {
            std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
        }
        Ok((files, frames))
    }
}
