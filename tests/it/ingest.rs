//! The ingest service end to end: real QUIC on loopback, real PostgreSQL and the SQLite
//! default, openssl-made KEKs, enrolled agents, export with the passphrase.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::agents::{check, http_get, run_agent, spec};
use crate::common::server::{Backend, Env, RawStream, raw_connect};
use sealstream::agent::{self, AgentReport, Source, synthetic};
use sealstream::crypto::Dek;
use sealstream::export;
use sealstream::keys;
use sealstream::metadata::Table;
use sealstream::protocol::uplink::{MSG_CHUNK, MSG_DEK, Reject, Response};
use sealstream::protocol::{AgentId, Kind, Segment, SessionId, StreamId};
use sealstream::recorder::Recorder;
use sealstream::storage::{self, paths};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No file under `dir` holds the canary.
fn assert_no_plaintext(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert_no_plaintext(&p);
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !contains(&bytes, synthetic::CANARY.as_bytes()),
                "plaintext in {}",
                p.display()
            );
        }
    }
}

async fn several_agents_and_users(backend: Backend) {
    let env = Env::start(backend, true).await;
    let names = ["ts-01", "ts-02", "vdi host 3"];
    let runs = names.iter().map(|n| run_agent(env.enroll(n), spec(3, 2.0)));
    let reports: Vec<AgentReport> = futures::future::join_all(runs).await;
    for r in &reports {
        assert_eq!(r.unacked, 0, "{r:?}");
        assert_eq!(r.chunks_acked, r.chunks_sealed);
        assert_eq!(r.connects, 1, "one QUIC connection per agent");
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    }
    let md = &env.server().metadata;
    let sealed: u64 = reports.iter().map(|r| r.chunks_sealed).sum();
    assert_eq!(
        md.count(Table::Chunks).await.unwrap() as u64,
        sealed,
        "each chunk indexed once"
    );
    assert_eq!(
        md.count(Table::EncryptionDek).await.unwrap(),
        3,
        "one DEK per agent start-up"
    );
    let files = check(
        &env.store_dir(),
        &env.private_key(),
        &reports,
        &env.dir.path().join("export"),
    )
    .await;
    assert!(files >= 9 * 5, "{files} frames");
    assert_no_plaintext(&env.cfg.data_dir);
    env.stop().await;
}

#[actix_rt::test]
async fn several_agents_and_users_round_trip_on_sqlite() {
    several_agents_and_users(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn several_agents_and_users_round_trip_on_postgresql() {
    several_agents_and_users(Backend::Postgres).await;
}

#[actix_rt::test]
async fn postgresql_rows_hold_no_plaintext_and_the_howto_query_works() {
    let env = Env::start(Backend::Postgres, true).await;
    let r = run_agent(env.enroll("pg-agent"), spec(2, 1.0)).await;
    assert_eq!(r.unacked, 0);
    let db = env.pg_db.clone().unwrap();
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 user=postgres dbname={db}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // The how-to's check: wrapped DEKs are there, newest first.
    let rows = client
        .query(
            "SELECT * FROM public.encryption_dek order by creation_time desc",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let hex_canary = hex::encode(synthetic::CANARY);
    for table in [
        "encryption_kek",
        "encryption_dek",
        "segments",
        "chunks",
        "streams",
    ] {
        let hits: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} t WHERE row_to_json(t)::text LIKE '%' || $1 || '%' OR row_to_json(t)::text LIKE '%' || $2 || '%'"),
                &[&synthetic::CANARY, &hex_canary],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(hits, 0, "plaintext in {table}");
    }
    env.stop().await;
}

async fn unknown_kek_then_accepted(backend: Backend) {
    let env = Env::start(backend, false).await;
    let cfg = env.enroll("late-kek");
    let agent = tokio::spawn(async move { run_agent(cfg, spec(1, 2.0)).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        env.server().metadata.count(Table::Chunks).await.unwrap(),
        0,
        "nothing stored under an unknown KEK"
    );
    // The how-to's statement, verbatim but for the paths, with the server running; the key
    // actor polls every 100 ms.
    let statement = format!(
        "insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile)\nvalues (true, true, '{}', '{}');",
        env.kek_pub.display(),
        env.kek_priv.display()
    );
    match &env.pg_db {
        Some(db) => {
            let (client, conn) = tokio_postgres::connect(
                &format!("host=127.0.0.1 user=postgres dbname={db}"),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            client.batch_execute(&statement).await.unwrap();
        }
        None => {
            let c = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
            c.execute_batch(&statement).unwrap();
        }
    }
    let report = agent.await.unwrap();
    assert_eq!(report.unacked, 0);
    assert!(
        report.rejected.get("unknown_kek").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.rejected
    );
    check(
        &env.store_dir(),
        &env.private_key(),
        &[report],
        &env.dir.path().join("export"),
    )
    .await;
    env.stop().await;
}

#[actix_rt::test]
async fn an_unknown_kek_is_refused_then_accepted_without_a_restart_on_postgresql() {
    unknown_kek_then_accepted(Backend::Postgres).await;
}

#[actix_rt::test]
async fn an_unknown_kek_is_refused_then_accepted_without_a_restart_on_sqlite() {
    unknown_kek_then_accepted(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn a_duplicate_resent_after_reconnect_is_acked_and_stored_once() {
    let env = Env::start(Backend::Postgres, true).await;
    let cfg = env.enroll("flaky");
    let kek = keys::load_public_key(&env.kek_pub).unwrap();
    let rec = Recorder::with_dek(AgentId::new("flaky").unwrap(), &kek, Dek::generate());
    let session = SessionId::random();
    let mut sealer = rec.open_stream(session, StreamId(1), Kind::Keystrokes);
    let chunks: Vec<_> = (0..3)
        .map(|i| {
            sealer
                .seal(format!("{{\"i\":{i}}}\n").as_bytes(), 0, i == 2)
                .unwrap()
        })
        .collect();
    for round in 0..2 {
        let (ep, conn) = raw_connect(
            env.server().quic_addr,
            vec![env.server().pin],
            &cfg.cert,
            &cfg.key,
        )
        .await
        .unwrap();
        let mut s = RawStream::open(&conn).await.unwrap();
        s.send(MSG_DEK, &rec.dek_record().encode()).await.unwrap();
        assert_eq!(s.response().await.unwrap().outcome, Ok(()));
        // First connection: chunks 0 and 1. Second: 1 again (a resend), then 2.
        let send = if round == 0 {
            &chunks[0..2]
        } else {
            &chunks[1..3]
        };
        for c in send {
            s.send(MSG_CHUNK, c.bytes()).await.unwrap();
            let r = s.response().await.unwrap();
            assert_eq!((r.seq, r.outcome), (c.header.seq, Ok(())));
        }
        conn.close(0u32.into(), b"reconnecting");
        ep.wait_idle().await;
    }
    assert_eq!(env.server().metadata.count(Table::Chunks).await.unwrap(), 3);
    // Across every segment object, each sequence number is there exactly once.
    let store = storage::open_local(&env.store_dir()).unwrap();
    let mut seen = Vec::new();
    for p in storage::list(store.as_ref(), &paths::segments_prefix())
        .await
        .unwrap()
    {
        let seg = Segment::decode(&storage::get(store.as_ref(), &p).await.unwrap()).unwrap();
        seen.extend(seg.chunks.iter().map(|c| c.header.seq));
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    let set: BTreeSet<u64> = seen.into_iter().collect();
    assert_eq!(set.len(), 3);
    env.stop().await;
}

/// `sealstream_store_pending_bytes` (received chunks not yet in a segment, so not acked) of
/// the server whose ops listener is `ops`; None while it does not answer.
async fn pending_bytes(ops: std::net::SocketAddr) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(ops).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    crate::common::agents::without_node_label(&out)
        .lines()
        .find_map(|l| {
            l.strip_prefix("sealstream_store_pending_bytes ")?
                .parse()
                .ok()
        })
}

#[actix_rt::test]
async fn the_agent_resends_what_a_restarted_server_had_not_acked() {
    // The server as a child process that writes a segment only after ten minutes: what it
    // receives stays unacked until it is killed (SIGKILL: nothing flushed), then it comes
    // back on the same address writing segments at once.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::genrsa(d, "keypair.pem", 2048, &["-aes256"]);
    let kek_pub = crate::common::pubout(d, "keypair.pem", "publickey.crt", true);
    let cfg = sealstream::config::ServeConfig {
        listen: crate::common::agents::free_udp(),
        ops_listen: crate::common::agents::free_tcp(),
        data_dir: d.join("server"),
        ..Default::default()
    };
    let config_path = d.join("serve.toml");
    let write_config = |max_age_ms: u64| {
        std::fs::write(
            &config_path,
            format!(
                "listen = \"{}\"\nops_listen = \"{}\"\ndata_dir = \"server\"\n\
                 kek_poll_ms = 100\n[segments]\nmax_age_ms = {max_age_ms}\n",
                cfg.listen, cfg.ops_listen
            ),
        )
        .unwrap()
    };
    write_config(600_000);
    let md = sealstream::metadata::Metadata::open("", &cfg.sqlite_path())
        .await
        .unwrap();
    md.insert_kek(
        true,
        true,
        &kek_pub.display().to_string(),
        &d.join("keypair.pem").display().to_string(),
    )
    .await
    .unwrap();
    drop(md);
    let pki = sealstream::pki::Pki::open_or_create(&cfg.data_dir).unwrap();
    let files = pki
        .enroll_agent(&AgentId::new("patient").unwrap(), &d.join("agent"))
        .unwrap();
    let agent_cfg = sealstream::config::AgentConfig {
        server: cfg.listen.to_string(),
        server_pins: vec![pki.server_pin().to_string()],
        cert: files.cert,
        key: files.key,
        kek: kek_pub,
        reconnect_ms: 50,
        connect_timeout_ms: 1000,
        // A killed server cannot tell the agent; the agent notices by its silence.
        idle_timeout_ms: 1200,
        ..Default::default()
    };
    let mut server = crate::common::faults::Child {
        cfg: cfg.clone(),
        config_path: config_path.clone(),
        proc: None,
    };
    server.spawn();
    let agent = tokio::spawn(run_agent(agent_cfg, spec(2, 3.0)));

    // Wait until the server holds at least 32 KiB of chunks it has not acked, then kill it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let held = loop {
        match pending_bytes(cfg.ops_listen).await {
            Some(b) if b >= 32.0 * 1024.0 => break b,
            _ if tokio::time::Instant::now() > deadline => {
                panic!("the server never held 32 KiB of unacked chunks")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    server.kill9();
    let md = sealstream::metadata::Metadata::open("", &cfg.sqlite_path())
        .await
        .unwrap();
    assert_eq!(
        md.count(Table::Chunks).await.unwrap(),
        0,
        "nothing was stored (so nothing acked) before the kill; {held} bytes were held"
    );
    drop(md);

    write_config(30);
    server.spawn();
    let report = agent.await.unwrap();
    server.stop();
    assert_eq!(report.unacked, 0);
    assert!(report.connects >= 2, "reconnected: {}", report.connects);
    // Every chunk is stored, the ones the killed server held among them: only the agent's
    // resends can have brought those.
    let md = sealstream::metadata::Metadata::open("", &cfg.sqlite_path())
        .await
        .unwrap();
    assert_eq!(
        md.count(Table::Chunks).await.unwrap() as u64,
        report.chunks_sealed
    );
    drop(md);
    let key = keys::load_private_key(&d.join("keypair.pem"), || {
        Ok(keys::Passphrase::new(
            crate::common::PASS.as_bytes().to_vec(),
        ))
    })
    .unwrap();
    check(&cfg.store_dir(), &key, &[report], &d.join("export")).await;
}

#[actix_rt::test]
async fn a_deactivated_kek_is_refused_without_a_restart() {
    let env = Env::start(Backend::Sqlite, true).await;
    let (_ep, conn, _s, _rec) = env.registered("rotating").await;
    let c = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
    c.execute_batch("update encryption_kek set active = false, retired_at = CURRENT_TIMESTAMP")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A new DEK (an agent restart) under the retired KEK: kept by the agent, not stored.
    let kek = keys::load_public_key(&env.kek_pub).unwrap();
    let fresh = Recorder::new(AgentId::new("rotating").unwrap(), &kek);
    let mut s = RawStream::open(&conn).await.unwrap();
    s.send(MSG_DEK, &fresh.dek_record().encode()).await.unwrap();
    let r = s.response().await.unwrap();
    assert_eq!(r.outcome, Err(Reject::InactiveKek), "{r:?}");
    assert!(Reject::InactiveKek.retryable());
    env.stop().await;
}

#[actix_rt::test]
async fn replayed_captures_under_a_server_held_kek_round_trip() {
    // The how-to's TMENCRYPTION=0: the DEK is wrapped under a server-held KEK
    // (priv_encrypted = false), with the same code path.
    let env = Env::start(Backend::Sqlite, false).await;
    let d = env.dir.path();
    crate::common::genrsa(d, "server-kek.pem", 2048, &[]);
    let server_pub = crate::common::pubout(d, "server-kek.pem", "server-kek.crt", false);
    env.server()
        .metadata
        .insert_kek(
            true,
            false,
            &server_pub.display().to_string(),
            &d.join("server-kek.pem").display().to_string(),
        )
        .await
        .unwrap();
    env.server().reload_keks().await;
    let mut cfg = env.enroll("replayer");
    cfg.e2ee = false;
    cfg.server_kek = Some(server_pub.clone());
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let report = agent::run(
        cfg,
        Source::Replay(vec![samples.clone()]),
        rx,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(report.unacked, 0);
    let server_key =
        keys::load_private_key(&d.join("server-kek.pem"), || unreachable!("unencrypted")).unwrap();
    let store = storage::open_local(&env.store_dir()).unwrap();
    let out = d.join("export");
    let r = export::export(store.as_ref(), &[server_key], None, &out)
        .await
        .unwrap();
    assert!(!r.tampered() && !r.missing_keys(), "{r:?}");
    let session = &report.sessions[0].session;
    let base = out.join("replayer").join(session.to_string());
    for f in ["screen-000.png", "screen-001.png", "screen-002.png"] {
        assert_eq!(
            std::fs::read(base.join("frames").join(f)).unwrap(),
            std::fs::read(samples.join(f)).unwrap()
        );
    }
    assert_eq!(
        std::fs::read(base.join("keystrokes.jsonl")).unwrap(),
        std::fs::read(samples.join("keystrokes.jsonl")).unwrap()
    );
    // The customer's E2EE key cannot read it.
    let r = export::export(
        store.as_ref(),
        &[env.private_key()],
        None,
        &d.join("export2"),
    )
    .await
    .unwrap();
    assert!(r.missing_keys());
    env.stop().await;
}

#[actix_rt::test]
async fn health_readiness_and_metrics_answer_on_the_ops_listener() {
    use crate::common::child::{ChildEnv, metric};
    // A server of this test's own: its metrics count what this test sent and nothing else.
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    for (path, status, body) in [
        ("/healthz", "200", "ok"),
        ("/readyz", "200", "ready"),
        ("/nope", "404", "not found"),
    ] {
        let (line, text) = http_get(env.server().ops_addr, path).await;
        assert!(line.contains(&format!(" {status} ")), "{path}: {line}");
        assert!(text.contains(body), "{path}: {text}");
    }
    let m = env.metrics().await;
    assert_eq!(metric(&m, "sealstream_keys_keks_active"), 1.0, "{m}");
    assert_eq!(metric(&m, "sealstream_ingest_received_bytes_total"), 0.0);

    // One agent registers its DEK and sends a stream of three chunks, each acked.
    let (_ep, _conn, mut s, rec) = env.registered("metered").await;
    let mut sealer = rec.open_stream(SessionId::random(), StreamId(0), Kind::Keystrokes);
    let chunks: Vec<_> = (0..3)
        .map(|i| {
            let body = format!("{{\"i\":{i}}}\n").repeat(100 * (i + 1));
            sealer.seal(body.as_bytes(), 0, i == 2).unwrap()
        })
        .collect();
    for c in &chunks {
        s.send(MSG_CHUNK, c.bytes()).await.unwrap();
        assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    }
    // Every byte those four messages took on the wire, header and all.
    let framed = |kind: u8, body: &[u8]| {
        let mut out = bytes::BytesMut::new();
        sealstream::protocol::uplink::encode_message(kind, body, &mut out);
        out.len()
    };
    let sent = framed(MSG_DEK, &rec.dek_record().encode())
        + chunks
            .iter()
            .map(|c| framed(MSG_CHUNK, c.bytes()))
            .sum::<usize>();
    // (The latency of an answer is recorded once it is written: wait for the fourth.)
    let m = env
        .wait_metric("sealstream_ingest_ack_latency_seconds_count", 4.0)
        .await;
    let segments = crate::common::walk(&env.store_dir().join("v1/segments"));
    let segment_bytes: u64 = segments
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    for (series, want) in [
        ("sealstream_ingest_received_bytes_total", sent as f64),
        (r#"sealstream_ingest_chunks_total{outcome="stored"}"#, 3.0),
        (
            r#"sealstream_ingest_chunks_total{outcome="duplicate"}"#,
            0.0,
        ),
        ("sealstream_ingest_ack_latency_seconds_count", 4.0),
        (
            "sealstream_store_segment_bytes_count",
            segments.len() as f64,
        ),
        ("sealstream_store_segment_bytes_sum", segment_bytes as f64),
        (
            "sealstream_store_flush_duration_seconds_count",
            segments.len() as f64,
        ),
        (
            r#"sealstream_keys_dek_registrations_total{outcome="registered"}"#,
            1.0,
        ),
        ("sealstream_keys_keks_active", 1.0),
        ("sealstream_quic_connections_open", 1.0),
        ("sealstream_store_pending_bytes", 0.0),
    ] {
        assert_eq!(metric(&m, series), want, "{series}:\n{m}");
    }
    // Buckets are there, the last holding every observation.
    for (series, count) in [
        (
            "sealstream_ingest_ack_latency_seconds_bucket{le=\"+Inf\"}",
            4.0,
        ),
        (
            "sealstream_store_segment_bytes_bucket{le=\"+Inf\"}",
            segments.len() as f64,
        ),
    ] {
        assert_eq!(metric(&m, series), count, "{series}:\n{m}");
    }
    env.stop().await;
}

/// The runbook's KEK retirement, whole: an agent holds a spooled backlog sealed under KEK A
/// when A is retired the how-to's way (`active = false`) and KEK B registered; the agent gets
/// B as kek.pem and restarts. Its backlog under A is still taken (it is ciphertext A's holder
/// can read), its new sessions go under B, and an agent still on A with a new DEK is refused
/// `inactive_kek` and keeps its data. Export with both keys gives everything back.
#[actix_rt::test]
async fn retiring_a_kek_the_runbooks_way_loses_nothing_and_new_sessions_use_the_new_kek() {
    let mut env = Env::start(Backend::Postgres, true).await;
    let d = env.dir.path().to_owned();
    let mut cfg = env.enroll("retiree");
    cfg.spool_dir = Some(d.join("retiree-spool"));
    cfg.reconnect_ms = 100;
    cfg.connect_timeout_ms = 300;
    let stale = env.enroll("stale");
    let quic = env.server().quic_addr;
    // The server goes away: the agent records 1 s and keeps it all in its spool.
    env.server.take().unwrap().shutdown().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let run1 = tokio::spawn(agent::run(
        cfg.clone(),
        Source::Synthetic(spec(2, 1.0)),
        rx,
        Duration::from_millis(200),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tx.send(true).unwrap();
    let first = run1.await.unwrap().unwrap();
    assert!(first.unacked > 0 && first.unacked == first.chunks_sealed);

    // Retire A as the how-to would, register B, hand the agent B.
    crate::common::genrsa(&d, "keypair-b.pem", 2048, &["-aes256"]);
    let kek_b = crate::common::pubout(&d, "keypair-b.pem", "publickey-b.crt", true);
    let url = env.cfg.database_url.clone();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "update encryption_kek set active = false where pub_datafile = '{a}';\n\
             insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile) \
             values (true, true, '{b}', '{bp}');",
            a = env.kek_pub.display(),
            b = kek_b.display(),
            bp = d.join("keypair-b.pem").display()
        ))
        .await
        .unwrap();
    env.cfg.listen = quic;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    env.server().reload_keks().await;

    // An agent still on A, with a new DEK made after the retirement: refused, data kept.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stale_run = tokio::spawn(agent::run(
        stale,
        Source::Synthetic(spec(1, 0.5)),
        rx,
        Duration::from_millis(200),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = tx.send(true);
    let stale_report = stale_run.await.unwrap().unwrap();
    assert!(
        stale_report
            .rejected
            .get("inactive_kek")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        stale_report.rejected
    );
    assert_eq!(stale_report.chunks_acked, 0);

    // The retiree restarts with B: backlog under A taken, new sessions under B.
    cfg.kek = kek_b.clone();
    let second = run_agent(cfg, spec(2, 1.0)).await;
    assert_eq!(second.unacked, 0, "{:?}", second.rejected);
    assert_eq!(
        second.kek.to_string(),
        keys::load_public_key(&kek_b).unwrap().kek_id.to_string()
    );
    assert_eq!(
        second.chunks_acked,
        second.chunks_sealed + first.chunks_sealed,
        "the backlog sealed under the retired KEK was delivered"
    );
    let md = &env.server().metadata;
    assert_eq!(
        md.count(Table::Chunks).await.unwrap() as u64,
        first.chunks_sealed + second.chunks_sealed
    );

    // Both keys read everything back; nothing is missing or damaged.
    let key_b = keys::load_private_key(&d.join("keypair-b.pem"), || {
        Ok(keys::Passphrase::new(
            crate::common::PASS.as_bytes().to_vec(),
        ))
    })
    .unwrap();
    let store = storage::open_local(&env.store_dir()).unwrap();
    let report = export::export(
        store.as_ref(),
        &[env.private_key(), key_b],
        None,
        &d.join("out"),
    )
    .await
    .unwrap();
    assert!(!report.tampered(), "{:?}", report.damaged_objects);
    let exported: u64 = report.streams.iter().map(|s| s.chunks).sum();
    assert_eq!(exported, first.chunks_sealed + second.chunks_sealed);
    assert!(
        report
            .streams
            .iter()
            .all(|s| s.status == export::Status::Complete)
    );
    env.stop().await;
}

/// An authentic chunk (sealed by the agent, intact) whose payload is not a frame: export says
/// MALFORMED, an agent bug, and not TAMPERED.
#[actix_rt::test]
async fn an_authentic_but_malformed_payload_is_reported_as_malformed_not_tampered() {
    let env = Env::start(Backend::Sqlite, true).await;
    let (_ep, _conn, mut s, rec) = env.registered("buggy").await;
    let session = SessionId::random();
    let mut sealer = rec.open_stream(session, StreamId(0), Kind::Frame);
    let chunk = sealer
        .seal(b"not a frame payload", sealstream::crypto::now_us(), true)
        .unwrap();
    s.send(MSG_CHUNK, chunk.bytes()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    let store = storage::open_local(&env.store_dir()).unwrap();
    let report = export::export(
        store.as_ref(),
        &[env.private_key()],
        None,
        &env.dir.path().join("out"),
    )
    .await
    .unwrap();
    assert!(!report.tampered(), "{report:?}");
    assert!(report.malformed(), "{report:?}");
    let st = report.streams.iter().find(|s| s.agent == "buggy").unwrap();
    match &st.status {
        export::Status::Malformed(p) => assert!(p[0].contains("authentic"), "{p:?}"),
        other => panic!("{other:?}"),
    }
    env.stop().await;
}

/// A departed agent leaves no connection state behind on the server (the fault soak saw the
/// server's RSS grow with every agent that ever connected: each closed connection's handle
/// was kept until the same agent connected again).
#[actix_rt::test]
async fn agents_that_have_gone_leave_no_connection_state_behind() {
    let env = Env::start(Backend::Sqlite, true).await;
    for n in 0..5 {
        let r = run_agent(env.enroll(&format!("passing-{n}")), spec(1, 0.5)).await;
        assert_eq!(r.unacked, 0);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while env.server().agents_tracked() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} agents still tracked after they left",
            env.server().agents_tracked()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.stop().await;
}

/// A restarted server knows its KEKs before the first agent gets in: an agent reconnecting
/// the moment the server is back is not told `unknown_kek` (which makes it back off as for a
/// problem needing a person). The fault soak found agents waiting after a server restart.
#[actix_rt::test]
async fn a_restarted_server_knows_its_keks_before_the_first_agent_gets_in() {
    let mut env = Env::start(Backend::Sqlite, true).await;
    for i in 0..5 {
        env.server.take().unwrap().shutdown().await;
        env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
        let (_ep, _conn, _s, _rec) = env.registered(&format!("eager-{i}")).await;
    }
    env.stop().await;
}

/// Connect as enrolled agent `cfg` to `env`'s server and register `record` on a new stream.
async fn connect_registered(
    env: &crate::common::child::ChildEnv,
    cfg: &sealstream::config::AgentConfig,
    record: &sealstream::protocol::DekRecord,
) -> (quinn::Endpoint, quinn::Connection, RawStream) {
    let (ep, conn) = raw_connect(
        env.server().quic_addr,
        vec![env.server().pin],
        &cfg.cert,
        &cfg.key,
    )
    .await
    .unwrap();
    let mut s = RawStream::open(&conn).await.unwrap();
    s.send(MSG_DEK, &record.encode()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    (ep, conn, s)
}

/// A gap record declares numbers dropped for good: a chunk under one of them is refused on
/// the connection that sent the gap record, after the agent reconnects, and after the server
/// was killed and restarted (the range lives in the gap record's index row, not in memory).
async fn dropped_ranges_outlive_connections_and_restarts(backend: Backend) {
    use sealstream::crypto::StreamSealer;
    use sealstream::protocol::payload::Gap;
    let mut env = crate::common::child::ChildEnv::start(backend, &[]).await;
    let name = "gappy";
    let cfg = env.enroll(name);
    let kek = keys::load_public_key(&env.kek_pub).unwrap();
    let rec = Recorder::new(AgentId::new(name).unwrap(), &kek);
    let (_ep, conn, mut s) = connect_registered(&env, &cfg, rec.dek_record()).await;
    let session = SessionId::random();
    let mut near = rec.open_stream(session, StreamId(0), Kind::Frame);
    let first = near.seal(b"frame 0", 1_000, false).unwrap();
    let dropped = near.seal(b"frame 1", 2_000, false).unwrap();
    // The agent dropped everything from 1 up to 2^63 - 1 and says so at 2^63.
    let private = env.private_key();
    let dek = Dek::unwrap(rec.dek_record(), &private.key, private.kek_id).unwrap();
    let at = 1u64 << 63;
    let agent = AgentId::new(name).unwrap();
    let mut far = StreamSealer::starting_at(&dek, agent, session, StreamId(0), Kind::Frame, at);
    let gap = far
        .seal_gap(&Gap {
            first_seq: 1,
            last_seq: at - 1,
            first_capture_us: 2_000,
            last_capture_us: 2_000,
            count: at - 1,
        })
        .unwrap();
    let after = far.seal(b"frame after the gap", 3_000, false).unwrap();
    for c in [&first, &gap] {
        s.send(MSG_CHUNK, c.bytes()).await.unwrap();
        assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    }
    async fn send_dropped(
        s: &mut RawStream,
        dropped: &sealstream::protocol::SealedChunk,
    ) -> Response {
        s.send(MSG_CHUNK, dropped.bytes()).await.unwrap();
        s.response().await.unwrap()
    }
    assert_eq!(
        send_dropped(&mut s, &dropped).await.outcome,
        Err(Reject::DeclaredDropped),
        "on the connection that sent the gap record"
    );
    conn.close(0u32.into(), b"reconnecting");
    let (_ep2, conn2, mut s2) = connect_registered(&env, &cfg, rec.dek_record()).await;
    let r = send_dropped(&mut s2, &dropped).await;
    assert_eq!(
        r.outcome,
        Err(Reject::DeclaredDropped),
        "after a reconnect: {r:?}"
    );
    conn2.close(0u32.into(), b"server restart");
    env.restart().await;
    let (_ep3, _conn3, mut s3) = connect_registered(&env, &cfg, rec.dek_record()).await;
    let r = send_dropped(&mut s3, &dropped).await;
    assert_eq!(
        r.outcome,
        Err(Reject::DeclaredDropped),
        "after a restart: {r:?}"
    );
    // The stream goes on after its gap record.
    s3.send(MSG_CHUNK, after.bytes()).await.unwrap();
    assert_eq!(s3.response().await.unwrap().outcome, Ok(()));
    let md = &env.server().metadata;
    assert_eq!(
        md.count(Table::Chunks).await.unwrap(),
        3,
        "0, the gap record and 2^63+1"
    );
    env.stop().await;
}

#[actix_rt::test]
async fn dropped_ranges_outlive_connections_and_restarts_sqlite() {
    dropped_ranges_outlive_connections_and_restarts(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn dropped_ranges_outlive_connections_and_restarts_postgres() {
    dropped_ranges_outlive_connections_and_restarts(Backend::Postgres).await;
}

/// The new-DEK budget of an agent (limits.dek_records_per_minute) is not refilled by a
/// server restart: the records of the last minute are counted from the database.
async fn the_dek_budget_survives_a_restart(backend: Backend) {
    let mut env =
        crate::common::child::ChildEnv::start(backend, &[("limits.dek_records_per_minute", "3")])
            .await;
    let name = "restarter";
    let cfg = env.enroll(name);
    let kek = keys::load_public_key(&env.kek_pub).unwrap();
    let new_record = || {
        Recorder::new(AgentId::new(name).unwrap(), &kek)
            .dek_record()
            .clone()
    };
    let (_ep, conn, mut s) = connect_registered(&env, &cfg, &new_record()).await;
    for _ in 0..2 {
        s.send(MSG_DEK, &new_record().encode()).await.unwrap();
        assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    }
    s.send(MSG_DEK, &new_record().encode()).await.unwrap();
    let r = s.response().await.unwrap();
    assert_eq!(
        r.outcome,
        Err(Reject::RetryLater),
        "the fourth in a minute: {r:?}"
    );
    assert!(r.reason.contains("new DEK records a minute"), "{r:?}");
    conn.close(0u32.into(), b"server restart");
    env.restart().await;
    let (ep, conn) = raw_connect(
        env.server().quic_addr,
        vec![env.server().pin],
        &cfg.cert,
        &cfg.key,
    )
    .await
    .unwrap();
    let mut s = RawStream::open(&conn).await.unwrap();
    s.send(MSG_DEK, &new_record().encode()).await.unwrap();
    let r = s.response().await.unwrap();
    assert_eq!(
        r.outcome,
        Err(Reject::RetryLater),
        "still the same minute after the restart: {r:?}"
    );
    drop((ep, conn));
    env.stop().await;
}

#[actix_rt::test]
async fn the_dek_budget_survives_a_restart_sqlite() {
    the_dek_budget_survives_a_restart(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn the_dek_budget_survives_a_restart_postgres() {
    the_dek_budget_survives_a_restart(Backend::Postgres).await;
}
