//! Several ingest nodes on one PostgreSQL and one bucket: leases fence an agent's older
//! connection, a second node on SQLite refuses to start, and three nodes (real processes, moto
//! S3) survive two SIGKILLs and a cut from PostgreSQL while 20 agents record, with every acked
//! chunk exported exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sealstream::config::ServeConfig;
use sealstream::metadata::Table;
use sealstream::pki::Pki;
use sealstream::protocol::uplink::{MSG_CHUNK, MSG_DEK, Reject};
use sealstream::protocol::{AgentId, Kind, SessionId, StreamId};
use sealstream::recorder::{FRAMES_STREAM, KEYSTROKES_STREAM, Recorder};
use sealstream::server::Server;

use crate::common::agents::{metrics_text, run_agent, spec};
use crate::common::faults::tcp_relay;
use crate::common::moto::Moto;
use crate::common::nodes::{
    Estate, check_bucket, estate_agent, node_dir, start_all, stop_all, wait_ready, write_node,
};
use crate::common::server::{Backend, Env, RawStream, raw_connect};

/// A second in-process node beside `env`'s: same database, same store.
async fn second_node(env: &Env, name: &str) -> Server {
    let data_dir = env.dir.path().join(name);
    node_dir(&env.cfg.data_dir, &data_dir);
    let cfg = ServeConfig {
        data_dir,
        store_url: env.cfg.store_location(),
        node_id: name.into(),
        ..env.cfg.clone()
    };
    Server::start(&cfg).await.expect("a second node starts")
}

#[actix_rt::test]
async fn an_agent_on_two_nodes_at_once_is_acked_only_by_its_newest_connection() {
    let env = Env::start_tuned(Backend::Postgres, true, |c| c.node_id = "node-a".into()).await;
    let b = second_node(&env, "node-b").await;
    b.reload_keks().await;
    let cfg = env.enroll("vdi-x");
    let kek = sealstream::keys::load_public_key(&env.kek_pub).unwrap();
    let rec = Recorder::new(AgentId::new("vdi-x").unwrap(), &kek);
    let session = SessionId::random();
    let mut sealer = rec.open_stream(session, StreamId(0), Kind::Frame);
    let chunks: Vec<_> = (0..4)
        .map(|i| {
            let name = format!("frame-{i}.png");
            let image = format!("pixels {i}");
            let frame = sealstream::protocol::payload::Frame {
                name: &name,
                image: image.as_bytes(),
            };
            sealer.seal(&frame.encode(), i, i == 3).unwrap()
        })
        .collect();
    let ack = |r: sealstream::protocol::uplink::Response| assert_eq!(r.outcome, Ok(()), "{r:?}");

    // The agent on node A: its DEK and chunk 0 are acked.
    let a = env.server();
    let (_ea, conn_a) = raw_connect(a.quic_addr, vec![a.pin], &cfg.cert, &cfg.key)
        .await
        .unwrap();
    let mut on_a = RawStream::open(&conn_a).await.unwrap();
    on_a.send(MSG_DEK, &rec.dek_record().encode())
        .await
        .unwrap();
    ack(on_a.response().await.unwrap());
    on_a.send(MSG_CHUNK, chunks[0].bytes()).await.unwrap();
    ack(on_a.response().await.unwrap());

    // The same agent connects to node B while A's connection lives: B holds the newer epoch.
    let (_eb, conn_b) = raw_connect(b.quic_addr, vec![b.pin], &cfg.cert, &cfg.key)
        .await
        .unwrap();
    let mut on_b = RawStream::open(&conn_b).await.unwrap();
    on_b.send(MSG_DEK, &rec.dek_record().encode())
        .await
        .unwrap();
    ack(on_b.response().await.unwrap());

    // Node A still accepts chunk 1 by its own state, but cannot commit it: retry_later, and
    // A closes the superseded connection.
    on_a.send(MSG_CHUNK, chunks[1].bytes()).await.unwrap();
    let r = on_a.response().await.unwrap();
    assert_eq!(r.outcome, Err(Reject::RetryLater), "{r:?}");
    let reason = tokio::time::timeout(Duration::from_secs(5), conn_a.closed())
        .await
        .expect("node A closes the superseded connection");
    assert!(reason.to_string().contains("superseded"), "{reason}");
    // Node A's commit indexed nothing: without the fence it would have stored chunk 1 and
    // moved the stream on (next_seq 2) behind node B's back.
    let md = &env.server().metadata;
    let agent = AgentId::new("vdi-x").unwrap();
    let row = md
        .stream(&agent, session, StreamId(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.next_seq, 1, "the superseded node committed nothing");
    assert!(
        md.chunk_digest(&agent, session, StreamId(0), 1)
            .await
            .unwrap()
            .is_none()
    );

    // Node B carries on from chunk 1.
    for c in &chunks[1..] {
        on_b.send(MSG_CHUNK, c.bytes()).await.unwrap();
        ack(on_b.response().await.unwrap());
    }
    assert_eq!(md.count(Table::Chunks).await.unwrap(), 4);
    let row = md
        .stream(&agent, session, StreamId(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.next_seq, row.final_seq), (4, Some(3)));
    let leases = md.leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (
            leases[0].agent.as_str(),
            leases[0].epoch,
            leases[0].node.as_str()
        ),
        ("vdi-x", 2, "node-b")
    );
    // Export reads the store (the uncommitted copy of chunk 1 is identical bytes).
    let report = env.export_all().await;
    assert!(!report.tampered(), "{:?}", report.damaged_objects);
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.streams[0].chunks, 4, "{:?}", report.streams[0]);
    assert_eq!(
        report.streams[0].status,
        sealstream::export::Status::Complete
    );
    b.shutdown().await;
    env.stop().await;
}

#[actix_rt::test]
async fn a_second_node_on_the_embedded_sqlite_refuses_to_start() {
    let env = Env::start(Backend::Sqlite, false).await;
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops_listen: "127.0.0.1:0".parse().unwrap(),
        ..env.cfg.clone()
    };
    let e = Server::start(&cfg)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("another `sealstream serve` is running on this state directory")
            && e.contains("SQLite file serves one ingest node")
            && e.contains("postgres://"),
        "{e}"
    );
    // Through the binary, too: a clear error and a failed exit.
    let path = env.dir.path().join("second.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            env.cfg.data_dir.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealstream"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("SQLite file serves one ingest node"), "{err}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_two_sigkills_and_a_cut_from_postgresql_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let bucket = moto.bucket("estate");
    let store_url = format!("{bucket}/recordings");
    let estate = Estate::create(d, "sealstream_nodes").await;
    let (db, pg, kek_pub, md) = (&estate.db, &estate.pg, &estate.kek_pub, &estate.md);

    // Node 3 reaches PostgreSQL through a relay the test can cut.
    let cut = Arc::new(AtomicBool::new(false));
    let relay = tcp_relay("127.0.0.1:5432".parse().unwrap(), cut.clone()).await;
    let pg3 = format!("postgres://postgres@{relay}/{db}");
    let settings = moto.settings_toml();
    let store = (store_url.as_str(), settings.as_str());
    let n1 = write_node(d, "node-1", pg, store, None);
    let first = d.join("node-1");
    let n2 = write_node(d, "node-2", pg, store, Some(&first));
    let n3 = write_node(d, "node-3", &pg3, store, Some(&first));
    let mut nodes = [n1, n2, n3];
    start_all(&mut nodes).await;

    // 20 agents, spread over the nodes (each lists all three, starting at its own).
    let pki = Pki::open_or_create(&first).unwrap();
    let mut agents = Vec::new();
    for i in 0..20usize {
        let order: Vec<usize> = (0..3).map(|k| (i + k) % 3).collect();
        let cfg = estate_agent(&pki, d, &format!("ts-{i:02}"), &nodes, &order, kek_pub);
        let mut s = spec(1, 22.0);
        s.seed = i as u64;
        agents.push(tokio::spawn(run_agent(cfg, s)));
    }

    // SIGKILL node 1, bring it back; SIGKILL node 2, bring it back; cut node 3 from
    // PostgreSQL for five seconds.
    let log = |what: &str| eprintln!("[{:?}] {what}", std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    log("SIGKILL node-1");
    nodes[0].child.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[0].child.spawn();
    wait_ready(&nodes[0]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    log("SIGKILL node-2");
    nodes[1].child.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[1].child.spawn();
    wait_ready(&nodes[1]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    log("node-3 cut from PostgreSQL");
    cut.store(true, Ordering::SeqCst);
    let mut saw_down = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let m = metrics_text(nodes[2].ops).await;
        if m.lines()
            .any(|l| l.starts_with("sealstream_database_up") && l.ends_with(" 0"))
        {
            saw_down = true;
            break;
        }
    }
    assert!(saw_down, "node-3 reports its database down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    log("node-3 reconnected to PostgreSQL");
    cut.store(false, Ordering::SeqCst);

    let mut reports = Vec::new();
    for a in agents {
        reports.push(a.await.unwrap());
    }
    let moved = reports.iter().filter(|r| r.connects > 1).count();
    assert!(moved >= 10, "agents failed over: {moved} of 20 reconnected");
    let leases = md.leases().await.unwrap();
    assert_eq!(leases.len(), 20);
    assert!(
        leases.iter().any(|l| l.epoch > 1),
        "leases moved between nodes: {leases:?}"
    );
    let frames = check_bucket(&store_url, &moto, d, &reports).await;
    let sealed: u64 = reports.iter().map(|r| r.chunks_sealed).sum();
    // The index agrees with the bucket: every acked chunk indexed once, every stream ended.
    assert_eq!(md.count(Table::Chunks).await.unwrap() as u64, sealed);
    for r in &reports {
        for session in &r.sessions {
            for (stream, kind) in [(FRAMES_STREAM, "frames"), (KEYSTROKES_STREAM, "keystrokes")] {
                let row = md
                    .stream(&r.agent, session.session, stream)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{} {kind}: no stream row", r.agent));
                assert_eq!(
                    row.final_seq.map(|f| f + 1),
                    Some(row.next_seq),
                    "{} {kind}: ended at its final chunk",
                    r.agent
                );
            }
        }
    }
    eprintln!(
        "3 nodes, 20 agents: {sealed} chunks acked and exported exactly once ({frames} frames); {moved} agents reconnected; epochs up to {}",
        leases.iter().map(|l| l.epoch).max().unwrap_or(0)
    );
    stop_all(&mut nodes);
    estate.drop_database().await;
}
