//! Offline export: check a store without keys (`inspect`), unwrap DEKs with the operator's
//! private keys, then decrypt every stream one chunk at a time (read back by range from its
//! segment), write frames back as files and keystrokes as JSON lines, and report each stream:
//! complete, incomplete, tampered, malformed, without key or without DEK record, how far its
//! agent's signatures prove it, and its verdict. A stream's files are staged until its verdict
//! is known: those of a stream whose verdict is ok go under `<agent>/<session>/`, any other's
//! under `@quarantine/<agent>/<session>/`, never beside them. Memory does not grow with the
//! store's bytes; an export into a directory that already holds an earlier run's files resumes
//! it (identical files are kept, a different file is never overwritten).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;

use object_store::ObjectStore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crypto::{AgentCa, Dek, StreamKey};
use crate::inspect::{self, ChunkRef, Filter, Proof, Scan, StreamKey as StreamKeyId, Verdict};
use crate::keys::PrivateKeyFile;
use crate::protocol::payload::{Frame, Gap, keystroke_lines};
use crate::protocol::screen::{Compositor, is_update_name, png_name};
use crate::protocol::{AgentId, DekId, Kind, SessionId, StreamId};
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}: exists with different contents from an earlier export; nothing was overwritten (export into a new directory, or move it away)"
    )]
    Exists(PathBuf),
}

/// The verdict on one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Status {
    /// Every chunk from 0 to the final one is present and authentic.
    Complete,
    /// Authentic and contiguous, but no final chunk (still recording, or cut short).
    Incomplete,
    /// Something is wrong that honest storage cannot cause; each problem is listed.
    Tampered(Vec<String>),
    /// Every chunk is authentic (sealed by the agent, intact), but some payloads do not parse
    /// as frames or keystrokes: an agent bug, not tampering. Each is listed.
    Malformed(Vec<String>),
    /// The private key for this stream's DEK was not supplied.
    NoKey(String),
    /// The DEK record the chunks name is not in the store (deleted, or never written).
    NoDekRecord(String),
}

/// Where the files of streams that are not ok go, under the output directory: `@` is in no
/// agent directory's name, so it cannot clash with one.
pub const QUARANTINE_DIR: &str = "@quarantine";

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub agent: String,
    pub session: String,
    pub stream: u32,
    pub kind: &'static str,
    pub chunks: u64,
    pub bytes: u64,
    /// The earliest and latest capture time of the stream's chunks present.
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    /// Each file written, relative to the output directory (as in `receipt.json`).
    pub files: Vec<String>,
    /// Chunks the agent dropped (its spool was full), as its gap records declare.
    pub gaps: Vec<Gap>,
    /// Each frame file written, with its capture time (for `--video`).
    #[serde(skip)]
    pub frames: FrameList,
    #[serde(flatten)]
    pub status: Status,
    /// The stream's verdict (docs/format.md "Verdicts and exit codes"): its status and, with
    /// a pinned agent CA, its proof.
    pub verdict: Verdict,
    /// How far the agent's signatures prove this stream.
    #[serde(rename = "signature")]
    pub proof: Proof,
    /// Incomplete because it is still being recorded, as the server's index says (`export
    /// --config`): its incomplete verdict is not counted for the exit code.
    pub still_recording: bool,
}

impl StreamReport {
    /// Counted for the exit code: not waived by `--allow-incomplete` or by the server saying
    /// the stream is still being recorded.
    pub fn counted(&self, allow_incomplete: bool) -> bool {
        !(allow_incomplete && self.verdict.waivable()
            || self.still_recording && self.verdict == Verdict::Incomplete)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub segments: usize,
    /// DEK records read: only those the exported chunks name.
    pub dek_records: usize,
    /// The pinned agent CA certificate's fingerprint (`--agent-ca`), if one was given.
    pub agent_ca: Option<String>,
    /// Objects that could not be read back as what their key says (corrupt or altered).
    pub damaged_objects: Vec<String>,
    pub streams: Vec<StreamReport>,
    /// Chunks decrypted and authenticated.
    pub decrypted_chunks: u64,
    /// The worst verdict of the streams, or tampered when an object is damaged.
    pub outcome: Verdict,
}

impl Report {
    /// `export`'s exit code (docs/format.md "Verdicts and exit codes").
    pub fn exit_code(&self, allow_incomplete: bool) -> u8 {
        inspect::exit_code(
            !self.damaged_objects.is_empty(),
            self.streams
                .iter()
                .filter_map(|s| s.counted(allow_incomplete).then_some(s.verdict)),
            false,
        )
    }

    /// The outcome from the streams' verdicts and the damaged objects.
    pub fn set_outcome(&mut self) {
        self.outcome = if self.damaged_objects.is_empty() {
            self.streams
                .iter()
                .map(|s| s.verdict)
                .min()
                .unwrap_or(Verdict::Ok)
        } else {
            Verdict::Tampered
        };
    }

    pub fn tampered(&self) -> bool {
        !self.damaged_objects.is_empty()
            || self
                .streams
                .iter()
                .any(|s| matches!(s.status, Status::Tampered(_)))
    }

    /// Authentic chunks whose payload does not parse (an agent bug, not tampering).
    pub fn malformed(&self) -> bool {
        self.streams
            .iter()
            .any(|s| matches!(s.status, Status::Malformed(_)))
    }

    pub fn missing_keys(&self) -> bool {
        self.streams
            .iter()
            .any(|s| matches!(s.status, Status::NoKey(_)))
    }

    pub fn missing_dek_records(&self) -> bool {
        self.streams
            .iter()
            .any(|s| matches!(s.status, Status::NoDekRecord(_)))
    }

    /// Streams unsigned (with a pinned CA), incomplete or not proven to their end, and not
    /// known to be still recording.
    pub fn incomplete_or_unproven(&self) -> Vec<&StreamReport> {
        self.streams
            .iter()
            .filter(|s| s.verdict.exit_code() == 7 && s.counted(false))
            .collect()
    }
}

/// A DEK as its record names it: (agent, DEK id).
type Owner = (AgentId, DekId);

/// What to export and how to check it.
#[derive(Default)]
pub struct Options {
    pub filter: Filter,
    /// The agent CA certificate the reviewer pins; signatures are checked against it.
    pub agent_ca: Option<AgentCa>,
}

/// Export every session in `store` (or only `session`) into `out`.
pub async fn export(
    store: &dyn ObjectStore,
    keys: &[PrivateKeyFile],
    session: Option<SessionId>,
    out: &Path,
) -> Result<Report, ExportError> {
    let options = Options {
        filter: Filter {
            session,
            ..Filter::default()
        },
        agent_ca: None,
    };
    export_with(store, keys, &options, out, &mut |_| {}).await
}

/// What an export is doing, for a progress display.
pub enum Progress {
    /// Scanning: the store's segment bytes read so far.
    Scanned(u64),
    /// Decrypting: `done` of `total` chunks.
    Decrypted { done: u64, total: u64 },
}

/// Export what `options` selects from `store` into `out`.
pub async fn export_with(
    store: &dyn ObjectStore,
    keys: &[PrivateKeyFile],
    options: &Options,
    out: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report, ExportError> {
    let mut scanned = 0u64;
    let scan = inspect::scan(store, &options.filter, |n| {
        scanned += n;
        progress(Progress::Scanned(scanned));
    })
    .await?;
    let mut report = Report {
        segments: scan.segments.len(),
        dek_records: scan.dek_objects,
        agent_ca: options.agent_ca.as_ref().map(|c| c.fingerprint.clone()),
        damaged_objects: scan.damaged.clone(),
        ..Report::default()
    };

    // Unwrap each DEK that a supplied key can open; the keys stay in memory only here.
    let mut deks: HashMap<Owner, Dek> = HashMap::new();
    let mut dek_problems: HashMap<Owner, String> = HashMap::new();
    for (owner, record) in &scan.records {
        match keys.iter().find(|k| k.kek_id == record.kek_id) {
            Some(k) => match Dek::unwrap(record, &k.key, k.kek_id) {
                Ok(dek) => {
                    deks.insert(owner.clone(), dek);
                }
                Err(e) => {
                    dek_problems.insert(owner.clone(), e.to_string());
                }
            },
            None => {
                dek_problems.insert(
                    owner.clone(),
                    format!(
                        "no private key given for KEK {} (pass its key file with --key)",
                        record.kek_id
                    ),
                );
            }
        }
    }

    // How many streams of each kind a session has decides the output names.
    let mut per_kind: HashMap<(AgentId, SessionId, Kind), usize> = HashMap::new();
    for (id, chunks) in &scan.streams {
        let first = &chunks.values().next().expect("not empty")[0];
        *per_kind
            .entry((id.0.clone(), id.1, first.kind))
            .or_default() += 1;
    }
    let total: u64 = scan.streams.values().map(|c| c.len() as u64).sum();
    let mut done = 0u64;
    for (id, chunks) in &scan.streams {
        let check = inspect::check_stream(id, chunks, &scan.records, options.agent_ca.as_ref());
        let unique = per_kind.get(&(id.0.clone(), id.1, check.kind)).copied() == Some(1);
        let sr = export_stream(
            store,
            &scan,
            id,
            chunks,
            check,
            unique,
            options.agent_ca.is_some(),
            (&deks, &dek_problems),
            out,
            &mut |n| {
                done += n;
                progress(Progress::Decrypted { done, total });
            },
        )
        .await?;
        report.decrypted_chunks += sr.1;
        report.streams.push(sr.0);
    }

    report.set_outcome();
    std::fs::create_dir_all(out).map_err(|source| ExportError::Write {
        path: out.to_owned(),
        source,
    })?;
    write_report(out, &report)?;
    Ok(report)
}

/// Decrypt and write one stream; returns its report and how many chunks were decrypted.
#[allow(clippy::too_many_arguments)]
async fn export_stream(
    store: &dyn ObjectStore,
    scan: &Scan,
    id: &StreamKeyId,
    chunks: &BTreeMap<u64, Vec<ChunkRef>>,
    check: inspect::StreamCheck,
    unique_kind: bool,
    ca_pinned: bool,
    (deks, dek_problems): (&HashMap<Owner, Dek>, &HashMap<Owner, String>),
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(StreamReport, u64), ExportError> {
    let (agent, sess, stream) = id;
    let kind = check.kind;
    let mut sr = StreamReport {
        agent: agent.to_string(),
        session: sess.to_string(),
        stream: stream.0,
        kind: kind.name(),
        chunks: 0,
        bytes: 0,
        first_capture_us: check.first_capture_us,
        last_capture_us: check.last_capture_us,
        files: Vec::new(),
        gaps: Vec::new(),
        frames: Vec::new(),
        status: Status::Complete,
        verdict: Verdict::Ok,
        proof: check.proof.clone(),
        still_recording: false,
    };
    let mut problems = check.problems.clone();
    let mut malformed = Vec::new();
    let mut no_key = None;
    let no_record = (!check.missing_records.is_empty()).then(|| {
        let ids: Vec<String> = check.missing_records.iter().map(|d| d.to_string()).collect();
        format!(
            "no DEK record in the store for DEK {} (deleted, or never written): its chunks cannot be decrypted",
            ids.join(", ")
        )
    });
    let mut writer = StreamWriter::new(out, kind, *stream, unique_kind);
    // Which chunks to open, in order, each with its stream key (derived once per DEK); what
    // cannot be opened is reported here.
    let mut keys_cache: HashMap<DekId, Arc<StreamKey>> = HashMap::new();
    let mut work = Vec::with_capacity(chunks.len());
    let mut prev_seq: Option<u64> = None;
    for (seq, copies) in chunks {
        let r = &copies[0];
        // The numbers skipped right before this chunk (a gap record must declare exactly them).
        let expected = prev_seq.map_or(0, |p| p + 1);
        prev_seq = Some(*seq);
        let hole = (*seq > expected).then(|| (expected, *seq - 1));
        if r.kind != kind {
            progress(1);
            continue; // reported by the check
        }
        let owner = (agent.clone(), r.dek_id);
        let Some(dek) = deks.get(&owner) else {
            progress(1);
            if let Some(why) = dek_problems.get(&owner) {
                if why.starts_with("no private key") {
                    no_key.get_or_insert(why.clone());
                } else {
                    problems.push(format!("chunk {seq}: {why}"));
                }
            }
            continue;
        };
        let key = keys_cache
            .entry(r.dek_id)
            .or_insert_with(|| Arc::new(StreamKey::derive(dek, agent, *sess, *stream, kind)))
            .clone();
        work.push((*seq, r, hole, key));
    }
    // Read ahead and open on the blocking pool (hash, decode, AES-GCM: both cores), while
    // this task writes the plaintexts in order.
    let mut opened = futures::stream::iter(work)
        .map(|(seq, r, hole, key)| async move {
            let bytes = inspect::read_chunk_bytes(store, scan, r).await;
            let digest = r.digest;
            let result = match bytes {
                Ok(bytes) => tokio::task::spawn_blocking(move || {
                    let chunk = inspect::chunk_from_bytes(bytes, &digest, seq)?;
                    key.open(&chunk).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("chunk {seq}: {e}"))),
                Err(e) => Err(e),
            };
            (seq, r, hole, result)
        })
        .buffered(OPEN_AHEAD);
    let mut decrypted = 0u64;
    while let Some((seq, r, hole, result)) = opened.next().await {
        progress(1);
        match result {
            Ok(plain) if r.gap => match Gap::decode(&plain) {
                Ok(g) if hole == Some((g.first_seq, g.last_seq)) => {
                    decrypted += 1;
                    sr.chunks += 1;
                    sr.gaps.push(g);
                }
                _ => problems.push(format!(
                    "chunk {seq}: gap record does not match the missing chunks"
                )),
            },
            Ok(plain) => {
                decrypted += 1;
                match writer.write(seq, r.capture_us, &plain)? {
                    Some(n) => {
                        sr.chunks += 1;
                        sr.bytes += n;
                    }
                    None => malformed.push(format!(
                        "chunk {seq}: authentic, but its {} payload does not parse (docs/format.md \"Plaintext payloads\")",
                        kind.name()
                    )),
                }
            }
            Err(e) if e.starts_with("chunk ") => problems.push(e),
            Err(e) => problems.push(format!("chunk {seq}: {e}")),
        }
    }
    drop(opened);
    sr.status = if !problems.is_empty() {
        Status::Tampered(problems)
    } else if let Some(why) = no_record {
        Status::NoDekRecord(why)
    } else if let Some(why) = no_key {
        Status::NoKey(why)
    } else if !malformed.is_empty() {
        Status::Malformed(malformed)
    } else if check.final_seq.is_none() {
        Status::Incomplete
    } else {
        Status::Complete
    };
    sr.verdict = match &sr.status {
        Status::Tampered(_) => Verdict::Tampered,
        Status::NoDekRecord(_) => Verdict::NoDekRecord,
        Status::NoKey(_) => Verdict::NoKey,
        Status::Malformed(_) => Verdict::Malformed,
        Status::Complete | Status::Incomplete => {
            Verdict::of_authentic(&sr.proof, sr.status == Status::Complete, ca_pinned)
        }
    };
    // Only an ok stream's files go where ok files go.
    let mut base = PathBuf::new();
    if sr.verdict != Verdict::Ok {
        base.push(QUARANTINE_DIR);
    }
    let base = base.join(agent.dir_name()).join(sess.to_string());
    let (files, frames) = writer.finish(&base)?;
    sr.files = files;
    sr.frames = frames;
    Ok((sr, decrypted))
}

/// Chunks read and opened ahead of the one being written (each at most a chunk's size).
const OPEN_AHEAD: usize = 4;

/// A staging directory in `out` that no exported file or directory can have (a leading `.`
/// and a random part), where one stream's files wait for its verdict.
fn staging_dir(out: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("operating system random source failed");
    out.join(format!(".{}.partial", hex::encode(r)))
}

/// Write `report` as `out/report.json` (again, after the CLI learned more about its streams).
pub fn write_report(out: &Path, report: &Report) -> Result<(), ExportError> {
    let path = out.join("report.json");
    let json = serde_json::to_vec_pretty(report).expect("report serializes");
    std::fs::write(&path, json).map_err(|source| ExportError::Write { path, source })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Write {
        path: path.to_owned(),
        source,
    }
}

/// SHA-256 of a file, read in pieces.
fn file_sha256(path: &Path) -> Result<[u8; 32], ExportError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io_error(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Move the staged file `staged` to `path`, unless the same bytes are there (a resumed
/// export); a file with other contents is never overwritten, nor one appearing meanwhile.
/// Rename `from` to `to` unless `to` exists (then `AlreadyExists`): one `renameat2` with
/// `RENAME_NOREPLACE` on Linux; elsewhere, or where the file system lacks it, a hard link and
/// an unlink.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: two valid NUL-terminated paths, relative to the working directory.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

fn place_once(staged: &Path, path: &Path) -> Result<(), ExportError> {
    if path.exists() {
        let same = file_sha256(path)? == file_sha256(staged)?;
        std::fs::remove_file(staged).map_err(io_error(staged))?;
        return if same {
            Ok(())
        } else {
            Err(ExportError::Exists(path.to_owned()))
        };
    }
    match rename_noreplace(staged, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => place_once(staged, path),
        Err(e) => Err(io_error(path)(e)),
        Ok(()) => Ok(()),
    }
}

/// Writes one stream's plaintext: frames as files, keystrokes as JSON lines, staged in a
/// directory of their own until `finish` puts them where the stream's verdict says.
struct StreamWriter {
    out: PathBuf,
    /// The staging directory, made at the first file.
    staging: Option<PathBuf>,
    kind: Kind,
    stream: StreamId,
    unique: bool,
    /// Each file staged, relative to the session directory, with its capture time for frames.
    staged: Vec<(PathBuf, Option<i64>)>,
    /// Frame file names used by this export (a repeated name gets the sequence number).
    names: std::collections::HashSet<String>,
    /// The keystroke file being written, and its path relative to the session directory.
    keystrokes: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    /// Directories already made (one `mkdir` each, not one per file).
    made: std::collections::HashSet<PathBuf>,
    /// The screen this stream's screen updates have made (format.md "Compositing").
    screen: Compositor,
}

/// A stream's frames as written: each file and its capture time.
pub type FrameList = Vec<(PathBuf, i64)>;

impl StreamWriter {
    fn new(out: &Path, kind: Kind, stream: StreamId, unique: bool) -> Self {
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
    fn write(
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
                let dir = if self.unique {
                    PathBuf::from("frames")
                } else {
                    PathBuf::from(format!("frames-{}", self.stream))
                };
                // A screen update is written as the whole screen it makes.
                let composited;
                let (mut name, image) = if is_update_name(frame.name) {
                    match self.screen.apply(frame.image) {
                        Ok(screen) => composited = screen.to_png(),
                        Err(_) => return Ok(None),
                    }
                    (png_name(frame.name), composited.as_slice())
                } else if frame.name.is_empty() {
                    (format!("frame-{seq:08}.bin"), frame.image)
                } else {
                    (frame.name.to_owned(), frame.image)
                };
                if !self.names.insert(name.clone()) {
                    name = format!("{seq:08}-{name}");
                    self.names.insert(name.clone());
                }
                let rel = dir.join(&name);
                let path = self.stage(&rel)?;
                std::fs::write(&path, image).map_err(io_error(&path))?;
                self.staged.push((rel, Some(capture_us)));
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
                    self.keystrokes = Some((std::io::BufWriter::new(f), rel));
                }
                let (f, rel) = self.keystrokes.as_mut().expect("opened above");
                for line in &lines {
                    f.write_all(line)
                        .and_then(|_| f.write_all(b"\n"))
                        .map_err(|source| ExportError::Write {
                            path: rel.clone(),
                            source,
                        })?;
                }
                Ok(Some(plain.len() as u64))
            }
        }
    }

    /// Put the stream's files under `out/base/` (the session directory: `base` is
    /// `<agent>/<session>` for an ok stream, under `@quarantine/` for any other); returns
    /// them relative to the output directory, and the frames with their capture times.
    fn finish(mut self, base: &Path) -> Result<(Vec<String>, FrameList), ExportError> {
        if let Some((f, rel)) = self.keystrokes.take() {
            let f = f.into_inner().map_err(|e| ExportError::Write {
                path: rel.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(io_error(&rel))?;
            self.staged.push((rel, None));
        }
        let Some(staging) = self.staging.take() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut files = Vec::with_capacity(self.staged.len());
        let mut frames = Vec::new();
        for (rel, capture_us) in std::mem::take(&mut self.staged) {
            let name = base.join(&rel);
            let path = self.out.join(&name);
            self.make_dir(path.parent().expect("a file in the output directory"))?;
            place_once(&staging.join(&rel), &path)?;
            files.push(name.display().to_string());
            if let Some(t) = capture_us {
                frames.push((path, t));
            }
        }
        std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
        Ok((files, frames))
    }
}

/// What `receipt.json` says about an export.
#[derive(Debug, Serialize)]
pub struct Receipt<'a> {
    pub format: &'static str,
    pub exported_at_us: i64,
    pub store: &'a str,
    /// The KEK whose private key signs this receipt (`receipt.sig`).
    pub signed_with_kek: String,
    pub agent_ca: Option<&'a str>,
    /// Every file written, relative to the output directory, with its SHA-256 and its
    /// stream's verdict.
    pub files: Vec<ReceiptFile>,
}

/// One file in `receipt.json`.
#[derive(Debug, Serialize)]
pub struct ReceiptFile {
    pub path: String,
    pub sha256: String,
    /// The verdict of the stream the file holds (absent for `report.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// Write `receipt.json` (every exported file with its SHA-256 and its stream's verdict,
/// report.json included) and `receipt.sig`, an RSA-PSS signature over it by `key`, the KEK
/// private key used (SHA-256, MGF1 with SHA-256, 32-byte salt):
/// `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -verify publickey.crt -signature
/// receipt.sig receipt.json` checks it.
pub fn write_receipt(
    out: &Path,
    report: &Report,
    store: &str,
    key: &PrivateKeyFile,
) -> Result<(), ExportError> {
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let mut listed: Vec<(String, Option<Verdict>)> = report
        .streams
        .iter()
        .flat_map(|s| s.files.iter().map(|f| (f.clone(), Some(s.verdict))))
        .collect();
    listed.push(("report.json".to_owned(), None));
    let mut files = Vec::with_capacity(listed.len());
    for (path, verdict) in listed {
        files.push(ReceiptFile {
            sha256: hex::encode(file_sha256(&out.join(&path))?),
            path,
            verdict,
        });
    }
    let receipt = Receipt {
        format: "sealstream export receipt v2",
        exported_at_us: crate::crypto::now_us(),
        store,
        signed_with_kek: key.kek_id.to_string(),
        agent_ca: report.agent_ca.as_deref(),
        files,
    };
    let json = serde_json::to_vec_pretty(&receipt).expect("receipt serializes");
    // `new` salts with as many bytes as the digest has: 32.
    let signer = rsa::pss::SigningKey::<rsa::sha2::Sha256>::new(key.key.clone());
    let sig = signer
        .try_sign_with_rng(&mut getrandom::SysRng, &json)
        .map_err(|e| ExportError::Write {
            path: out.join("receipt.sig"),
            source: std::io::Error::other(e.to_string()),
        })?;
    let (rj, rs) = (out.join("receipt.json"), out.join("receipt.sig"));
    std::fs::write(&rj, &json).map_err(io_error(&rj))?;
    std::fs::write(&rs, sig.to_bytes()).map_err(io_error(&rs))?;
    Ok(())
}
