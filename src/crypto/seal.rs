//! Chunk sealing. Each stream gets its own AES-256-GCM key:
//! `HKDF-SHA256(salt = dek_id, ikm = DEK, info = "sealstream/1 stream" | session_id [16] |
//! stream_id u32 | kind u8 | agent_len u16 | agent)`, and each chunk's nonce is
//! `00 00 00 | seq u64 | final u8` (age's STREAM construction), so a nonce never repeats
//! under a key while sequence numbers are not reused. The AAD is the chunk header.

use hkdf::Hkdf;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use rsa::sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use std::mem::MaybeUninit;
use std::sync::Arc;

use super::dek::Dek;
use super::sign::{AgentSigner, CHAIN_START, chain_next, checkpoint_message};
use crate::protocol::chunk::{MAX_PLAINTEXT, SealedChunk};
use crate::protocol::{AgentId, ChunkHeader, Kind, SessionId, StreamId};
use crate::protocol::{VERSION_1, VERSION_2};

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
    cipher: Cipher,
    dek_id: crate::protocol::DekId,
}

/// AES-256-GCM by ring (its assembly opens and seals three to five times as fast as the
/// RustCrypto `aes-gcm` crate here: docs/benchmarks.md, "Export in one pass"), with its key
/// schedule zeroed when dropped, which ring itself does not do.
struct Cipher(MaybeUninit<LessSafeKey>);

// Zeroing the key's bytes in place is all its drop has to do: it owns nothing else.
const _: () = assert!(!std::mem::needs_drop::<LessSafeKey>());

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        Cipher(MaybeUninit::new(LessSafeKey::new(key)))
    }

    fn key(&self) -> &LessSafeKey {
        // SAFETY: initialized in `new`, and only zeroed in `drop`.
        unsafe { self.0.assume_init_ref() }
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        self.0.zeroize();
    }
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
            cipher: Cipher::new(&okm),
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
        let mut plain = Zeroizing::new(Vec::new());
        self.open_into(chunk, &mut plain)?;
        Ok(plain)
    }

    /// `open` into `plain`, whatever it held before: a buffer reused from chunk to chunk
    /// costs no allocation (and no fresh pages) per chunk. Empty if the chunk does not open.
    pub fn open_into(
        &self,
        chunk: &SealedChunk,
        plain: &mut Zeroizing<Vec<u8>>,
    ) -> Result<(), OpenError> {
        plain.clear();
        let h = &chunk.header;
        if h.dek_id != self.dek_id {
            return Err(OpenError::WrongDek {
                stream: h.stream,
                seq: h.seq,
                found: h.dek_id,
                expected: self.dek_id,
            });
        }
        let nonce = Nonce::assume_unique_for_key(Self::nonce(h.seq, h.last));
        plain.extend_from_slice(chunk.ciphertext());
        match self
            .cipher
            .key()
            .open_in_place(nonce, Aad::from(chunk.aad()), &mut plain[..])
        {
            Ok(opened) => {
                let len = opened.len();
                plain.truncate(len);
                Ok(())
            }
            Err(_) => {
                plain.clear();
                Err(OpenError::Authentication {
                    stream: h.stream,
                    seq: h.seq,
                })
            }
        }
    }

    fn seal(&self, header: ChunkHeader, plaintext: &[u8]) -> SealedChunk {
        // One buffer, one copy: header (the AAD), then the plaintext encrypted in place, then
        // the tag. `encode` reserves room for the whole chunk.
        let mut bytes = header.encode(plaintext.len() + crate::protocol::chunk::TAG_LEN);
        let aad_len = bytes.len();
        bytes.extend_from_slice(plaintext);
        let nonce = Nonce::assume_unique_for_key(Self::nonce(header.seq, header.last));
        let (aad, body) = bytes.split_at_mut(aad_len);
        let tag = self
            .cipher
            .key()
            .seal_in_place_separate_tag(nonce, Aad::from(&*aad), body)
            .expect("AES-GCM accepts plaintexts within MAX_PLAINTEXT");
        bytes.extend_from_slice(tag.as_ref());
        SealedChunk::from_encoded(header, bytes, aad_len)
    }
}

/// When a signing agent's stream makes a checkpoint: its final chunk, each gap record, and
/// otherwise at least every `every_chunks` chunks or once `every` has passed since the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoints {
    pub every_chunks: u64,
    pub every: std::time::Duration,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints {
            every_chunks: 64,
            every: std::time::Duration::from_secs(10),
        }
    }
}

/// A signing stream's chain state.
struct Signing {
    signer: Arc<AgentSigner>,
    policy: Checkpoints,
    head: [u8; 32],
    since_checkpoint: u64,
    last_checkpoint: std::time::Instant,
}

/// Seals one stream's chunks in order. It owns the sequence counter, so a sequence number is
/// used once: sealing after the final chunk is refused. With a signer (format version 2) it
/// keeps the stream's hash chain and signs checkpoints.
pub struct StreamSealer {
    key: StreamKey,
    agent: AgentId,
    session: SessionId,
    stream: StreamId,
    kind: Kind,
    next_seq: u64,
    finished: bool,
    signing: Option<Signing>,
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
            signing: None,
        }
    }

    /// Seal version-2 chunks signed by `signer`, with checkpoints as `policy` says.
    pub fn signed_by(mut self, signer: Arc<AgentSigner>, policy: Checkpoints) -> Self {
        self.signing = Some(Signing {
            signer,
            policy,
            head: CHAIN_START,
            since_checkpoint: 0,
            last_checkpoint: std::time::Instant::now(),
        });
        self
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The chain head after the last chunk sealed (a signing stream only).
    pub fn chain_head(&self) -> Option<[u8; 32]> {
        self.signing.as_ref().map(|s| s.head)
    }

    /// Set the chain head back to `head` (what `chain_head` said before the chunks about to be
    /// dropped were sealed): the gap record that follows links to the last chunk kept.
    pub fn rewind_chain(&mut self, head: [u8; 32]) {
        if let Some(s) = &mut self.signing {
            s.head = head;
        }
    }

    /// Chunks sealed since the last checkpoint (0 for an unsigned stream).
    pub fn unsigned_chunks(&self) -> u64 {
        self.signing.as_ref().map_or(0, |s| s.since_checkpoint)
    }

    /// True when a signing stream has chunks after its last checkpoint and its interval has
    /// passed: the caller seals an empty checkpoint chunk (`seal(&[], t, false)`) to prove
    /// them while the stream is idle.
    pub fn checkpoint_due(&self) -> bool {
        self.signing.as_ref().is_some_and(|s| {
            s.since_checkpoint > 0 && s.last_checkpoint.elapsed() >= s.policy.every
        })
    }

    /// The version byte and checkpoint flag for the next chunk.
    fn next_form(&self, forced: bool) -> (u8, bool) {
        match &self.signing {
            None => (VERSION_1, false),
            Some(s) => (
                VERSION_2,
                forced
                    || s.since_checkpoint + 1 >= s.policy.every_chunks
                    || s.last_checkpoint.elapsed() >= s.policy.every,
            ),
        }
    }

    /// Extend the chain with `chunk` and sign it if it is a checkpoint.
    fn link(&mut self, chunk: SealedChunk) -> SealedChunk {
        let Some(s) = &mut self.signing else {
            return chunk;
        };
        s.head = chain_next(&s.head, chunk.core());
        if !chunk.header.checkpoint {
            s.since_checkpoint += 1;
            return chunk;
        }
        s.since_checkpoint = 0;
        s.last_checkpoint = std::time::Instant::now();
        // Signing with the agent's in-memory key cannot fail short of a broken key, which
        // `AgentSigner::new` already tried.
        let (scheme, sig) = s
            .signer
            .sign(&checkpoint_message(&s.head))
            .expect("the agent key signed at start-up");
        chunk.with_signature(scheme, &sig)
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
        let (version, checkpoint) = self.next_form(last);
        let header = ChunkHeader {
            version,
            checkpoint,
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
        let chunk = self.key.seal(header, plaintext);
        Ok(self.link(chunk))
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
        let (version, checkpoint) = self.next_form(true);
        let header = ChunkHeader {
            version,
            checkpoint,
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
        let chunk = self.key.seal(header, &gap.encode());
        Ok(self.link(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_ciphers_key_schedule_is_zeroed_when_dropped() {
        const N: usize = std::mem::size_of::<Cipher>();
        let mut c = std::mem::ManuallyDrop::new(Cipher::new(&[0x5a; 32]));
        // SAFETY: dropped once, in place; its memory stays ours (ManuallyDrop, on the stack).
        unsafe { std::ptr::drop_in_place::<Cipher>(&mut *c) };
        // SAFETY: the N bytes `drop` has just written (all zero, or the key if it did not).
        let after = unsafe { std::ptr::read_volatile(std::ptr::from_ref(&*c).cast::<[u8; N]>()) };
        assert_eq!(after, [0u8; N]);
    }

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
