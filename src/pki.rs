//! The deployment's PKI: an agent CA that issues one client certificate per agent
//! (`sealstream agents enroll`), the server's own key pair (agents pin its public key), an
//! offline CA and an endpoint's CSR. What a certificate says (fingerprint, SPKI pin, agent id,
//! serial) is read by `crypto::cert`.
//!
//! Files under `<data_dir>/pki/`: `ca.crt`, `ca.key`, `server.crt`, `server.key` (keys 0600).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::crypto::cert::{fingerprint, spki_pin};
use crate::fsutil::write_new;
use crate::protocol::{AgentId, KekId};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("certificate: {0}")]
    Generate(String),
    #[error("agent name: {0}")]
    AgentName(String),
    #[error(
        "this server holds no agent CA key ({0} is absent: the CA is kept offline); enrol with `sealstream agents csr` on the endpoint and `sealstream ca sign` where the CA is"
    )]
    OfflineCa(PathBuf),
}

/// Days an agent certificate is valid by default; renew with `sealstream agents renew`.
pub const DEFAULT_AGENT_DAYS: u32 = 90;

/// Whether the server with this data directory keeps its agent CA offline: `pki/ca.crt`
/// without `pki/ca.key` (it trusts the CA's agents and issues none).
pub fn ca_is_offline(data_dir: &Path) -> bool {
    let dir = data_dir.join("pki");
    dir.join("ca.crt").exists() && !dir.join("ca.key").exists()
}

/// An enrolled agent's credential files and the certificate's registry facts.
pub struct AgentFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub issued: IssuedCert,
}

/// A certificate just issued: PEM texts and what `agent_credential` records of it.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
    /// `sha256:<hex>` of the certificate's DER bytes.
    pub fingerprint: String,
    pub issued_us: i64,
    pub not_after_us: i64,
}

/// The server side of the PKI, loaded (or created on first use) from a data directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: CertificateDer<'static>,
    pub ca_cert_pem: String,
    /// `None` with an offline agent CA (`ca.crt` without `ca.key`).
    ca_key: Option<KeyPair>,
    pub server_cert: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl Pki {
    /// Load the PKI from `data_dir/pki`, creating the CA and server key on first use.
    pub fn open_or_create(data_dir: &Path) -> Result<Self, PkiError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
            path: dir.clone(),
            source,
        })?;
        // An offline agent CA: the server has `ca.crt` only, and issues no agent identity.
        let offline = ca_is_offline(data_dir);
        let (ca_pem, ca_key_pem) = if offline {
            let path = dir.join("ca.crt");
            let pem = std::fs::read_to_string(&path).map_err(|source| PkiError::Io {
                path: path.clone(),
                source,
            })?;
            (pem, None)
        } else {
            let (c, k) = load_or_make(&dir.join("ca.crt"), &dir.join("ca.key"), make_ca)?;
            (c, Some(k))
        };
        let (server_pem, server_key_pem) =
            load_or_make(&dir.join("server.crt"), &dir.join("server.key"), || {
                let key = KeyPair::generate().map_err(gen_err)?;
                let mut params =
                    CertificateParams::new(vec!["sealstream".to_owned(), "localhost".to_owned()])
                        .map_err(gen_err)?;
                params.distinguished_name = dn("sealstream ingest");
                params.not_before = rcgen::date_time_ymd(2024, 1, 1);
                params.not_after = rcgen::date_time_ymd(2124, 1, 1);
                let cert = params.self_signed(&key).map_err(gen_err)?;
                Ok((cert.pem(), key.serialize_pem()))
            })?;
        let invalid = |path: PathBuf| {
            move |e: rcgen::Error| PkiError::Invalid {
                path,
                detail: e.to_string(),
            }
        };
        let ca_key = ca_key_pem
            .map(|k| KeyPair::from_pem(&k).map_err(invalid(dir.join("ca.key"))))
            .transpose()?;
        let server_key =
            KeyPair::from_pem(&server_key_pem).map_err(invalid(dir.join("server.key")))?;
        Ok(Pki {
            ca_cert: pem_cert(&dir.join("ca.crt"), &ca_pem)?,
            ca_cert_pem: ca_pem,
            ca_key,
            server_cert: pem_cert(&dir.join("server.crt"), &server_pem)?,
            server_key_der: server_key.serialize_der(),
            dir,
        })
    }

    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()))
    }

    /// The pin agents must be given for this server.
    pub fn server_pin(&self) -> KekId {
        spki_pin(&self.server_cert).expect("our own certificate parses")
    }

    /// Issue a certificate for agent `name` and write `agent.crt` (0644) and `agent.key`
    /// (0600) into `dir` (created if absent; existing files are never overwritten).
    pub fn enroll_agent(&self, name: &AgentId, dir: &Path) -> Result<AgentFiles, PkiError> {
        self.enroll_agent_for(name, dir, DEFAULT_AGENT_DAYS)
    }

    /// `enroll_agent` with a certificate valid for `days`.
    pub fn enroll_agent_for(
        &self,
        name: &AgentId,
        dir: &Path,
        days: u32,
    ) -> Result<AgentFiles, PkiError> {
        let issued = self.issue_agent_for(name, days)?;
        let io = |path: PathBuf| move |source| PkiError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_owned()))?;
        let (cert, key) = (dir.join("agent.crt"), dir.join("agent.key"));
        write_new(&key, issued.key_pem.as_bytes(), 0o600).map_err(io(key.clone()))?;
        write_new(&cert, issued.cert_pem.as_bytes(), 0o644).map_err(io(cert.clone()))?;
        Ok(AgentFiles { cert, key, issued })
    }

    /// A new key and certificate for agent `name` replacing `agent.crt` and `agent.key` in
    /// `dir` (each written beside and renamed over the old, so a reader sees old or new).
    pub fn renew_agent(
        &self,
        name: &AgentId,
        dir: &Path,
        days: u32,
    ) -> Result<AgentFiles, PkiError> {
        let issued = self.issue_agent_for(name, days)?;
        let io = |path: PathBuf| move |source| PkiError::Io { path, source };
        let (cert, key) = (dir.join("agent.crt"), dir.join("agent.key"));
        for (path, text, mode) in [
            (&key, issued.key_pem.as_bytes(), 0o600),
            (&cert, issued.cert_pem.as_bytes(), 0o644),
        ] {
            let tmp = path.with_extension("renewing");
            let _ = std::fs::remove_file(&tmp);
            write_new(&tmp, text, mode).map_err(io(tmp.clone()))?;
            std::fs::rename(&tmp, path).map_err(io(path.clone()))?;
        }
        Ok(AgentFiles { cert, key, issued })
    }

    /// Issue a client certificate for agent `name`; returns (certificate PEM, key PEM).
    pub fn issue_agent(&self, name: &AgentId) -> Result<(String, String), PkiError> {
        let issued = self.issue_agent_for(name, DEFAULT_AGENT_DAYS)?;
        Ok((issued.cert_pem, issued.key_pem.to_string()))
    }

    /// Issue a client certificate for agent `name` valid for `days` (at least 1).
    pub fn issue_agent_for(&self, name: &AgentId, days: u32) -> Result<IssuedCert, PkiError> {
        let Some(ca_key) = &self.ca_key else {
            return Err(PkiError::OfflineCa(self.dir.join("ca.key")));
        };
        let issuer = Issuer::from_ca_cert_der(&self.ca_cert, ca_key).map_err(gen_err)?;
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        params.distinguished_name = dn(name.as_str());
        let not_after = agent_cert_params(&mut params, days);
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok(IssuedCert {
            fingerprint: fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
            issued_us: micros(time_now()),
            not_after_us: micros(not_after),
        })
    }
}

fn micros(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// An agent certificate's usage, validity (from an hour ago, for `days`) and a random serial;
/// returns its notAfter.
fn agent_cert_params(params: &mut CertificateParams, days: u32) -> time::OffsetDateTime {
    params.is_ca = IsCa::NoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = time_now();
    params.not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(i64::from(days.max(1)));
    params.not_after = not_after;
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).expect("operating system random source failed");
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    not_after
}

/// A new agent CA: (certificate PEM, key PEM).
fn make_ca() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = dn("sealstream agent CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// An agent CA kept away from the ingest servers (`sealstream ca init|sign`): `ca.crt` and
/// `ca.key` in its own directory.
pub struct OfflineCa {
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl OfflineCa {
    /// Make a new CA in `dir` (which must not hold one); returns the certificate's PEM.
    pub fn init(dir: &Path) -> Result<String, PkiError> {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert.exists() || key.exists() {
            return Err(PkiError::Invalid {
                path: dir.to_owned(),
                detail: "already holds an agent CA (ca.crt / ca.key); nothing was changed".into(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (c, _) = load_or_make(&cert, &key, make_ca)?;
        Ok(c)
    }

    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|source| PkiError::Io { path: p, source })
        };
        let cert_pem = read(dir.join("ca.crt"))?;
        let key = KeyPair::from_pem(&read(dir.join("ca.key"))?).map_err(|e| PkiError::Invalid {
            path: dir.join("ca.key"),
            detail: e.to_string(),
        })?;
        Ok(OfflineCa {
            cert: pem_cert(&dir.join("ca.crt"), &cert_pem)?,
            key,
        })
    }

    /// Issue an agent certificate for the key and name in `csr_pem` (from `agents csr`).
    pub fn sign(&self, csr_pem: &str, days: u32) -> Result<IssuedCert, PkiError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Generate(format!("not a certificate signing request: {e}")))?;
        let name = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .and_then(|v| match v {
                rcgen::DnValue::Utf8String(s) => Some(s.clone()),
                rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
                _ => None,
            })
            .ok_or_else(|| PkiError::AgentName("the request has no common name".into()))?;
        let name = AgentId::new(name).map_err(PkiError::AgentName)?;
        // Only the name is taken from the request: usage, validity and serial are the CA's.
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        params.distinguished_name = dn(name.as_str());
        let not_after = agent_cert_params(&mut params, days);
        csr.params = params;
        let issuer = Issuer::from_ca_cert_der(&self.cert, &self.key).map_err(gen_err)?;
        let cert = csr.signed_by(&issuer).map_err(gen_err)?;
        Ok(IssuedCert {
            fingerprint: fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: zeroize::Zeroizing::new(String::new()),
            issued_us: micros(time_now()),
            not_after_us: micros(not_after),
        })
    }
}

/// An agent certificate from the deployment's agent CA, and its key, as `agents config` checked
/// them.
#[derive(Debug)]
pub struct CheckedAgent {
    pub agent: AgentId,
    /// `sha256:<hex>` of the certificate's DER bytes.
    pub fingerprint: String,
    pub serial: String,
    pub not_after_us: i64,
}

/// What an agent certificate's public key is checked against: the agent's private key, or,
/// where the key is not (it never leaves the endpoint), the request `agents csr` made with it.
#[derive(Clone, Copy, Debug)]
pub enum KeyHolder<'a> {
    /// PEM, PKCS#8, as `agents csr` writes agent.key.
    Key(&'a Path),
    /// PEM, agent.csr.
    Request(&'a Path),
}

/// Check that the certificate in `cert` (PEM) was issued by the agent CA in `ca` (its
/// `ca.crt`) for client authentication, is valid now, and holds the public key of `holder`.
/// Reads a key only to compare public keys; nothing is written.
pub fn check_agent_credentials(
    ca: &Path,
    cert: &Path,
    holder: KeyHolder<'_>,
) -> Result<CheckedAgent, PkiError> {
    use rcgen::PublicKeyData;
    use rustls::pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| PkiError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let invalid = |p: &Path, detail: String| PkiError::Invalid {
        path: p.to_owned(),
        detail,
    };
    let anchor = crate::crypto::AgentCa::load(ca).map_err(|e| invalid(ca, e))?;
    let der = CertificateDer::from_pem_slice(read(cert)?.as_bytes())
        .map_err(|e| invalid(cert, format!("not a PEM certificate: {e}")))?;
    let agent = crate::crypto::cert::agent_identity(&der).map_err(|e| invalid(cert, e))?;
    let info = anchor
        .check(&der, &agent, micros(time_now()))
        .map_err(|e| {
            invalid(
                cert,
                format!(
                    "not accepted under the deployment's agent CA {} ({}): {e}",
                    ca.display(),
                    anchor.fingerprint
                ),
            )
        })?;
    let (path, spki) = match holder {
        KeyHolder::Key(key) => {
            let key_pem = zeroize::Zeroizing::new(read(key)?);
            let pair = KeyPair::from_pem(&key_pem)
                .map_err(|e| invalid(key, format!("not a PKCS#8 private key: {e}")))?;
            (key, pair.subject_public_key_info())
        }
        KeyHolder::Request(csr) => {
            let req = rcgen::CertificateSigningRequestParams::from_pem(&read(csr)?)
                .map_err(|e| invalid(csr, format!("not a certificate signing request: {e}")))?;
            (csr, req.public_key.subject_public_key_info())
        }
    };
    let cert_pin = spki_pin(&der).map_err(|e| invalid(cert, e))?;
    if Sha256::digest(spki).as_slice() != cert_pin.0 {
        return Err(invalid(
            path,
            format!(
                "this key does not match {} (the certificate holds another public key): give the agent.key that `agents csr` made with the request, or that request",
                cert.display()
            ),
        ));
    }
    let (_, not_after_us) = crate::crypto::cert::validity_us(&der).map_err(|e| invalid(cert, e))?;
    Ok(CheckedAgent {
        agent,
        fingerprint: info.fingerprint,
        serial: info.serial,
        not_after_us,
    })
}

/// An agent's own key and a certificate signing request for `name` (`sealstream agents
/// csr`): (CSR PEM, key PEM). The key never leaves the endpoint.
pub fn agent_csr(name: &AgentId) -> Result<(String, zeroize::Zeroizing<String>), PkiError> {
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = dn(name.as_str());
    let csr = params.serialize_request(&key).map_err(gen_err)?;
    Ok((
        csr.pem().map_err(gen_err)?,
        zeroize::Zeroizing::new(key.serialize_pem()),
    ))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn gen_err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

fn pem_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Invalid {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Read a certificate and key pair from files, or make them and write them (key 0600).
fn load_or_make(
    cert: &Path,
    key: &Path,
    make: impl FnOnce() -> Result<(String, String), PkiError>,
) -> Result<(String, String), PkiError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io { path, source }
    };
    if cert.exists() {
        let c = std::fs::read_to_string(cert).map_err(io(cert))?;
        let k = std::fs::read_to_string(key).map_err(io(key))?;
        return Ok((c, k));
    }
    let (c, k) = make()?;
    write_new(key, k.as_bytes(), 0o600).map_err(io(key))?;
    write_new(cert, c.as_bytes(), 0o644).map_err(io(cert))?;
    Ok((c, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cert::agent_identity;

    #[test]
    fn the_pki_is_made_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::open_or_create(dir.path()).unwrap();
        let b = Pki::open_or_create(dir.path()).unwrap();
        assert_eq!(a.server_pin(), b.server_pin());
        assert_eq!(a.ca_cert, b.ca_cert);
    }

    #[test]
    fn agent_certificates_carry_the_agent_name() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open_or_create(dir.path()).unwrap();
        let name = AgentId::new("TS-01 Büro").unwrap();
        let (cert_pem, _key) = pki.issue_agent(&name).unwrap();
        let der = pem_cert(Path::new("x"), &cert_pem).unwrap();
        assert_eq!(agent_identity(&der).unwrap(), name);
    }

    #[test]
    fn a_csr_signed_certificate_is_checked_against_the_ca_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        OfflineCa::init(&d.join("ca")).unwrap();
        OfflineCa::init(&d.join("other-ca")).unwrap();
        let name = AgentId::new("ts-01").unwrap();
        let (csr, key) = agent_csr(&name).unwrap();
        let (_, other_key) = agent_csr(&name).unwrap();
        std::fs::write(d.join("agent.key"), key.as_bytes()).unwrap();
        std::fs::write(d.join("other.key"), other_key.as_bytes()).unwrap();
        let ca = OfflineCa::open(&d.join("ca")).unwrap();
        let issued = ca.sign(&csr, 30).unwrap();
        std::fs::write(d.join("agent.crt"), &issued.cert_pem).unwrap();
        let foreign = OfflineCa::open(&d.join("other-ca")).unwrap();
        std::fs::write(
            d.join("foreign.crt"),
            foreign.sign(&csr, 30).unwrap().cert_pem,
        )
        .unwrap();

        let ca_crt = d.join("ca/ca.crt");
        let ok = check_agent_credentials(
            &ca_crt,
            &d.join("agent.crt"),
            KeyHolder::Key(&d.join("agent.key")),
        )
        .unwrap();
        assert_eq!(ok.agent, name);
        assert_eq!(ok.fingerprint, issued.fingerprint);
        assert_eq!(ok.not_after_us / 1_000_000, issued.not_after_us / 1_000_000);
        let der = pem_cert(Path::new("x"), &issued.cert_pem).unwrap();
        assert_eq!(ok.serial, crate::crypto::cert::serial_hex(&der).unwrap());

        std::fs::write(d.join("agent.csr"), &csr).unwrap();
        let by_request = KeyHolder::Request(&d.join("agent.csr"));
        let checked = check_agent_credentials(&ca_crt, &d.join("agent.crt"), by_request).unwrap();
        assert_eq!(checked.fingerprint, issued.fingerprint);
        let (other_csr, _) = agent_csr(&name).unwrap();
        std::fs::write(d.join("other.csr"), other_csr).unwrap();
        let other_request = KeyHolder::Request(&d.join("other.csr"));
        let err = check_agent_credentials(&ca_crt, &d.join("agent.crt"), other_request)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other.csr") && err.contains("does not match"),
            "{err}"
        );
        let err = check_agent_credentials(
            &ca_crt,
            &d.join("agent.crt"),
            KeyHolder::Key(&d.join("other.key")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("other.key") && err.contains("does not match"),
            "{err}"
        );
        let err = check_agent_credentials(
            &ca_crt,
            &d.join("foreign.crt"),
            KeyHolder::Key(&d.join("agent.key")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("foreign.crt")
                && err.contains("not accepted under the deployment's agent CA"),
            "{err}"
        );
    }
}
