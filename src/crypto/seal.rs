//! Chunk sealing. Each stream gets its own AES-256-GCM key:
//! `HKDF-SHA256(salt = dek_id, ikm = DEK, info = "sealstream/1 stream" | session_id [16] |
//! stream_id u32 | kind u8 | agent_len u16 | agent)`, and each chunk's nonce is
//! `00 00 00 | seq u64 | final u8` (age's STREAM construction), so a nonce never repeats
//! under a key while sequence numbers are not reused. The AAD is the chunk header.

use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rsa::sha2::Sha256;
use zeroize::Zeroizing;

use super::dek::Dek;
use crate::protocol::chunk::{MAX_PLAINTEXT, SealedChunk};
use crate::protocol::{AgentId, ChunkHeader, Kind, SessionId, StreamId};

pub const HKDF_INFO_PREFIX: &[u8] = b"sealstream/1 stream";

/// Why a chunk could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("chunk {seq} of stream {stream}: sealed under DEK {found}, expected DEK {expected}")]
    WrongDek {
        stream: StreamId,
        seq: u64,
        found: crate::protocol::DekId,
        expected: crate::protocol::DekId,
    },
    #[error(
        "chunk {seq} of stream {stream}: authentication failed (altered, reordered or spliced)"
    )]
    Authentication { stream: StreamId, seq: u64 },
}

/// The derived key of one stream; opens (and, through `StreamSealer`, seals) its chunks.
pub struct StreamKey {
    cipher: Aes256Gcm,
    dek_id: crate::protocol::DekId,
}

impl StreamKey {
    pub fn derive(
        dek: &Dek,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
        kind: Kind,
    ) -> Self {
        let agent_bytes = agent.as_str().as_bytes();
        let mut info = Vec::with_capacity(HKDF_INFO_PREFIX.len() + 23 + agent_bytes.len());
        info.extend_from_slice(HKDF_INFO_PREFIX);
        info.extend_from_slice(&session.0);
        info.extend_from_slice(&stream.0.to_be_bytes());
        info.push(kind.code());
        info.extend_from_slice(&(agent_bytes.len() as u16).to_be_bytes());
        info.extend_from_slice(agent_bytes);
        let hk = Hkdf::<Sha256>::new(Some(&dek.id().0), dek.secret());
        let mut okm = Zeroizing::new([0u8; 32]);
        hk.expand(&info, okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        StreamKey {
            cipher: Aes256Gcm::new_from_slice(okm.as_ref()).expect("32-byte key"),
            dek_id: dek.id(),
        }
    }

    /// The key for the stream a chunk claims to belong to.
    pub fn for_chunk(dek: &Dek, header: &ChunkHeader) -> Self {
        Self::derive(
            dek,
            &header.agent,
            header.session,
            header.stream,
            header.kind,
        )
    }

    pub fn nonce(seq: u64, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&seq.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    /// Decrypt and authenticate one chunk; the plaintext is zeroized when dropped.
    pub fn open(&self, chunk: &SealedChunk) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let h = &chunk.header;
        if h.dek_id != self.dek_id {
            return Err(OpenError::WrongDek {
                stream: h.stream,
                seq: h.seq,
                found: h.dek_id,
                expected: self.dek_id,
            });
        }
        let nonce = Nonce::from(Self::nonce(h.seq, h.last));
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: chunk.ciphertext(),
                    aad: chunk.aad(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Authentication {
                stream: h.stream,
                seq: h.seq,
            })
    }

    fn seal(&self, header: ChunkHeader, plaintext: &[u8]) -> SealedChunk {
        // One buffer, one copy: header (the AAD), then the plaintext encrypted in place, then
        // the tag. `encode` reserves room for the whole chunk.
        let mut bytes = header.encode(plaintext.len() + crate::protocol::chunk::TAG_LEN);
        let aad_len = bytes.len();
        bytes.extend_from_slice(plaintext);
        let nonce = Nonce::from(Self::nonce(header.seq, header.last));
        let (aad, body) = bytes.split_at_mut(aad_len);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, body.into())
            .expect("AES-GCM accepts plaintexts within MAX_PLAINTEXT");
        bytes.extend_from_slice(&tag);
        SealedChunk::from_encoded(header, bytes, aad_len)
    }
}

/// Seals one stream's chunks in order. It owns the sequence counter, so a sequence number is
/// used once: sealing after the final chunk is refused.
pub struct StreamSealer {
    key: StreamKey,
    agent: AgentId,
    session: SessionId,
    stream: StreamId,
    kind: Kind,
    next_seq: u64,
    finished: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("plaintext of {0} bytes exceeds the {MAX_PLAINTEXT}-byte chunk limit")]
    TooLarge(usize),
    #[error("stream {0} already sealed its final chunk")]
    Finished(StreamId),
}

impl StreamSealer {
    pub fn new(
        dek: &Dek,
        agent: AgentId,
        session: SessionId,
        stream: StreamId,
        kind: Kind,
    ) -> Self {
        Self::starting_at(dek, agent, session, stream, kind, 0)
    }

    /// Resume a stream at `next_seq` (after a restart that persisted the counter).
    pub fn starting_at(
        dek: &Dek,
        agent: AgentId,
        session: SessionId,
        stream: StreamId,
        kind: Kind,
        next_seq: u64,
    ) -> Self {
        StreamSealer {
            key: StreamKey::derive(dek, &agent, session, stream, kind),
            agent,
            session,
            stream,
            kind,
            next_seq,
            finished: false,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn seal(
        &mut self,
        plaintext: &[u8],
        capture_time_us: i64,
        last: bool,
    ) -> Result<SealedChunk, SealError> {
        if self.finished {
            return Err(SealError::Finished(self.stream));
        }
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SealError::TooLarge(plaintext.len()));
        }
        let header = ChunkHeader {
            kind: self.kind,
            last,
            gap: false,
            dek_id: self.key.dek_id,
            session: self.session,
            stream: self.stream,
            seq: self.next_seq,
            capture_time_us,
            agent: self.agent.clone(),
        };
        self.next_seq += 1;
        self.finished = last;
        Ok(self.key.seal(header, plaintext))
    }

    /// Seal a gap record saying the chunks `gap.first_seq..=gap.last_seq` (the ones sealed just
    /// before, which must end at `next_seq - 1`) were dropped and will never be sent.
    pub fn seal_gap(
        &mut self,
        gap: &crate::protocol::payload::Gap,
    ) -> Result<SealedChunk, SealError> {
        if self.finished {
            return Err(SealError::Finished(self.stream));
        }
        assert_eq!(
            gap.last_seq + 1,
            self.next_seq,
            "a gap ends right before the gap record"
        );
        let header = ChunkHeader {
            kind: self.kind,
            last: false,
            gap: true,
            dek_id: self.key.dek_id,
            session: self.session,
            stream: self.stream,
            seq: self.next_seq,
            capture_time_us: gap.last_capture_us,
            agent: self.agent.clone(),
        };
        self.next_seq += 1;
        Ok(self.key.seal(header, &gap.encode()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sealer(dek: &Dek, stream: u32) -> StreamSealer {
        StreamSealer::new(
            dek,
            AgentId::new("a1").unwrap(),
            SessionId([4; 16]),
            StreamId(stream),
            Kind::Frame,
        )
    }

    #[test]
    fn sealed_chunks_open_to_the_original_bytes() {
        let dek = Dek::generate();
        let mut s = sealer(&dek, 0);
        let c0 = s.seal(b"frame zero", 1, false).unwrap();
        let c1 = s.seal(b"frame one", 2, true).unwrap();
        let key = StreamKey::for_chunk(&dek, &c0.header);
        assert_eq!(&key.open(&c0).unwrap()[..], b"frame zero");
        assert_eq!(&key.open(&c1).unwrap()[..], b"frame one");
        assert_eq!(
            s.seal(b"after", 3, false),
            Err(SealError::Finished(StreamId(0)))
        );
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let dek = Dek::generate();
        let c = sealer(&dek, 0).seal(b"secret", 1, false).unwrap();
        let key = StreamKey::for_chunk(&dek, &c.header);
        for i in 0..c.len() {
            let mut b = c.bytes().to_vec();
            b[i] ^= 0x01;
            // Bits in the header either fail to decode or fail to authenticate.
            if let Ok(bad) = SealedChunk::decode(Bytes::from(b)) {
                let key = if bad.header.dek_id == c.header.dek_id {
                    StreamKey::for_chunk(&dek, &bad.header)
                } else {
                    StreamKey::for_chunk(&dek, &c.header)
                };
                assert!(
                    key.open(&bad).is_err(),
                    "bit flip at byte {i} went unnoticed"
                );
            }
        }
        assert!(key.open(&c).is_ok());
    }

    #[test]
    fn a_chunk_spliced_into_another_stream_is_refused() {
        let dek = Dek::generate();
        let c = sealer(&dek, 1).seal(b"from stream 1", 1, false).unwrap();
        let other = StreamKey::derive(
            &dek,
            &AgentId::new("a1").unwrap(),
            SessionId([4; 16]),
            StreamId(2),
            Kind::Frame,
        );
        assert!(matches!(
            other.open(&c),
            Err(OpenError::Authentication { .. })
        ));
    }

    #[test]
    fn nonces_differ_by_sequence_and_final_flag() {
        assert_ne!(StreamKey::nonce(1, false), StreamKey::nonce(2, false));
        assert_ne!(StreamKey::nonce(1, false), StreamKey::nonce(1, true));
    }
}
