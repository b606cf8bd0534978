//! The scan of a store: every segment's chunks kept as references (`ChunkRef`) by stream,
//! filtered (`Filter`), every DEK record name checked, the records the kept chunks name read.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use sha2::{Digest, Sha256};

use crate::protocol::{AgentId, DekId, DekRecord, Kind, SealedChunk, SessionId, StreamId};
use crate::storage::{self, StoreError, paths};

use super::segment::{Damage, SegmentVisitor, scan_segment};

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

/// What a scan hands each kept chunk to as it reads it, so that a caller (export) can use the
/// bytes while they are in memory instead of reading and hashing them again. The chunk's
/// segment may still prove damaged (its checksum is checked at its end): then no stream of the
/// scan holds it, and whatever the sink made of it must go unused.
pub trait ChunkSink: Send {
    /// A kept chunk, `r` saying where it is and what its header says.
    fn chunk(
        &mut self,
        key: &StreamKey,
        r: &ChunkRef,
        c: &SealedChunk,
    ) -> impl Future<Output = ()> + Send;

    /// The DEK record object of `owner` as the sink has read it already (`Some(None)`: there
    /// is none), so that the scan does not read it again; `None` if the sink has not.
    fn dek_record(&mut self, _owner: &(AgentId, DekId)) -> Option<Option<Bytes>> {
        None
    }
}

/// The sink of a scan that only checks.
impl ChunkSink for () {
    async fn chunk(&mut self, _: &StreamKey, _: &ChunkRef, _: &SealedChunk) {}
}

/// Read every segment of `store`, check the name of every DEK record object, and read the DEK
/// records the kept chunks name (docs/format.md "Object names"): a record no kept chunk names
/// is not read, so records flooded into the store cost a reader one listing, never a read
/// each. `progress` is told the bytes of each segment read.
pub async fn scan(
    store: &dyn ObjectStore,
    filter: &Filter,
    progress: impl FnMut(u64),
) -> Result<Scan, StoreError> {
    scan_into(store, filter, progress, &mut ()).await
}

/// One segment's kept chunks, collected and handed to the sink as they are read.
struct Keep<'a, S> {
    filter: &'a Filter,
    index: u32,
    kept: Vec<(StreamKey, ChunkRef)>,
    sink: &'a mut S,
}

impl<S: ChunkSink> SegmentVisitor for Keep<'_, S> {
    async fn chunk(&mut self, c: &SealedChunk, offset: u64, digest: [u8; 32]) {
        if self.filter.keeps_chunk(&c.header.agent, c.header.session) {
            let (key, r) = chunk_ref(self.index, offset, c, digest);
            self.sink.chunk(&key, &r, c).await;
            self.kept.push((key, r));
        }
    }
}

/// `scan`, handing each kept chunk to `sink` as it is read.
pub async fn scan_into(
    store: &dyn ObjectStore,
    filter: &Filter,
    mut progress: impl FnMut(u64),
    sink: &mut impl ChunkSink,
) -> Result<Scan, StoreError> {
    let mut out = Scan::default();
    for meta in storage::list_meta(store, &paths::segments_prefix()).await? {
        let index = out.segments.len() as u32;
        out.segments.push(meta.location.clone());
        out.segment_bytes += meta.size;
        let mut keep = Keep {
            filter,
            index,
            kept: Vec::new(),
            sink: &mut *sink,
        };
        let result = scan_segment(store, &meta.location, meta.size, &mut keep).await;
        let kept = keep.kept;
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
    for owner in named {
        let path = paths::dek_record(&owner.0, owner.1);
        let read = match sink.dek_record(&owner) {
            Some(read) => read,
            None => storage::get_opt(store, &path).await?,
        };
        let Some(bytes) = read else {
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
