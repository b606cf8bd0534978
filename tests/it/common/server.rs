//! An in-process server for integration tests: a temporary data directory, the embedded
//! SQLite or a fresh PostgreSQL database, an openssl-made KEK, enrolled agents, and a raw
//! protocol client for sending exactly the bytes a test wants.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use sealstream::config::{AgentConfig, Limits, ServeConfig};
use sealstream::metadata::Metadata;
use sealstream::pki::Pki;
use sealstream::protocol::uplink::{self, Response};
use sealstream::protocol::{AgentId, DekRecord, KekId};
use sealstream::recorder::Recorder;
use sealstream::server::Server;

use super::{PASS, genrsa, pass_file, pubout};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub cfg: ServeConfig,
    pub server: Option<Server>,
    pub kek_pub: PathBuf,
    pub kek_priv: PathBuf,
    pub pass_file: PathBuf,
    pub pg_db: Option<String>,
}

/// Where the test PostgreSQL is (trust auth on this machine and CI's).
pub fn pg_admin() -> String {
    std::env::var("SEALSTREAM_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

pub async fn pg_exec(sql: &str) {
    let (client, conn) = tokio_postgres::connect(&pg_admin(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (set SEALSTREAM_TEST_PG to point elsewhere)");
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
    drop(client);
    let _ = task.await;
}

impl Env {
    /// A server with the KEK registered (`register_kek`) or not.
    pub async fn start(backend: Backend, register_kek: bool) -> Env {
        Self::start_tuned(backend, register_kek, |_| {}).await
    }

    /// `start` with the configuration adjusted by `tune` before the server starts.
    pub async fn start_tuned(
        backend: Backend,
        register_kek: bool,
        tune: impl FnOnce(&mut ServeConfig),
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        genrsa(d, "keypair.pem", 2048, &["-aes256"]);
        let kek_pub = pubout(d, "keypair.pem", "publickey.crt", true);
        let pass_file = pass_file(d);
        let pg_db = (backend == Backend::Postgres).then(fresh_db_name);
        let mut cfg = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ops_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: d.join("server"),
            kek_poll_ms: 100,
            ..ServeConfig::default()
        };
        cfg.segments.max_age_ms = 50;
        if let Some(db) = &pg_db {
            pg_exec(&format!("CREATE DATABASE {db}")).await;
            cfg.database_url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        }
        tune(&mut cfg);
        let server = Server::start(&cfg).await.expect("server starts");
        let env = Env {
            kek_priv: d.join("keypair.pem"),
            dir,
            cfg,
            server: Some(server),
            kek_pub,
            pass_file,
            pg_db,
        };
        if register_kek {
            env.register_kek().await;
        }
        env
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// The how-to's `insert into encryption_kek ...`, then an immediate reload.
    pub async fn register_kek(&self) {
        insert_kek(&self.server().metadata, &self.kek_pub, &self.kek_priv).await;
        self.server().reload_keks().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Enroll agent `name`; its config points at this server with the right pin.
    pub fn enroll(&self, name: &str) -> AgentConfig {
        let server = self.server();
        enroll_agent(
            &self.cfg.data_dir,
            self.dir.path(),
            server.quic_addr,
            server.pin,
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
        registered_stream(self.server().quic_addr, self.server().pin, &cfg, name).await
    }

    /// A QUIC connection to this server (pinned) with the certificate and key given.
    pub async fn connect(
        &self,
        cert: &Path,
        key: &Path,
    ) -> Result<(quinn::Endpoint, quinn::Connection), String> {
        raw_connect(self.server().quic_addr, vec![self.server().pin], cert, key).await
    }

    /// Connect as enrolled agent `cfg` and register `record` on a new stream.
    pub async fn register_dek(
        &self,
        cfg: &AgentConfig,
        record: &DekRecord,
    ) -> (quinn::Endpoint, quinn::Connection, RawStream) {
        register_dek(self.server().quic_addr, self.server().pin, cfg, record).await
    }

    pub fn store_dir(&self) -> PathBuf {
        self.cfg.store_dir()
    }

    /// `export` of everything in this server's store with its KEK into the test directory's
    /// `out`.
    pub async fn export_all(&self) -> sealstream::export::Report {
        let store = sealstream::storage::open_local(&self.store_dir()).unwrap();
        let out = self.dir.path().join("out");
        sealstream::export::export(store.as_ref(), &[self.private_key()], None, &out)
            .await
            .unwrap()
    }

    /// `agents::check` of this server's store against `reports`, exported into the test
    /// directory's `export`; returns the frames exported.
    pub async fn check_export(&self, reports: &[sealstream::agent::AgentReport]) -> usize {
        let out = self.dir.path().join("export");
        super::agents::check(&self.store_dir(), &self.private_key(), reports, &out).await
    }

    pub fn private_key(&self) -> sealstream::keys::PrivateKeyFile {
        private_key(&self.kek_priv)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        drop_db(self.pg_db.as_deref()).await;
    }
}

/// The how-to's `insert into encryption_kek ...`: the KEK `kek_pub` registered active (and
/// the one new DEKs go under), its private key at `kek_priv`.
pub async fn insert_kek(md: &Metadata, kek_pub: &Path, kek_priv: &Path) {
    md.insert_kek(
        true,
        true,
        &kek_pub.display().to_string(),
        &kek_priv.display().to_string(),
    )
    .await
    .unwrap();
}

/// A name for a fresh PostgreSQL test database.
pub fn fresh_db_name() -> String {
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).unwrap();
    format!("sealstream_test_{}", hex::encode(id))
}

/// Drop the test database `db`, if there is one.
pub async fn drop_db(db: Option<&str>) {
    if let Some(db) = db {
        pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
}

/// Enroll agent `name` with the agent CA in `data_dir`, its files under `base/agents/<name>`;
/// its config points at the server on `quic_addr` with `pin`, sealing under `kek_pub`.
pub fn enroll_agent(
    data_dir: &Path,
    base: &Path,
    quic_addr: std::net::SocketAddr,
    pin: KekId,
    kek_pub: &Path,
    name: &str,
) -> AgentConfig {
    let pki = Pki::open_or_create(data_dir).unwrap();
    let files = pki
        .enroll_agent(
            &AgentId::new(name).unwrap(),
            &base.join("agents").join(name),
        )
        .unwrap();
    AgentConfig {
        server: quic_addr.to_string(),
        server_pins: vec![pin.to_string()],
        cert: files.cert,
        key: files.key,
        kek: kek_pub.to_path_buf(),
        reconnect_ms: 100,
        ..AgentConfig::default()
    }
}

/// A raw stream of enrolled agent `cfg` (named `name`) to the server on `quic_addr`, that has
/// registered its DEK.
pub async fn registered_stream(
    quic_addr: std::net::SocketAddr,
    pin: KekId,
    cfg: &AgentConfig,
    name: &str,
) -> (quinn::Endpoint, quinn::Connection, RawStream, Recorder) {
    let kek = sealstream::keys::load_public_key(&cfg.kek).unwrap();
    let rec = Recorder::new(AgentId::new(name).unwrap(), &kek);
    let (ep, conn, s) = register_dek(quic_addr, pin, cfg, rec.dek_record()).await;
    (ep, conn, s, rec)
}

/// Connect as enrolled agent `cfg` to the server on `quic_addr` and register `record` on a
/// new stream (answered `Ok`).
pub async fn register_dek(
    quic_addr: std::net::SocketAddr,
    pin: KekId,
    cfg: &AgentConfig,
    record: &DekRecord,
) -> (quinn::Endpoint, quinn::Connection, RawStream) {
    let (ep, conn) = raw_connect(quic_addr, vec![pin], &cfg.cert, &cfg.key)
        .await
        .unwrap();
    let mut s = RawStream::open(&conn).await.unwrap();
    s.send(uplink::MSG_DEK, &record.encode()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    (ep, conn, s)
}

/// The KEK private key at `kek_priv`, opened with the test passphrase.
pub fn private_key(kek_priv: &Path) -> sealstream::keys::PrivateKeyFile {
    sealstream::keys::load_private_key(kek_priv, || {
        Ok(sealstream::keys::Passphrase::new(PASS.as_bytes().to_vec()))
    })
    .unwrap()
}

/// A QUIC connection made with explicit credentials, for sending hand-made messages.
pub async fn raw_connect(
    server: std::net::SocketAddr,
    pins: Vec<KekId>,
    cert: &Path,
    key: &Path,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let client =
        sealstream::transport::client_config(pins, certs, key, &Limits::default()).unwrap();
    let socket =
        sealstream::transport::udp_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
    let ep = sealstream::transport::endpoint(socket, None).unwrap();
    let conn = ep
        .connect_with(client, server, "sealstream")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok((ep, conn))
}

/// Whether the server behind `conn` serves agent `name`: the connection registers a DEK
/// record under the KEK `kek_pub` (`Ok` only when the server answers it `Ok`). A refused
/// connection is closed right after its handshake: `Err` with the reason it was closed with.
pub async fn dek_accepted(
    conn: &quinn::Connection,
    kek_pub: &Path,
    name: &str,
) -> Result<(), String> {
    let kek = sealstream::keys::load_public_key(kek_pub).unwrap();
    let rec = Recorder::new(AgentId::new(name).unwrap(), &kek);
    let answer = async {
        let mut s = RawStream::open(conn).await?;
        s.send(uplink::MSG_DEK, &rec.dek_record().encode()).await?;
        s.response().await
    }
    .await;
    match answer {
        Ok(r) => {
            conn.close(0u32.into(), b"test done");
            match r.outcome {
                Ok(()) => Ok(()),
                Err(_) => Err(format!("the DEK record was refused: {r:?}")),
            }
        }
        Err(e) => match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
                Err(String::from_utf8_lossy(&c.reason).into_owned())
            }
            Ok(other) => Err(other.to_string()),
            Err(_) => Err(format!("no answer to the DEK record ({e}), and not closed")),
        },
    }
}

pub struct RawStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl RawStream {
    pub async fn open(conn: &quinn::Connection) -> Result<Self, String> {
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        Ok(RawStream {
            send,
            recv,
            buf: BytesMut::new(),
        })
    }

    pub async fn send(&mut self, kind: u8, body: &[u8]) -> Result<(), String> {
        let mut out = BytesMut::new();
        uplink::encode_message(kind, body, &mut out);
        self.send.write_all(&out).await.map_err(|e| e.to_string())
    }

    pub async fn send_bytes(&mut self, raw: &[u8]) -> Result<(), String> {
        self.send.write_all(raw).await.map_err(|e| e.to_string())
    }

    pub async fn response(&mut self) -> Result<Response, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = Response::decode(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(r);
            }
            let chunk = tokio::time::timeout_at(deadline, self.recv.read_chunk(65536, true))
                .await
                .map_err(|_| "no response within 10 s".to_string())?
                .map_err(|e| e.to_string())?;
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c.bytes),
                None => return Err("stream finished".into()),
            }
        }
    }
}
