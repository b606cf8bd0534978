//! The segment object: many sealed chunks batched into one stored object, with a checksum
//! so corruption at rest is found without any key.
//!
//! Layout (big-endian; docs/format.md "Segment object"):
//! `"SSSG" | version u8 | reserved [3] = 0 | segment_id [16] | created_us i64 |
//!  chunk_count u32 | chunks... | checksum [32]`, where
//! `checksum = SHA-256(the 36 header bytes | SHA-256(chunk 1) | ... | SHA-256(chunk n))`:
//! each byte is hashed once, and the chunk digests double as the index's dedup digests.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::VERSION_1 as VERSION;
use super::chunk::SealedChunk;
use super::wire::{DecodeError, Reader};

pub const MAGIC: &str = "SSSG";
pub const HEADER_LEN: usize = 4 + 1 + 3 + 16 + 8 + 4;
pub const TRAILER_LEN: usize = 32;
/// Most chunks one segment may hold.
pub const MAX_CHUNKS: u32 = 1 << 20;
/// Largest segment object this build writes or reads.
pub const MAX_SEGMENT_LEN: usize = 1 << 30;

/// A decoded, checksum-verified segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub id: [u8; 16],
    pub created_us: i64,
    pub chunks: Vec<SealedChunk>,
}

/// The SHA-256 of one chunk's bytes (its dedup digest and its checksum leaf).
pub fn chunk_digest(chunk: &SealedChunk) -> [u8; 32] {
    Sha256::digest(chunk.bytes()).into()
}

fn header(id: &[u8; 16], created_us: i64, count: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC.as_bytes());
    h[4] = VERSION;
    h[8..24].copy_from_slice(id);
    h[24..32].copy_from_slice(&created_us.to_be_bytes());
    h[32..36].copy_from_slice(&(count as u32).to_be_bytes());
    h
}

fn checksum(header: &[u8], digests: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(header);
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// The 36 header bytes of a segment: (segment id, created_us, chunk count).
pub fn decode_header(head: &[u8]) -> Result<([u8; 16], i64, usize), DecodeError> {
    let mut r = Reader::new("segment", head);
    r.magic(MAGIC)?;
    r.version(&[VERSION], "1")?;
    if r.array::<3>()? != [0; 3] {
        return Err(DecodeError::Invalid {
            what: "segment",
            reason: "reserved bytes are not zero".into(),
        });
    }
    let id = r.array()?;
    let created_us = r.i64()?;
    let count = r.u32()?;
    let count = r.bounded("chunk_count", count.into(), 0, MAX_CHUNKS.into())?;
    Ok((id, created_us, count))
}

impl Segment {
    /// A new segment id: creation time in microseconds (so ids sort by time) and 8 random bytes.
    pub fn new_id(created_us: i64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&created_us.to_be_bytes());
        getrandom::fill(&mut id[8..]).expect("operating system random source failed");
        id
    }

    /// Encode chunks into one object; returns the bytes and the checksum (the trailer).
    pub fn encode(id: [u8; 16], created_us: i64, chunks: &[SealedChunk]) -> (Bytes, [u8; 32]) {
        let digests: Vec<[u8; 32]> = chunks.iter().map(chunk_digest).collect();
        Self::encode_with_digests(id, created_us, chunks, &digests)
    }

    /// `encode`, with each chunk's SHA-256 already known (the server computed it on arrival).
    pub fn encode_with_digests(
        id: [u8; 16],
        created_us: i64,
        chunks: &[SealedChunk],
        digests: &[[u8; 32]],
    ) -> (Bytes, [u8; 32]) {
        assert_eq!(chunks.len(), digests.len(), "one digest per chunk");
        let body: usize = chunks.iter().map(SealedChunk::len).sum();
        let head = header(&id, created_us, chunks.len());
        let mut out = Vec::with_capacity(HEADER_LEN + body + TRAILER_LEN);
        out.extend_from_slice(&head);
        for c in chunks {
            out.extend_from_slice(c.bytes());
        }
        let sum = checksum(&head, digests);
        out.extend_from_slice(&sum);
        (Bytes::from(out), sum)
    }

    /// The object as parts (header, each chunk's bytes, checksum) with no copy of the chunks,
    /// for writers that gather; returns the parts, the checksum and the total length.
    pub fn encode_parts<'a>(
        id: [u8; 16],
        created_us: i64,
        chunks: impl IntoIterator<Item = &'a SealedChunk>,
        digests: &[[u8; 32]],
    ) -> (Vec<Bytes>, [u8; 32], usize) {
        let head = header(&id, created_us, digests.len());
        let sum = checksum(&head, digests);
        let mut parts = Vec::with_capacity(digests.len() + 2);
        parts.push(Bytes::copy_from_slice(&head));
        parts.extend(chunks.into_iter().map(|c| c.bytes().clone()));
        assert_eq!(parts.len(), digests.len() + 1, "one digest per chunk");
        parts.push(Bytes::copy_from_slice(&sum));
        let len = parts.iter().map(Bytes::len).sum();
        (parts, sum, len)
    }

    /// Decode and verify a whole segment object; the chunks share `buf` (no copy).
    /// (Readers of large objects use `decode_header` and read the chunks in windows.)
    pub fn decode(buf: &Bytes) -> Result<Self, DecodeError> {
        if buf.len() > MAX_SEGMENT_LEN {
            return Err(DecodeError::OutOfRange {
                what: "segment",
                field: "length",
                value: buf.len() as u64,
                limit: MAX_SEGMENT_LEN as u64,
            });
        }
        if buf.len() < HEADER_LEN + TRAILER_LEN {
            return Err(DecodeError::Truncated {
                what: "segment",
                need: HEADER_LEN + TRAILER_LEN,
                have: buf.len(),
            });
        }
        let body = buf.slice(..buf.len() - TRAILER_LEN);
        let trailer = &buf[buf.len() - TRAILER_LEN..];
        let (id, created_us, count) = match decode_header(&body[..HEADER_LEN]) {
            // A corrupted count is corruption: say so rather than blame the limit.
            Err(DecodeError::OutOfRange {
                field: "chunk_count",
                ..
            }) => return Err(DecodeError::SegmentChecksum),
            other => other?,
        };
        let mut r = Reader::new("segment", &body);
        r.bytes(HEADER_LEN)?;
        // Each chunk takes at least FIXED_HEADER_LEN + 1 + 16 bytes, which bounds the count.
        let min_chunk = super::chunk::FIXED_HEADER_LEN + 1 + super::chunk::TAG_LEN;
        if count > r.remaining() / min_chunk {
            return Err(DecodeError::SegmentChecksum);
        }
        let mut chunks = Vec::with_capacity(count);
        let mut digests = Vec::with_capacity(count);
        for _ in 0..count {
            let start = r.position();
            // A chunk that does not parse is named with its own error (an unknown version,
            // suite or kind says so): the checksum cannot be checked past it.
            let (chunk, used) =
                SealedChunk::decode_shared(&body.slice(start..)).map_err(|source| {
                    DecodeError::ChunkInSegment {
                        index: chunks.len(),
                        offset: start,
                        source: Box::new(source),
                    }
                })?;
            r.bytes(used)?;
            digests.push(chunk_digest(&chunk));
            chunks.push(chunk);
        }
        if r.remaining() != 0 || checksum(&body[..HEADER_LEN], &digests) != trailer {
            return Err(DecodeError::SegmentChecksum);
        }
        Ok(Segment {
            id,
            created_us,
            chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentId, ChunkHeader, DekId, Kind, SessionId, StreamId};
    use proptest::prelude::*;

    fn chunk(seq: u64) -> SealedChunk {
        let h = ChunkHeader {
            version: 1,
            checkpoint: false,
            kind: Kind::Keystrokes,
            last: false,
            gap: false,
            dek_id: DekId([1; 16]),
            session: SessionId([2; 16]),
            stream: StreamId(1),
            seq,
            capture_time_us: 0,
            agent: AgentId::new("a").unwrap(),
        };
        SealedChunk::from_parts(h.clone(), h.encode(17), &[seq as u8; 17])
    }

    #[test]
    fn round_trips_and_detects_corruption() {
        let chunks = vec![chunk(0), chunk(1), chunk(2)];
        let (bytes, digest) = Segment::encode([5; 16], 77, &chunks);
        assert_eq!(&bytes[bytes.len() - 32..], &digest);
        let digests: Vec<_> = chunks.iter().map(chunk_digest).collect();
        assert_eq!(
            Segment::encode_with_digests([5; 16], 77, &chunks, &digests).0,
            bytes
        );
        let (parts, sum, len) = Segment::encode_parts([5; 16], 77, &chunks, &digests);
        assert_eq!(
            (parts.concat(), sum, len),
            (bytes.to_vec(), digest, bytes.len())
        );
        let seg = Segment::decode(&bytes).unwrap();
        assert_eq!(seg.chunks, chunks);
        assert_eq!(seg.created_us, 77);
        for i in [0usize, 20, HEADER_LEN + 3, HEADER_LEN + 70, bytes.len() - 1] {
            let mut bad = bytes.to_vec();
            bad[i] ^= 1;
            assert!(Segment::decode(&Bytes::from(bad)).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn segment_ids_sort_by_creation_time() {
        assert!(Segment::new_id(1000) < Segment::new_id(2000));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Segment::decode(&Bytes::from(bytes));
        }

        #[test]
        fn a_lying_count_is_refused(count in any::<u32>()) {
            let (bytes, _) = Segment::encode([5; 16], 77, &[chunk(0)]);
            let mut b = bytes.to_vec();
            b[32..36].copy_from_slice(&count.to_be_bytes());
            let n = b.len();
            let sum = checksum(&b[..HEADER_LEN], &[chunk_digest(&chunk(0))]);
            b[n - 32..].copy_from_slice(&sum);
            let res = Segment::decode(&Bytes::from(b));
            prop_assert_eq!(res.is_ok(), count == 1);
        }
    }
}
