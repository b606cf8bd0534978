//! `[console]` in serve.toml: where and how the review console listens.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[console]`: the review console, served by `sealstream serve` or `sealstream console`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Console {
    /// TCP address for HTTPS (plain HTTP is allowed only on a loopback address).
    pub listen: SocketAddr,
    /// PEM certificate chain and private key for HTTPS; both empty: plain HTTP (loopback only).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A login unused this long is forgotten (the page also locks its keys then).
    pub idle_minutes: u64,
    /// Failed logins per user and address before further attempts wait.
    pub max_failed_logins: u32,
    /// A session that had a chunk indexed this recently counts as recording now.
    pub live_window_ms: u64,
    /// The deployment's agent CA certificate (PEM), against which the page checks the agents'
    /// signatures; it must exist when set. Unset: `default_agent_ca`.
    pub agent_ca: Option<PathBuf>,
    /// `<data_dir>/pki/ca.crt`, set at load: used when `agent_ca` is unset and the file exists
    /// when the console starts (else the page says no CA is configured).
    #[serde(skip)]
    pub default_agent_ca: Option<PathBuf>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            listen: "127.0.0.1:8443".parse().expect("valid"),
            tls_cert: None,
            tls_key: None,
            idle_minutes: 15,
            max_failed_logins: 5,
            live_window_ms: 120_000,
            agent_ca: None,
            default_agent_ca: None,
        }
    }
}
