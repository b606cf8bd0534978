//! The data key (DEK): 32 random bytes made in memory, wrapped with the KEK's public key by
//! RSA-OAEP (SHA-256, MGF1-SHA-256, label `sealstream/1 dek`). Zeroized on drop; never
//! printed (its `Debug` shows only the id).

use rsa::{Oaep, PrivateKey, PublicKey, sha2::Sha256};
use zeroize::Zeroizing;

use crate::protocol::{AgentId, DekId, DekRecord, KekId, SessionId};

/// The OAEP label every wrapped DEK carries.
pub const OAEP_LABEL: &[u8] = b"sealstream/1 dek";

pub struct Dek {
    id: DekId,
    key: Zeroizing<[u8; 32]>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    #[error(
        "DEK {dek} is wrapped under KEK {wrapped_under}, but the private key given is KEK {given}"
    )]
    WrongKek {
        dek: DekId,
        wrapped_under: KekId,
        given: KekId,
    },
    #[error("DEK {0}: RSA-OAEP unwrap failed (wrong key or altered record)")]
    Oaep(DekId),
    #[error("DEK {0}: unwrapped key is {1} bytes, expected 32")]
    Length(DekId, usize),
}

impl Dek {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).expect("operating system random source failed");
        Dek {
            id: DekId::random(),
            key,
        }
    }

    /// A key with given bytes: for published test vectors only.
    pub fn from_bytes(id: DekId, key: [u8; 32]) -> Self {
        Dek {
            id,
            key: Zeroizing::new(key),
        }
    }

    pub fn id(&self) -> DekId {
        self.id
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.key
    }

    /// Expose the key bytes: test vectors print them; nothing else should.
    pub fn dangerous_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Wrap under `kek` and describe the result as a DEK record.
    pub fn wrap(
        &self,
        kek: &PublicKey,
        kek_id: KekId,
        agent: AgentId,
        agent_session: SessionId,
        created_us: i64,
    ) -> DekRecord {
        let mut rng = getrandom::SysRng;
        let wrapped = kek
            .encrypt(
                &mut rng,
                Oaep::<Sha256>::new_with_label(OAEP_LABEL),
                self.key.as_ref(),
            )
            .expect("RSA-OAEP of 32 bytes fits every accepted key size");
        DekRecord {
            dek_id: self.id,
            kek_id,
            agent_session,
            created_us,
            agent,
            wrapped,
            signed: None,
        }
    }

    /// Unwrap a DEK record with the KEK's private key (blinded RSA decryption).
    pub fn unwrap(
        record: &DekRecord,
        kek: &PrivateKey,
        kek_id: KekId,
    ) -> Result<Self, UnwrapError> {
        if record.kek_id != kek_id {
            return Err(UnwrapError::WrongKek {
                dek: record.dek_id,
                wrapped_under: record.kek_id,
                given: kek_id,
            });
        }
        let mut rng = getrandom::SysRng;
        let plain = Zeroizing::new(
            kek.decrypt_blinded(
                &mut rng,
                Oaep::<Sha256>::new_with_label(OAEP_LABEL),
                &record.wrapped,
            )
            .map_err(|_| UnwrapError::Oaep(record.dek_id))?,
        );
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| UnwrapError::Length(record.dek_id, plain.len()))?;
        Ok(Dek::from_bytes(record.dek_id, key))
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dek({}, <secret>)", self.id)
    }
}
