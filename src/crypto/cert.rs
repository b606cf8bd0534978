//! What a certificate says, read without trusting it: its fingerprint, its SPKI pin, the agent
//! id it names, its serial number and validity. Pure functions over DER bytes, shared by the PKI, the
//! transport's pin check, signature checks and the proof of a recording.

use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use crate::protocol::{AgentId, KekId};

/// `sha256:<hex>` of a certificate's DER bytes: how `agent_credential`, `agents list` and the
/// proof of a recording name a certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(cert_der)))
}

/// A pin: SHA-256 of a certificate's SubjectPublicKeyInfo, shown as `sha256:<hex>`.
pub fn spki_pin(cert: &[u8]) -> Result<KekId, String> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| e.to_string())?;
    Ok(KekId(Sha256::digest(&spki).into()))
}

/// The agent id a client certificate carries: its subject common name.
pub fn agent_identity(cert: &[u8]) -> Result<AgentId, String> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| e.to_string())?;
    use x509_cert::ext::pkix::name::DirectoryString;
    match cert.tbs_certificate().subject().common_name() {
        Ok(Some(DirectoryString::Utf8String(s))) => return AgentId::new(s),
        Ok(Some(DirectoryString::PrintableString(s))) => return AgentId::new(s.as_str()),
        Ok(Some(_)) => return Err("common name is not a UTF-8 or printable string".into()),
        Ok(None) => {}
        Err(e) => return Err(e.to_string()),
    }
    Err("certificate has no common name".into())
}

/// A certificate's serial number as lowercase hex.
pub fn serial_hex(cert: &[u8]) -> Result<String, String> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| e.to_string())?;
    Ok(hex::encode(
        cert.tbs_certificate().serial_number().as_bytes(),
    ))
}

/// A certificate's notBefore and notAfter, in microseconds since the epoch.
pub fn validity_us(cert: &[u8]) -> Result<(i64, i64), String> {
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let v = cert.tbs_certificate().validity();
    let us = |t: &x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_micros()).unwrap_or(i64::MAX)
    };
    Ok((us(&v.not_before), us(&v.not_after)))
}
