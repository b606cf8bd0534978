//! Fault injection: the server killed with SIGKILL at random moments, a failing and slow
//! segment store, a store on a small tmpfs that fills up, the network cut and restored,
//! PostgreSQL stopped and restarted. Each run ends with the checker: every chunk an agent had
//! acked is in the export, byte for byte, nothing twice, and everything is delivered once the
//! fault clears.
//!
//! `SEALSTREAM_FAULT_ROUNDS` sets the number of server kills (20 by default; `ops/soak.sh`
//! runs longer).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::agents::{check, free_tcp, free_udp, rss_kib, run_agent, spec};
use crate::common::faults::{Child, Faulty, PrivatePg, relay};
use crate::common::server::{Env, insert_kek};
use sealstream::agent::spool;
use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::export::{self, Status};
use sealstream::inspect;
use sealstream::metadata::{Metadata, Table};
use sealstream::protocol::{SessionId, StreamId};
use sealstream::storage;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_at_random_moments_loses_nothing_acked() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SEALSTREAM_LOG"))
        .with_test_writer()
        .try_init();
    let rounds: usize = std::env::var("SEALSTREAM_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::genrsa(d, "keypair.pem", 2048, &["-aes256"]);
    let kek_pub = crate::common::pubout(d, "keypair.pem", "publickey.crt", true);
    let mut cfg = ServeConfig {
        listen: free_udp(),
        ops_listen: free_tcp(),
        data_dir: d.join("server"),
        kek_poll_ms: 100,
        ..ServeConfig::default()
    };
    cfg.segments.max_age_ms = 30;
    let config_path = d.join("serve.toml");
    std::fs::write(
        &config_path,
        format!("listen = \"{}\"\nops_listen = \"{}\"\ndata_dir = \"server\"\nkek_poll_ms = 100\n[segments]\nmax_age_ms = 30\n", cfg.listen, cfg.ops_listen),
    )
    .unwrap();
    let md = Metadata::open("", &cfg.sqlite_path()).await.unwrap();
    insert_kek(&md, &kek_pub, &d.join("keypair.pem")).await;
    drop(md);
    let pki = sealstream::pki::Pki::open_or_create(&cfg.data_dir).unwrap();
    let files = pki
        .enroll_agent(&sealstream::protocol::AgentId::new("survivor").unwrap(), d)
        .unwrap();
    let agent_cfg = AgentConfig {
        server: cfg.listen.to_string(),
        server_pins: vec![pki.server_pin().to_string()],
        cert: files.cert,
        key: files.key,
        kek: kek_pub.clone(),
        reconnect_ms: 50,
        connect_timeout_ms: 1000,
        // A killed server cannot tell the agent; the agent notices by its silence.
        idle_timeout_ms: 1200,
        ..AgentConfig::default()
    };
    let mut server = Child {
        cfg: cfg.clone(),
        config_path,
        proc: None,
    };
    server.spawn();
    let agent = tokio::spawn(run_agent(agent_cfg, spec(3, rounds as f64 * 1.25 + 1.0)));
    let mut seed = 0x9e37_79b9_u64;
    let mut max_rss = 0u64;
    for _ in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Long enough for the agent to notice, reconnect and send; random within that.
        tokio::time::sleep(Duration::from_millis(900 + seed % 700)).await;
        if let Some(p) = &server.proc {
            max_rss = max_rss.max(rss_kib(p.id()));
        }
        server.kill9();
        server.spawn();
    }
    let report = agent.await.unwrap();
    assert!(
        max_rss > 0 && max_rss < 512 * 1024,
        "server memory stayed bounded: {max_rss} KiB"
    );
    server.stop();
    assert!(
        report.connects as usize >= rounds / 3,
        "the agent reconnected after the kills: {}",
        report.connects
    );
    let key = sealstream::keys::load_private_key(&d.join("keypair.pem"), || {
        Ok(sealstream::keys::Passphrase::new(
            crate::common::PASS.as_bytes().to_vec(),
        ))
    })
    .unwrap();
    let frames = check(
        &cfg.store_dir(),
        &key,
        std::slice::from_ref(&report),
        &d.join("export"),
    )
    .await;
    let md = Metadata::open("", &cfg.sqlite_path()).await.unwrap();
    assert_eq!(
        md.count(Table::Chunks).await.unwrap() as u64,
        report.chunks_sealed,
        "each chunk indexed once"
    );
    eprintln!(
        "{rounds} SIGKILL rounds, {} reconnects: {} chunks sealed and acked, {frames} frames verified, 0 missing, 0 duplicates, server RSS max {max_rss} KiB",
        report.connects, report.chunks_sealed
    );
}

#[actix_rt::test]
async fn a_failing_and_slow_segment_store_loses_nothing() {
    let mut env = Env::start(crate::common::server::Backend::Sqlite, true).await;
    env.server.take().unwrap().shutdown().await;
    let failed = Arc::new(AtomicU64::new(0));
    let broken = Arc::new(AtomicBool::new(false));
    let faulty = Arc::new(Faulty {
        inner: Arc::new(sealstream::storage::durable::LocalDir::new(
            &env.cfg.store_dir(),
        )),
        fail_every: 3,
        delay: Duration::from_millis(120),
        calls: AtomicU64::new(0),
        failed: failed.clone(),
        broken: broken.clone(),
    });
    env.server = Some(
        sealstream::server::Server::start_with(&env.cfg, Some(faulty))
            .await
            .unwrap(),
    );
    let cfg = env.enroll("stubborn");
    let agent = tokio::spawn(run_agent(cfg, spec(2, 4.0)));
    // An outage of the whole store for a second in the middle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broken.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    broken.store(false, Ordering::Relaxed);
    let report = agent.await.unwrap();
    assert!(failed.load(Ordering::Relaxed) >= 3, "faults were injected");
    assert!(
        report.rejected.get("retry_later").copied().unwrap_or(0) > 0,
        "{:?}",
        report.rejected
    );
    let frames = env.check_export(&[report]).await;
    eprintln!(
        "failing/slow store: {} injected failures, {frames} frames verified",
        failed.load(Ordering::Relaxed)
    );
    env.stop().await;
}

#[actix_rt::test]
async fn a_store_on_a_full_tmpfs_answers_retry_later_and_delivers_once_it_grows() {
    let mut env = Env::start(crate::common::server::Backend::Sqlite, true).await;
    env.server.take().unwrap().shutdown().await;
    let mnt = env.dir.path().join("small-store");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root (as on CI)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    env.cfg.store_dir = Some(mnt.clone());
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    let cfg = env.enroll("filler");
    let mut s = spec(2, 3.0);
    s.frame_size = 64 * 1024;
    s.frame_interval = Duration::from_millis(60);
    let agent = tokio::spawn(run_agent(cfg, s));
    // About 3 MB of frames: the 2 MiB tmpfs fills; then it is given room.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    let report = agent.await.unwrap();
    assert!(
        report.rejected.get("retry_later").copied().unwrap_or(0) > 0,
        "the disk did fill: {:?}",
        report.rejected
    );
    let frames = check(
        &mnt,
        &env.private_key(),
        &[report],
        &env.dir.path().join("export"),
    )
    .await;
    eprintln!("full tmpfs: {frames} frames verified after it grew");
    env.stop().await;
}

#[actix_rt::test]
async fn the_network_cut_and_restored_the_agent_reconnects_by_itself() {
    let env = Env::start(crate::common::server::Backend::Sqlite, true).await;
    let cut = Arc::new(AtomicBool::new(false));
    let via = relay(env.server().quic_addr, cut.clone()).await;
    let mut cfg = env.enroll("roamer");
    cfg.server = via.to_string();
    cfg.idle_timeout_ms = 1500;
    let agent = tokio::spawn(run_agent(cfg, spec(2, 6.0)));
    // A short cut (QUIC rides it out) and a long one (the connection times out; the agent
    // makes a new one by itself).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cut.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    cut.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cut.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    cut.store(false, Ordering::Relaxed);
    let report = agent.await.unwrap();
    assert!(
        report.connects >= 2,
        "reconnected after the long cut: {}",
        report.connects
    );
    let frames = env.check_export(&[report]).await;
    eprintln!("network cuts: {frames} frames verified");
    env.stop().await;
}

#[actix_rt::test]
async fn postgresql_stopped_and_restarted_mid_run_loses_nothing() {
    let mut env = Env::start(crate::common::server::Backend::Sqlite, false).await;
    env.server.take().unwrap().shutdown().await;
    let pg = PrivatePg::new(&env.dir.path().join("pgbase"));
    env.cfg.database_url = pg.url();
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    env.register_kek().await;
    let cfg = env.enroll("patient-pg");
    let agent = tokio::spawn(run_agent(cfg, spec(2, 5.0)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.stop();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    pg.start();
    let report = agent.await.unwrap();
    assert!(
        report.rejected.get("retry_later").copied().unwrap_or(0) > 0,
        "the outage was felt: {:?}",
        report.rejected
    );
    assert_eq!(
        env.server().metadata.count(Table::Chunks).await.unwrap() as u64,
        report.chunks_sealed
    );
    let frames = env.check_export(&[report]).await;
    eprintln!("PostgreSQL restart: {frames} frames verified");
    env.server.take().unwrap().shutdown().await;
    drop(pg); // stop the private cluster before its directory goes
    env.stop().await;
}

/// What a killed agent's spool holds, read from its files without opening the spool (which
/// would recover and rewrite it): per stream, the chunks the ack ledger does not name (to be
/// resent, with their SHA-256) and the highest sequence number spooled.
#[derive(Default)]
struct Spooled {
    unacked: BTreeMap<(SessionId, StreamId), BTreeMap<u64, [u8; 32]>>,
    last_seq: BTreeMap<(SessionId, StreamId), u64>,
    dek_records: usize,
}

fn read_spool(dir: &std::path::Path) -> Spooled {
    let acked = std::fs::read(dir.join("ledger"))
        .map(|b| spool::scan_ledger(&b).acked)
        .unwrap_or_default();
    let mut out = Spooled::default();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "spool") {
            continue;
        }
        let scan = spool::scan_file(&std::fs::read(&path).unwrap());
        out.dek_records += scan.deks.len();
        for c in scan.chunks {
            let h = &c.header;
            let last = out.last_seq.entry((h.session, h.stream)).or_default();
            *last = (*last).max(h.seq);
            if !acked.contains(&(h.session, h.stream, h.seq)) {
                out.unacked
                    .entry((h.session, h.stream))
                    .or_default()
                    .insert(h.seq, Sha256::digest(c.bytes()).into());
            }
        }
    }
    out
}

#[actix_rt::test]
async fn an_agent_killed_mid_run_resends_its_spool_after_restart() {
    let mut env = Env::start(crate::common::server::Backend::Sqlite, true).await;
    let cfg = env.enroll("crashy");
    let dir = env.dir.path().join("crashy-agent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "server = \"{}\"\nserver_pins = [\"{}\"]\ncert = \"{}\"\nkey = \"{}\"\nkek = \"{}\"\nspool_dir = \"spool\"\nspool_sync_ms = 0\nreconnect_ms = 100\n",
            cfg.server,
            cfg.server_pins[0],
            cfg.cert.display(),
            cfg.key.display(),
            cfg.kek.display()
        ),
    )
    .unwrap();
    let agent = |users: &str, secs: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sealstream"))
            .args(["agent", "--config"])
            .arg(dir.join("agent.toml"))
            .args(["--users", users, "--duration", secs, "--frame-size", "8192"])
            .stdout(std::process::Stdio::piped())
            .env("SEALSTREAM_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let mut first = agent("3", "30");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The server goes away; the agent keeps recording into its spool; then it is killed.
    let addr = env.server().quic_addr;
    env.server.take().unwrap().shutdown().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    first.kill().unwrap(); // SIGKILL, mid-run
    first.wait().unwrap();

    // What the killed agent left: read from its spool files and ack ledger, not from what the
    // agent says about them.
    let spooled = read_spool(&dir.join("spool"));
    let unacked: u64 = spooled.unacked.values().map(|c| c.len() as u64).sum();
    assert!(spooled.dek_records > 0, "the spool holds its DEK record");
    assert_eq!(
        spooled.unacked.len(),
        6,
        "each of the 3 users' 2 streams sealed chunks while the server was down: {:?}",
        spooled.unacked.keys().collect::<Vec<_>>()
    );

    env.cfg.listen = addr;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    let stored_at_kill = env.server().metadata.count(Table::Chunks).await.unwrap() as u64;
    assert!(
        stored_at_kill > 0,
        "the killed run had chunks stored before the server went away"
    );

    let second = agent("1", "1");
    let out = tokio::task::spawn_blocking(move || second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 not acked yet"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "spool: {unacked} chunks recovered from the last run"
        )),
        "the agent found the {unacked} unacked chunks its spool holds: {stdout}"
    );
    let left = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "spool")
        })
        .count();
    assert_eq!(left, 0, "every spool file was acked in full and deleted");

    // The store, read without a key: every chunk the killed agent had spooled unacked is there
    // with the same bytes, and each of the killed run's streams holds every number from 0 to
    // the last one it sealed, each once.
    let store = storage::open_local(&env.store_dir()).unwrap();
    let scan = inspect::scan(store.as_ref(), &inspect::Filter::default(), |_| {})
        .await
        .unwrap();
    assert!(scan.damaged.is_empty(), "{:?}", scan.damaged);
    let crashy = sealstream::protocol::AgentId::new("crashy").unwrap();
    for (&(session, stream), last) in &spooled.last_seq {
        let held = scan
            .streams
            .get(&(crashy.clone(), session, stream))
            .unwrap_or_else(|| panic!("stream {session}/{} not in the store", stream.0));
        let seqs: Vec<u64> = held.keys().copied().collect();
        assert_eq!(
            seqs,
            (0..=*last).collect::<Vec<_>>(),
            "stream {session}/{}: every chunk 0..={last} stored",
            stream.0
        );
        for (seq, copies) in held {
            assert_eq!(copies.len(), 1, "{session}/{}/{seq} stored once", stream.0);
        }
        for (seq, digest) in spooled
            .unacked
            .get(&(session, stream))
            .into_iter()
            .flatten()
        {
            assert_eq!(
                &held[seq][0].digest, digest,
                "{session}/{}/{seq}: the spooled bytes were stored",
                stream.0
            );
        }
    }

    // The export: the killed run's streams are authentic and contiguous up to their last
    // spooled chunk (no final chunk: the agent was killed before it could seal one); the second
    // run's user finished normally.
    let out_dir = env.dir.path().join("export");
    let report = export::export(store.as_ref(), &[env.private_key()], None, &out_dir)
        .await
        .unwrap();
    assert!(!report.tampered(), "{report:?}");
    let stored = env.server().metadata.count(Table::Chunks).await.unwrap() as u64;
    let exported: u64 = report.streams.iter().map(|s| s.chunks).sum();
    assert_eq!(exported, stored, "each stored chunk exported exactly once");
    for s in &report.streams {
        let killed = spooled.last_seq.iter().find(|((session, stream), _)| {
            session.to_string() == s.session && stream.0 == s.stream
        });
        match killed {
            Some((_, last)) => {
                assert_eq!(s.status, Status::Incomplete, "{s:?}");
                assert_eq!(s.chunks, last + 1, "{s:?}");
            }
            None => assert_eq!(s.status, Status::Complete, "{s:?}"),
        }
    }
    assert_eq!(
        report.streams.len(),
        6 + 2,
        "3 killed users' and 1 finished user's streams"
    );
    eprintln!(
        "agent SIGKILL: {stored_at_kill} chunks stored at the kill, {unacked} unacked in the spool and all stored after the restart, {stored} stored in all, 0 missing, 0 duplicates"
    );
    env.stop().await;
}

#[actix_rt::test]
async fn a_full_spool_under_drop_oldest_records_gaps_that_export_reports() {
    let mut env = Env::start(crate::common::server::Backend::Sqlite, true).await;
    let mut cfg = env.enroll("squeezed");
    cfg.spool_dir = Some(env.dir.path().join("spool"));
    cfg.spool_max_bytes = 1024 * 1024;
    cfg.spool_full = sealstream::config::SpoolFull::DropOldest;
    cfg.spool_sync_ms = 0;
    cfg.connect_timeout_ms = 500;
    let metrics_addr = free_tcp();
    cfg.metrics_listen = Some(metrics_addr);
    // The server is down while the agent records about 4 MB: its 1 MiB spool overflows.
    let addr = env.server().quic_addr;
    env.server.take().unwrap().shutdown().await;
    let mut s = spec(2, 4.0);
    s.frame_size = 64 * 1024;
    s.frame_size_spread = 0.0;
    s.frame_interval = Duration::from_millis(60);
    let agent = tokio::spawn(run_agent(cfg, s));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The agent's own metrics show the spool filling and the drops.
    let text = crate::common::agents::metrics_text(metrics_addr).await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from the agent's /metrics:\n{text}"))
    };
    assert!(value("sealstream_agent_spool_bytes") > 0.0);
    assert!(value("sealstream_agent_spool_records") > 0.0);
    assert!(value("sealstream_agent_oldest_unacked_age_seconds") > 0.5);
    assert!(value("sealstream_agent_dropped_chunks_total") > 0.0);
    env.cfg.listen = addr;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    let report = agent.await.unwrap();
    assert_eq!(report.unacked, 0);
    assert!(
        report.dropped_chunks > 0 && report.gap_records > 0,
        "the spool overflowed: {report:?}"
    );

    let store = storage::open_local(&env.store_dir()).unwrap();
    let out = env.dir.path().join("export");
    let exported = export::export(store.as_ref(), &[env.private_key()], None, &out)
        .await
        .unwrap();
    assert!(!exported.tampered(), "{exported:?}");
    let gap_chunks: u64 = exported
        .streams
        .iter()
        .flat_map(|s| &s.gaps)
        .map(|g| g.count)
        .sum();
    let gaps = exported
        .streams
        .iter()
        .map(|s| s.gaps.len() as u64)
        .sum::<u64>();
    assert_eq!(
        (gap_chunks, gaps),
        (report.dropped_chunks, report.gap_records),
        "every drop reported as a gap"
    );
    for st in &exported.streams {
        assert_eq!(st.status, Status::Complete, "{st:?}");
        for g in &st.gaps {
            assert!(
                g.first_capture_us <= g.last_capture_us && g.count == g.last_seq - g.first_seq + 1
            );
        }
    }
    // Everything not dropped arrived intact.
    let mut frames = 0;
    for sess in &report.sessions {
        let base = out
            .join(report.agent.dir_name())
            .join(sess.session.to_string())
            .join("frames");
        for (name, digest) in &sess.frames {
            if let Ok(got) = std::fs::read(base.join(name)) {
                assert_eq!(Sha256::digest(&got).as_slice(), digest, "{name}");
                frames += 1;
            }
        }
    }
    assert!(frames > 0);
    eprintln!(
        "drop_oldest: {} chunks dropped as {} gap records, {frames} frames delivered intact",
        report.dropped_chunks, report.gap_records
    );
    env.stop().await;
}
