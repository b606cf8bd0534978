//! A server of the test's own: `sealstream serve` as a child process, so that its `/metrics`
//! counts what this test did and nothing else. (The Prometheus recorder is installed once per
//! process: in-process servers of tests running in parallel in one binary share every
//! counter.) Built like `server::Env` (a temporary data directory, SQLite or a fresh
//! PostgreSQL database, an openssl-made KEK registered before the server starts), with the
//! test's metadata connection beside the server's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::metadata::Metadata;
use sealstream::pki::Pki;
use sealstream::protocol::{DekRecord, KekId};
use sealstream::recorder::Recorder;

use super::agents::{free_tcp, free_udp, http_get, metrics_text};
use super::faults::Child;
use super::server::{
    Backend, RawStream, drop_db, enroll_agent, fresh_db_name, insert_kek, pg_exec, private_key,
    raw_connect, register_dek, registered_stream,
};
use super::{genrsa, pass_file, pubout};

/// Where the child server listens, its pin, and the test's own connection to its metadata
/// database (named as `server::Env::server()` names them, so tests read the same).
pub struct Handle {
    pub quic_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub pin: KekId,
    pub metadata: Metadata,
}

pub struct ChildEnv {
    pub dir: tempfile::TempDir,
    pub cfg: ServeConfig,
    pub kek_pub: PathBuf,
    pub kek_priv: PathBuf,
    pub pg_db: Option<String>,
    handle: Handle,
    child: Child,
}

impl ChildEnv {
    /// A child server with the KEK registered and `settings` (TOML dotted keys and values,
    /// e.g. `("limits.max_handshakes", "8")`) added to its configuration; answers once its
    /// `/readyz` says ready.
    pub async fn start(backend: Backend, settings: &[(&str, &str)]) -> ChildEnv {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        genrsa(d, "keypair.pem", 2048, &["-aes256"]);
        let kek_pub = pubout(d, "keypair.pem", "publickey.crt", true);
        let kek_priv = d.join("keypair.pem");
        // The KEK's passphrase beside it, as an operator keeps it for export.
        pass_file(d);
        let pg_db = (backend == Backend::Postgres).then(fresh_db_name);
        let mut text = format!(
            "listen = \"{}\"\nops_listen = \"{}\"\ndata_dir = \"{}\"\nkek_poll_ms = 100\n\
             segments.max_age_ms = 50\n",
            free_udp(),
            free_tcp(),
            d.join("server").display()
        );
        if let Some(db) = &pg_db {
            pg_exec(&format!("CREATE DATABASE {db}")).await;
            text.push_str(&format!(
                "database_url = \"postgres://postgres@127.0.0.1:5432/{db}\"\n"
            ));
        }
        for (key, value) in settings {
            text.push_str(&format!("{key} = {value}\n"));
        }
        let config_path = d.join("serve.toml");
        std::fs::write(&config_path, &text).unwrap();
        let cfg = ServeConfig::from_text(&config_path, &text).expect("a valid test config");
        // The database, the KEK row and the PKI before the server: it reads them at start.
        let metadata = Metadata::open(&cfg.database_url, &cfg.sqlite_path())
            .await
            .unwrap();
        insert_kek(&metadata, &kek_pub, &kek_priv).await;
        let pin = Pki::open_or_create(&cfg.data_dir).unwrap().server_pin();
        let mut child = Child {
            cfg: cfg.clone(),
            config_path,
            proc: None,
        };
        child.spawn();
        let handle = Handle {
            quic_addr: cfg.listen,
            ops_addr: cfg.ops_listen,
            pin,
            metadata,
        };
        let env = ChildEnv {
            dir,
            cfg,
            kek_pub,
            kek_priv,
            pg_db,
            handle,
            child,
        };
        env.wait_ready().await;
        env
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(self.cfg.ops_listen)
                .await
                .is_ok()
                && http_get(self.cfg.ops_listen, "/readyz")
                    .await
                    .0
                    .contains(" 200 ")
            {
                return;
            }
            let log = self.cfg.data_dir.join("server.log");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child server was not ready within 60 s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn server(&self) -> &Handle {
        &self.handle
    }

    /// Enroll agent `name` (not recorded in the registry, as `server::Env::enroll`); its
    /// config points at this server with the right pin.
    pub fn enroll(&self, name: &str) -> AgentConfig {
        let h = &self.handle;
        enroll_agent(
            &self.cfg.data_dir,
            self.dir.path(),
            h.quic_addr,
            h.pin,
            &self.kek_pub,
            name,
        )
    }

    /// A raw stream for agent `name` that has registered its DEK.
    pub async fn registered(
        &self,
        name: &str,
    ) -> (quinn::Endpoint, quinn::Connection, RawStream, Recorder) {
        let cfg = self.enroll(name);
        registered_stream(self.handle.quic_addr, self.handle.pin, &cfg, name).await
    }

    /// A QUIC connection to this server (pinned) with the certificate and key given.
    pub async fn connect(
        &self,
        cert: &Path,
        key: &Path,
    ) -> Result<(quinn::Endpoint, quinn::Connection), String> {
        raw_connect(self.handle.quic_addr, vec![self.handle.pin], cert, key).await
    }

    /// Connect as enrolled agent `cfg` and register `record` on a new stream.
    pub async fn register_dek(
        &self,
        cfg: &AgentConfig,
        record: &DekRecord,
    ) -> (quinn::Endpoint, quinn::Connection, RawStream) {
        register_dek(self.handle.quic_addr, self.handle.pin, cfg, record).await
    }

    /// This server's `/metrics`, without the `node` label.
    pub async fn metrics(&self) -> String {
        metrics_text(self.handle.ops_addr).await
    }

    /// Scrape until `series` reads `value` (up to 20 s); returns the last scrape, which the
    /// caller checks (so a value never reached fails there, with the whole scrape shown).
    pub async fn wait_metric(&self, series: &str, value: f64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.metrics().await;
            if metric(&text, series) == value || tokio::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.cfg.store_dir()
    }

    pub fn private_key(&self) -> sealstream::keys::PrivateKeyFile {
        private_key(&self.kek_priv)
    }

    /// SIGKILL the server (nothing it holds in memory survives) and start it again on the
    /// same data directory and database; returns once it is ready.
    pub async fn restart(&mut self) {
        self.child.kill9();
        self.child.spawn();
        self.wait_ready().await;
    }

    /// SIGTERM the server and wait for it; drop its PostgreSQL database.
    pub async fn stop(mut self) {
        self.child.stop();
        drop_db(self.pg_db.as_deref()).await;
    }
}

/// The value of exactly `series` (name and labels, as `metrics_text` shows them) in `text`;
/// panics when the series is not there.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let value = l.strip_prefix(series)?.strip_prefix(' ')?;
            Some(value.trim().parse().expect("a number"))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}
