//! The DEK record: a data key wrapped under a KEK, with what it belongs to.
//!
//! Layout (big-endian; docs/format.md "DEK record"):
//! `"SSDK" | version u8 | suite u8 | dek_id [16] | kek_id [32] | agent_session [16] |
//!  created_us i64 | agent_len u16 | agent [agent_len] | wrapped_len u16 | wrapped [wrapped_len]`
//! Version 2 appends the agent's certificate and signature:
//! `cert_len u16 | cert [cert_len] | scheme u16 | sig_len u16 | sig [sig_len]`, the signature
//! over `"sealstream/2 dek record"` and every byte before `scheme`.

use super::chunk::MAX_SIGNATURE_LEN;
use super::chunk::decode_agent;
use super::ids::{AGENT_ID_MAX_BYTES, AgentId, DekId, KekId, SessionId};
use super::wire::{DecodeError, Reader};
use super::{SUITE_AES256GCM_HKDF_OAEP, VERSION_1, VERSION_2};

pub const MAGIC: &str = "SSDK";
/// RSA-OAEP output is the modulus size: 2048-bit keys give 256 bytes, 4096-bit 512.
pub const MIN_WRAPPED_LEN: usize = 256;
pub const MAX_WRAPPED_LEN: usize = 512;
/// Largest agent certificate (DER) a version-2 record may carry.
pub const MAX_CERT_LEN: usize = 4096;

/// A version-2 record's proof of origin: the agent's certificate (DER) and its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DekSignature {
    pub cert: Vec<u8>,
    pub scheme: u16,
    pub signature: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DekRecord {
    pub dek_id: DekId,
    pub kek_id: KekId,
    /// The agent run that made the key (a fresh id at each agent start-up).
    pub agent_session: SessionId,
    pub created_us: i64,
    pub agent: AgentId,
    /// RSA-OAEP(SHA-256, MGF1-SHA-256, label "sealstream/1 dek") of the 32-byte DEK.
    pub wrapped: Vec<u8>,
    /// Version 2: signed by the agent. `None` is a version-1 (unsigned) record.
    pub signed: Option<DekSignature>,
}

impl DekRecord {
    pub fn encode(&self) -> Vec<u8> {
        match &self.signed {
            None => self.encode_unsigned(VERSION_1),
            Some(s) => {
                let mut out = self.signed_bytes(&s.cert);
                out.extend_from_slice(&s.scheme.to_be_bytes());
                out.extend_from_slice(&(s.signature.len() as u16).to_be_bytes());
                out.extend_from_slice(&s.signature);
                out
            }
        }
    }

    /// The bytes a version-2 record's signature covers (after the context string): the record
    /// up to and including `cert`.
    pub fn signed_bytes(&self, cert: &[u8]) -> Vec<u8> {
        let mut out = self.encode_unsigned(VERSION_2);
        out.extend_from_slice(&(cert.len() as u16).to_be_bytes());
        out.extend_from_slice(cert);
        out
    }

    fn encode_unsigned(&self, version: u8) -> Vec<u8> {
        let agent = self.agent.as_str().as_bytes();
        let mut out = Vec::with_capacity(82 + agent.len() + self.wrapped.len());
        out.extend_from_slice(MAGIC.as_bytes());
        out.push(version);
        out.push(SUITE_AES256GCM_HKDF_OAEP);
        out.extend_from_slice(&self.dek_id.0);
        out.extend_from_slice(&self.kek_id.0);
        out.extend_from_slice(&self.agent_session.0);
        out.extend_from_slice(&self.created_us.to_be_bytes());
        out.extend_from_slice(&(agent.len() as u16).to_be_bytes());
        out.extend_from_slice(agent);
        out.extend_from_slice(&(self.wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("DEK record", buf);
        r.magic(MAGIC)?;
        let version = r.version(&[VERSION_1, VERSION_2], "1 and 2")?;
        r.suite()?;
        let dek_id = DekId(r.array()?);
        let kek_id = KekId(r.array()?);
        let agent_session = SessionId(r.array()?);
        let created_us = r.i64()?;
        let agent_len = r.u16()?;
        let agent_len = r.bounded("agent_len", agent_len.into(), 1, AGENT_ID_MAX_BYTES as u64)?;
        let agent = decode_agent("DEK record", r.bytes(agent_len)?)?;
        let wrapped_len = r.u16()?;
        let wrapped_len = r.bounded(
            "wrapped_len",
            wrapped_len.into(),
            MIN_WRAPPED_LEN as u64,
            MAX_WRAPPED_LEN as u64,
        )?;
        let wrapped = r.bytes(wrapped_len)?.to_vec();
        let signed = if version == VERSION_2 {
            let cert_len = r.u16()?;
            let cert_len = r.bounded("cert_len", cert_len.into(), 1, MAX_CERT_LEN as u64)?;
            let cert = r.bytes(cert_len)?.to_vec();
            let scheme = r.u16()?;
            let sig_len = r.u16()?;
            let sig_len = r.bounded("sig_len", sig_len.into(), 1, MAX_SIGNATURE_LEN as u64)?;
            let signature = r.bytes(sig_len)?.to_vec();
            Some(DekSignature {
                cert,
                scheme,
                signature,
            })
        } else {
            None
        };
        r.finish()?;
        Ok(DekRecord {
            dek_id,
            kek_id,
            agent_session,
            created_us,
            agent,
            wrapped,
            signed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> DekRecord {
        DekRecord {
            dek_id: DekId([1; 16]),
            kek_id: KekId([2; 32]),
            agent_session: SessionId([3; 16]),
            created_us: 5,
            agent: AgentId::new("vdi-007").unwrap(),
            wrapped: vec![9; 256],
            signed: None,
        }
    }

    #[test]
    fn round_trips() {
        let r = record();
        assert_eq!(DekRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn refuses_trailing_bytes_and_short_wraps() {
        let mut b = record().encode();
        b.push(0);
        assert!(matches!(
            DekRecord::decode(&b),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
        let short = DekRecord {
            wrapped: vec![0; 128],
            ..record()
        };
        assert!(matches!(
            DekRecord::decode(&short.encode()),
            Err(DecodeError::OutOfRange {
                field: "wrapped_len",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = DekRecord::decode(&bytes);
        }

        #[test]
        fn every_prefix_is_refused(cut in 0usize..340) {
            let b = record().encode();
            let cut = cut % b.len();
            prop_assert!(DekRecord::decode(&b[..cut]).is_err());
        }
    }
}
