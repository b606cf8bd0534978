//! One stream exported: its chunks read ahead and opened on the blocking pool, gap records
//! checked, plaintexts written in order, its status and verdict, its files placed by verdict.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;

use crate::crypto::{Dek, StreamKey};
use crate::inspect::{self, ChunkRef, Scan, StreamKey as StreamKeyId, Verdict};
use crate::protocol::DekId;
use crate::protocol::payload::Gap;

use super::prestage::{At, Staged};
use super::report::{Status, StreamReport};
use super::writer::StreamWriter;
use super::{ExportError, Owner};

/// Where the files of streams that are not ok go, under the output directory: `@` is in no
/// agent directory's name, so it cannot clash with one.
pub const QUARANTINE_DIR: &str = "@quarantine";

/// Decrypt and write one stream; returns its report and how many chunks were decrypted.
#[allow(clippy::too_many_arguments)]
pub(super) async fn export_stream(
    store: &dyn ObjectStore,
    scan: &Scan,
    id: &StreamKeyId,
    chunks: &BTreeMap<u64, Vec<ChunkRef>>,
    check: inspect::StreamCheck,
    unique_kind: bool,
    ca_pinned: bool,
    (deks, dek_problems): (&HashMap<Owner, Arc<Dek>>, &HashMap<Owner, String>),
    staged: &mut HashMap<At, Staged>,
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
        file_sha256: Vec::new(),
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
        let ahead = staged.remove(&(r.segment, r.offset));
        work.push((*seq, r, hole, key, ahead));
    }
    // Chunks opened during the scan are taken as they are; the others are read again (and
    // checked to be the bytes the scan saw) ahead and opened on the blocking pool, while this
    // task writes the plaintexts in order.
    let mut opened = futures::stream::iter(work)
        .map(|(seq, r, hole, key, ahead)| async move {
            let result = match ahead {
                Some(Staged::Image {
                    path,
                    name,
                    len,
                    sha256,
                }) => Ok(Plain::Image {
                    path,
                    name,
                    len,
                    sha256,
                }),
                Some(Staged::Plain { log, offset, len }) => Staged::read_plain(&log, offset, len)
                    .map(Plain::Bytes)
                    .map_err(|e| format!("chunk {seq}: reading back what was opened: {e}")),
                None => read_and_open(store, scan, r, seq, key)
                    .await
                    .map(Plain::Bytes),
            };
            (seq, r, hole, result)
        })
        .buffered(OPEN_AHEAD);
    let mut decrypted = 0u64;
    while let Some((seq, r, hole, result)) = opened.next().await {
        progress(1);
        match result {
            Ok(Plain::Image {
                path,
                name,
                len,
                sha256,
            }) => {
                decrypted += 1;
                writer.place_frame(seq, r.capture_us, &name, path, sha256);
                sr.chunks += 1;
                sr.bytes += len;
            }
            Ok(Plain::Bytes(plain)) if r.gap => match Gap::decode(&plain) {
                Ok(g) if hole == Some((g.first_seq, g.last_seq)) => {
                    decrypted += 1;
                    sr.chunks += 1;
                    sr.gaps.push(g);
                }
                _ => problems.push(format!(
                    "chunk {seq}: gap record does not match the missing chunks"
                )),
            },
            Ok(Plain::Bytes(plain)) => {
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
    (sr.files, sr.file_sha256) = files.into_iter().unzip();
    sr.frames = frames;
    Ok((sr, decrypted))
}

/// A chunk's plaintext: in memory, or (a whole frame opened during the scan) its image in a
/// file.
enum Plain {
    Bytes(zeroize::Zeroizing<Vec<u8>>),
    Image {
        path: PathBuf,
        name: String,
        len: u64,
        sha256: [u8; 32],
    },
}

/// Chunk `r` read again from its segment, checked against the scan's digest, and opened on
/// the blocking pool.
async fn read_and_open(
    store: &dyn ObjectStore,
    scan: &Scan,
    r: &inspect::ChunkRef,
    seq: u64,
    key: Arc<StreamKey>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let bytes = inspect::read_chunk_bytes(store, scan, r).await?;
    let digest = r.digest;
    tokio::task::spawn_blocking(move || {
        let chunk = inspect::chunk_from_bytes(bytes, &digest, seq)?;
        key.open(&chunk).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("chunk {seq}: {e}")))
}

/// Chunks read and opened ahead of the one being written (each at most a chunk's size).
const OPEN_AHEAD: usize = 4;
