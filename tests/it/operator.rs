//! What an operator watches and follows, through the real `sealstream` binary at its default
//! log level: a node on PostgreSQL starts without the database's notices in its log, every
//! reason of `sealstream_quic_connections_closed_total` is exported from the start, an agent
//! that closed its connection is logged as closed and a silent one as timed out, a reader
//! reaches an S3 endpoint over plain HTTP with `AWS_ALLOW_HTTP=true` as README says and is told
//! to set it without, and the shipped node example keeps its unauthenticated ops port on
//! loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sealstream::protocol::uplink::CloseCode;

use crate::common::agents::{free_tcp, free_udp, without_node_label};
use crate::common::child::metric;
use crate::common::moto::Moto;
use crate::common::server::{pg_exec, raw_connect};

/// The binary as an operator runs it: no log filter or format of the test's environment.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sealstream"));
    c.env_remove("SEALSTREAM_LOG")
        .env_remove("SEALSTREAM_LOG_FORMAT")
        .env_remove("SEALSTREAM_PASSPHRASE");
    c
}

/// Run `cmd` to its end: (exit code, stdout, stderr).
fn finish(mut cmd: Command) -> (i32, String, String) {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sealstream serve` with its default logging, its stderr in a file; killed when dropped.
struct Node {
    child: Child,
    log: PathBuf,
    ops: SocketAddr,
    quic: SocketAddr,
}

impl Node {
    /// A serve.toml in `dir` (state in `dir/state`) with `extra` lines, started and ready.
    fn start(dir: &Path, log: &str, extra: &str) -> Node {
        let (quic, ops) = (free_udp(), free_tcp());
        let config = dir.join("serve.toml");
        std::fs::write(
            &config,
            format!("listen = \"{quic}\"\nops_listen = \"{ops}\"\ndata_dir = \"state\"\n{extra}\n"),
        )
        .unwrap();
        let log = dir.join(log);
        let child = bin()
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let node = Node {
            child,
            log,
            ops,
            quic,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !node.get("/readyz").starts_with("HTTP/1.1 200") {
            assert!(
                Instant::now() < deadline,
                "the node was not ready within 60 s:\n{}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(self.ops) else {
            return String::new();
        };
        let _ = c.write_all(format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes());
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first log line containing `what`, waiting up to `within` for it.
    fn wait_for_line(&self, what: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log_text().lines().find(|l| l.contains(what)) {
                return Some(l.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as systemd stops it, and wait.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_node_on_postgresql_keeps_the_databases_notices_out_of_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).unwrap();
    let db = format!("sealstream_operator_{}", hex::encode(id));
    pg_exec(&format!("CREATE DATABASE {db}")).await;
    let url = format!("database_url = \"postgres://postgres@127.0.0.1:5432/{db}\"");
    // A new database (the migrations drop triggers "IF EXISTS"), then a second start (the
    // migrations table "IF NOT EXISTS"): PostgreSQL answers both with NOTICEs.
    let first = Node::start(d, "first.log", &url);
    first.stop();
    let second = Node::start(d, "second.log", &url);
    let logs = [
        std::fs::read_to_string(d.join("first.log")).unwrap(),
        second.log_text(),
    ];
    second.stop();
    pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    for log in logs {
        // The default level is on: lifecycle lines are there.
        assert!(log.contains("sealstream serving"), "{log}");
        assert!(log.contains("metadata: PostgreSQL"), "{log}");
        for noise in [
            "NOTICE",
            "does not exist, skipping",
            "already exists, skipping",
        ] {
            assert!(!log.contains(noise), "{noise:?} in the node's log:\n{log}");
        }
    }
}

#[test]
fn every_reason_a_node_closes_connections_for_is_exported_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "serve.log", "");
    let text = without_node_label(&node.get("/metrics"));
    // Dashboards and alerts on superseded connections (agents moving between nodes) have a
    // series to read before the first one happens, like the other reasons.
    for reason in ["superseded", "revoked", "not_current", "disabled"] {
        let series = format!("sealstream_quic_connections_closed_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), 0.0, "{series}");
    }
}

#[tokio::test]
async fn an_agent_that_closes_its_connection_is_logged_as_closed_and_a_silent_one_as_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A short idle timeout, so that an agent the node does not hear from is given up soon.
    let node = Node::start(d, "serve.log", "[limits]\nidle_timeout_ms = 2000");
    let (code, _, err) = finish({
        let mut c = bin();
        c.args(["agents", "enroll", "ts-01", "--config"])
            .arg(d.join("serve.toml"))
            .arg("--out")
            .arg(d.join("ts01"));
        c
    });
    assert_eq!(code, 0, "{err}");
    let pin = sealstream::pki::Pki::open_or_create(&d.join("state"))
        .unwrap()
        .server_pin();
    let (cert, key) = (d.join("ts01/agent.crt"), d.join("ts01/agent.key"));

    // An agent stopping: it closes its connection and waits until the close is sent.
    let (ep, conn) = raw_connect(node.quic, vec![pin], &cert, &key)
        .await
        .unwrap();
    let connected = node.wait_for_line("agent connected", Duration::from_secs(10));
    assert!(connected.is_some(), "{}", node.log_text());
    sealstream::transport::close(&conn, CloseCode::Shutdown, "agent stopping");
    ep.wait_idle().await;
    let line = node
        .wait_for_line("agent disconnected", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no disconnection logged:\n{}", node.log_text()));
    assert!(
        line.contains(r#"closed by the agent: "agent stopping""#),
        "{line}"
    );
    assert!(!line.contains("timed out"), "{line}");

    // An agent the network loses: nothing more heard from it.
    let cut = Arc::new(AtomicBool::new(false));
    let relay = crate::common::faults::relay(node.quic, cut.clone()).await;
    let (_ep, _conn) = raw_connect(relay, vec![pin], &cert, &key).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.log_text().matches("agent connected").count() < 2 {
        assert!(Instant::now() < deadline, "{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cut.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    let silent = loop {
        let log = node.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("agent disconnected"))
            .collect();
        if let [_, second] = lines[..] {
            break second.to_owned();
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        silent.contains("timed out: nothing heard from the agent"),
        "{silent}"
    );
    assert!(!silent.contains("closed by the agent"), "{silent}");
}

#[tokio::test]
async fn a_reader_reaches_s3_over_plain_http_with_aws_allow_http_and_is_told_to_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let bucket = moto.bucket("recordings");
    let location = format!("{bucket}/estate-a");
    // A recording sealed into a directory, then copied into the bucket as a node would write it.
    crate::common::genrsa(d, "keypair.pem", 2048, &["-aes256"]);
    crate::common::pubout(d, "keypair.pem", "publickey.crt", true);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let (code, _, err) = finish({
        let mut c = bin();
        c.current_dir(d)
            .args(["seal", "--kek", "publickey.crt", "--store", "store"])
            .args(["--agent-id", "ts-01"])
            .arg(samples);
        c
    });
    assert_eq!(code, 0, "{err}");
    let store = sealstream::storage::open(&location, &moto.settings()).unwrap();
    let local = d.join("store");
    let mut copied = 0;
    for file in crate::common::walk(&local) {
        let key = file
            .strip_prefix(&local)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = bytes::Bytes::from(std::fs::read(&file).unwrap());
        sealstream::storage::put_new(store.objects.as_ref(), &key.as_str().into(), bytes)
            .await
            .unwrap();
        copied += 1;
    }
    assert!(copied >= 2, "{copied} objects");

    // README's reader command, with only the environment to say where the bucket is.
    let reader = |allow_http: bool| {
        let mut c = bin();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_SHARED_CREDENTIALS_FILE", moto.credentials());
        if allow_http {
            c.env("AWS_ALLOW_HTTP", "true");
        }
        c.args(["verify", "--store", &location]);
        finish(c)
    };
    let (code, out, err) = reader(true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ts-01"), "{out}");

    let (code, out, err) = reader(false);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("AWS_ALLOW_HTTP=true"), "{err}");
    assert!(err.contains(&moto.endpoint), "{err}");
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
}

#[test]
fn the_node_example_keeps_its_unauthenticated_ops_listener_on_loopback() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for example in ["ops/serve-node.toml", "config/serve.toml"] {
        let cfg = sealstream::config::ServeConfig::load(&root.join(example)).unwrap();
        assert!(
            cfg.ops_listen.ip().is_loopback(),
            "{example}: ops_listen {} (/metrics has no authentication)",
            cfg.ops_listen
        );
    }
}
