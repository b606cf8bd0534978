//! The ingest service end to end: real QUIC on loopback, real PostgreSQL and the SQLite
//! default, openssl-made KEKs, enrolled agents, export with the passphrase.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::agents::{check, http_get, run_agent, spec};
use common::server::{Backend, Env, RawStream, raw_connect};
use sealstream::agent::{self, AgentReport, Source, synthetic};
use sealstream::crypto::Dek;
use sealstream::export;
use sealstream::keys;
use sealstream::metadata::Table;
use sealstream::protocol::uplink::{MSG_CHUNK, MSG_DEK, Reject};
use sealstream::protocol::{AgentId, KekId, Kind, Segment, SessionId, StreamId};
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

/// A raw stream for agent `name` that has registered its DEK.
async fn registered(
    env: &Env,
    name: &str,
) -> (quinn::Endpoint, quinn::Connection, RawStream, Recorder) {
    let cfg = env.enroll(name);
    let (ep, conn) = raw_connect(
        env.server().quic_addr,
        vec![env.server().pin],
        &cfg.cert,
        &cfg.key,
    )
    .await
    .unwrap();
    let kek = keys::load_public_key(&env.kek_pub).unwrap();
    let rec = Recorder::new(AgentId::new(name).unwrap(), &kek);
    let mut s = RawStream::open(&conn).await.unwrap();
    s.send(MSG_DEK, &rec.dek_record().encode()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    (ep, conn, s, rec)
}

#[actix_rt::test]
async fn each_malformed_envelope_gets_its_code_and_other_agents_carry_on() {
    let env = Env::start(Backend::Sqlite, true).await;
    let good = {
        let cfg = env.enroll("bystander");
        tokio::spawn(async move { run_agent(cfg, spec(2, 2.0)).await })
    };
    let (_ep, conn, mut s, rec) = registered(&env, "mallory").await;
    let session = SessionId::random();
    let mut frames = rec.open_stream(session, StreamId(0), Kind::Frame);
    let c0 = frames.seal(b"frame 0", 0, false).unwrap();
    let c1 = frames.seal(b"frame 1", 0, false).unwrap();
    let c2 = frames.seal(b"frame 2", 0, true).unwrap();
    let c3 = frames.seal(b"after final", 0, false);
    assert!(
        c3.is_err(),
        "the sealer itself refuses to seal after the final chunk"
    );

    let expect = |resp: sealstream::protocol::uplink::Response, r: Reject| {
        assert_eq!(resp.outcome, Err(r), "{resp:?}");
    };
    // A gap: chunk 1 before chunk 0.
    s.send(MSG_CHUNK, c1.bytes()).await.unwrap();
    expect(s.response().await.unwrap(), Reject::SequenceGap);
    s.send(MSG_CHUNK, c0.bytes()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    // Different bytes under stored sequence number 0.
    let mut other = rec.open_stream(session, StreamId(0), Kind::Frame);
    let forged = other.seal(b"not frame 0", 0, false).unwrap();
    s.send(MSG_CHUNK, forged.bytes()).await.unwrap();
    expect(s.response().await.unwrap(), Reject::ConflictingDuplicate);
    // The identical chunk again is acked.
    s.send(MSG_CHUNK, c0.bytes()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    s.send(MSG_CHUNK, c1.bytes()).await.unwrap();
    s.send(MSG_CHUNK, c2.bytes()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    // Anything after the final chunk.
    let mut late = rec.open_stream(session, StreamId(0), Kind::Frame);
    for _ in 0..3 {
        late.seal(b"x", 0, false).unwrap();
    }
    let after = late.seal(b"after", 0, false).unwrap();
    s.send(MSG_CHUNK, after.bytes()).await.unwrap();
    expect(s.response().await.unwrap(), Reject::AfterFinal);
    // A chunk of another session on this QUIC stream.
    let mut elsewhere = rec.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
    s.send(MSG_CHUNK, elsewhere.seal(b"x", 0, false).unwrap().bytes())
        .await
        .unwrap();
    expect(s.response().await.unwrap(), Reject::StreamMismatch);

    // Each of these on its own fresh stream (and DEK registration).
    async fn fresh(conn: &quinn::Connection, rec: &Recorder) -> RawStream {
        let mut s = RawStream::open(conn).await.unwrap();
        s.send(MSG_DEK, &rec.dek_record().encode()).await.unwrap();
        assert_eq!(s.response().await.unwrap().outcome, Ok(()));
        s
    }
    let mut sealer = rec.open_stream(SessionId::random(), StreamId(1), Kind::Keystrokes);
    let good_chunk = sealer.seal(b"{\"k\":1}\n", 0, false).unwrap();
    let mutate = |i: usize, v: u8| {
        let mut b = good_chunk.bytes().to_vec();
        b[i] = v;
        b
    };
    for (bytes, code) in [
        (mutate(4, 9), Reject::Malformed),    // version
        (mutate(5, 7), Reject::Malformed),    // suite
        (mutate(6, 3), Reject::Malformed),    // kind
        (mutate(0, b'X'), Reject::Malformed), // magic
    ] {
        let mut s = fresh(&conn, &rec).await;
        s.send(MSG_CHUNK, &bytes).await.unwrap();
        expect(s.response().await.unwrap(), code);
    }
    // ct_len beyond the limit (the message length agrees with it, so framing holds).
    let mut s2 = fresh(&conn, &rec).await;
    let mut big = good_chunk.bytes().to_vec();
    let ct_at = big.len() - good_chunk.ciphertext().len() - 4;
    big[ct_at..ct_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    s2.send(MSG_CHUNK, &big).await.unwrap();
    expect(s2.response().await.unwrap(), Reject::TooLarge);
    // A message length over the limit: refused from the 5-byte header, nothing buffered.
    let mut s3 = fresh(&conn, &rec).await;
    s3.send_bytes(&[MSG_CHUNK, 0x7f, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    expect(s3.response().await.unwrap(), Reject::TooLarge);
    // A chunk naming another agent.
    let mut s4 = fresh(&conn, &rec).await;
    let kek = keys::load_public_key(&env.kek_pub).unwrap();
    let victim = Recorder::new(AgentId::new("bystander").unwrap(), &kek);
    let mut vs = victim.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
    s4.send(MSG_CHUNK, vs.seal(b"spoof", 0, false).unwrap().bytes())
        .await
        .unwrap();
    expect(s4.response().await.unwrap(), Reject::AgentMismatch);
    // A chunk under a DEK never registered.
    let mut s5 = fresh(&conn, &rec).await;
    let unregistered = Recorder::new(AgentId::new("mallory").unwrap(), &kek);
    let mut us = unregistered.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
    s5.send(MSG_CHUNK, us.seal(b"x", 0, false).unwrap().bytes())
        .await
        .unwrap();
    expect(s5.response().await.unwrap(), Reject::UnknownDek);

    let bystander = good.await.unwrap();
    assert_eq!(bystander.unacked, 0);
    assert!(bystander.rejected.is_empty(), "{:?}", bystander.rejected);
    // The rejections were counted by outcome.
    let metrics = metrics_text(env.server().ops_addr).await;
    for name in [
        "sequence_gap",
        "conflicting_duplicate",
        "after_final",
        "stream_mismatch",
        "malformed",
        "too_large",
        "agent_mismatch",
        "unknown_dek",
    ] {
        assert!(
            metrics.contains(&format!("outcome=\"{name}\"")),
            "no {name} in metrics"
        );
    }
    env.stop().await;
}

/// /metrics, which must answer 200.
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    let (line, text) = http_get(addr, "/metrics").await;
    assert!(line.contains(" 200 "), "{line}");
    text
}

#[actix_rt::test]
async fn a_second_agent_cannot_write_into_the_first_agents_streams() {
    let env = Env::start(Backend::Sqlite, true).await;
    let (_e1, _c1, _s1, alice) = registered(&env, "alice").await;
    let bob_cfg = env.enroll("bob");
    let (_e2, bob) = raw_connect(
        env.server().quic_addr,
        vec![env.server().pin],
        &bob_cfg.cert,
        &bob_cfg.key,
    )
    .await
    .unwrap();
    let mut s = RawStream::open(&bob).await.unwrap();
    // Bob presents Alice's DEK record: refused, the certificate says Bob.
    s.send(MSG_DEK, &alice.dek_record().encode()).await.unwrap();
    assert_eq!(
        s.response().await.unwrap().outcome,
        Err(Reject::AgentMismatch)
    );
    // And a chunk sealed as Alice.
    let mut st = alice.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
    s.send(MSG_CHUNK, st.seal(b"as alice", 0, false).unwrap().bytes())
        .await
        .unwrap();
    assert_eq!(
        s.response().await.unwrap().outcome,
        Err(Reject::AgentMismatch)
    );
    assert_eq!(env.server().metadata.count(Table::Chunks).await.unwrap(), 0);
    env.stop().await;
}

#[actix_rt::test]
async fn clients_without_a_certificate_or_from_another_ca_are_refused() {
    let env = Env::start(Backend::Sqlite, true).await;
    // A certificate from another deployment's CA, with a valid name.
    let other = tempfile::tempdir().unwrap();
    let foreign = sealstream::pki::Pki::open_or_create(other.path()).unwrap();
    let intruder = foreign
        .enroll_agent(&AgentId::new("intruder").unwrap(), other.path())
        .unwrap();
    let refused = async {
        let (_ep, conn) = raw_connect(
            env.server().quic_addr,
            vec![env.server().pin],
            &intruder.cert,
            &intruder.key,
        )
        .await?;
        let mut s = RawStream::open(&conn).await?;
        s.send(MSG_DEK, b"x").await?;
        s.response().await.map(|_| ())
    };
    let err = refused
        .await
        .expect_err("a foreign CA's certificate must not get through");
    assert!(!err.is_empty());

    // No client certificate at all.
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny))
    .with_no_client_auth();
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"sealstream/1".to_vec()];
    let client = quinn::ClientConfig::new(std::sync::Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap(),
    ));
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let attempt = async {
        let conn = ep
            .connect_with(client, env.server().quic_addr, "sealstream")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let mut s = RawStream::open(&conn).await?;
        s.send(MSG_DEK, b"x").await?;
        s.response().await.map(|_| ())
    };
    assert!(
        attempt.await.is_err(),
        "a client without a certificate must be refused"
    );
    env.stop().await;
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[actix_rt::test]
async fn an_agent_pinned_to_another_server_key_refuses_to_connect() {
    let env = Env::start(Backend::Sqlite, true).await;
    let cfg = env.enroll("careful");
    let wrong = KekId([0x42; 32]);
    let err = raw_connect(env.server().quic_addr, vec![wrong], &cfg.cert, &cfg.key)
        .await
        .unwrap_err();
    assert!(
        err.contains("matches none of the configured server_pins"),
        "{err}"
    );
    // The right pin as the backup works.
    raw_connect(
        env.server().quic_addr,
        vec![wrong, env.server().pin],
        &cfg.cert,
        &cfg.key,
    )
    .await
    .unwrap();
    env.stop().await;
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

#[actix_rt::test]
async fn the_agent_resends_what_a_restarted_server_had_not_acked() {
    let mut env = Env::start(Backend::Sqlite, true).await;
    let cfg = env.enroll("patient");
    let agent = tokio::spawn(async move { run_agent(cfg, spec(2, 3.0)).await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Restart the server on the same address and data directory mid-recording.
    let addr = env.server().quic_addr;
    env.server.take().unwrap().shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.cfg.listen = addr;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    let report = agent.await.unwrap();
    assert_eq!(report.unacked, 0);
    assert!(report.connects >= 2, "reconnected: {}", report.connects);
    assert_eq!(
        env.server().metadata.count(Table::Chunks).await.unwrap() as u64,
        report.chunks_sealed
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
async fn a_deactivated_kek_is_refused_without_a_restart() {
    let env = Env::start(Backend::Sqlite, true).await;
    let (_ep, conn, _s, _rec) = registered(&env, "rotating").await;
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
    common::genrsa(d, "server-kek.pem", 2048, &[]);
    let server_pub = common::pubout(d, "server-kek.pem", "server-kek.crt", false);
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
    let env = Env::start(Backend::Sqlite, true).await;
    for (path, status, body) in [
        ("/healthz", "200", "ok"),
        ("/readyz", "200", "ready"),
        ("/nope", "404", "not found"),
    ] {
        let (line, text) = http_get(env.server().ops_addr, path).await;
        assert!(line.contains(&format!(" {status} ")), "{path}: {line}");
        assert!(text.contains(body), "{path}: {text}");
    }
    let r = run_agent(env.enroll("metered"), spec(1, 1.0)).await;
    assert_eq!(r.unacked, 0);
    let m = metrics_text(env.server().ops_addr).await;
    for name in [
        "sealstream_ingest_received_bytes_total",
        "sealstream_ingest_chunks_total{outcome=\"stored\"}",
        "sealstream_ingest_ack_latency_seconds_bucket",
        "sealstream_store_segment_bytes_bucket",
        "sealstream_store_flush_duration_seconds_bucket",
        "sealstream_keys_dek_registrations_total",
        "sealstream_keys_keks_active",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    env.stop().await;
}

#[actix_rt::test]
async fn connections_beyond_the_cap_are_refused() {
    let mut env = Env::start(Backend::Sqlite, true).await;
    // Restart with a cap of one connection.
    env.server.take().unwrap().shutdown().await;
    env.cfg.limits.max_connections = 1;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    let a = env.enroll("first");
    let b = env.enroll("second");
    let (_e1, c1) = raw_connect(
        env.server().quic_addr,
        vec![env.server().pin],
        &a.cert,
        &a.key,
    )
    .await
    .unwrap();
    let mut s = RawStream::open(&c1).await.unwrap();
    s.send(MSG_DEK, b"not a record").await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Err(Reject::Malformed));
    let second = raw_connect(
        env.server().quic_addr,
        vec![env.server().pin],
        &b.cert,
        &b.key,
    )
    .await;
    assert!(second.is_err(), "the second connection must be refused");
    env.stop().await;
}
