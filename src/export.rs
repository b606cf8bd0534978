//! Offline export: check a store without keys (`inspect`), unwrap DEKs with the operator's
//! private keys, then decrypt every stream one chunk at a time (read back by range from its
//! segment), write frames back as files and keystrokes as JSON lines, and report each stream:
//! complete, incomplete, tampered, malformed, without key or without DEK record, and how far
//! its agent's signatures prove it. Memory does not grow with the store's bytes; an export
//! into a directory that already holds an earlier run's files resumes it (identical files are
//! kept, a different file is never overwritten).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use object_store::ObjectStore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crypto::{AgentCa, Dek, StreamKey};
use crate::inspect::{self, ChunkRef, Filter, Proof, Scan, StreamKey as StreamKeyId};
use crate::keys::PrivateKeyFile;
use crate::protocol::payload::{Frame, Gap, keystroke_lines};
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

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub agent: String,
    pub session: String,
    pub stream: u32,
    pub kind: &'static str,
    pub chunks: u64,
    pub bytes: u64,
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    pub files: Vec<String>,
    /// Chunks the agent dropped (its spool was full), as its gap records declare.
    pub gaps: Vec<Gap>,
    /// Each frame file written, with its capture time (for `--video`).
    #[serde(skip)]
    pub frames: FrameList,
    #[serde(flatten)]
    pub status: Status,
    /// How far the agent's signatures prove this stream.
    #[serde(rename = "signature")]
    pub proof: Proof,
    /// Incomplete because it is still being recorded, as the server's index says (`export
    /// --config`): not counted as incomplete for the exit code.
    pub still_recording: bool,
}

impl StreamReport {
    /// Not proven to its end: unsigned while a CA was pinned, or chunks after the last
    /// valid checkpoint.
    pub fn unproven(&self, ca_pinned: bool) -> bool {
        match &self.proof {
            Proof::Unsigned => ca_pinned,
            // Chunks after the last checkpoint are unproven even when the certificate itself
            // is not checked against a CA: the stream's own signatures say so.
            Proof::Signed { unproven, .. } => *unproven > 0,
            Proof::Invalid => false, // its problem makes the stream tampered
        }
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

    pub fn missing_dek_records(&self) -> bool {
        self.streams
            .iter()
            .any(|s| matches!(s.status, Status::NoDekRecord(_)))
    }

    /// Streams without their final chunk, or not proven to their end (with a pinned CA).
    pub fn incomplete_or_unproven(&self) -> Vec<&StreamReport> {
        let pinned = self.agent_ca.is_some();
        self.streams
            .iter()
            // Still recording (the server says so) waives the missing final chunk only, never a
            // missing signature.
            .filter(|s| {
                (s.status == Status::Incomplete && !s.still_recording) || s.unproven(pinned)
            })
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
    let scan = inspect::scan(store, &options.filter, false, |n| {
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
    (deks, dek_problems): (&HashMap<Owner, Dek>, &HashMap<Owner, String>),
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(StreamReport, u64), ExportError> {
    let (agent, sess, stream) = id;
    let kind = check.kind;
    let dir = out.join(agent.dir_name()).join(sess.to_string());
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
    let mut writer = StreamWriter::new(dir, kind, *stream, unique_kind);
    let mut keys_cache: HashMap<DekId, StreamKey> = HashMap::new();
    let mut decrypted = 0u64;
    let mut prev_seq: Option<u64> = None;
    for (seq, copies) in chunks {
        progress(1);
        let r = &copies[0];
        // The numbers skipped right before this chunk (a gap record must declare exactly them).
        let expected = prev_seq.map_or(0, |p| p + 1);
        prev_seq = Some(*seq);
        let hole = (*seq > expected).then(|| (expected, *seq - 1));
        if r.kind != kind {
            continue; // reported by the check
        }
        let owner = (agent.clone(), r.dek_id);
        let Some(dek) = deks.get(&owner) else {
            if let Some(why) = dek_problems.get(&owner) {
                if why.starts_with("no private key") {
                    no_key.get_or_insert(why.clone());
                } else {
                    problems.push(format!("chunk {seq}: {why}"));
                }
            }
            continue;
        };
        let chunk = match inspect::read_chunk(store, scan, r).await {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("chunk {seq}: {e}"));
                continue;
            }
        };
        let key = keys_cache
            .entry(r.dek_id)
            .or_insert_with(|| StreamKey::for_chunk(dek, &chunk.header));
        match key.open(&chunk) {
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
                match writer.write(*seq, r.capture_us, &plain)? {
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
            Err(e) => problems.push(e.to_string()),
        }
    }
    let (files, frames) = writer.finish()?;
    sr.files = files;
    sr.frames = frames;
    sr.status = if !problems.is_empty() {
        Status::Tampered(problems)
    } else if let Some(why) = no_record {
        Status::NoDekRecord(why)
    } else if !malformed.is_empty() {
        Status::Malformed(malformed)
    } else if let Some(why) = no_key {
        Status::NoKey(why)
    } else if check.final_seq.is_none() {
        Status::Incomplete
    } else {
        Status::Complete
    };
    Ok((sr, decrypted))
}

/// A temporary name beside `path` that no exported file can have (a random part), so that
/// staging a file never replaces another.
fn staging_name(path: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("operating system random source failed");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", hex::encode(r)))
}

/// Write `report` as `out/report.json` (again, after the CLI learned more about its streams).
pub fn write_report(out: &Path, report: &Report) -> Result<(), ExportError> {
    let path = out.join("report.json");
    let json = serde_json::to_vec_pretty(report).expect("report serializes");
    std::fs::write(&path, json).map_err(|source| ExportError::Write { path, source })
}

/// Write `bytes` at `path` unless the same bytes are there (a resumed export); a file with
/// other contents is never overwritten.
fn write_once(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let io = |source| ExportError::Write {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        let existing = std::fs::read(path).map_err(io)?;
        return if existing == bytes {
            Ok(())
        } else {
            Err(ExportError::Exists(path.to_owned()))
        };
    }
    let tmp = staging_name(path);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes one stream's plaintext: frames as files, keystrokes as JSON lines.
struct StreamWriter {
    dir: PathBuf,
    kind: Kind,
    stream: StreamId,
    unique: bool,
    files: Vec<String>,
    /// Frame file names used by this export (a repeated name gets the sequence number).
    names: std::collections::HashSet<String>,
    /// Each frame written, with its capture time (for `--video`).
    frames: Vec<(PathBuf, i64)>,
    /// The keystroke file being written (`….partial` until the stream ends) and its hash.
    keystrokes: Option<(std::io::BufWriter<std::fs::File>, PathBuf, Sha256)>,
}

/// A stream's frames as written: each file and its capture time.
pub type FrameList = Vec<(PathBuf, i64)>;

impl StreamWriter {
    fn new(dir: PathBuf, kind: Kind, stream: StreamId, unique: bool) -> Self {
        StreamWriter {
            dir,
            kind,
            stream,
            unique,
            files: Vec::new(),
            names: Default::default(),
            frames: Vec::new(),
            keystrokes: None,
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |source| ExportError::Write {
            path: path.to_owned(),
            source,
        }
    }

    fn keystrokes_path(&self) -> PathBuf {
        if self.unique {
            self.dir.join("keystrokes.jsonl")
        } else {
            self.dir.join(format!("keystrokes-{}.jsonl", self.stream))
        }
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
                if !self.names.insert(name.clone()) {
                    name = format!("{seq:08}-{name}");
                    self.names.insert(name.clone());
                }
                let path = dir.join(&name);
                write_once(&path, frame.image)?;
                self.files.push(path.display().to_string());
                self.frames.push((path, capture_us));
                Ok(Some(frame.image.len() as u64))
            }
            Kind::Keystrokes => {
                let Ok(lines) = keystroke_lines(plain) else {
                    return Ok(None);
                };
                if self.keystrokes.is_none() {
                    std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
                    let path = self.keystrokes_path();
                    let partial = staging_name(&path);
                    let f = std::fs::File::create(&partial).map_err(Self::io(&partial))?;
                    self.files.push(path.display().to_string());
                    self.keystrokes = Some((std::io::BufWriter::new(f), partial, Sha256::new()));
                }
                let (f, partial, hash) = self.keystrokes.as_mut().expect("opened above");
                for line in &lines {
                    hash.update(line);
                    hash.update(b"\n");
                    f.write_all(line)
                        .and_then(|_| f.write_all(b"\n"))
                        .map_err(Self::io(partial))?;
                }
                Ok(Some(plain.len() as u64))
            }
        }
    }

    /// Finish the stream's files; returns them and the frames with their capture times.
    fn finish(mut self) -> Result<(Vec<String>, FrameList), ExportError> {
        let path = self.keystrokes_path();
        if let Some((f, partial, hash)) = self.keystrokes.take() {
            let f = f.into_inner().map_err(|e| ExportError::Write {
                path: partial.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(Self::io(&partial))?;
            if path.exists() {
                // A resumed export: the earlier run's file must be the same.
                let existing = std::fs::read(&path).map_err(Self::io(&path))?;
                std::fs::remove_file(&partial).map_err(Self::io(&partial))?;
                if Sha256::digest(&existing) != hash.finalize() {
                    return Err(ExportError::Exists(path));
                }
            } else {
                std::fs::rename(&partial, &path).map_err(Self::io(&path))?;
            }
        }
        Ok((self.files, self.frames))
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
    /// Every file written, relative to the output directory, with its SHA-256.
    pub files: Vec<(String, String)>,
}

/// Write `receipt.json` (every exported file with its SHA-256, report.json included) and
/// `receipt.sig`, an RSA-PSS (SHA-256) signature over it by `key`, the KEK private key used:
/// `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -verify publickey.crt -signature
/// receipt.sig receipt.json` checks it.
pub fn write_receipt(
    out: &Path,
    report: &Report,
    store: &str,
    key: &PrivateKeyFile,
) -> Result<(), ExportError> {
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Write { path, source }
    };
    let mut paths: Vec<PathBuf> = report
        .streams
        .iter()
        .flat_map(|s| s.files.iter().map(PathBuf::from))
        .collect();
    paths.push(out.join("report.json"));
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        use std::io::Read;
        let mut f = std::fs::File::open(&p).map_err(io(&p))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(io(&p))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let rel = p.strip_prefix(out).unwrap_or(&p).display().to_string();
        files.push((rel, hex::encode(h.finalize())));
    }
    let receipt = Receipt {
        format: "sealstream export receipt v1",
        exported_at_us: crate::crypto::now_us(),
        store,
        signed_with_kek: key.kek_id.to_string(),
        agent_ca: report.agent_ca.as_deref(),
        files,
    };
    let json = serde_json::to_vec_pretty(&receipt).expect("receipt serializes");
    let signer = rsa::pss::SigningKey::<rsa::sha2::Sha256>::new(key.key.clone());
    let sig = signer
        .try_sign_with_rng(&mut getrandom::SysRng, &json)
        .map_err(|e| ExportError::Write {
            path: out.join("receipt.sig"),
            source: std::io::Error::other(e.to_string()),
        })?;
    let (rj, rs) = (out.join("receipt.json"), out.join("receipt.sig"));
    std::fs::write(&rj, &json).map_err(io(&rj))?;
    std::fs::write(&rs, sig.to_bytes()).map_err(io(&rs))?;
    Ok(())
}
