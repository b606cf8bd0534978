//! An in-process server for integration tests: a temporary data directory, the embedded
//! SQLite or a fresh PostgreSQL database, an openssl-made KEK, enrolled agents, and a raw
//! protocol client for sending exactly the bytes a test wants.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use sealstream::config::{AgentConfig, Limits, ServeConfig};
use sealstream::pki::Pki;
use sealstream::protocol::uplink::{self, Response};
use sealstream::protocol::{AgentId, KekId};
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
        let pg_db = (backend == Backend::Postgres).then(|| {
            let mut id = [0u8; 6];
            getrandom::fill(&mut id).unwrap();
            format!("sealstream_test_{}", hex::encode(id))
        });
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
        self.server()
            .metadata
            .insert_kek(
                true,
                true,
                &self.kek_pub.display().to_string(),
                &self.kek_priv.display().to_string(),
            )
            .await
            .unwrap();
        self.server().reload_keks().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Enroll agent `name`; its config points at this server with the right pin.
    pub fn enroll(&self, name: &str) -> AgentConfig {
        let pki = Pki::open_or_create(&self.cfg.data_dir).unwrap();
        let files = pki
            .enroll_agent(
                &AgentId::new(name).unwrap(),
                &self.dir.path().join("agents").join(name),
            )
            .unwrap();
        AgentConfig {
            server: self.server().quic_addr.to_string(),
            server_pins: vec![self.server().pin.to_string()],
            cert: files.cert,
            key: files.key,
            kek: self.kek_pub.clone(),
            reconnect_ms: 100,
            ..AgentConfig::default()
        }
    }

    /// A raw stream for agent `name` that has registered its DEK.
    pub async fn registered(
        &self,
        name: &str,
    ) -> (quinn::Endpoint, quinn::Connection, RawStream, Recorder) {
        let cfg = self.enroll(name);
        let (ep, conn) = raw_connect(
            self.server().quic_addr,
            vec![self.server().pin],
            &cfg.cert,
            &cfg.key,
        )
        .await
        .unwrap();
        let kek = sealstream::keys::load_public_key(&self.kek_pub).unwrap();
        let rec = Recorder::new(AgentId::new(name).unwrap(), &kek);
        let mut s = RawStream::open(&conn).await.unwrap();
        s.send(uplink::MSG_DEK, &rec.dek_record().encode())
            .await
            .unwrap();
        assert_eq!(s.response().await.unwrap().outcome, Ok(()));
        (ep, conn, s, rec)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.cfg.store_dir()
    }

    pub fn private_key(&self) -> sealstream::keys::PrivateKeyFile {
        sealstream::keys::load_private_key(&self.kek_priv, || {
            Ok(sealstream::keys::Passphrase::new(PASS.as_bytes().to_vec()))
        })
        .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        if let Some(db) = &self.pg_db {
            pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
        }
    }
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
