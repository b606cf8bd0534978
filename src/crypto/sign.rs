//! Agent signatures (format version 2, docs/format.md "Agent signatures"). An agent signs,
//! with the key of its enrolment certificate, its DEK records and checkpoints: each checkpoint
//! signs the head of a hash chain over its stream's chunks, so a KEK holder (who could seal
//! chunks under an unwrapped DEK) or the server operator (who has the public KEK) can neither
//! forge a recording in the agent's name nor alter, reorder or cut a signed part of it.
//!
//! Readers check signatures against the agent CA certificate they pin (`AgentCa`), never
//! against one found in the store.

use std::path::Path;
use std::time::Duration;

use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use sha2::{Digest, Sha256};

use crate::protocol::{AgentId, DekRecord, dek_record::DekSignature};

/// What a DEK record's signature covers, before the record's bytes.
pub const DEK_CONTEXT: &[u8] = b"sealstream/2 dek record";
/// What a checkpoint's signature covers, before the chain head.
pub const CHECKPOINT_CONTEXT: &[u8] = b"sealstream/2 checkpoint";
/// The chain head before a stream's first chunk.
pub const CHAIN_START: [u8; 32] = [0; 32];

/// The schemes an agent signs with (its enrolment key: ECDSA P-256 from `agents enroll` and
/// `agents csr`; P-384 and Ed25519 keys also work).
const SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

/// The next chain head: `SHA-256(previous head || SHA-256(chunk core))`, where the core is
/// the chunk without a checkpoint's signature.
pub fn chain_next(prev: &[u8; 32], core: &[u8]) -> [u8; 32] {
    chain_link(prev, &Sha256::digest(core).into())
}

/// `chain_next` for a core whose SHA-256 is already known (a reader's scan computed it).
pub fn chain_link(prev: &[u8; 32], core_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(core_digest);
    h.finalize().into()
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_message(head: &[u8; 32]) -> Vec<u8> {
    [CHECKPOINT_CONTEXT, head.as_slice()].concat()
}

/// An agent's signing key and certificate.
pub struct AgentSigner {
    signer: Box<dyn rustls::sign::Signer>,
    cert: Vec<u8>,
}

impl std::fmt::Debug for AgentSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSigner")
            .field("scheme", &self.signer.scheme())
            .finish_non_exhaustive()
    }
}

impl AgentSigner {
    /// The signer for `key`, which must be the private key of `cert`.
    pub fn new(cert: &CertificateDer<'_>, key: &PrivateKeyDer<'_>) -> Result<Self, String> {
        let key = rustls::crypto::ring::sign::any_supported_type(key)
            .map_err(|e| format!("the agent key cannot sign: {e}"))?;
        let signer = key.choose_scheme(&SCHEMES).ok_or(
            "the agent key is not ECDSA P-256/P-384 or Ed25519 (enrol again with `agents enroll` or `agents csr`)",
        )?;
        let me = AgentSigner {
            signer,
            cert: cert.to_vec(),
        };
        let probe = b"sealstream key check";
        let (scheme, sig) = me.sign(probe)?;
        verify(&me.cert, scheme, probe, &sig)
            .map_err(|_| "the agent key does not belong to the agent certificate".to_owned())?;
        Ok(me)
    }

    /// The signer for a certificate and key in PEM (as `agents enroll` writes them).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("agent certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("agent key: {e}"))?;
        Self::new(&cert, &key)
    }

    pub fn cert(&self) -> &[u8] {
        &self.cert
    }

    /// Sign `message`; returns the scheme's code and the signature.
    pub fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let sig = self
            .signer
            .sign(message)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok((u16::from(self.signer.scheme()), sig))
    }

    /// Make `record` a version-2 record signed by this agent.
    pub fn sign_dek_record(&self, record: &mut DekRecord) -> Result<(), String> {
        record.signed = None;
        let message = [DEK_CONTEXT, &record.signed_bytes(&self.cert)].concat();
        let (scheme, signature) = self.sign(&message)?;
        record.signed = Some(DekSignature {
            cert: self.cert.clone(),
            scheme,
            signature,
        });
        Ok(())
    }
}

fn algorithm(
    scheme: u16,
) -> Option<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm> {
    match scheme {
        0x0403 => Some(webpki::ring::ECDSA_P256_SHA256),
        0x0503 => Some(webpki::ring::ECDSA_P384_SHA384),
        0x0807 => Some(webpki::ring::ED25519),
        _ => None,
    }
}

/// Why a signature or certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("unknown signature scheme {0:#06x}")]
    UnknownScheme(u16),
    #[error("the certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the certificate was not issued by the pinned agent CA, or was not valid then: {0}")]
    Untrusted(String),
    #[error("the certificate names agent {found:?}, the data names {expected:?}")]
    WrongAgent { found: String, expected: String },
}

/// Check `signature` (scheme `scheme`) over `message` with the public key of `cert` (DER).
pub fn verify(
    cert: &[u8],
    scheme: u16,
    message: &[u8],
    signature: &[u8],
) -> Result<(), ProofError> {
    let alg = algorithm(scheme).ok_or(ProofError::UnknownScheme(scheme))?;
    let der = CertificateDer::from(cert);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| ProofError::BadCertificate(e.to_string()))?;
    ee.verify_signature(alg, message, signature)
        .map_err(|_| ProofError::BadSignature)
}

/// Check a version-2 DEK record's signature against the certificate it carries (not yet
/// whether that certificate is trusted: see `AgentCa::check`).
pub fn verify_dek_record(record: &DekRecord) -> Result<(), ProofError> {
    let Some(s) = &record.signed else {
        return Err(ProofError::BadSignature);
    };
    let message = [DEK_CONTEXT, &record.signed_bytes(&s.cert)].concat();
    verify(&s.cert, s.scheme, &message, &s.signature)
}

/// An agent certificate accepted by the pinned CA.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// `sha256:<hex>` of the certificate's DER (as `agents list` shows it).
    pub fingerprint: String,
    /// The certificate's serial number, hex.
    pub serial: String,
}

/// The algorithms an agent CA may sign agent certificates with (docs/format.md "Agent
/// certificates"): rustls-webpki's, without RSA-PSS.
const CA_SIGNATURE_ALGS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
];

/// A certificate's notBefore and notAfter, in whole seconds since the epoch.
fn validity_seconds(cert: &[u8]) -> Result<(i64, i64), String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let v = cert.tbs_certificate().validity();
    let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    Ok((secs(&v.not_before), secs(&v.not_after)))
}

/// The agent CA certificate a reviewer pins.
pub struct AgentCa {
    der: CertificateDer<'static>,
    /// `sha256:<hex>` of the CA certificate's DER.
    pub fingerprint: String,
}

impl AgentCa {
    /// Read the CA certificate (PEM, as `ca.crt`) from `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_file(path)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        Self::from_der(der).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_der(der: CertificateDer<'static>) -> Result<Self, String> {
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| format!("not a CA certificate: {e}"))?;
        if anchor.name_constraints.is_some() {
            // Name constraints would apply to the agent certificates' names by rules the
            // format does not specify (docs/format.md "Agent certificates").
            return Err("an agent CA certificate with name constraints cannot be pinned".into());
        }
        Ok(AgentCa {
            fingerprint: super::cert::fingerprint(&der),
            der,
        })
    }

    /// Accept `cert` (DER) if this CA issued it for agent `agent`, for client authentication,
    /// and it was valid at `at_us` (microseconds since the epoch): docs/format.md "Agent
    /// certificates", rule by rule.
    pub fn check(&self, cert: &[u8], agent: &AgentId, at_us: i64) -> Result<CertInfo, ProofError> {
        let anchor = webpki::anchor_from_trusted_cert(&self.der)
            .map_err(|e| ProofError::Untrusted(e.to_string()))?;
        let der = CertificateDer::from(cert);
        let ee = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| ProofError::BadCertificate(e.to_string()))?;
        // webpki compares whole seconds (the microseconds cut off); the exact comparison, in
        // microseconds against the certificate's whole seconds, follows.
        let at = UnixTime::since_unix_epoch(Duration::from_micros(at_us.max(0) as u64));
        ee.verify_for_usage(
            CA_SIGNATURE_ALGS,
            &[anchor],
            &[],
            at,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| ProofError::Untrusted(format!("{e:?}")))?;
        let (not_before, not_after) = validity_seconds(cert).map_err(ProofError::BadCertificate)?;
        if i128::from(at_us) < i128::from(not_before) * 1_000_000 {
            return Err(ProofError::Untrusted(format!(
                "CertNotValidYet (at {at_us} us, valid from {not_before} s)"
            )));
        }
        if i128::from(at_us) > i128::from(not_after) * 1_000_000 {
            return Err(ProofError::Untrusted(format!(
                "CertExpired (at {at_us} us, valid until {not_after} s)"
            )));
        }
        let found = super::cert::agent_identity(cert).map_err(ProofError::BadCertificate)?;
        if &found != agent {
            return Err(ProofError::WrongAgent {
                found: found.to_string(),
                expected: agent.to_string(),
            });
        }
        Ok(CertInfo {
            fingerprint: super::cert::fingerprint(cert),
            serial: super::cert::serial_hex(cert).unwrap_or_default(),
        })
    }
}
