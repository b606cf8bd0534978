//! Round trips: several agents and users on both backends, replayed captures, and what
//! export says of an authentic but malformed payload; nothing stored holds plaintext.

use super::*;

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
    let files = env.check_export(&reports).await;
    assert!(files >= 9 * 5, "{files} frames");
    assert_no_plaintext(&env.cfg.data_dir);
    env.stop().await;
}

crate::common::on_both_backends!(
    several_agents_and_users,
    sqlite: several_agents_and_users_round_trip_on_sqlite,
    postgres: several_agents_and_users_round_trip_on_postgresql,
);

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
    let report = env.export_all().await;
    assert!(!report.tampered(), "{report:?}");
    assert!(report.malformed(), "{report:?}");
    let st = report.streams.iter().find(|s| s.agent == "buggy").unwrap();
    match &st.status {
        export::Status::Malformed(p) => assert!(p[0].contains("authentic"), "{p:?}"),
        other => panic!("{other:?}"),
    }
    env.stop().await;
}
