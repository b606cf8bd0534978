//! Offline export: read a store (segments and DEK records), unwrap DEKs with the operator's
//! private keys, verify and decrypt every stream, write frames back as files and keystrokes as
//! JSON lines, and report each stream as complete, incomplete or tampered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use object_store::ObjectStore;
use serde::Serialize;

use crate::crypto::{Dek, StreamKey};
use crate::keys::PrivateKeyFile;
use crate::protocol::payload::{Frame, Gap, keystroke_lines};
use crate::protocol::{AgentId, DekId, DekRecord, Kind, SealedChunk, Segment, SessionId, StreamId};
use crate::storage::{self, StoreError, paths};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: output directory is not empty; export into a new or empty directory")]
    OutNotEmpty(PathBuf),
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
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub agent: String,
    pub session: String,
    pub stream: u32,
    pub kind: &'static str,
    pub chunks: u64,
    pub bytes: u64,
    pub files: Vec<String>,
    /// Chunks the agent dropped (its spool was full), as its gap records declare.
    pub gaps: Vec<Gap>,
    #[serde(flatten)]
    pub status: Status,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub segments: usize,
    /// DEK records read: only those the exported chunks name.
    pub dek_records: usize,
    /// Objects that could not be read back as what their key says (corrupt or altered).
    pub damaged_objects: Vec<String>,
    pub streams: Vec<StreamReport>,
}

impl Report {
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
}

type StreamKeyId = (AgentId, SessionId, StreamId);

/// Export every session in `store` (or only `session`) into `out`.
pub async fn export(
    store: &dyn ObjectStore,
    keys: &[PrivateKeyFile],
    session: Option<SessionId>,
    out: &Path,
) -> Result<Report, ExportError> {
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|source| ExportError::Write {
                path: out.to_owned(),
                source,
            })?
            .next()
            .is_some()
    {
        return Err(ExportError::OutNotEmpty(out.to_owned()));
    }
    let mut report = Report::default();

    // Segments: gather every chunk by stream and sequence number.
    let mut streams: BTreeMap<StreamKeyId, BTreeMap<u64, Vec<SealedChunk>>> = BTreeMap::new();
    for path in storage::list(store, &paths::segments_prefix()).await? {
        let bytes = storage::get(store, &path).await?;
        report.segments += 1;
        match Segment::decode(&bytes) {
            Ok(seg) => {
                for c in seg.chunks {
                    if session.is_some_and(|s| s != c.header.session) {
                        continue;
                    }
                    let key = (c.header.agent.clone(), c.header.session, c.header.stream);
                    streams
                        .entry(key)
                        .or_default()
                        .entry(c.header.seq)
                        .or_default()
                        .push(c);
                }
            }
            Err(e) => report.damaged_objects.push(format!("{path}: {e}")),
        }
    }

    // DEK records: only those the selected chunks name, each read from its own key (an agent
    // that registered thousands of records costs an export of another session nothing).
    let named: BTreeSet<(AgentId, DekId)> = streams
        .values()
        .flat_map(|by_seq| by_seq.values().flatten())
        .map(|c| (c.header.agent.clone(), c.header.dek_id))
        .collect();
    let mut records: HashMap<DekId, DekRecord> = HashMap::new();
    for (agent, dek_id) in named {
        let path = paths::dek_record(&agent, dek_id);
        let Some(bytes) = storage::get_opt(store, &path).await? else {
            continue; // each chunk under it reports "no DEK record"
        };
        report.dek_records += 1;
        match DekRecord::decode(&bytes) {
            Ok(r) if paths::dek_record(&r.agent, r.dek_id) == path => {
                records.insert(r.dek_id, r);
            }
            Ok(_) => report.damaged_objects.push(format!(
                "{path}: DEK record stored under another agent's or key's name"
            )),
            Err(e) => report.damaged_objects.push(format!("{path}: {e}")),
        }
    }

    // Unwrap each DEK that a supplied key can open; the keys stay in memory only here.
    let mut deks: HashMap<DekId, Dek> = HashMap::new();
    let mut dek_problems: HashMap<DekId, String> = HashMap::new();
    for record in records.values() {
        match keys.iter().find(|k| k.kek_id == record.kek_id) {
            Some(k) => match Dek::unwrap(record, &k.key, k.kek_id) {
                Ok(dek) => {
                    deks.insert(record.dek_id, dek);
                }
                Err(e) => {
                    dek_problems.insert(record.dek_id, e.to_string());
                }
            },
            None => {
                dek_problems.insert(
                    record.dek_id,
                    format!(
                        "KEK {} not supplied (pass its private key with --key)",
                        record.kek_id
                    ),
                );
            }
        }
    }

    // How many streams of each kind a session has decides the output names.
    let mut per_kind: HashMap<(AgentId, SessionId, Kind), usize> = HashMap::new();
    for (id, chunks) in &streams {
        if let Some(first) = chunks.values().next().and_then(|v| v.first()) {
            *per_kind
                .entry((id.0.clone(), id.1, first.header.kind))
                .or_default() += 1;
        }
    }

    for ((agent, sess, stream), chunks) in streams {
        let kind = chunks
            .values()
            .next()
            .and_then(|v| v.first())
            .map(|c| c.header.kind)
            .expect("a stream entry holds at least one chunk");
        let unique_kind = per_kind.get(&(agent.clone(), sess, kind)).copied() == Some(1);
        let dir = out.join(agent.dir_name()).join(sess.to_string());
        let mut sr = StreamReport {
            agent: agent.to_string(),
            session: sess.to_string(),
            stream: stream.0,
            kind: kind.name(),
            chunks: 0,
            bytes: 0,
            files: Vec::new(),
            gaps: Vec::new(),
            status: Status::Complete,
        };
        let mut problems = Vec::new();
        let mut malformed = Vec::new();
        let mut no_key = None;
        let mut writer = StreamWriter::new(dir, kind, stream, unique_kind);
        let mut expected_seq = 0u64;
        let mut final_seq = None;
        let mut keys_cache: HashMap<DekId, StreamKey> = HashMap::new();
        for (seq, copies) in &chunks {
            // Identical copies (a resend) count once; different bytes under one number do not.
            let chunk = &copies[0];
            if copies.iter().any(|c| c.bytes() != chunk.bytes()) {
                problems.push(format!(
                    "different chunks stored under sequence number {seq}"
                ));
            }
            // Numbers skipped before this chunk: tampering, unless this is the agent's own
            // (authenticated) gap record declaring exactly them.
            let hole = (*seq > expected_seq).then(|| (expected_seq, *seq - 1));
            if let (Some((a, b)), false) = (hole, chunk.header.gap) {
                problems.push(missing(a, b));
            }
            expected_seq = seq.saturating_add(1);
            if let Some(f) = final_seq {
                problems.push(format!("chunk {seq} comes after the final chunk {f}"));
            }
            if chunk.header.last {
                final_seq.get_or_insert(*seq);
            }
            let unresolved = |problems: &mut Vec<String>| {
                if let (Some((a, b)), true) = (hole, chunk.header.gap) {
                    problems.push(missing(a, b));
                }
            };
            if chunk.header.kind != kind {
                problems.push(format!(
                    "chunk {seq} is {} in a {} stream",
                    chunk.header.kind.name(),
                    kind.name()
                ));
                unresolved(&mut problems);
                continue;
            }
            let dek_id = chunk.header.dek_id;
            let Some(record) = records.get(&dek_id) else {
                problems.push(format!("chunk {seq}: no DEK record for DEK {dek_id}"));
                unresolved(&mut problems);
                continue;
            };
            if record.agent != agent {
                problems.push(format!(
                    "chunk {seq}: DEK {dek_id} belongs to agent {:?}",
                    record.agent.as_str()
                ));
                unresolved(&mut problems);
                continue;
            }
            let Some(dek) = deks.get(&dek_id) else {
                let why = dek_problems.get(&dek_id).cloned().unwrap_or_default();
                if why.contains("not supplied") {
                    no_key.get_or_insert(why);
                } else {
                    problems.push(format!("chunk {seq}: {why}"));
                }
                unresolved(&mut problems);
                continue;
            };
            let key = keys_cache
                .entry(dek_id)
                .or_insert_with(|| StreamKey::for_chunk(dek, &chunk.header));
            match key.open(chunk) {
                Ok(plain) if chunk.header.gap => match Gap::decode(&plain) {
                    Ok(g) if hole == Some((g.first_seq, g.last_seq)) => {
                        sr.chunks += 1;
                        sr.gaps.push(g);
                    }
                    _ => {
                        problems.push(format!(
                            "chunk {seq}: gap record does not match the missing chunks"
                        ));
                        unresolved(&mut problems);
                    }
                },
                Ok(plain) => match writer.write(*seq, &plain) {
                    Ok(Some(n)) => {
                        sr.chunks += 1;
                        sr.bytes += n;
                    }
                    Ok(None) => malformed.push(format!(
                        "chunk {seq}: authentic, but its {} payload does not parse (docs/format.md \"Payloads\")",
                        chunk.header.kind.name()
                    )),
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    problems.push(e.to_string());
                    unresolved(&mut problems);
                }
            }
        }
        sr.files = writer.finish()?;
        sr.status = if !problems.is_empty() {
            Status::Tampered(problems)
        } else if !malformed.is_empty() {
            Status::Malformed(malformed)
        } else if let Some(why) = no_key {
            Status::NoKey(why)
        } else if final_seq.is_none() {
            Status::Incomplete
        } else {
            Status::Complete
        };
        report.streams.push(sr);
    }

    std::fs::create_dir_all(out).map_err(|source| ExportError::Write {
        path: out.to_owned(),
        source,
    })?;
    let report_path = out.join("report.json");
    let json = serde_json::to_vec_pretty(&report).expect("report serializes");
    std::fs::write(&report_path, json).map_err(|source| ExportError::Write {
        path: report_path,
        source,
    })?;
    Ok(report)
}

fn missing(from: u64, to: u64) -> String {
    if from == to {
        format!("chunk {from} is missing")
    } else {
        format!("chunks {from} to {to} are missing")
    }
}

/// Writes one stream's plaintext: frames as files, keystrokes as JSON lines.
struct StreamWriter {
    dir: PathBuf,
    kind: Kind,
    stream: StreamId,
    unique: bool,
    files: Vec<String>,
    keystrokes: Option<std::fs::File>,
}

impl StreamWriter {
    fn new(dir: PathBuf, kind: Kind, stream: StreamId, unique: bool) -> Self {
        StreamWriter {
            dir,
            kind,
            stream,
            unique,
            files: Vec::new(),
            keystrokes: None,
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |source| ExportError::Write {
            path: path.to_owned(),
            source,
        }
    }

    /// Write one chunk's plaintext; `Ok(None)` if the payload does not parse.
    fn write(&mut self, seq: u64, plain: &[u8]) -> Result<Option<u64>, ExportError> {
        use std::io::Write;
        if plain.is_empty() {
            // An empty chunk carries nothing: it ends a stream (see docs/format.md).
            return Ok(Some(0));
        }
        match self.kind {
            Kind::Frame => {
                let Ok(frame) = Frame::decode(plain) else {
                    return Ok(None);
                };
                let dir = if self.unique {
                    self.dir.join("frames")
                } else {
                    self.dir.join(format!("frames-{}", self.stream))
                };
                std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
                let mut name = if frame.name.is_empty() {
                    format!("frame-{seq:08}.bin")
                } else {
                    frame.name.to_owned()
                };
                if dir.join(&name).exists() {
                    name = format!("{seq:08}-{name}");
                }
                let path = dir.join(&name);
                std::fs::write(&path, frame.image).map_err(Self::io(&path))?;
                self.files.push(path.display().to_string());
                Ok(Some(frame.image.len() as u64))
            }
            Kind::Keystrokes => {
                let Ok(lines) = keystroke_lines(plain) else {
                    return Ok(None);
                };
                if self.keystrokes.is_none() {
                    std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
                    let path = if self.unique {
                        self.dir.join("keystrokes.jsonl")
                    } else {
                        self.dir.join(format!("keystrokes-{}.jsonl", self.stream))
                    };
                    let f = std::fs::File::create(&path).map_err(Self::io(&path))?;
                    self.files.push(path.display().to_string());
                    self.keystrokes = Some(f);
                }
                let f = self.keystrokes.as_mut().expect("opened above");
                for line in &lines {
                    f.write_all(line)
                        .and_then(|_| f.write_all(b"\n"))
                        .map_err(Self::io(&self.dir))?;
                }
                Ok(Some(plain.len() as u64))
            }
        }
    }

    fn finish(self) -> Result<Vec<String>, ExportError> {
        if let Some(f) = self.keystrokes {
            f.sync_all().map_err(Self::io(&self.dir))?;
        }
        Ok(self.files)
    }
}
