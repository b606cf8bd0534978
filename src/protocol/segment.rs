//! The segment object: many sealed chunks batched into one stored object, with a checksum
//! so corruption at rest is found without any key.
//!
//! Layout (big-endian; docs/format.md "Segment object"):
//! `"SSSG" | version u8 | reserved [3] = 0 | segment_id [16] | created_us i64 |
//!  chunk_count u32 | chunks... | sha256 [32]` — the digest covers every byte before it.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::VERSION;
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

impl Segment {
    /// A new segment id: creation time in microseconds (so ids sort by time) and 8 random bytes.
    pub fn new_id(created_us: i64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&created_us.to_be_bytes());
        getrandom::fill(&mut id[8..]).expect("operating system random source failed");
        id
    }

    /// Encode chunks into one object; returns the bytes and their SHA-256 (the trailer).
    pub fn encode(id: [u8; 16], created_us: i64, chunks: &[SealedChunk]) -> (Bytes, [u8; 32]) {
        let body: usize = chunks.iter().map(SealedChunk::len).sum();
        let mut out = Vec::with_capacity(HEADER_LEN + body + TRAILER_LEN);
        out.extend_from_slice(MAGIC.as_bytes());
        out.push(VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&id);
        out.extend_from_slice(&created_us.to_be_bytes());
        out.extend_from_slice(&(chunks.len() as u32).to_be_bytes());
        for c in chunks {
            out.extend_from_slice(c.bytes());
        }
        let digest: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&digest);
        (Bytes::from(out), digest)
    }

    /// Decode and verify a whole segment object.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
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
        let (body, trailer) = buf.split_at(buf.len() - TRAILER_LEN);
        let mut r = Reader::new("segment", body);
        r.magic(MAGIC)?;
        r.version()?;
        if r.array::<3>()? != [0; 3] {
            return Err(DecodeError::Invalid {
                what: "segment",
                reason: "reserved bytes are not zero".into(),
            });
        }
        if Sha256::digest(body).as_slice() != trailer {
            return Err(DecodeError::SegmentChecksum);
        }
        let id = r.array()?;
        let created_us = r.i64()?;
        let count = r.u32()?;
        // Each chunk takes at least FIXED_HEADER_LEN + 1 + 16 bytes, which bounds the count.
        let min_chunk = super::chunk::FIXED_HEADER_LEN + 1 + super::chunk::TAG_LEN;
        let limit = (r.remaining() / min_chunk).min(MAX_CHUNKS as usize) as u64;
        let count = r.bounded("chunk_count", count.into(), 0, limit)?;
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            let start = r.position();
            let (chunk, used) = SealedChunk::decode_prefix(&body[start..])?;
            r.bytes(used)?;
            chunks.push(chunk);
        }
        r.finish()?;
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
            kind: Kind::Keystrokes,
            last: false,
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
        let seg = Segment::decode(&bytes).unwrap();
        assert_eq!(seg.chunks, chunks);
        assert_eq!(seg.created_us, 77);
        let mut bad = bytes.to_vec();
        bad[HEADER_LEN + 70] ^= 1;
        assert_eq!(Segment::decode(&bad), Err(DecodeError::SegmentChecksum));
    }

    #[test]
    fn segment_ids_sort_by_creation_time() {
        assert!(Segment::new_id(1000) < Segment::new_id(2000));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Segment::decode(&bytes);
        }

        #[test]
        fn a_lying_count_is_refused(count in any::<u32>()) {
            let (bytes, _) = Segment::encode([5; 16], 77, &[chunk(0)]);
            let mut b = bytes.to_vec();
            b[32..36].copy_from_slice(&count.to_be_bytes());
            let n = b.len();
            let digest = Sha256::digest(&b[..n - 32]);
            b[n - 32..].copy_from_slice(&digest);
            let res = Segment::decode(&b);
            prop_assert_eq!(res.is_ok(), count == 1);
        }
    }
}
