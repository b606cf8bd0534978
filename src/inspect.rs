//! Keyless inspection of a store, shared by `sealstream verify` and `sealstream export`: every
//! object's structure and checksum, its name against its contents, each stream's sequence
//! continuity, duplicates and final chunk, and the agent's signatures (docs/format.md
//! "Verifying a stream"). Segments are read in windows and chunks kept only as references
//! (where they are, their digests and signatures), so memory does not grow with the store's
//! bytes.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crypto::sign::{self, AgentCa, CertInfo};
use crate::protocol::chunk::{self, FIXED_HEADER_LEN, FLAG_CHECKPOINT};
use crate::protocol::segment::{self, MAX_CHUNKS};
use crate::protocol::{
    AgentId, DecodeError, DekId, DekRecord, Kind, SealedChunk, SessionId, StreamId, VERSION_2,
};
use crate::storage::{self, StoreError, paths};

/// Bytes read from a segment at a time.
const WINDOW: u64 = 8 * 1024 * 1024;

/// One stream: (agent, session, stream id).
pub type StreamKey = (AgentId, SessionId, StreamId);

/// Where a chunk is and what a keyless reader knows of it.
#[derive(Clone, Debug)]
pub struct ChunkRef {
    /// Index into `Scan::segments`.
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
    pub seq: u64,
    pub kind: Kind,
    pub version: u8,
    pub last: bool,
    pub gap: bool,
    pub dek_id: DekId,
    pub capture_us: i64,
    /// SHA-256 of the whole chunk: copies under one number compare by it.
    pub digest: [u8; 32],
    /// SHA-256 of the chunk's core (the chain's input).
    pub core_digest: [u8; 32],
    /// A checkpoint's (scheme, signature).
    pub signature: Option<Box<(u16, Vec<u8>)>>,
}

/// Which streams to keep.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub session: Option<SessionId>,
    /// Agent ids, exact.
    pub agents: Vec<String>,
    /// Keep streams with a chunk captured at or after this (microseconds since the epoch) ...
    pub since_us: Option<i64>,
    /// ... and at or before this.
    pub until_us: Option<i64>,
}

impl Filter {
    fn keeps_chunk(&self, agent: &AgentId, session: SessionId) -> bool {
        self.session.is_none_or(|s| s == session)
            && (self.agents.is_empty() || self.agents.iter().any(|a| a == agent.as_str()))
    }

    fn keeps_stream(&self, chunks: &BTreeMap<u64, Vec<ChunkRef>>) -> bool {
        let times = chunks.values().map(|c| c[0].capture_us);
        let (Some(lo), Some(hi)) = (times.clone().min(), times.max()) else {
            return false;
        };
        self.since_us.is_none_or(|s| hi >= s) && self.until_us.is_none_or(|u| lo <= u)
    }
}

/// What a scan of the store found.
#[derive(Default)]
pub struct Scan {
    pub segments: Vec<Path>,
    pub segment_bytes: u64,
    pub dek_objects: usize,
    /// Objects that are not what their key says: corrupt, altered, renamed or moved.
    pub damaged: Vec<String>,
    pub streams: BTreeMap<StreamKey, BTreeMap<u64, Vec<ChunkRef>>>,
    /// DEK records, by (agent, DEK id), read from their own keys.
    pub records: HashMap<(AgentId, DekId), DekRecord>,
}

/// Read every segment of `store`, check the name of every DEK record object, and read the DEK
/// records the kept chunks name (docs/format.md "Object names"): a record no kept chunk names
/// is not read, so records flooded into the store cost a reader one listing, never a read
/// each. `progress` is told the bytes of each segment read.
pub async fn scan(
    store: &dyn ObjectStore,
    filter: &Filter,
    mut progress: impl FnMut(u64),
) -> Result<Scan, StoreError> {
    let mut out = Scan::default();
    for meta in storage::list_meta(store, &paths::segments_prefix()).await? {
        let index = out.segments.len() as u32;
        out.segments.push(meta.location.clone());
        out.segment_bytes += meta.size;
        let mut kept = Vec::new();
        let result = scan_segment(store, &meta.location, meta.size, |c, offset, digest| {
            if filter.keeps_chunk(&c.header.agent, c.header.session) {
                kept.push(chunk_ref(index, offset, c, digest));
            }
        })
        .await;
        progress(meta.size);
        match result {
            Ok(()) => {
                for (key, r) in kept {
                    out.streams
                        .entry(key)
                        .or_default()
                        .entry(r.seq)
                        .or_default()
                        .push(r);
                }
            }
            Err(Damage::Store(e)) => return Err(e),
            Err(Damage::Object(why)) => out.damaged.push(format!("{}: {why}", meta.location)),
        }
    }
    out.streams.retain(|_, chunks| filter.keeps_stream(chunks));

    // Every DEK record object's name, from the listing alone.
    for path in storage::list(store, &paths::deks_prefix()).await? {
        if paths::parse_dek_record(&path).is_none() {
            out.damaged.push(format!(
                "{path}: not a DEK record's key (v1/deks/<agent id hex>/<DEK id hex>.dek)"
            ));
        }
    }
    // The records the kept chunks name, each read from its own key.
    let mut named: Vec<(AgentId, DekId)> = out
        .streams
        .iter()
        .flat_map(|((agent, ..), by_seq)| {
            by_seq
                .values()
                .flatten()
                .map(move |c| (agent.clone(), c.dek_id))
        })
        .collect();
    named.sort();
    named.dedup();
    for (agent, dek) in named {
        let path = paths::dek_record(&agent, dek);
        let Some(bytes) = storage::get_opt(store, &path).await? else {
            continue; // each chunk under it reports "no DEK record"
        };
        out.dek_objects += 1;
        match DekRecord::decode(&bytes) {
            Ok(r) if paths::dek_record(&r.agent, r.dek_id) == path => {
                out.records.insert((r.agent.clone(), r.dek_id), r);
            }
            Ok(r) => out.damaged.push(format!(
                "{path}: DEK record stored under another name (its contents say {})",
                paths::dek_record(&r.agent, r.dek_id)
            )),
            Err(e) => out.damaged.push(format!("{path}: {e}")),
        }
    }
    Ok(out)
}

fn chunk_ref(
    segment: u32,
    offset: u64,
    c: &SealedChunk,
    digest: [u8; 32],
) -> (StreamKey, ChunkRef) {
    let h = &c.header;
    let key = (h.agent.clone(), h.session, h.stream);
    let r = ChunkRef {
        segment,
        offset,
        len: c.len() as u32,
        seq: h.seq,
        kind: h.kind,
        version: h.version,
        last: h.last,
        gap: h.gap,
        dek_id: h.dek_id,
        capture_us: h.capture_time_us,
        digest,
        // Each byte hashed once more only for a checkpoint (its core is not the whole chunk).
        core_digest: if c.core().len() == c.len() {
            digest
        } else {
            Sha256::digest(c.core()).into()
        },
        signature: c
            .signature()
            .map(|s| Box::new((s.scheme, s.bytes.to_vec()))),
    };
    (key, r)
}

enum Damage {
    Store(StoreError),
    Object(String),
}

impl From<DecodeError> for Damage {
    fn from(e: DecodeError) -> Self {
        Damage::Object(e.to_string())
    }
}

/// A window over an object, read on demand.
struct Window<'a> {
    store: &'a dyn ObjectStore,
    path: &'a Path,
    size: u64,
    start: u64,
    buf: Bytes,
}

impl Window<'_> {
    /// Bytes `pos .. pos + len` (the caller keeps within the object).
    async fn get(&mut self, pos: u64, len: u64) -> Result<Bytes, Damage> {
        let end = pos + len;
        if end > self.size {
            return Err(Damage::Object(format!(
                "truncated: needs {end} bytes, the object has {}",
                self.size
            )));
        }
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want_end = self.size.min(pos + len.max(WINDOW));
            self.buf = storage::get_range(self.store, self.path, pos, (want_end - pos) as u32)
                .await
                .map_err(Damage::Store)?;
            self.start = pos;
            if (self.buf.len() as u64) < len {
                return Err(Damage::Object("the store returned a short read".into()));
            }
        }
        let at = (pos - self.start) as usize;
        Ok(self.buf.slice(at..at + len as usize))
    }
}

/// The length of the chunk at `pos`, read from its length fields (the decoder then checks it).
async fn chunk_len(w: &mut Window<'_>, pos: u64, body_end: u64) -> Result<u64, Damage> {
    let avail = body_end.saturating_sub(pos);
    let fixed = (FIXED_HEADER_LEN as u64).min(avail);
    let head = w.get(pos, fixed).await?;
    if head.len() < FIXED_HEADER_LEN {
        return Ok(avail); // too short: decoding says how
    }
    let agent_len = u64::from(u16::from_be_bytes([head[60], head[61]]));
    let ct_at = 62 + agent_len;
    if ct_at + 4 > avail {
        return Ok(avail);
    }
    let ct = w.get(pos + ct_at, 4).await?;
    let ct_len = u64::from(u32::from_be_bytes([ct[0], ct[1], ct[2], ct[3]]));
    let core = ct_at + 4 + ct_len;
    if head[7] & FLAG_CHECKPOINT == 0 || core + 4 > avail {
        return Ok(core.min(avail));
    }
    let t = w.get(pos + core, 4).await?;
    Ok((core + 4 + u64::from(u16::from_be_bytes([t[2], t[3]]))).min(avail))
}

/// Check one segment object (structure, checksum, its key against its id and date), handing
/// each chunk, its offset and its SHA-256 to `each`.
async fn scan_segment(
    store: &dyn ObjectStore,
    path: &Path,
    size: u64,
    mut each: impl FnMut(&SealedChunk, u64, [u8; 32]),
) -> Result<(), Damage> {
    if size as usize > segment::MAX_SEGMENT_LEN {
        return Err(Damage::Object(format!(
            "{size} bytes, more than the {}-byte segment limit",
            segment::MAX_SEGMENT_LEN
        )));
    }
    let min = (segment::HEADER_LEN + segment::TRAILER_LEN) as u64;
    if size < min {
        return Err(Damage::Object(format!(
            "truncated segment: {size} bytes, the smallest is {min}"
        )));
    }
    let mut w = Window {
        store,
        path,
        size,
        start: 0,
        buf: Bytes::new(),
    };
    let head = w.get(0, segment::HEADER_LEN as u64).await?;
    let (id, created_us, count) = segment::decode_header(&head)?;
    if id[..8] != created_us.to_be_bytes() {
        return Err(Damage::Object(format!(
            "segment id {} does not start with its created_us ({created_us})",
            hex::encode(id)
        )));
    }
    let expected = paths::segment(created_us, &id);
    if &expected != path {
        return Err(Damage::Object(format!(
            "segment stored under another name (its contents say {expected}): renamed or moved"
        )));
    }
    let body_end = size - segment::TRAILER_LEN as u64;
    let mut sum = Sha256::new();
    sum.update(&head);
    let mut pos = segment::HEADER_LEN as u64;
    for index in 0..count.min(MAX_CHUNKS as usize) {
        let len = chunk_len(&mut w, pos, body_end).await?;
        // Checked before anything that long is read.
        if len > chunk::MAX_CHUNK_LEN as u64 {
            return Err(Damage::Object(format!(
                "chunk {index} at byte {pos}: its length fields say {len} bytes, more than the {}-byte limit",
                chunk::MAX_CHUNK_LEN
            )));
        }
        let bytes = w.get(pos, len).await?;
        let c = SealedChunk::decode(bytes).map_err(|source| DecodeError::ChunkInSegment {
            index,
            offset: pos as usize,
            source: Box::new(source),
        })?;
        let digest: [u8; 32] = Sha256::digest(c.bytes()).into();
        sum.update(digest);
        each(&c, pos, digest);
        pos += len;
    }
    let trailer = w.get(body_end, segment::TRAILER_LEN as u64).await?;
    if pos != body_end || sum.finalize().as_slice() != &trailer[..] {
        return Err(DecodeError::SegmentChecksum.into());
    }
    Ok(())
}

/// How far a stream's signatures prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "proof", rename_all = "snake_case")]
pub enum Proof {
    /// Version-1 chunks: no signature says which agent made them.
    Unsigned,
    /// Signed by the agent certificate `cert`.
    Signed {
        cert: CertInfo,
        /// Whether the certificate was checked against a pinned agent CA (`--agent-ca`).
        ca_checked: bool,
        /// The last valid checkpoint's sequence number.
        checkpoint: Option<u64>,
        /// Chunks the checkpoint proves (the stream's first `proven` chunks present).
        proven: u64,
        /// Chunks after the last valid checkpoint.
        unproven: u64,
    },
    /// The signatures do not prove the stream: a signature or certificate was refused, the
    /// stream mixes versions or DEKs, or its DEK record is missing (each problem is listed
    /// with the stream's).
    Invalid,
}

/// What a keyless reader concludes about one stream.
#[derive(Clone, Debug)]
pub struct StreamCheck {
    pub kind: Kind,
    /// Things honest storage cannot cause.
    pub problems: Vec<String>,
    /// Holes in the numbering right before a gap record: the agent says it dropped them (the
    /// key confirms the range).
    pub declared_gaps: Vec<(u64, u64)>,
    /// Chunk numbers without a DEK record.
    pub missing_records: Vec<DekId>,
    pub final_seq: Option<u64>,
    pub chunks: u64,
    pub proof: Proof,
    /// The earliest and latest capture time of the chunks present (gap records and empty
    /// chunks included), whatever their order.
    pub first_capture_us: i64,
    pub last_capture_us: i64,
}

/// Check one stream without keys: numbering, duplicates, final chunk, kinds, DEK records and
/// signatures.
pub fn check_stream(
    key: &StreamKey,
    chunks: &BTreeMap<u64, Vec<ChunkRef>>,
    records: &HashMap<(AgentId, DekId), DekRecord>,
    ca: Option<&AgentCa>,
) -> StreamCheck {
    let agent = &key.0;
    let first = chunks
        .values()
        .next()
        .and_then(|v| v.first())
        .expect("a stream holds at least one chunk");
    let kind = first.kind;
    let mut check = StreamCheck {
        kind,
        problems: Vec::new(),
        declared_gaps: Vec::new(),
        missing_records: Vec::new(),
        final_seq: None,
        chunks: chunks.len() as u64,
        proof: Proof::Unsigned,
        first_capture_us: first.capture_us,
        last_capture_us: first.capture_us,
    };
    let mut expected = 0u64;
    for (seq, copies) in chunks {
        let c = &copies[0];
        check.first_capture_us = check.first_capture_us.min(c.capture_us);
        check.last_capture_us = check.last_capture_us.max(c.capture_us);
        if copies.iter().any(|o| o.digest != c.digest) {
            check.problems.push(format!(
                "different chunks stored under sequence number {seq}"
            ));
        }
        if *seq > expected {
            if c.gap {
                check.declared_gaps.push((expected, seq - 1));
            } else {
                check.problems.push(missing(expected, seq - 1));
            }
        } else if c.gap {
            check.problems.push(format!(
                "chunk {seq} is a gap record with no missing chunks before it"
            ));
        }
        expected = seq.saturating_add(1);
        if let Some(f) = check.final_seq {
            check
                .problems
                .push(format!("chunk {seq} comes after the final chunk {f}"));
        }
        if c.last {
            check.final_seq.get_or_insert(*seq);
        }
        if c.kind != kind {
            check.problems.push(format!(
                "chunk {seq} is {} in a {} stream",
                c.kind.name(),
                kind.name()
            ));
        }
        match records.get(&(agent.clone(), c.dek_id)) {
            Some(_) => {}
            None if !check.missing_records.contains(&c.dek_id) => {
                check.missing_records.push(c.dek_id)
            }
            None => {}
        }
    }
    check.proof = prove(agent, chunks, records, ca, &mut check.problems);
    check
}

fn missing(from: u64, to: u64) -> String {
    if from == to {
        format!("chunk {from} is missing")
    } else {
        format!("chunks {from} to {to} are missing")
    }
}

/// The stream's signatures: the DEK record's, then the chain and each checkpoint.
fn prove(
    agent: &AgentId,
    chunks: &BTreeMap<u64, Vec<ChunkRef>>,
    records: &HashMap<(AgentId, DekId), DekRecord>,
    ca: Option<&AgentCa>,
    problems: &mut Vec<String>,
) -> Proof {
    let v2 = chunks
        .values()
        .filter(|c| c[0].version == VERSION_2)
        .count();
    if v2 == 0 {
        // Unsigned chunks under a DEK whose record the agent signed: a signing agent seals
        // only version 2, so these were sealed by someone who unwrapped its DEK (a KEK holder).
        let signed_dek = chunks.values().find_map(|c| {
            records
                .get(&(agent.clone(), c[0].dek_id))
                .filter(|r| r.signed.is_some())
                .map(|r| r.dek_id)
        });
        if let Some(dek) = signed_dek {
            problems.push(format!(
                "unsigned (version 1) chunks under DEK {dek}, whose record its agent signed: sealed by someone who unwrapped the DEK, not by the agent"
            ));
            return Proof::Invalid;
        }
        return Proof::Unsigned;
    }
    if v2 != chunks.len() {
        problems.push("the stream mixes signed (version 2) and unsigned chunks".into());
        return Proof::Invalid;
    }
    let dek = chunks.values().next().expect("not empty")[0].dek_id;
    if chunks.values().any(|c| c[0].dek_id != dek) {
        problems.push("a signed stream's chunks name more than one DEK".into());
        return Proof::Invalid;
    }
    let Some(record) = records.get(&(agent.clone(), dek)) else {
        return Proof::Invalid; // reported as a missing DEK record
    };
    let Some(signed) = &record.signed else {
        problems.push(format!(
            "DEK {dek}: the record is unsigned but its chunks are signed (version 2)"
        ));
        return Proof::Invalid;
    };
    if let Err(e) = sign::verify_dek_record(record) {
        problems.push(format!("DEK {dek}: record signature: {e}"));
        return Proof::Invalid;
    }
    let cert = match ca {
        Some(ca) => match ca.check(&signed.cert, agent, record.created_us) {
            Ok(info) => info,
            Err(e) => {
                problems.push(format!("DEK {dek}: agent certificate: {e}"));
                return Proof::Invalid;
            }
        },
        None => CertInfo {
            fingerprint: crate::crypto::cert::fingerprint(&signed.cert),
            serial: crate::crypto::cert::serial_hex(&signed.cert).unwrap_or_default(),
        },
    };
    let mut head = sign::CHAIN_START;
    let (mut checkpoint, mut proven, mut failed) = (None, 0u64, false);
    for (i, (seq, copies)) in chunks.iter().enumerate() {
        let c = &copies[0];
        head = sign::chain_link(&head, &c.core_digest);
        let Some(sig) = &c.signature else { continue };
        match sign::verify(
            &signed.cert,
            sig.0,
            &sign::checkpoint_message(&head),
            &sig.1,
        ) {
            Ok(()) => {
                checkpoint = Some(*seq);
                proven = i as u64 + 1;
            }
            Err(e) => {
                failed = true;
                problems.push(format!(
                    "checkpoint at chunk {seq}: {e} (a chunk up to it was altered, removed, added or reordered, or the signature was forged)"
                ))
            }
        }
    }
    if failed {
        // A signature that does not verify: the stream's proof is not what its valid
        // checkpoints alone would say.
        return Proof::Invalid;
    }
    Proof::Signed {
        cert,
        ca_checked: ca.is_some(),
        checkpoint,
        proven,
        unproven: chunks.len() as u64 - proven,
    }
}

/// The bytes of chunk `c` as stored now (a byte range of its segment), not yet checked.
pub async fn read_chunk_bytes(
    store: &dyn ObjectStore,
    scan: &Scan,
    c: &ChunkRef,
) -> Result<Bytes, String> {
    let path = &scan.segments[c.segment as usize];
    storage::get_range(store, path, c.offset, c.len)
        .await
        .map_err(|e| format!("chunk {}: {path}: {e}", c.seq))
}

/// `bytes` decoded as chunk `seq`, if they are still the bytes the scan saw (`digest`).
pub fn chunk_from_bytes(bytes: Bytes, digest: &[u8; 32], seq: u64) -> Result<SealedChunk, String> {
    if Sha256::digest(&bytes).as_slice() != digest {
        return Err(format!("chunk {seq}: changed since the store was scanned"));
    }
    SealedChunk::decode(bytes).map_err(|e| format!("chunk {seq}: {e}"))
}

/// One stream in a `verify` report.
#[derive(Clone, Debug, Serialize)]
pub struct StreamVerdict {
    pub agent: String,
    pub session: String,
    pub stream: u32,
    pub kind: &'static str,
    pub chunks: u64,
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    pub final_seq: Option<u64>,
    /// Ranges the agent's gap records declare dropped (the key confirms them).
    pub declared_gaps: Vec<(u64, u64)>,
    pub problems: Vec<String>,
    pub missing_dek_records: Vec<String>,
    pub signature: Proof,
    pub verdict: Verdict,
}

/// A stream's verdict, worst first: the table of docs/format.md "Verdicts and exit codes".
/// `verify` gives every verdict but `NoKey` and `Malformed`, which only decrypting finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Something honest storage cannot cause (or, as a store's outcome, a damaged object).
    Tampered,
    /// A DEK record the chunks name is not in the store.
    NoDekRecord,
    /// (export) No private key was given for the stream's KEK.
    NoKey,
    /// (export) Authentic chunks whose payload does not parse.
    Malformed,
    /// (with a pinned agent CA) No agent signature: anyone with the public KEK could have made
    /// it. `--allow-incomplete` does not accept it.
    Unsigned,
    /// No final chunk (still recording, or cut short).
    Incomplete,
    /// (with a pinned agent CA) Complete, but chunks after the last valid checkpoint.
    Unproven,
    #[default]
    Ok,
}

impl Verdict {
    pub const ALL: [Verdict; 8] = [
        Verdict::Tampered,
        Verdict::NoDekRecord,
        Verdict::NoKey,
        Verdict::Malformed,
        Verdict::Unsigned,
        Verdict::Incomplete,
        Verdict::Unproven,
        Verdict::Ok,
    ];

    /// What a keyless reader concludes from `check` (with the agent CA pinned or not).
    pub fn of(check: &StreamCheck, ca_pinned: bool) -> Verdict {
        if !check.problems.is_empty() {
            Verdict::Tampered
        } else if !check.missing_records.is_empty() {
            Verdict::NoDekRecord
        } else {
            Verdict::of_authentic(&check.proof, check.final_seq.is_some(), ca_pinned)
        }
    }

    /// The verdict on a stream with nothing wrong in it: unsigned, incomplete, unproven or ok.
    pub fn of_authentic(proof: &Proof, complete: bool, ca_pinned: bool) -> Verdict {
        match proof {
            Proof::Unsigned if ca_pinned => Verdict::Unsigned,
            _ if !complete => Verdict::Incomplete,
            // Nothing pinned, nothing to prove against: an unproven tail is not counted.
            Proof::Signed { unproven, .. } if ca_pinned && *unproven > 0 => Verdict::Unproven,
            _ => Verdict::Ok,
        }
    }

    /// The exit code this verdict gives `verify` and `export`.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Tampered => 3,
            Verdict::NoDekRecord => 6,
            Verdict::NoKey => 4,
            Verdict::Malformed => 5,
            Verdict::Unsigned | Verdict::Incomplete | Verdict::Unproven => 7,
            Verdict::Ok => 0,
        }
    }

    /// Whether `--allow-incomplete` accepts it: a missing final chunk or an unproven tail of a
    /// signed stream, never an unsigned stream.
    pub fn waivable(self) -> bool {
        matches!(self, Verdict::Incomplete | Verdict::Unproven)
    }

    /// The name in reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Tampered => "tampered",
            Verdict::NoDekRecord => "no_dek_record",
            Verdict::NoKey => "no_key",
            Verdict::Malformed => "malformed",
            Verdict::Unsigned => "unsigned",
            Verdict::Incomplete => "incomplete",
            Verdict::Unproven => "unproven",
            Verdict::Ok => "ok",
        }
    }
}

/// The exit code of `verify` or `export` for a store: 3 if an object is damaged, else that of
/// the worst verdict not accepted (`allow_incomplete` accepts the waivable ones).
pub fn exit_code(
    damaged: bool,
    verdicts: impl IntoIterator<Item = Verdict>,
    allow_incomplete: bool,
) -> u8 {
    if damaged {
        return Verdict::Tampered.exit_code();
    }
    verdicts
        .into_iter()
        .filter(|v| !(allow_incomplete && v.waivable()))
        .min()
        .unwrap_or(Verdict::Ok)
        .exit_code()
}

/// What `sealstream verify` found (`--json`: docs/format.md "The verify report").
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub segments: usize,
    pub segment_bytes: u64,
    pub dek_records: usize,
    /// The pinned agent CA's fingerprint.
    pub agent_ca: Option<String>,
    pub damaged_objects: Vec<String>,
    pub streams: Vec<StreamVerdict>,
    pub outcome: Verdict,
}

impl VerifyReport {
    /// `verify`'s exit code (docs/format.md "Verdicts and exit codes").
    pub fn exit_code(&self, allow_incomplete: bool) -> u8 {
        exit_code(
            !self.damaged_objects.is_empty(),
            self.streams.iter().map(|s| s.verdict),
            allow_incomplete,
        )
    }
}

/// Check the whole store without keys.
pub async fn verify(
    store: &dyn ObjectStore,
    ca: Option<&AgentCa>,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let scan = scan(store, &Filter::default(), progress).await?;
    let mut streams = Vec::with_capacity(scan.streams.len());
    for (key, chunks) in &scan.streams {
        let c = check_stream(key, chunks, &scan.records, ca);
        let verdict = Verdict::of(&c, ca.is_some());
        streams.push(StreamVerdict {
            agent: key.0.to_string(),
            session: key.1.to_string(),
            stream: key.2.0,
            kind: c.kind.name(),
            chunks: c.chunks,
            first_capture_us: c.first_capture_us,
            last_capture_us: c.last_capture_us,
            final_seq: c.final_seq,
            declared_gaps: c.declared_gaps,
            problems: c.problems,
            missing_dek_records: c.missing_records.iter().map(|d| d.to_string()).collect(),
            signature: c.proof,
            verdict,
        });
    }
    let mut outcome = streams
        .iter()
        .map(|s| s.verdict)
        .min()
        .unwrap_or(Verdict::Ok);
    if !scan.damaged.is_empty() {
        outcome = Verdict::Tampered;
    }
    Ok(VerifyReport {
        segments: scan.segments.len(),
        segment_bytes: scan.segment_bytes,
        dek_records: scan.dek_objects,
        agent_ca: ca.map(|c| c.fingerprint.clone()),
        damaged_objects: scan.damaged,
        streams,
        outcome,
    })
}
