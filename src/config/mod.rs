//! Configuration files for `sealstream serve` and `sealstream agent`: serde structs with
//! defaults and `deny_unknown_fields`, validated at start-up. Relative paths are taken relative
//! to the configuration file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod capture;
mod location;
pub use capture::{CaptureConfig, CaptureSource, parse_display};
pub use location::{Location, LocationError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

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

/// PostgreSQL connection pools (ignored for the embedded SQLite file).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// Connections for segment index commits and stream lookups.
    pub index_connections: usize,
    /// Connections kept for the key actor, the KEK registry and the audit log, so key work
    /// never queues behind segment commits.
    pub key_connections: usize,
    /// Longest wait for a free connection before the request is answered `retry_later`.
    pub acquire_timeout_ms: u64,
    /// Connecting to PostgreSQL gives up after this long.
    pub connect_timeout_ms: u64,
    /// PostgreSQL's `statement_timeout` on every connection; 0 leaves the server's setting.
    pub statement_timeout_ms: u64,
}

/// The progress watchdog: a stage (keys, segment writes, index commits) with work waiting and
/// nothing completed for `stall_after_ms` is reported stuck: `/readyz` answers 503, the
/// `sealstream_pipeline_stalled{stage}` gauge is 1, and one log line names the stage.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Watchdog {
    pub stall_after_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout_ms: u64,
    pub connection_receive_window: u64,
    pub stream_receive_window: u64,
    pub max_streams_per_connection: u64,
    /// Chunks accepted but not yet durable, per stream, before the server stops reading it.
    pub max_in_flight_per_stream: usize,
    /// SO_RCVBUF / SO_SNDBUF for the UDP socket (the kernel caps it at net.core.rmem_max).
    pub udp_buffer_bytes: usize,
    /// New DEK records one agent may register per minute (and at once): an agent makes one
    /// per start and per key rotation; more is refused `retry_later`.
    pub dek_records_per_minute: u32,
    /// Handshakes under way from addresses QUIC has not validated; beyond this, new ones get
    /// a stateless Retry (so a spoofed or stalled flood costs no state) and only validated
    /// addresses proceed. Handshakes do not count against `max_connections` until the client
    /// certificate is seen.
    pub max_handshakes: usize,
    /// A handshake not finished by then is dropped.
    pub handshake_timeout_ms: u64,
    /// Bytes of half-received messages one connection may have buffered in the server; more
    /// waits (QUIC flow control then holds the peer back). At least one whole message.
    pub partial_bytes_per_connection: usize,
    /// The same, summed over all connections.
    pub partial_bytes_total: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Segments {
    /// A segment is written when it holds this many bytes...
    pub max_bytes: usize,
    /// ...or when its oldest chunk has waited this long (milliseconds).
    pub max_age_ms: u64,
    /// Store actors (each batches its own segments).
    pub store_actors: usize,
}

/// `[store]`: how an object store URL is reached. Credentials come from the environment and
/// the provider's usual chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, web identity,
/// instance metadata; `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`/`_KEY`), never
/// from this file.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// S3-compatible endpoint (`http://127.0.0.1:9000`, `https://s3.example.net`); empty:
    /// AWS itself, or `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    /// S3 region; empty: `AWS_REGION` or us-east-1.
    pub region: String,
    /// Address buckets as `endpoint/bucket` (path style, most S3-compatible services) or, when
    /// false, as `bucket.endpoint`; unset: path style, unless
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub path_style: Option<bool>,
    /// An AWS shared credentials file to read when `AWS_ACCESS_KEY_ID` is not set; empty:
    /// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials` if present. Without either,
    /// web identity, ECS and instance-metadata credentials are tried.
    pub credentials_file: PathBuf,
    /// Its profile; empty: `AWS_PROFILE`, else `default`.
    pub profile: String,
    /// Send an `x-amz-checksum-sha256` with every upload (S3 buckets with Object Lock default
    /// retention require an integrity checksum on PUT).
    pub checksum_sha256: bool,
    /// Retries of a request that met throttling (429, 503 SlowDown), a 5xx or a timeout, with
    /// exponential backoff; after them the chunks are answered `retry_later`.
    pub retries: usize,
    /// A request and its retries give up after this long (milliseconds).
    pub retry_timeout_ms: u64,
    /// One HTTP request may take this long (milliseconds).
    pub request_timeout_ms: u64,
    /// Segments at least this large are uploaded in parts (multipart upload)...
    pub multipart_threshold_bytes: usize,
    /// ...of this size (S3 needs at least 5 MiB).
    pub multipart_part_bytes: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            endpoint: String::new(),
            region: String::new(),
            path_style: None,
            credentials_file: PathBuf::new(),
            profile: String::new(),
            checksum_sha256: false,
            retries: 4,
            retry_timeout_ms: 15_000,
            request_timeout_ms: 30_000,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            multipart_part_bytes: 8 * 1024 * 1024,
        }
    }
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

impl Default for Database {
    fn default() -> Self {
        Database {
            index_connections: 8,
            key_connections: 2,
            acquire_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            stall_after_ms: 30_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            idle_timeout_ms: 30_000,
            connection_receive_window: 8 * 1024 * 1024,
            stream_receive_window: 2 * 1024 * 1024,
            max_streams_per_connection: 512,
            max_in_flight_per_stream: 64,
            udp_buffer_bytes: 32 * 1024 * 1024,
            dek_records_per_minute: 12,
            max_handshakes: 128,
            handshake_timeout_ms: 5_000,
            partial_bytes_per_connection: 48 * 1024 * 1024,
            partial_bytes_total: 512 * 1024 * 1024,
        }
    }
}

impl Default for Segments {
    fn default() -> Self {
        Segments {
            max_bytes: 8 * 1024 * 1024,
            max_age_ms: 200,
            store_actors: 2,
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

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field, message: &str| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                field,
                message: message.to_owned(),
            })
        };
        if !(self.database_url.is_empty()
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
            || self.database_url.starts_with("host="))
        {
            return bad(
                "database_url",
                "use postgres://user@host/db, or leave it empty for the embedded SQLite file",
            );
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        if let Err(e) = Location::parse(&self.store_location()) {
            return bad("store_url", &e.to_string());
        }
        if self.store.multipart_part_bytes < 5 * 1024 * 1024
            || self.store.multipart_threshold_bytes < self.store.multipart_part_bytes
        {
            return bad(
                "store.multipart_part_bytes",
                "must be at least 5 MiB (S3's smallest part) and at most multipart_threshold_bytes",
            );
        }
        if self.store.retry_timeout_ms == 0 || self.store.request_timeout_ms == 0 {
            return bad(
                "store",
                "retry_timeout_ms and request_timeout_ms must be at least 1",
            );
        }
        if self.node_id.len() > 128 || self.node_id.chars().any(|c| c.is_control()) {
            return bad("node_id", "at most 128 printable characters");
        }
        if let Some(c) = &self.console {
            if c.tls_cert.is_some() != c.tls_key.is_some() {
                return bad("console", "set both tls_cert and tls_key, or neither");
            }
            if c.tls_cert.is_none() && !c.listen.ip().is_loopback() {
                return bad(
                    "console.listen",
                    "plain HTTP is allowed only on a loopback address (the browser needs a secure context for WebCrypto); set tls_cert and tls_key",
                );
            }
            if c.idle_minutes == 0 || c.max_failed_logins == 0 {
                return bad(
                    "console",
                    "idle_minutes and max_failed_logins must be at least 1",
                );
            }
        }
        if self.limits.stream_receive_window < 64 * 1024
            || self.limits.connection_receive_window < self.limits.stream_receive_window
        {
            return bad(
                "limits.stream_receive_window",
                "must be at least 64 KiB and at most connection_receive_window",
            );
        }
        if self.limits.max_handshakes == 0 || self.limits.handshake_timeout_ms == 0 {
            return bad(
                "limits",
                "max_handshakes and handshake_timeout_ms must be at least 1",
            );
        }
        let whole = crate::protocol::uplink::MAX_BODY + 5;
        if self.limits.partial_bytes_per_connection < whole
            || self.limits.partial_bytes_total < self.limits.partial_bytes_per_connection
        {
            return bad(
                "limits.partial_bytes_per_connection",
                "must hold one whole message (16 MiB + 5 bytes) and be at most partial_bytes_total",
            );
        }
        if self.limits.dek_records_per_minute == 0 {
            return bad("limits.dek_records_per_minute", "must be at least 1");
        }
        if self.limits.max_in_flight_per_stream == 0 {
            return bad("limits.max_in_flight_per_stream", "must be at least 1");
        }
        if self.segments.max_bytes < 64 * 1024 || self.segments.max_bytes > 512 * 1024 * 1024 {
            return bad("segments.max_bytes", "must be between 64 KiB and 512 MiB");
        }
        if self.segments.max_age_ms == 0 || self.segments.store_actors == 0 {
            return bad("segments", "max_age_ms and store_actors must be at least 1");
        }
        if self.access_poll_ms == 0 {
            return bad("access_poll_ms", "must be at least 1");
        }
        if self.kek_poll_ms == 0 {
            return bad("kek_poll_ms", "must be at least 1");
        }
        if self.database.index_connections == 0 || self.database.key_connections == 0 {
            return bad(
                "database",
                "index_connections and key_connections must be at least 1",
            );
        }
        if self.database.acquire_timeout_ms == 0 || self.database.connect_timeout_ms == 0 {
            return bad(
                "database",
                "acquire_timeout_ms and connect_timeout_ms must be at least 1",
            );
        }
        if self.watchdog.stall_after_ms < 100 {
            return bad("watchdog.stall_after_ms", "must be at least 100");
        }
        Ok(())
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFull {
    #[default]
    Pause,
    DropOldest,
}

/// `sealstream agent` configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The ingest server's UDP address (`host:port`; a name that resolves to several
    /// addresses gives each of them).
    pub server: String,
    /// More ingest nodes (`host:port` each), tried in turn after `server` when one cannot be
    /// reached or its connection drops. Every node's pin goes in `server_pins`.
    pub servers: Vec<String>,
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

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field, message: String| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                field,
                message,
            })
        };
        if self.addresses().is_empty() {
            return bad(
                "server",
                "give the ingest server's host:port (and more nodes in `servers`)".into(),
            );
        }
        if self.server_pins.is_empty() {
            return bad(
                "server_pins",
                "give at least one pin (`sealstream agents enroll` prints it)".into(),
            );
        }
        for pin in &self.server_pins {
            if crate::protocol::KekId::parse(pin).is_err() {
                return bad(
                    "server_pins",
                    format!("{pin:?} is not sha256: and 64 hex digits"),
                );
            }
        }
        if !self.e2ee && self.server_kek.is_none() {
            return bad(
                "server_kek",
                "e2ee = false needs the server-held KEK's public key".into(),
            );
        }
        if let Some((field, message)) = self.capture.problem() {
            return bad(field, message);
        }
        if self.window == 0 || self.max_unacked_bytes < 1024 * 1024 {
            return bad(
                "window",
                "window >= 1 and max_unacked_bytes >= 1 MiB".into(),
            );
        }
        Ok(())
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

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_example_configurations_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let serve = ServeConfig::load(&root.join("config/serve.toml")).unwrap();
        assert_eq!(serve.store.retries, 4);
        AgentConfig::load(&root.join("config/agent.toml")).unwrap();
        let node = ServeConfig::load(&root.join("ops/serve-node.toml")).unwrap();
        assert_eq!(node.node(), "ingest-1");
        assert_eq!(node.store_location(), "s3://recordings-example/estate-a");
    }

    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn the_shipped_examples_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        ServeConfig::load(&root.join("serve.toml")).unwrap();
        AgentConfig::load(&root.join("agent.toml")).unwrap();
    }

    #[test]
    fn defaults_fill_in_and_paths_are_relative_to_the_file() {
        let (dir, p) = write("data_dir = \"data\"\n[segments]\nmax_age_ms = 50\n");
        let c = ServeConfig::load(&p).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.store_dir(), dir.path().join("data/store"));
        assert_eq!(c.segments.max_age_ms, 50);
        assert_eq!(c.segments.max_bytes, 8 * 1024 * 1024);
        // The console checks signatures against the server's agent CA unless told otherwise.
        let (dir, p) = write("data_dir = \"data\"\n[console]\n");
        let c = ServeConfig::load(&p).unwrap().console.unwrap();
        assert_eq!(c.agent_ca, None);
        assert_eq!(
            c.default_agent_ca.unwrap(),
            dir.path().join("data/pki/ca.crt")
        );
        let (dir, p) = write("[console]\nagent_ca = \"offline/ca.crt\"\n");
        let c = ServeConfig::load(&p).unwrap().console.unwrap();
        assert_eq!(c.agent_ca.unwrap(), dir.path().join("offline/ca.crt"));
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_field() {
        let (_d, p) = write("listen = \"0.0.0.0:1\"\nlisten_port = 3\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("listen_port"), "{e}");
        let (_d, p) = write("database_url = \"mysql://x\"\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("database_url"), "{e}");
        let (_d, p) = write("[console]\nlisten = \"0.0.0.0:8443\"\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("console.listen") && e.contains("loopback"),
            "{e}"
        );
        let (_d, p) = write("[console]\ntls_cert = \"c.pem\"\n");
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("tls_key"), "{e}");
        let (dir, p) = write(
            "[console]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        );
        let c = ServeConfig::load(&p).unwrap().console.unwrap();
        assert_eq!(c.tls_cert.unwrap(), dir.path().join("c.pem"));
        let (_d, p) = write("server_pins = [\"abc\"]\n");
        let e = AgentConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("server_pins"), "{e}");
    }
}
