//! What outlives a reconnect or a server restart: a resent duplicate stored once, the unacked
//! chunks resent, dropped ranges, the new-DEK budget.

use super::*;

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
        let (ep, conn, mut s) = env.register_dek(&cfg, rec.dek_record()).await;
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
    insert_kek(&md, &kek_pub, &d.join("keypair.pem")).await;
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
    let (_ep, conn, mut s) = env.register_dek(&cfg, rec.dek_record()).await;
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
    let (_ep2, conn2, mut s2) = env.register_dek(&cfg, rec.dek_record()).await;
    let r = send_dropped(&mut s2, &dropped).await;
    assert_eq!(
        r.outcome,
        Err(Reject::DeclaredDropped),
        "after a reconnect: {r:?}"
    );
    conn2.close(0u32.into(), b"server restart");
    env.restart().await;
    let (_ep3, _conn3, mut s3) = env.register_dek(&cfg, rec.dek_record()).await;
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

crate::common::on_both_backends!(
    dropped_ranges_outlive_connections_and_restarts,
    sqlite: dropped_ranges_outlive_connections_and_restarts_sqlite,
    postgres: dropped_ranges_outlive_connections_and_restarts_postgres,
);

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
    let (_ep, conn, mut s) = env.register_dek(&cfg, &new_record()).await;
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
    let (ep, conn) = env.connect(&cfg.cert, &cfg.key).await.unwrap();
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

crate::common::on_both_backends!(
    the_dek_budget_survives_a_restart,
    sqlite: the_dek_budget_survives_a_restart_sqlite,
    postgres: the_dek_budget_survives_a_restart_postgres,
);
