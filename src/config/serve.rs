//! `sealstream serve` configuration: the top-level settings, their defaults, loading, and the
//! values derived from them (store location, node name, SQLite path, ingest threads).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    ConfigError, Console, Database, Limits, Segments, Store, Watchdog, parse, read, resolve,
};

/// `sealstream serve` configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// UDP address for QUIC.
    pub listen: SocketAddr,
    /// TCP address for /metrics, /healthz and /readyz.
    pub ops_listen: SocketAddr,
    /// Holds the agent CA, the server key, the SQLite file and the local store.
    pub data_dir: PathBuf,
    /// `postgres://...` for PostgreSQL; empty for the embedded SQLite file in `data_dir`.
    pub database_url: String,
    /// Local object store directory; default `<data_dir>/store`. `store_url` replaces it.
    pub store_dir: Option<PathBuf>,
    /// Where segments and DEK records go, as a URL: a local directory (a path or `file://`),
    /// `s3://bucket/prefix` (any S3-compatible service), `gs://bucket/prefix` or
    /// `az://container/prefix`. Empty: `store_dir`. `[store]` holds the endpoint and retries.
    pub store_url: String,
    pub store: Store,
    /// This node's name in lease rows, logs and metrics (`node` label); default: the host
    /// name and the QUIC port. Nodes sharing one PostgreSQL need distinct names.
    pub node_id: String,
    /// How often the key actor re-reads `encryption_kek`, in milliseconds.
    pub kek_poll_ms: u64,
    /// How often the server signs the audit chain's head when it moved (a checkpoint in the
    /// store under v1/audit/ and in `<data_dir>/audit/`).
    pub audit_checkpoint_ms: u64,
    /// Run `sealstream verify` over the store in the background this often, checking
    /// signatures against this server's agent CA, and export the outcome as metrics
    /// (`sealstream_store_verify_*`). 0 (the default): never.
    pub verify_interval_ms: u64,
    /// How often agent_credential/agent_account are read again (revocations, disables), in
    /// milliseconds; connections they now refuse are closed then.
    pub access_poll_ms: u64,
    /// Threads running connection actors; 0 means one per core.
    pub ingest_threads: usize,
    pub limits: Limits,
    pub segments: Segments,
    pub database: Database,
    pub watchdog: Watchdog,
    /// The review console (HTTPS); absent: `serve` runs no console.
    pub console: Option<Console>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "0.0.0.0:7443".parse().expect("valid"),
            ops_listen: "127.0.0.1:9464".parse().expect("valid"),
            data_dir: PathBuf::from("/var/lib/sealstream"),
            database_url: String::new(),
            store_dir: None,
            store_url: String::new(),
            store: Store::default(),
            node_id: String::new(),
            kek_poll_ms: 1000,
            audit_checkpoint_ms: 60_000,
            verify_interval_ms: 0,
            access_poll_ms: 2000,
            ingest_threads: 0,
            limits: Limits::default(),
            segments: Segments::default(),
            database: Database::default(),
            watchdog: Watchdog::default(),
            console: None,
        }
    }
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_text(path, &read(path)?)
    }

    /// Parse and check a config file's text; `path` names it in errors and anchors its
    /// relative paths.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut cfg: ServeConfig = parse(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data_dir = resolve(base, &cfg.data_dir);
        cfg.store_dir = cfg.store_dir.map(|p| resolve(base, &p));
        if !cfg.store.credentials_file.as_os_str().is_empty() {
            cfg.store.credentials_file = resolve(base, &cfg.store.credentials_file);
        }
        if !cfg.store_url.is_empty() && !cfg.store_url.contains("://") {
            cfg.store_url = resolve(base, Path::new(&cfg.store_url))
                .display()
                .to_string();
        }
        if let Some(c) = &mut cfg.console {
            c.tls_cert = c.tls_cert.as_ref().map(|p| resolve(base, p));
            c.tls_key = c.tls_key.as_ref().map(|p| resolve(base, p));
            c.agent_ca = c.agent_ca.as_ref().map(|p| resolve(base, p));
            c.default_agent_ca = Some(cfg.data_dir.join("pki").join("ca.crt"));
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.store_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("store"))
    }

    /// The object store as a path or URL: `store_url`, else `store_dir`.
    pub fn store_location(&self) -> String {
        if self.store_url.is_empty() {
            self.store_dir().display().to_string()
        } else {
            self.store_url.clone()
        }
    }

    /// `node_id`, or the host name and QUIC port.
    pub fn node(&self) -> String {
        self.node_on(self.listen.port())
    }

    /// `node`, with the QUIC port actually bound (`listen` may ask for port 0).
    pub fn node_on(&self, port: u16) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "sealstream".into());
        format!("{host}:{port}")
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("sealstream.db")
    }

    pub fn ingest_threads(&self) -> usize {
        if self.ingest_threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.ingest_threads
        }
    }
}
