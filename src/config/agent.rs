//! `sealstream agent` configuration: its settings, their defaults and loading.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{CaptureConfig, ConfigError, parse, read, resolve};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFull {
    #[default]
    Pause,
    DropOldest,
}

/// The order an agent tries its nodes in (`node_order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeOrder {
    /// An order of its own, from a hash of the agent's name with each node's address: each
    /// node comes first for about 1/n of the agents, and a failed node's agents are spread
    /// over the others.
    #[default]
    Spread,
    /// `server` first, then `servers` as listed (a primary and its standbys).
    Listed,
}

/// `sealstream agent` configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The ingest server's UDP address (`host:port`; a name that resolves to several
    /// addresses gives each of them).
    pub server: String,
    /// More ingest nodes (`host:port` each). Every node's pin goes in `server_pins`.
    pub servers: Vec<String>,
    /// The order the nodes are tried in: when one cannot be reached or its connection drops,
    /// the next in this order is.
    pub node_order: NodeOrder,
    /// While connected to a node later in its order than another, the agent checks every this
    /// many ms (randomized between half and one and a half times) whether an earlier node is
    /// back, and moves there between chunks once every chunk sent has its ack. 0: it stays.
    pub rebalance_ms: u64,
    /// The TLS server name (SNI); the certificate is checked by pin, not by name.
    pub server_name: String,
    /// SHA-256 pins of the server's SubjectPublicKeyInfo: the current one and a backup.
    pub server_pins: Vec<String>,
    /// This agent's certificate and key (from `sealstream agents enroll`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// End-to-end encryption: wrap the DEK under the customer's KEK (`kek`). Off: under the
    /// server-held KEK (`server_kek`), as the how-to's TMENCRYPTION=0.
    pub e2ee: bool,
    pub kek: PathBuf,
    pub server_kek: Option<PathBuf>,
    /// Sealed chunks kept in memory until acked; capture waits when this is full.
    pub max_unacked_bytes: usize,
    /// Chunks sent ahead of their acks on one stream.
    pub window: usize,
    pub reconnect_ms: u64,
    /// A connection attempt not through its handshake by then is abandoned and retried.
    pub connect_timeout_ms: u64,
    /// A connection silent this long (network cut) is dropped and a new one made.
    pub idle_timeout_ms: u64,
    /// Disk spool: every chunk is written here before it is sent and kept until acked, so
    /// an agent crash loses nothing. Unset: chunks wait for their ack in memory only.
    pub spool_dir: Option<PathBuf>,
    /// Spool size cap.
    pub spool_max_bytes: u64,
    /// What a full spool does: `pause` capture until acks free space, or `drop_oldest` (the
    /// oldest stream's unsent backlog, with a gap record the export reports).
    pub spool_full: SpoolFull,
    /// Serve Prometheus metrics (spool bytes, records, oldest unacked age, drops) here.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// fdatasync of the spool at most this often (a process crash loses nothing either way;
    /// a power cut loses at most this much).
    pub spool_sync_ms: u64,
    /// Signed checkpoints (docs/format.md "Agent signatures"): at least every this many
    /// chunks of a stream ...
    pub checkpoint_every_chunks: u64,
    /// ... and, while chunks after the last checkpoint wait, at least this often (an idle
    /// stream gets an empty checkpoint chunk). Final chunks and gap records are always signed.
    pub checkpoint_every_ms: u64,
    /// What is recorded: `[capture]` (docs/capture.md).
    pub capture: CaptureConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server: "127.0.0.1:7443".into(),
            servers: Vec::new(),
            node_order: NodeOrder::Spread,
            rebalance_ms: 30_000,
            server_name: "sealstream".into(),
            server_pins: Vec::new(),
            cert: PathBuf::from("agent.crt"),
            key: PathBuf::from("agent.key"),
            e2ee: true,
            kek: PathBuf::from("kek.pem"),
            server_kek: None,
            max_unacked_bytes: 64 * 1024 * 1024,
            window: 32,
            reconnect_ms: 500,
            connect_timeout_ms: 3000,
            idle_timeout_ms: 5_000,
            spool_dir: None,
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_full: SpoolFull::Pause,
            spool_sync_ms: 100,
            metrics_listen: None,
            checkpoint_every_chunks: 64,
            checkpoint_every_ms: 10_000,
            capture: CaptureConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Every configured ingest node: `server`, then `servers`, without repeats.
    pub fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in std::iter::once(&self.server).chain(&self.servers) {
            let a = a.trim();
            if !a.is_empty() && !out.iter().any(|o| o == a) {
                out.push(a.to_owned());
            }
        }
        out
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_text(path, &read(path)?)
    }

    /// Parse and check a config file's text; `path` names it in errors and anchors its
    /// relative paths.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut cfg: AgentConfig = parse(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.cert = resolve(base, &cfg.cert);
        cfg.key = resolve(base, &cfg.key);
        cfg.kek = resolve(base, &cfg.kek);
        cfg.server_kek = cfg.server_kek.map(|p| resolve(base, &p));
        cfg.spool_dir = cfg.spool_dir.map(|p| resolve(base, &p));
        cfg.capture.pause_file = cfg.capture.pause_file.map(|p| resolve(base, &p));
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The KEK the DEK is wrapped under.
    pub fn wrapping_kek(&self) -> &Path {
        if self.e2ee {
            &self.kek
        } else {
            self.server_kek.as_deref().expect("validated")
        }
    }
}
