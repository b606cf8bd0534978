//! The sealed chunk: one AES-256-GCM ciphertext with the header that is its AAD.
//!
//! Layout (big-endian; see docs/format.md "Sealed chunk"):
//! `"SSCK" | version u8 | suite u8 | kind u8 | flags u8 | dek_id [16] | session_id [16] |
//!  stream_id u32 | seq u64 | capture_time_us i64 | agent_len u16 | agent [agent_len] |
//!  ct_len u32 | ciphertext [ct_len]` — the AAD is every byte before `ciphertext`.
//! Version 2 adds flag bit 2, a checkpoint: the chunk ends with the agent's signature over
//! the chain of the stream's chunk digests up to it, `scheme u16 | sig_len u16 | sig`
//! (docs/format.md "Agent signatures").

use bytes::Bytes;

use super::ids::{AGENT_ID_MAX_BYTES, AgentId, DekId, Kind, SessionId, StreamId};
use super::wire::{DecodeError, Reader};
use super::{SUITE_AES256GCM_HKDF_OAEP, VERSION_1, VERSION_2};

pub const MAGIC: &str = "SSCK";
/// Flag bit 0: this is the last chunk of its stream.
pub const FLAG_FINAL: u8 = 0x01;
/// Flag bit 1: a gap record — the agent dropped the chunks just before this one (its spool
/// was full); the plaintext says which (see `payload::Gap`).
pub const FLAG_GAP: u8 = 0x02;
/// Flag bit 2 (version 2 only): a checkpoint; the agent's signature follows the ciphertext.
pub const FLAG_CHECKPOINT: u8 = 0x04;
/// Longest signature a checkpoint may carry (ECDSA P-384 DER is at most 104 bytes).
pub const MAX_SIGNATURE_LEN: usize = 512;
/// AES-GCM tag length; every ciphertext is at least this long.
pub const TAG_LEN: usize = 16;
/// Largest plaintext one chunk may carry (a 4K screenshot as PNG fits with room to spare).
pub const MAX_PLAINTEXT: usize = 16 * 1024 * 1024;
/// Largest ciphertext field.
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + TAG_LEN;
/// Header bytes that do not depend on the agent id's length.
pub const FIXED_HEADER_LEN: usize = 4 + 1 + 1 + 1 + 1 + 16 + 16 + 4 + 8 + 8 + 2 + 4;
/// Largest whole chunk on the wire (a checkpoint's signature included).
pub const MAX_CHUNK_LEN: usize =
    FIXED_HEADER_LEN + AGENT_ID_MAX_BYTES + MAX_CIPHERTEXT + 4 + MAX_SIGNATURE_LEN;

/// Everything about a chunk except its ciphertext. Encoded, it is the chunk's AAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// 1, or 2 for a chunk of a signing agent (which may be a checkpoint).
    pub version: u8,
    pub kind: Kind,
    /// A checkpoint (version 2): the agent's signature follows the ciphertext.
    pub checkpoint: bool,
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
        out.push(self.version);
        out.push(SUITE_AES256GCM_HKDF_OAEP);
        out.push(self.kind.code());
        out.push(
            if self.last { FLAG_FINAL } else { 0 }
                | if self.gap { FLAG_GAP } else { 0 }
                | if self.checkpoint { FLAG_CHECKPOINT } else { 0 },
        );
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
    /// Header and ciphertext: everything but a checkpoint's signature.
    core_len: usize,
}

/// A checkpoint's signature: the TLS SignatureScheme code and the signature bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature<'a> {
    pub scheme: u16,
    pub bytes: &'a [u8],
}

impl SealedChunk {
    /// Assemble a chunk from an encoded header (the AAD) and the ciphertext with its tag.
    pub fn from_parts(header: ChunkHeader, aad: Vec<u8>, ciphertext: &[u8]) -> Self {
        let aad_len = aad.len();
        let mut bytes = aad;
        bytes.extend_from_slice(ciphertext);
        SealedChunk {
            header,
            core_len: bytes.len(),
            bytes: Bytes::from(bytes),
            aad_len,
        }
    }

    /// A chunk already laid out as header (AAD, `aad_len` bytes) followed by ciphertext and tag.
    pub fn from_encoded(header: ChunkHeader, bytes: Vec<u8>, aad_len: usize) -> Self {
        debug_assert!(aad_len + TAG_LEN <= bytes.len());
        SealedChunk {
            header,
            core_len: bytes.len(),
            bytes: Bytes::from(bytes),
            aad_len,
        }
    }

    /// This checkpoint chunk (flag set, no signature yet) with its signature appended.
    pub fn with_signature(self, scheme: u16, signature: &[u8]) -> Self {
        assert!(self.header.checkpoint && self.core_len == self.bytes.len());
        assert!(!signature.is_empty() && signature.len() <= MAX_SIGNATURE_LEN);
        let mut bytes = Vec::with_capacity(self.bytes.len() + 4 + signature.len());
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(&scheme.to_be_bytes());
        bytes.extend_from_slice(&(signature.len() as u16).to_be_bytes());
        bytes.extend_from_slice(signature);
        SealedChunk {
            header: self.header,
            bytes: Bytes::from(bytes),
            aad_len: self.aad_len,
            core_len: self.core_len,
        }
    }

    /// Decode exactly one chunk occupying all of `bytes` (no copy: the chunk shares `bytes`).
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let (header, aad_len, core_len, used) = Self::parse(&bytes)?;
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
            core_len,
        })
    }

    /// Decode the chunk at the start of `buf` without copying; returns it and its length.
    pub fn decode_shared(buf: &Bytes) -> Result<(Self, usize), DecodeError> {
        let (header, aad_len, core_len, used) = Self::parse(buf)?;
        Ok((
            SealedChunk {
                header,
                bytes: buf.slice(..used),
                aad_len,
                core_len,
            },
            used,
        ))
    }

    /// Decode the chunk at the start of `buf`; returns it and how many bytes it used.
    /// Lengths are checked against the limits before anything is copied.
    pub fn decode_prefix(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let (header, aad_len, core_len, used) = Self::parse(buf)?;
        Ok((
            SealedChunk {
                header,
                bytes: Bytes::copy_from_slice(&buf[..used]),
                aad_len,
                core_len,
            },
            used,
        ))
    }

    /// Parse a chunk at the start of `buf`: (header, AAD length, length without a
    /// checkpoint's signature, whole length).
    fn parse(buf: &[u8]) -> Result<(ChunkHeader, usize, usize, usize), DecodeError> {
        let mut r = Reader::new("chunk", buf);
        r.magic(MAGIC)?;
        let version = r.version(&[VERSION_1, VERSION_2], "1 and 2")?;
        r.suite()?;
        let kind_code = r.u8()?;
        let kind = Kind::from_code(kind_code).ok_or(DecodeError::UnknownKind(kind_code))?;
        let flags = r.u8()?;
        let known = if version == VERSION_1 {
            FLAG_FINAL | FLAG_GAP
        } else {
            FLAG_FINAL | FLAG_GAP | FLAG_CHECKPOINT
        };
        if flags & !known != 0 || flags & (FLAG_FINAL | FLAG_GAP) == FLAG_FINAL | FLAG_GAP {
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
        let core_len = r.position();
        if flags & FLAG_CHECKPOINT != 0 {
            r.u16()?;
            let sig_len = r.u16()?;
            let sig_len = r.bounded("sig_len", sig_len.into(), 1, MAX_SIGNATURE_LEN as u64)?;
            r.bytes(sig_len)?;
        }
        let used = r.position();
        let header = ChunkHeader {
            version,
            checkpoint: flags & FLAG_CHECKPOINT != 0,
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
        Ok((header, aad_len, core_len, used))
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
        &self.bytes[self.aad_len..self.core_len]
    }

    /// Header and ciphertext: the bytes a checkpoint's chain link covers (all of a chunk but
    /// its signature).
    pub fn core(&self) -> &[u8] {
        &self.bytes[..self.core_len]
    }

    /// A checkpoint's signature.
    pub fn signature(&self) -> Option<Signature<'_>> {
        if !self.header.checkpoint || self.core_len == self.bytes.len() {
            return None;
        }
        let t = &self.bytes[self.core_len..];
        Some(Signature {
            scheme: u16::from_be_bytes([t[0], t[1]]),
            bytes: &t[4..],
        })
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
            version: 1,
            checkpoint: false,
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
            mutate(4, 3),
            DecodeError::UnsupportedVersion { .. }
        ));
        assert_eq!(
            mutate(4, 3).to_string(),
            "chunk: unsupported format version 3; this build reads versions 1 and 2"
        );
        // The checkpoint flag exists from version 2 on.
        assert!(matches!(mutate(7, 0x04), DecodeError::UnknownFlags(0x04)));
        assert!(matches!(mutate(5, 9), DecodeError::UnsupportedSuite { .. }));
        assert!(matches!(mutate(6, 4), DecodeError::UnknownKind(4)));
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

    #[test]
    fn a_checkpoint_carries_its_signature_after_the_ciphertext() {
        let h = ChunkHeader {
            version: 2,
            checkpoint: true,
            ..header()
        };
        let c = SealedChunk::from_parts(h.clone(), h.encode(16), &[5; 16]);
        let core = c.bytes().clone();
        let signed = c.with_signature(0x0403, &[9; 70]);
        let back = SealedChunk::decode(signed.bytes().clone()).unwrap();
        assert_eq!(back.header, h);
        assert_eq!(back.core(), &core[..]);
        assert_eq!(back.ciphertext(), &[5; 16]);
        let sig = back.signature().unwrap();
        assert_eq!((sig.scheme, sig.bytes), (0x0403, &[9u8; 70][..]));
        // Without its signature, or with an empty one, a checkpoint is refused.
        assert!(matches!(
            SealedChunk::decode(core).unwrap_err(),
            DecodeError::Truncated { .. }
        ));
        let mut empty = signed.core().to_vec();
        empty.extend_from_slice(&[4, 3, 0, 0]);
        assert!(matches!(
            SealedChunk::decode(Bytes::from(empty)).unwrap_err(),
            DecodeError::OutOfRange {
                field: "sig_len",
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
