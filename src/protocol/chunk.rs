//! The sealed chunk: one AES-256-GCM ciphertext with the header that is its AAD.
//!
//! Layout (big-endian; see docs/format.md "Sealed chunk"):
//! `"SSCK" | version u8 | suite u8 | kind u8 | flags u8 | dek_id [16] | session_id [16] |
//!  stream_id u32 | seq u64 | capture_time_us i64 | agent_len u16 | agent [agent_len] |
//!  ct_len u32 | ciphertext [ct_len]` — the AAD is every byte before `ciphertext`.

use bytes::Bytes;

use super::ids::{AGENT_ID_MAX_BYTES, AgentId, DekId, Kind, SessionId, StreamId};
use super::wire::{DecodeError, Reader};
use super::{SUITE_AES256GCM_HKDF_OAEP, VERSION};

pub const MAGIC: &str = "SSCK";
/// Flag bit 0: this is the last chunk of its stream.
pub const FLAG_FINAL: u8 = 0x01;
/// Flag bit 1: a gap record — the agent dropped the chunks just before this one (its spool
/// was full); the plaintext says which (see `payload::Gap`).
pub const FLAG_GAP: u8 = 0x02;
/// AES-GCM tag length; every ciphertext is at least this long.
pub const TAG_LEN: usize = 16;
/// Largest plaintext one chunk may carry (a 4K screenshot as PNG fits with room to spare).
pub const MAX_PLAINTEXT: usize = 16 * 1024 * 1024;
/// Largest ciphertext field.
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + TAG_LEN;
/// Header bytes that do not depend on the agent id's length.
pub const FIXED_HEADER_LEN: usize = 4 + 1 + 1 + 1 + 1 + 16 + 16 + 4 + 8 + 8 + 2 + 4;
/// Largest whole chunk on the wire.
pub const MAX_CHUNK_LEN: usize = FIXED_HEADER_LEN + AGENT_ID_MAX_BYTES + MAX_CIPHERTEXT;

/// Everything about a chunk except its ciphertext. Encoded, it is the chunk's AAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub kind: Kind,
    pub last: bool,
    /// A gap record (never also final).
    pub gap: bool,
    pub dek_id: DekId,
    pub session: SessionId,
    pub stream: StreamId,
    pub seq: u64,
    pub capture_time_us: i64,
    pub agent: AgentId,
}

impl ChunkHeader {
    /// The header bytes for a ciphertext of `ct_len` bytes: exactly the AAD.
    pub fn encode(&self, ct_len: usize) -> Vec<u8> {
        let agent = self.agent.as_str().as_bytes();
        let mut out = Vec::with_capacity(FIXED_HEADER_LEN + agent.len() + ct_len);
        out.extend_from_slice(MAGIC.as_bytes());
        out.push(VERSION);
        out.push(SUITE_AES256GCM_HKDF_OAEP);
        out.push(self.kind.code());
        out.push(if self.last { FLAG_FINAL } else { 0 } | if self.gap { FLAG_GAP } else { 0 });
        out.extend_from_slice(&self.dek_id.0);
        out.extend_from_slice(&self.session.0);
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.capture_time_us.to_be_bytes());
        out.extend_from_slice(&(agent.len() as u16).to_be_bytes());
        out.extend_from_slice(agent);
        out.extend_from_slice(&(ct_len as u32).to_be_bytes());
        out
    }
}

/// A whole sealed chunk as bytes, with its decoded header. Cloning is cheap (`Bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedChunk {
    pub header: ChunkHeader,
    bytes: Bytes,
    aad_len: usize,
}

impl SealedChunk {
    /// Assemble a chunk from an encoded header (the AAD) and the ciphertext with its tag.
    pub fn from_parts(header: ChunkHeader, aad: Vec<u8>, ciphertext: &[u8]) -> Self {
        let aad_len = aad.len();
        let mut bytes = aad;
        bytes.extend_from_slice(ciphertext);
        SealedChunk {
            header,
            bytes: Bytes::from(bytes),
            aad_len,
        }
    }

    /// A chunk already laid out as header (AAD, `aad_len` bytes) followed by ciphertext and tag.
    pub fn from_encoded(header: ChunkHeader, bytes: Vec<u8>, aad_len: usize) -> Self {
        debug_assert!(aad_len + TAG_LEN <= bytes.len());
        SealedChunk {
            header,
            bytes: Bytes::from(bytes),
            aad_len,
        }
    }

    /// Decode exactly one chunk occupying all of `bytes` (no copy: the chunk shares `bytes`).
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let (header, aad_len, used) = Self::parse(&bytes)?;
        if used != bytes.len() {
            return Err(DecodeError::TrailingBytes {
                what: "chunk",
                extra: bytes.len() - used,
            });
        }
        Ok(SealedChunk {
            header,
            bytes,
            aad_len,
        })
    }

    /// Decode the chunk at the start of `buf` without copying; returns it and its length.
    pub fn decode_shared(buf: &Bytes) -> Result<(Self, usize), DecodeError> {
        let (header, aad_len, used) = Self::parse(buf)?;
        Ok((
            SealedChunk {
                header,
                bytes: buf.slice(..used),
                aad_len,
            },
            used,
        ))
    }

    /// Decode the chunk at the start of `buf`; returns it and how many bytes it used.
    /// Lengths are checked against the limits before anything is copied.
    pub fn decode_prefix(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let (header, aad_len, used) = Self::parse(buf)?;
        Ok((
            SealedChunk {
                header,
                bytes: Bytes::copy_from_slice(&buf[..used]),
                aad_len,
            },
            used,
        ))
    }

    /// Parse a chunk's header at the start of `buf`: (header, AAD length, whole length).
    fn parse(buf: &[u8]) -> Result<(ChunkHeader, usize, usize), DecodeError> {
        let mut r = Reader::new("chunk", buf);
        r.magic(MAGIC)?;
        r.version()?;
        r.suite()?;
        let kind_code = r.u8()?;
        let kind = Kind::from_code(kind_code).ok_or(DecodeError::UnknownKind(kind_code))?;
        let flags = r.u8()?;
        if flags & !(FLAG_FINAL | FLAG_GAP) != 0 || flags == FLAG_FINAL | FLAG_GAP {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let dek_id = DekId(r.array()?);
        let session = SessionId(r.array()?);
        let stream = StreamId(r.u32()?);
        let seq = r.u64()?;
        let capture_time_us = r.i64()?;
        let agent_len = r.u16()?;
        let agent_len = r.bounded("agent_len", agent_len.into(), 1, AGENT_ID_MAX_BYTES as u64)?;
        let agent = decode_agent("chunk", r.bytes(agent_len)?)?;
        let ct_len = r.u32()?;
        let ct_len = r.bounded(
            "ct_len",
            ct_len.into(),
            TAG_LEN as u64,
            MAX_CIPHERTEXT as u64,
        )?;
        let aad_len = r.position();
        r.bytes(ct_len)?;
        let used = r.position();
        let header = ChunkHeader {
            kind,
            last: flags & FLAG_FINAL != 0,
            gap: flags & FLAG_GAP != 0,
            dek_id,
            session,
            stream,
            seq,
            capture_time_us,
            agent,
        };
        Ok((header, aad_len, used))
    }

    /// The whole chunk as it travels and is stored.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The authenticated header bytes.
    pub fn aad(&self) -> &[u8] {
        &self.bytes[..self.aad_len]
    }

    /// Ciphertext followed by the 16-byte tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.bytes[self.aad_len..]
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

pub(crate) fn decode_agent(what: &'static str, raw: &[u8]) -> Result<AgentId, DecodeError> {
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::AgentId {
        what,
        reason: "not UTF-8".into(),
    })?;
    AgentId::new(text).map_err(|reason| DecodeError::AgentId { what, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> ChunkHeader {
        ChunkHeader {
            kind: Kind::Frame,
            last: false,
            gap: false,
            dek_id: DekId([7; 16]),
            session: SessionId([9; 16]),
            stream: StreamId(3),
            seq: 42,
            capture_time_us: 1_700_000_000_000_000,
            agent: AgentId::new("ts-01").unwrap(),
        }
    }

    #[test]
    fn encode_then_decode_gives_the_same_chunk() {
        let h = header();
        let chunk = SealedChunk::from_parts(h.clone(), h.encode(20), &[0xaa; 20]);
        let back = SealedChunk::decode(chunk.bytes().clone()).unwrap();
        assert_eq!(back, chunk);
        assert_eq!(back.ciphertext(), &[0xaa; 20]);
        assert_eq!(back.aad(), &h.encode(20)[..]);
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let h = header();
        let mut bytes = h.encode(16);
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = SealedChunk::decode_prefix(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::OutOfRange {
                    field: "ct_len",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_kind_flags_version_and_suite_are_refused() {
        let h = header();
        let good = SealedChunk::from_parts(h.clone(), h.encode(16), &[0; 16]);
        let mutate = |i: usize, v: u8| {
            let mut b = good.bytes().to_vec();
            b[i] = v;
            SealedChunk::decode(Bytes::from(b)).unwrap_err()
        };
        assert!(matches!(
            mutate(4, 2),
            DecodeError::UnsupportedVersion { .. }
        ));
        assert!(matches!(mutate(5, 9), DecodeError::UnsupportedSuite { .. }));
        assert!(matches!(mutate(6, 3), DecodeError::UnknownKind(3)));
        assert!(matches!(mutate(7, 0x80), DecodeError::UnknownFlags(0x80)));
        assert!(matches!(mutate(7, 0x03), DecodeError::UnknownFlags(0x03)));
        assert!(matches!(mutate(0, b'X'), DecodeError::BadMagic { .. }));
    }

    #[test]
    fn a_truncated_chunk_says_how_much_is_missing() {
        let h = header();
        let good = SealedChunk::from_parts(h.clone(), h.encode(16), &[0; 16]);
        let cut = &good.bytes()[..good.len() - 1];
        assert!(matches!(
            SealedChunk::decode_prefix(cut).unwrap_err(),
            DecodeError::Truncated {
                need: 16,
                have: 15,
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SealedChunk::decode_prefix(&bytes);
        }

        #[test]
        fn decoding_mutated_chunks_never_panics(pos in 0usize..120, val in any::<u8>(), ct in proptest::collection::vec(any::<u8>(), 16..64)) {
            let h = header();
            let mut b = SealedChunk::from_parts(h.clone(), h.encode(ct.len()), &ct).bytes().to_vec();
            let i = pos % b.len();
            b[i] = val;
            if let Ok((c, used)) = SealedChunk::decode_prefix(&b) {
                prop_assert!(used <= b.len());
                prop_assert_eq!(c.len(), used);
            }
        }

        #[test]
        fn any_valid_header_round_trips(seq in any::<u64>(), stream in any::<u32>(), t in any::<i64>(), last in any::<bool>(), name in "[a-zA-Z0-9 ._-]{1,64}") {
            let h = ChunkHeader { seq, stream: StreamId(stream), capture_time_us: t, last, agent: AgentId::new(name).unwrap(), ..header() };
            let c = SealedChunk::from_parts(h.clone(), h.encode(16), &[1; 16]);
            prop_assert_eq!(SealedChunk::decode(c.bytes().clone()).unwrap().header, h);
        }
    }
}
