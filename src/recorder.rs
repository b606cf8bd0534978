//! The agent-side pipeline, shared by `sealstream seal` and the agent: a DEK made in memory
//! and wrapped under the KEK, one `StreamSealer` per (session, kind), keystroke batching,
//! replay inputs (image files as frames, `.jsonl` lines as keystroke events) and segment
//! batching into the store layout.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use object_store::ObjectStore;

use std::sync::Arc;

use crate::crypto::{AgentSigner, Checkpoints, Dek, StreamSealer, now_us};
use crate::keys::PublicKeyFile;
use crate::protocol::payload::{Frame, check_keystroke_event};
use crate::protocol::{AgentId, DekRecord, Kind, SealedChunk, Segment, SessionId, StreamId};
use crate::storage::{self, PutOutcome, StoreError, paths};

/// Stream ids used for a session's two kinds of data.
pub const FRAMES_STREAM: StreamId = StreamId(0);
pub const KEYSTROKES_STREAM: StreamId = StreamId(1);
/// The activity stream of a captured session (docs/format.md "Activity batch").
pub const ACTIVITY_STREAM: StreamId = StreamId(2);

/// Keystroke batches close at this many events or bytes, whichever comes first.
pub const BATCH_MAX_EVENTS: usize = 256;
pub const BATCH_MAX_BYTES: usize = 64 * 1024;

/// Segment objects close at this size.
pub const SEGMENT_TARGET_BYTES: usize = 8 * 1024 * 1024;

/// File extensions read as screen frames.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "ppm",
];

/// An agent's data key and its wrapped record, and the agent's signing key when it signs
/// (format version 2).
pub struct Recorder {
    agent: AgentId,
    dek: Dek,
    record: DekRecord,
    signing: Option<(Arc<AgentSigner>, Checkpoints)>,
}

impl Recorder {
    /// Make a DEK in memory and wrap it under `kek`.
    pub fn new(agent: AgentId, kek: &PublicKeyFile) -> Self {
        Self::with_dek(agent, kek, Dek::generate())
    }

    pub fn with_dek(agent: AgentId, kek: &PublicKeyFile, dek: Dek) -> Self {
        let record = dek.wrap(
            &kek.key,
            kek.kek_id,
            agent.clone(),
            SessionId::random(),
            now_us(),
        );
        Recorder {
            agent,
            dek,
            record,
            signing: None,
        }
    }

    /// Sign the DEK record and every stream's checkpoints with `signer` (the agent's
    /// enrolment key), checkpoints as `policy` says.
    pub fn signed_by(
        mut self,
        signer: Arc<AgentSigner>,
        policy: Checkpoints,
    ) -> Result<Self, String> {
        signer.sign_dek_record(&mut self.record)?;
        self.signing = Some((signer, policy));
        Ok(self)
    }

    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    pub fn dek_record(&self) -> &DekRecord {
        &self.record
    }

    pub fn open_stream(&self, session: SessionId, stream: StreamId, kind: Kind) -> StreamSealer {
        let sealer = StreamSealer::new(&self.dek, self.agent.clone(), session, stream, kind);
        match &self.signing {
            Some((signer, policy)) => sealer.signed_by(signer.clone(), *policy),
            None => sealer,
        }
    }
}

/// Collects keystroke events (JSON lines) into batches.
#[derive(Default)]
pub struct KeystrokeBatcher {
    buf: Vec<u8>,
    events: usize,
}

impl KeystrokeBatcher {
    /// Add one event; returns a full batch when this event closes one.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Vec<u8>>, String> {
        check_keystroke_event(line)?;
        if line.contains(&b'\n') {
            return Err("event spans several lines".into());
        }
        let full = if !self.buf.is_empty() && self.buf.len() + line.len() + 1 > BATCH_MAX_BYTES {
            self.take()
        } else {
            None
        };
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.events += 1;
        if full.is_some() {
            return Ok(full);
        }
        if self.events >= BATCH_MAX_EVENTS || self.buf.len() >= BATCH_MAX_BYTES {
            return Ok(self.take());
        }
        Ok(None)
    }

    /// The events collected so far, if any.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            return None;
        }
        self.events = 0;
        Some(std::mem::take(&mut self.buf))
    }
}

/// One input file for a replayed recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Frame(PathBuf),
    Keystrokes(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not an image ({exts}) or a .jsonl keystroke file",
        exts = IMAGE_EXTENSIONS.join(", ")
    )]
    UnknownType { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no input files given")]
    Empty,
}

/// Expand files and directories (one level, sorted by name) into inputs.
pub fn scan_inputs(paths: &[PathBuf]) -> Result<Vec<Input>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| InputError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
                .map_err(|source| InputError::Read {
                    path: path.clone(),
                    source,
                })?;
            entries.sort();
            for entry in entries {
                if entry.is_file() && classify(&entry).is_some() {
                    out.push(classify(&entry).expect("checked"));
                }
            }
        } else {
            out.push(classify(path).ok_or_else(|| InputError::UnknownType { path: path.clone() })?);
        }
    }
    if out.is_empty() {
        return Err(InputError::Empty);
    }
    Ok(out)
}

fn classify(path: &Path) -> Option<Input> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if ext == "jsonl" {
        Some(Input::Keystrokes(path.to_owned()))
    } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Some(Input::Frame(path.to_owned()))
    } else {
        None
    }
}

/// What sealing a recording produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealSummary {
    pub session: SessionId,
    pub frames: usize,
    pub keystroke_events: usize,
    pub chunks: usize,
    pub plaintext_bytes: u64,
    pub sealed_bytes: u64,
    pub segments: usize,
}

/// Seal `inputs` as one recording session (frames on stream 0, keystrokes on stream 1, each
/// stream ending with a final chunk) into chunks.
pub fn seal_inputs(
    recorder: &Recorder,
    session: SessionId,
    inputs: &[Input],
) -> Result<(Vec<SealedChunk>, SealSummary), InputError> {
    let mut summary = SealSummary {
        session,
        frames: 0,
        keystroke_events: 0,
        chunks: 0,
        plaintext_bytes: 0,
        sealed_bytes: 0,
        segments: 0,
    };
    let frames: Vec<&PathBuf> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Frame(p) => Some(p),
            _ => None,
        })
        .collect();
    let mut batches: Vec<Vec<u8>> = Vec::new();
    let mut batcher = KeystrokeBatcher::default();
    for input in inputs {
        let Input::Keystrokes(path) = input else {
            continue;
        };
        let text = std::fs::read(path).map_err(|source| InputError::Read {
            path: path.clone(),
            source,
        })?;
        for (n, line) in text.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let batch = batcher.push(line).map_err(|reason| InputError::Invalid {
                path: path.clone(),
                reason: format!("line {}: {reason}", n + 1),
            })?;
            summary.keystroke_events += 1;
            batches.extend(batch);
        }
    }
    batches.extend(batcher.take());

    let mut chunks = Vec::new();
    let mut sealer = recorder.open_stream(session, FRAMES_STREAM, Kind::Frame);
    for (i, path) in frames.iter().enumerate() {
        let image = std::fs::read(path).map_err(|source| InputError::Read {
            path: (*path).clone(),
            source,
        })?;
        let name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| InputError::Invalid {
                    path: (*path).clone(),
                    reason: "file name is not UTF-8".into(),
                })?;
        Frame::check_name(name).map_err(|reason| InputError::Invalid {
            path: (*path).clone(),
            reason,
        })?;
        let captured = capture_time(path);
        let plaintext = Frame {
            name,
            image: &image,
        }
        .encode();
        let chunk = sealer
            .seal(&plaintext, captured, i + 1 == frames.len())
            .map_err(|e| InputError::Invalid {
                path: (*path).clone(),
                reason: e.to_string(),
            })?;
        summary.frames += 1;
        summary.plaintext_bytes += image.len() as u64;
        chunks.push(chunk);
    }
    let mut sealer = recorder.open_stream(session, KEYSTROKES_STREAM, Kind::Keystrokes);
    let n = batches.len();
    for (i, batch) in batches.iter().enumerate() {
        let chunk = sealer
            .seal(batch, now_us(), i + 1 == n)
            .expect("keystroke batches stay far below the chunk limit");
        summary.plaintext_bytes += batch.len() as u64;
        chunks.push(chunk);
    }
    summary.chunks = chunks.len();
    summary.sealed_bytes = chunks.iter().map(|c| c.len() as u64).sum();
    Ok((chunks, summary))
}

/// A replayed image's capture time: its file's modification time (now if it has none).
pub fn capture_time(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(now_us, |d| d.as_micros() as i64)
}

/// Group chunks into segment objects of about `SEGMENT_TARGET_BYTES`.
pub fn build_segments(chunks: &[SealedChunk]) -> Vec<(object_store::path::Path, Bytes)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, c) in chunks.iter().enumerate() {
        size += c.len();
        if size >= SEGMENT_TARGET_BYTES || i + 1 == chunks.len() {
            let created = now_us();
            let id = Segment::new_id(created);
            let (bytes, _digest) = Segment::encode(id, created, &chunks[start..=i]);
            out.push((paths::segment(created, &id), bytes));
            start = i + 1;
            size = 0;
        }
    }
    out
}

/// Write the DEK record and the segments holding `chunks` into the store.
pub async fn store_recording(
    store: &dyn ObjectStore,
    record: &DekRecord,
    chunks: &[SealedChunk],
) -> Result<usize, StoreError> {
    let dek_path = paths::dek_record(&record.agent, record.dek_id);
    let _: PutOutcome = storage::put_new(store, &dek_path, Bytes::from(record.encode())).await?;
    let segments = build_segments(chunks);
    for (path, bytes) in &segments {
        storage::put_new(store, path, bytes.clone()).await?;
    }
    Ok(segments.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_close_by_count_and_size() {
        let mut b = KeystrokeBatcher::default();
        let mut closed = 0;
        for i in 0..BATCH_MAX_EVENTS * 2 + 3 {
            if b.push(format!("{{\"i\":{i}}}").as_bytes())
                .unwrap()
                .is_some()
            {
                closed += 1;
            }
        }
        assert_eq!(closed, 2);
        assert!(b.take().is_some());
        assert!(b.take().is_none());
        let big = format!("{{\"k\":\"{}\"}}", "x".repeat(40_000));
        assert!(b.push(big.as_bytes()).unwrap().is_none());
        let full = b
            .push(big.as_bytes())
            .unwrap()
            .expect("second big event closes the first batch");
        assert_eq!(full.len(), big.len() + 1);
        assert!(b.push(b"not json").is_err());
    }

    #[test]
    fn inputs_are_classified_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.png", "a.JPG", "keys.jsonl", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let inputs = scan_inputs(&[dir.path().to_owned()]).unwrap();
        assert_eq!(
            inputs,
            vec![
                Input::Frame(dir.path().join("a.JPG")),
                Input::Frame(dir.path().join("b.png")),
                Input::Keystrokes(dir.path().join("keys.jsonl")),
            ]
        );
        assert!(matches!(
            scan_inputs(&[dir.path().join("notes.txt")]),
            Err(InputError::UnknownType { .. })
        ));
    }
}
