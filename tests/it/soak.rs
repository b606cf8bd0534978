//! The fault soak (not in CI; `ops/soak.sh` runs it): the fault matrix round after round
//! against one `sealstream serve` process on a private PostgreSQL cluster, with the export
//! checker after every round.
//!
//! Phase A (three quarters of the rounds) keeps one server process alive through every fault
//! that does not kill it — segment writes failing, segment writes slow, the store's disk full,
//! the network cut, PostgreSQL stopped and restarted, an unknown KEK registered late, an agent
//! killed with SIGKILL and drained from its spool — and samples its RSS after each round, so
//! memory growth shows. Phase B kills the server with SIGKILL in the middle of every round.
//!
//! After each round the whole store is exported: nothing tampered or damaged, every stream
//! complete (a killed agent's streams contiguous from 0, without their final chunk), every
//! stored chunk exported exactly once, and every frame the round's agents had acked present
//! byte for byte. Needs root (tmpfs, a cluster run as user postgres) and the failpoints build:
//!
//! `cargo test --release --features failpoints --test it soak:: -- --nocapture`
//! (`SEALSTREAM_SOAK_ROUNDS`, default 200). It exists only in the failpoints build, so the
//! README's `cargo test --workspace` does not run it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::agents::{
    check_sessions, free_tcp, free_udp, http_get, rss_kib, run_agent, spec,
};
use crate::common::faults::{Child, PrivatePg, relay};
use sealstream::agent::AgentReport;
use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::export::{self, Status};
use sealstream::keys::{self, Passphrase, PrivateKeyFile};
use sealstream::metadata::{Metadata, Table};
use sealstream::pki::Pki;
use sealstream::protocol::AgentId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    StoreFailing,
    StoreSlow,
    DiskFull,
    NetworkCut,
    PostgresDown,
    UnknownKek,
    AgentKilled,
    ServerKilled,
}

/// The server logs lifecycle events (connections, refusals) into <data_dir>/server.log.
const SERVER_LOG: &[(&str, &str)] = &[("SEALSTREAM_LOG", "info")];

const PHASE_A: [Fault; 7] = [
    Fault::StoreFailing,
    Fault::StoreSlow,
    Fault::DiskFull,
    Fault::NetworkCut,
    Fault::PostgresDown,
    Fault::UnknownKek,
    Fault::AgentKilled,
];

struct Soak {
    dir: PathBuf,
    store: PathBuf,
    cfg: ServeConfig,
    server: Child,
    pg: PrivatePg,
    pki: Pki,
    /// Every KEK's private key (one per unknown-KEK round, and the first).
    keys: Vec<PrivateKeyFile>,
    kek_pub: PathBuf,
    via: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    /// Agents killed mid-run: their streams end without a final chunk.
    killed: Vec<String>,
    retry_later: u64,
    unknown_kek: u64,
}

fn key(path: &Path) -> PrivateKeyFile {
    keys::load_private_key(path, || {
        Ok(Passphrase::new(crate::common::PASS.as_bytes().to_vec()))
    })
    .unwrap()
}

impl Soak {
    async fn new(dir: &Path) -> Soak {
        let store = dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=768m", "tmpfs"])
            .arg(&store)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "the soak mounts a tmpfs for the store: run it as root"
        );
        let pg = PrivatePg::new(&dir.join("pgbase"));
        crate::common::genrsa(dir, "keypair.pem", 2048, &["-aes256"]);
        let kek_pub = crate::common::pubout(dir, "keypair.pem", "publickey.crt", true);
        let cfg = ServeConfig {
            listen: free_udp(),
            ops_listen: free_tcp(),
            data_dir: dir.join("server"),
            store_dir: Some(store.clone()),
            database_url: pg.url(),
            kek_poll_ms: 100,
            ..ServeConfig::default()
        };
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let config_path = dir.join("serve.toml");
        std::fs::write(
            &config_path,
            format!(
                "listen = \"{}\"\nops_listen = \"{}\"\ndata_dir = \"server\"\nstore_dir = \"store\"\ndatabase_url = \"{}\"\nkek_poll_ms = 100\n[segments]\nmax_age_ms = 30\n[database]\nconnect_timeout_ms = 1000\nacquire_timeout_ms = 1000\n",
                cfg.listen, cfg.ops_listen, cfg.database_url
            ),
        )
        .unwrap();
        let md = Metadata::open(&pg.url(), Path::new("unused"))
            .await
            .unwrap();
        md.insert_kek(
            true,
            true,
            &kek_pub.display().to_string(),
            &dir.join("keypair.pem").display().to_string(),
        )
        .await
        .unwrap();
        drop(md);
        let pki = Pki::open_or_create(&cfg.data_dir).unwrap();
        let mut server = Child {
            cfg: cfg.clone(),
            config_path,
            proc: None,
        };
        server.spawn_with(SERVER_LOG);
        let cut = Arc::new(AtomicBool::new(false));
        let via = relay(cfg.listen, cut.clone()).await;
        let soak = Soak {
            dir: dir.to_owned(),
            store,
            keys: vec![key(&dir.join("keypair.pem"))],
            kek_pub,
            cfg,
            server,
            pg,
            pki,
            via,
            cut,
            killed: Vec::new(),
            retry_later: 0,
            unknown_kek: 0,
        };
        soak.wait_ready().await;
        soak
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
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
            assert!(Instant::now() < deadline, "the server became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn failpoint(&self, mode: &str) {
        let (line, body) = http_get(
            self.cfg.ops_listen,
            &format!("/failpoint/segment_put/{mode}"),
        )
        .await;
        assert!(line.contains(" 200 "), "{line} {body}");
    }

    fn agent(&self, name: &str, kek: &Path) -> AgentConfig {
        let dir = self.dir.join("agents").join(name);
        let files = self
            .pki
            .enroll_agent(&AgentId::new(name).unwrap(), &dir)
            .unwrap();
        AgentConfig {
            server: self.via.to_string(),
            server_pins: vec![self.pki.server_pin().to_string()],
            cert: files.cert,
            key: files.key,
            kek: kek.to_owned(),
            reconnect_ms: 50,
            connect_timeout_ms: 1000,
            idle_timeout_ms: 1500,
            ..AgentConfig::default()
        }
    }

    fn count(&mut self, r: &AgentReport) {
        self.retry_later += r.rejected.get("retry_later").copied().unwrap_or(0);
        self.unknown_kek += r.rejected.get("unknown_kek").copied().unwrap_or(0);
    }

    /// One round with `fault`; returns the reports of the agents that ran to the end.
    async fn round(&mut self, n: usize, fault: Fault) -> Vec<AgentReport> {
        let name = format!("soak-{n}");
        let secs = 4.0;
        let mut kek = self.kek_pub.clone();
        if fault == Fault::UnknownKek {
            let file = format!("kek-{n}.pem");
            crate::common::genrsa(&self.dir, &file, 2048, &["-aes256"]);
            kek = crate::common::pubout(&self.dir, &file, &format!("kek-{n}.crt"), true);
            self.keys.push(key(&self.dir.join(&file)));
        }
        if fault == Fault::AgentKilled {
            self.agent_killed(&name).await;
            return Vec::new();
        }
        let cfg = self.agent(&name, &kek);
        let agent = tokio::spawn(run_agent(cfg, spec(2, secs)));
        let jitter = Duration::from_millis(300 + (n as u64 * 7919) % 900);
        tokio::time::sleep(jitter).await;
        match fault {
            Fault::StoreFailing | Fault::StoreSlow => {
                let mode = if fault == Fault::StoreFailing {
                    "fail-30"
                } else {
                    "sleep-150"
                };
                self.failpoint(mode).await;
                tokio::time::sleep(Duration::from_millis(2000)).await;
                self.failpoint("off").await;
            }
            Fault::DiskFull => {
                let ballast = self.store.join("ballast");
                let free = free_bytes(&self.store);
                let fill = free.saturating_sub(96 * 1024);
                let ok = std::process::Command::new("fallocate")
                    .args(["-l", &fill.to_string()])
                    .arg(&ballast)
                    .status()
                    .unwrap();
                assert!(ok.success(), "fallocate");
                tokio::time::sleep(Duration::from_millis(2000)).await;
                std::fs::remove_file(&ballast).unwrap();
            }
            Fault::NetworkCut => {
                self.cut.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(700)).await;
                self.cut.store(false, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.cut.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2500)).await;
                self.cut.store(false, Ordering::Relaxed);
            }
            Fault::PostgresDown => {
                self.pg.stop();
                tokio::time::sleep(Duration::from_millis(2000)).await;
                self.pg.start();
            }
            Fault::UnknownKek => {
                let md = Metadata::open(&self.pg.url(), Path::new("unused"))
                    .await
                    .unwrap();
                let private = self.dir.join(format!("kek-{n}.pem"));
                md.insert_kek(
                    true,
                    true,
                    &kek.display().to_string(),
                    &private.display().to_string(),
                )
                .await
                .unwrap();
            }
            Fault::ServerKilled => {
                self.server.kill9();
                self.server.spawn_with(SERVER_LOG);
            }
            Fault::AgentKilled => unreachable!("handled above"),
        }
        let report = agent.await.unwrap();
        self.count(&report);
        if fault == Fault::UnknownKek {
            assert!(
                report.rejected.get("unknown_kek").copied().unwrap_or(0) > 0,
                "the KEK was unknown at first: {:?}",
                report.rejected
            );
        }
        vec![report]
    }

    /// An agent process killed with SIGKILL mid-run, then run again with `--drain`, which
    /// sends what its spool kept and exits 0 once all of it is acked.
    async fn agent_killed(&mut self, name: &str) {
        let cfg = self.agent(name, &self.kek_pub.clone());
        let dir = cfg.cert.parent().unwrap().to_owned();
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "server = \"{}\"\nserver_pins = [\"{}\"]\ncert = \"agent.crt\"\nkey = \"agent.key\"\nkek = \"{}\"\nspool_dir = \"spool\"\nspool_sync_ms = 0\nreconnect_ms = 50\n",
                cfg.server,
                cfg.server_pins[0],
                cfg.kek.display()
            ),
        )
        .unwrap();
        let run = |extra: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_sealstream"))
                .args(["agent", "--config"])
                .arg(dir.join("agent.toml"))
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .env("SEALSTREAM_LOG", "warn")
                .spawn()
                .unwrap()
        };
        let mut first = run(&["--users", "2", "--duration", "30", "--frame-size", "8192"]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Cut the network for a moment so chunks pile up unacked in the spool, then kill.
        self.cut.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(600)).await;
        first.kill().unwrap();
        first.wait().unwrap();
        self.cut.store(false, Ordering::Relaxed);
        let drain = run(&["--drain"]);
        let status = tokio::task::spawn_blocking(move || {
            let mut d = drain;
            d.wait()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(status.success(), "--drain delivered the spool and exited 0");
        self.killed.push(name.to_owned());
    }

    /// The checker over the whole store after a round.
    async fn check(&self, reports: &[AgentReport], out: &Path) -> (u64, usize) {
        for r in reports {
            assert_eq!(
                r.unacked, 0,
                "{}: {} chunks never acked",
                r.agent, r.unacked
            );
            assert_eq!(r.duplicate_acks, 0);
        }
        let store = sealstream::storage::open_local(&self.store).unwrap();
        let report = export::export(store.as_ref(), &self.keys, None, out)
            .await
            .unwrap();
        assert!(
            report.damaged_objects.is_empty(),
            "{:?}",
            report.damaged_objects
        );
        for s in &report.streams {
            let killed = self.killed.contains(&s.agent);
            match &s.status {
                Status::Complete => {}
                // Contiguous from 0 (export calls a gap tampering), just no final chunk.
                Status::Incomplete if killed => {}
                other => panic!("stream {s:?}: {other:?}"),
            }
        }
        let md = Metadata::open(&self.pg.url(), Path::new("unused"))
            .await
            .unwrap();
        let stored = md.count(Table::Chunks).await.unwrap() as u64;
        let exported: u64 = report.streams.iter().map(|s| s.chunks).sum();
        assert_eq!(exported, stored, "every stored chunk exported exactly once");
        let frames = check_sessions(out, reports);
        for r in reports {
            let sealed = r.chunks_sealed;
            let theirs: u64 = report
                .streams
                .iter()
                .filter(|s| s.agent == r.agent.as_str())
                .map(|s| s.chunks)
                .sum();
            assert_eq!(
                theirs, sealed,
                "{}: every sealed chunk exported once",
                r.agent
            );
        }
        (stored, frames)
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::process::Command::new("umount")
            .arg(&self.store)
            .status();
    }
}

/// Keeps the soak directory when the test fails, for its logs.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(t) = self.0.take()
        {
            let path = t.keep();
            eprintln!("soak failed: its directory is kept at {}", path.display());
        }
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_matrix_round_after_round_loses_nothing_and_memory_stays_flat() {
    let rounds: usize = std::env::var("SEALSTREAM_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // SEALSTREAM_SOAK_KILLS_ONLY=1: phase B only (server kills). SEALSTREAM_LOG: agent logs
    // into <dir>/agents.log. The directory (server.log, agent logs, the store) is kept on
    // failure and its path printed.
    let phase_a = match std::env::var_os("SEALSTREAM_SOAK_KILLS_ONLY") {
        Some(_) => 0,
        None => rounds * 3 / 4,
    };
    let tmp = tempfile::Builder::new()
        .prefix("sealstream-soak-")
        .tempdir()
        .unwrap();
    println!("soak directory {}", tmp.path().display());
    if std::env::var_os("SEALSTREAM_LOG").is_some() {
        let log = std::fs::File::create(tmp.path().join("agents.log")).unwrap();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SEALSTREAM_LOG"))
            .with_writer(std::sync::Mutex::new(log))
            .with_ansi(false)
            .try_init();
    }
    let keep = KeepOnPanic(Some(tmp));
    let tmp = keep.0.as_ref().unwrap();
    let mut soak = Soak::new(tmp.path()).await;
    let started = Instant::now();
    let mut rss_a: Vec<u64> = Vec::new();
    let mut max_rss_b = 0;
    let mut totals = (0u64, 0usize);
    for n in 0..rounds {
        let fault = if n < phase_a {
            PHASE_A[n % PHASE_A.len()]
        } else {
            Fault::ServerKilled
        };
        let t = Instant::now();
        let reports = soak.round(n, fault).await;
        let out = tmp.path().join("export");
        let (stored, frames) = soak.check(&reports, &out).await;
        std::fs::remove_dir_all(&out).unwrap();
        let rss = rss_kib(
            soak.server
                .proc
                .as_ref()
                .expect("the server runs between rounds")
                .id(),
        );
        if n < phase_a {
            rss_a.push(rss);
        } else {
            max_rss_b = max_rss_b.max(rss);
        }
        totals = (stored, totals.1 + frames);
        println!(
            "round {n:3} {fault:?}: {stored} chunks stored in all, {frames} frames of this round verified, server RSS {rss} KiB, {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    // Memory is flat: the last quarter of phase A (one process throughout) holds no more
    // than its second quarter plus a little (the first quarter warms caches up).
    let quarter = rss_a.len() / 4;
    let early = &rss_a[quarter..2 * quarter];
    let late = &rss_a[rss_a.len() - quarter..];
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len().max(1) as u64;
    println!(
        "soak: {rounds} rounds in {:.0} s ({phase_a} with one server process through every fault, {} with a SIGKILL each); {} chunks stored and exported exactly once, {} acked frames verified, 0 missing, 0 duplicates; retry_later answered {}, unknown_kek {}; phase A server RSS mean of its second quarter {} KiB, of its last quarter {} KiB, max {} KiB; phase B max {max_rss_b} KiB",
        started.elapsed().as_secs_f64(),
        rounds - phase_a,
        totals.0,
        totals.1,
        soak.retry_later,
        soak.unknown_kek,
        mean(early),
        mean(late),
        rss_a.iter().max().unwrap_or(&0),
    );
    assert!(
        soak.retry_later > 0,
        "the store and database faults were felt"
    );
    // Phase A needs two rounds in each quarter to be judged; a run of server kills only
    // (SEALSTREAM_SOAK_KILLS_ONLY) asked not to judge it.
    if phase_a == 0 {
        println!("soak: phase A not run (SEALSTREAM_SOAK_KILLS_ONLY): its memory is not judged");
    } else {
        assert!(
            quarter >= 2,
            "{phase_a} rounds of phase A are too few to judge memory: run at least 11 rounds"
        );
        assert!(
            mean(late) <= mean(early) * 5 / 4 + 32 * 1024,
            "server memory grew: {} KiB early, {} KiB late",
            mean(early),
            mean(late)
        );
    }
    assert!(
        max_rss_b < 1024 * 1024,
        "server memory in phase B stayed under 1 GiB: {max_rss_b} KiB"
    );
}
