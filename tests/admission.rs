//! What the ingest server admits: only agents with a certificate from this deployment's CA,
//! only envelopes that name the connection's agent, well-formed, under a registered DEK and in
//! sequence, within the connection cap; and only a server whose key the agent has pinned.
//! Each refusal has its own code, and other agents carry on unaffected.

mod common;

use common::agents::{metrics_text, run_agent, spec};
use common::server::{Backend, Env, RawStream, raw_connect};
use sealstream::keys;
use sealstream::metadata::Table;
use sealstream::protocol::uplink::{MSG_CHUNK, MSG_DEK, Reject};
use sealstream::protocol::{AgentId, KekId, Kind, SessionId, StreamId};
use sealstream::recorder::Recorder;

#[actix_rt::test]
async fn each_malformed_envelope_gets_its_code_and_other_agents_carry_on() {
    let env = Env::start(Backend::Sqlite, true).await;
    let good = {
        let cfg = env.enroll("bystander");
        tokio::spawn(async move { run_agent(cfg, spec(2, 2.0)).await })
    };
    let (_ep, conn, mut s, rec) = env.registered("mallory").await;
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

#[actix_rt::test]
async fn a_second_agent_cannot_write_into_the_first_agents_streams() {
    let env = Env::start(Backend::Sqlite, true).await;
    let (_e1, _c1, _s1, alice) = env.registered("alice").await;
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

/// A flood of new DEK records from one agent: the first `dek_records_per_minute` are taken,
/// the rest answered `retry_later` (the agent keeps its data); another agent is not affected.
#[actix_rt::test]
async fn an_agent_flooding_new_dek_records_is_limited_and_others_are_not() {
    let env = Env::start_tuned(Backend::Sqlite, true, |cfg| {
        cfg.limits.dek_records_per_minute = 5;
    })
    .await;
    let kek = sealstream::keys::load_public_key(&env.kek_pub).unwrap();
    let (_ep, conn, mut s, _rec) = env.registered("flooder").await;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let fresh = Recorder::new(AgentId::new("flooder").unwrap(), &kek);
        s.send(MSG_DEK, &fresh.dek_record().encode()).await.unwrap();
        outcomes.push(s.response().await.unwrap());
    }
    let taken = outcomes.iter().filter(|r| r.outcome.is_ok()).count();
    // `registered` already used one of the five.
    assert_eq!(taken, 4, "{outcomes:?}");
    let limited = outcomes.iter().find(|r| r.outcome.is_err()).unwrap();
    assert_eq!(limited.outcome, Err(Reject::RetryLater));
    assert!(
        limited.reason.contains("new DEK records a minute"),
        "{limited:?}"
    );
    // Another agent still registers.
    let (_ep2, _conn2, _s2, _rec2) = env.registered("bystander").await;
    drop(conn);
    let text = metrics_text(env.server().ops_addr).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("sealstream_keys_dek_rate_limited_total") && !l.ends_with(" 0")),
        "{text}"
    );
    env.stop().await;
}

/// 40 handshakes that start and then stall (their network is cut after the first packets)
/// against a server capped at 20 connections: handshakes do not count against the cap, the
/// ones beyond the handshake budget get a stateless Retry, and each stalled one is dropped at
/// the handshake timeout. An enrolled agent connecting meanwhile gets straight in.
#[actix_rt::test]
async fn stalled_handshakes_do_not_lock_enrolled_agents_out() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    let env = Env::start_tuned(Backend::Sqlite, true, |cfg| {
        cfg.limits.max_connections = 20;
        cfg.limits.max_handshakes = 8;
        cfg.limits.handshake_timeout_ms = 1500;
    })
    .await;
    // The server's answers never reach these clients: every handshake stalls half-way, the
    // server holding its state, however fast or loaded the machine is.
    let cut = Arc::new(AtomicBool::new(true));
    let front = common::faults::relay_each_way(
        env.server().quic_addr,
        Arc::new(AtomicBool::new(false)),
        cut.clone(),
    )
    .await;
    let who = env.enroll("stalling");
    let mut stalled = Vec::new();
    for _ in 0..40 {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&who.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&who.key).unwrap();
        let client = sealstream::transport::client_config(
            vec![env.server().pin],
            certs,
            key,
            &sealstream::config::Limits::default(),
        )
        .unwrap();
        let socket =
            sealstream::transport::udp_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let ep = sealstream::transport::endpoint(socket, None).unwrap();
        let connecting = ep.connect_with(client, front, "sealstream").unwrap();
        stalled.push((ep, actix_rt::spawn(connecting)));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    // An enrolled agent, directly: in at once, and its DEK registers.
    let started = std::time::Instant::now();
    let (_ep, _conn, _s, _rec) =
        tokio::time::timeout(Duration::from_secs(5), env.registered("welcome"))
            .await
            .expect("the enrolled agent got in while 40 handshakes stalled");
    eprintln!("enrolled agent in after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = metrics_text(env.server().ops_addr).await;
    let timed_out = text
        .lines()
        .find(|l| {
            l.starts_with("sealstream_quic_connections_refused_total{reason=\"handshake_timeout\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        timed_out >= 1.0,
        "stalled handshakes were dropped at the timeout:\n{text}"
    );
    for (_, t) in stalled {
        t.abort();
    }
    env.stop().await;
}

/// Half-sent messages: one connection declares eight 15 MiB messages and sends their bodies as
/// fast as it can, never finishing one. The server holds at most its per-connection budget of
/// them (then stops reading, and QUIC flow control stops the sender), and another agent is
/// served meanwhile. Before the budget, the server buffered all 120 MiB.
#[actix_rt::test]
async fn half_sent_messages_are_bounded_by_the_partial_message_budget() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    let budget = sealstream::protocol::uplink::MAX_BODY + 5;
    let env = Env::start_tuned(Backend::Sqlite, true, |cfg| {
        cfg.limits.partial_bytes_per_connection = budget;
        cfg.limits.partial_bytes_total = 4 * budget;
    })
    .await;
    let cfg = env.enroll("slowloris");
    let (_ep, conn) = raw_connect(
        env.server().quic_addr,
        vec![env.server().pin],
        &cfg.cert,
        &cfg.key,
    )
    .await
    .unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let body = 15 * 1024 * 1024u32;
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (conn, written) = (conn.clone(), written.clone());
        writers.push(actix_rt::spawn(async move {
            // Everything under one deadline: once the server stops reading, even a header
            // can wait for flow-control credit that never comes.
            let fill = async {
                let mut s = RawStream::open(&conn).await?;
                let mut header = vec![MSG_CHUNK];
                header.extend_from_slice(&body.to_be_bytes());
                s.send_bytes(&header).await?;
                let piece = vec![0x5a; 256 * 1024];
                for _ in 0..(body as usize / piece.len() - 1) {
                    s.send_bytes(&piece).await?;
                    written.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(4), fill).await;
        }));
    }
    // Meanwhile another agent registers a DEK and stores a chunk.
    let (_ep2, _conn2, mut s2, rec) = env.registered("patient").await;
    let mut sealer = rec.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
    let chunk = sealer
        .seal(b"frame", sealstream::crypto::now_us(), true)
        .unwrap();
    s2.send(MSG_CHUNK, chunk.bytes()).await.unwrap();
    assert_eq!(s2.response().await.unwrap().outcome, Ok(()));
    for w in writers {
        let _ = w.await;
    }
    let sent = written.load(Ordering::Relaxed);
    let text = metrics_text(env.server().ops_addr).await;
    let held: f64 = text
        .lines()
        .find(|l| l.starts_with("sealstream_ingest_partial_message_bytes "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    eprintln!(
        "half-sent: {sent} bytes written by the peer, {held} held by the server, budget {budget}"
    );
    // The server holds no more than the budget (other tests in this binary add a little).
    assert!(held <= (budget + 1024 * 1024) as f64, "{held}");
    // The peer got no further than the budget plus the QUIC windows (8 MiB connection).
    let windows = 8 * 1024 * 1024 + 8 * 2 * 1024 * 1024;
    assert!(
        sent <= (budget + windows + 4 * 1024 * 1024) as u64,
        "{sent} bytes taken from one connection"
    );
    env.stop().await;
}
