//! One segment object checked as it is read in windows: its size, header, name against its
//! contents, each chunk's structure and the trailer's checksum.

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use sha2::{Digest, Sha256};

use crate::crypto::sha256x2;
use crate::protocol::chunk::{self, FIXED_HEADER_LEN, FLAG_CHECKPOINT};
use crate::protocol::segment::{self, MAX_CHUNKS};
use crate::protocol::{DecodeError, SealedChunk};
use crate::storage::{self, StoreError, paths};

/// Bytes read from a segment at a time.
const WINDOW: u64 = 8 * 1024 * 1024;
/// Chunk bytes hashed by one blocking task, and groups hashing at once: hashing is most of a
/// scan's work, and the groups' tasks share it out over the cores while the scan reads on.
const GROUP_BYTES: usize = 1 << 20;
const GROUPS_HASHING: usize = 2;

/// Chunks read and decoded, in order, with their offsets.
#[derive(Default)]
struct Group {
    chunks: Vec<(u64, SealedChunk)>,
    bytes: usize,
}

/// A group and the task hashing its chunks.
type Hashing = (
    Vec<(u64, SealedChunk)>,
    tokio::task::JoinHandle<Vec<[u8; 32]>>,
);

impl Group {
    fn hash(self) -> Hashing {
        let bytes: Vec<Bytes> = self.chunks.iter().map(|(_, c)| c.bytes().clone()).collect();
        let task =
            tokio::task::spawn_blocking(move || sha256x2::digest_all(bytes.iter().map(|b| &b[..])));
        (self.chunks, task)
    }
}

/// Hand a hashed group's chunks to `each`, in order, adding their digests to `sum`.
async fn visit((chunks, task): Hashing, sum: &mut Sha256, each: &mut impl SegmentVisitor) {
    // Hashing cannot fail; a panic in it is resumed here.
    let digests = task
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    for ((pos, c), digest) in chunks.iter().zip(digests) {
        sum.update(digest);
        each.chunk(c, *pos, digest).await;
    }
}

pub(super) enum Damage {
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

/// What a segment's scan hands each chunk to, as it is read.
pub(super) trait SegmentVisitor {
    /// Chunk `c` at byte `offset`, with the SHA-256 of its bytes (its segment is not yet
    /// proved whole: the trailer comes last).
    fn chunk(
        &mut self,
        c: &SealedChunk,
        offset: u64,
        digest: [u8; 32],
    ) -> impl Future<Output = ()> + Send;
}

/// Check one segment object (structure, checksum, its key against its id and date), handing
/// each chunk, its offset and its SHA-256 to `each`.
pub(super) async fn scan_segment(
    store: &dyn ObjectStore,
    path: &Path,
    size: u64,
    each: &mut impl SegmentVisitor,
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
    // Chunks are hashed on the blocking pool in groups while the next are read and decoded;
    // the visitor gets them in order, each with its digest.
    let mut hashing = std::collections::VecDeque::new();
    let mut group = Group::default();
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
        group.bytes += c.len();
        group.chunks.push((pos, c));
        if group.bytes >= GROUP_BYTES {
            hashing.push_back(std::mem::take(&mut group).hash());
            while hashing.len() > GROUPS_HASHING {
                let next = hashing.pop_front().expect("not empty");
                visit(next, &mut sum, each).await;
            }
        }
        pos += len;
    }
    if !group.chunks.is_empty() {
        hashing.push_back(group.hash());
    }
    while let Some(next) = hashing.pop_front() {
        visit(next, &mut sum, each).await;
    }
    let trailer = w.get(body_end, segment::TRAILER_LEN as u64).await?;
    if pos != body_end || sum.finalize().as_slice() != &trailer[..] {
        return Err(DecodeError::SegmentChecksum.into());
    }
    Ok(())
}
