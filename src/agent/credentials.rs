//! The agent's credentials: its certificate and key read from their files, the QUIC client
//! config made from them (made again when a renewal changes them on disk), expiry warnings.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Agent, AgentError};
use crate::config::{AgentConfig, Limits};
use crate::protocol::KekId;
use crate::transport;

/// The QUIC client config and which credential files it was made from, so that a renewed
/// certificate (`sealstream agents renew`) is picked up at the next connection.
pub(super) struct Client {
    pub(super) config: quinn::ClientConfig,
    pub(super) pins: Vec<KekId>,
    pub(super) limits: Limits,
    /// Modification times of (cert, key) when they were read.
    pub(super) stamp: Option<(std::time::SystemTime, std::time::SystemTime)>,
    /// The certificate's notAfter, seconds since the epoch.
    pub(super) not_after: i64,
}

pub(super) fn stamp(
    config: &AgentConfig,
) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&config.cert)?, m(&config.key)?))
}

/// A certificate's notAfter in seconds since the epoch (0 if it cannot be read).
pub(super) fn not_after(cert: &[u8]) -> i64 {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(cert)
        .map(|c| {
            c.tbs_certificate()
                .validity()
                .not_after
                .to_unix_duration()
                .as_secs() as i64
        })
        .unwrap_or(0)
}

/// Warn when the certificate has less than this left.
const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

pub(super) fn check_expiry(path: &std::path::Path, not_after: i64) {
    let left = not_after - crate::crypto::now_us() / 1_000_000;
    if left < EXPIRY_WARNING_SECS {
        tracing::warn!(
            cert = %path.display(),
            days_left = left / 86_400,
            "the agent certificate expires soon (or has): renew it with `sealstream agents renew NAME --dir DIR --config serve.toml`"
        );
    }
}

pub(super) fn read_credentials(
    config: &AgentConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AgentError> {
    let cert_err = |detail: String| AgentError::Credentials {
        path: config.cert.clone(),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| cert_err(format!("cannot read the agent certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err(
            "no certificate in the file (run `sealstream agents enroll`)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| AgentError::Credentials {
        path: config.key.clone(),
        detail: format!("cannot read the agent key: {e}"),
    })?;
    Ok((certs, key))
}

impl Agent {
    /// The client config for the next connection: made again from the credential files when
    /// they changed since they were read (a renewal), else the one in use. A renewal that
    /// cannot be read, or names another agent, is logged and the old files' config kept.
    pub(super) fn client_config(&self) -> quinn::ClientConfig {
        let mut client = self.client.lock().expect("client lock");
        let now = stamp(&self.config);
        if now.is_some() && now != client.stamp {
            let reloaded = read_credentials(&self.config).and_then(|(certs, key)| {
                let who = crate::crypto::cert::agent_identity(&certs[0]).map_err(|detail| {
                    AgentError::Credentials {
                        path: self.config.cert.clone(),
                        detail,
                    }
                })?;
                if who != self.identity {
                    return Err(AgentError::Credentials {
                        path: self.config.cert.clone(),
                        detail: format!(
                            "now names agent {:?}, not {:?}; restart the agent to change its identity",
                            who.as_str(),
                            self.identity.as_str()
                        ),
                    });
                }
                let after = not_after(&certs[0]);
                let config =
                    transport::client_config(client.pins.clone(), certs, key, &client.limits)?;
                Ok((config, after))
            });
            client.stamp = now;
            match reloaded {
                Ok((config, after)) => {
                    tracing::info!(cert = %self.config.cert.display(), "agent certificate changed on disk: using the new one");
                    check_expiry(&self.config.cert, after);
                    client.config = config;
                    client.not_after = after;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent certificate changed on disk but cannot be used; keeping the old one")
                }
            }
        }
        client.config.clone()
    }

    /// The current certificate's notAfter, seconds since the epoch.
    pub(super) fn certificate_not_after(&self) -> i64 {
        self.client.lock().expect("client lock").not_after
    }
}
