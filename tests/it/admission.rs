//! What the ingest server admits: only agents with a certificate from this deployment's CA,
//! only envelopes that name the connection's agent, well-formed, under a registered DEK and in
//! sequence, within the connection cap; and only a server whose key the agent has pinned.
//! Each refusal has its own code, and other agents carry on unaffected.

use crate::common::agents::{run_agent, spec};
use crate::common::child::{ChildEnv, metric};
use crate::common::server::{Backend, Env, RawStream, raw_connect};
use sealstream::keys;
use sealstream::metadata::Table;
use sealstream::protocol::uplink::{MSG_CHUNK, MSG_DEK, Reject};
use sealstream::protocol::{AgentId, KekId, Kind, SessionId, StreamId};
use sealstream::recorder::Recorder;

#[actix_rt::test]
async fn each_malformed_envelope_gets_its_code_and_other_agents_carry_on() {
    // A server of this test's own: its counters count this test's envelopes only.
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
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
        (mutate(6, 4), Reject::Malformed),    // kind (4: none)
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
    // Each chunk was counted once, under its outcome: the rejections above, mallory's three
    // chunks and the bystander's stored, mallory's identical resend a duplicate, nothing else.
    let m = env.metrics().await;
    let caused = [
        ("stored", 3 + bystander.chunks_acked),
        ("duplicate", 1),
        ("sequence_gap", 1),
        ("conflicting_duplicate", 1),
        ("after_final", 1),
        ("stream_mismatch", 1),
        ("malformed", 4),
        ("too_large", 2),
        ("agent_mismatch", 1),
        ("unknown_dek", 1),
    ];
    for name in ["stored", "duplicate"]
        .into_iter()
        .chain(Reject::ALL.iter().map(|r| r.name()))
    {
        let want = caused.iter().find(|(n, _)| *n == name).map_or(0, |c| c.1);
        assert_eq!(
            metric(
                &m,
                &format!("sealstream_ingest_chunks_total{{outcome=\"{name}\"}}")
            ),
            want as f64,
            "chunks with outcome {name}"
        );
    }
    // The forged resend and the chunk naming another agent are security events, one each.
    for kind in ["conflicting_duplicate", "agent_mismatch"] {
        assert_eq!(
            metric(
                &m,
                &format!("sealstream_ingest_security_events_total{{kind=\"{kind}\"}}")
            ),
            1.0,
            "security events of kind {kind}"
        );
    }
    env.stop().await;
}

#[actix_rt::test]
async fn a_second_agent_cannot_write_into_the_first_agents_streams() {
    let env = Env::start(Backend::Sqlite, true).await;
    let (_e1, _c1, _s1, alice) = env.registered("alice").await;
    let bob_cfg = env.enroll("bob");
    let (_e2, bob) = env.connect(&bob_cfg.cert, &bob_cfg.key).await.unwrap();
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
        let (_ep, conn) = env.connect(&intruder.cert, &intruder.key).await?;
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
    let (_e1, c1) = env.connect(&a.cert, &a.key).await.unwrap();
    let mut s = RawStream::open(&c1).await.unwrap();
    s.send(MSG_DEK, b"not a record").await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Err(Reject::Malformed));
    let second = env.connect(&b.cert, &b.key).await;
    assert!(second.is_err(), "the second connection must be refused");
    env.stop().await;
}

/// A flood of new DEK records from one agent: the first `dek_records_per_minute` are taken,
/// the rest answered `retry_later` (the agent keeps its data); another agent is not affected.
#[actix_rt::test]
async fn an_agent_flooding_new_dek_records_is_limited_and_others_are_not() {
    let env = ChildEnv::start(Backend::Sqlite, &[("limits.dek_records_per_minute", "5")]).await;
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
    // This server's count: the six records over the limit, each once; every other record
    // (the flooder's five, the bystander's one) registered.
    let m = env.metrics().await;
    assert_eq!(metric(&m, "sealstream_keys_dek_rate_limited_total"), 6.0);
    assert_eq!(
        metric(
            &m,
            r#"sealstream_keys_dek_registrations_total{outcome="retry_later"}"#
        ),
        6.0
    );
    assert_eq!(
        metric(
            &m,
            r#"sealstream_keys_dek_registrations_total{outcome="registered"}"#
        ),
        6.0
    );
    env.stop().await;
}

/// 40 handshakes that start and then stall (the server's answers never reach them) against
/// a server capped at 20 connections with a budget of 8 handshakes: handshakes do not count
/// against the cap, the 8 first hold the budget and the 32 beyond it get a stateless Retry,
/// and each of the 8 is dropped at the handshake timeout. An enrolled agent connecting while
/// the 8 are held gets straight in (its own first packet is answered by a Retry too, which it
/// answers).
#[actix_rt::test]
async fn stalled_handshakes_do_not_lock_enrolled_agents_out() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    // A server of this test's own, so its refusal counters count these handshakes only.
    let env = ChildEnv::start(
        Backend::Sqlite,
        &[
            ("limits.max_connections", "20"),
            ("limits.max_handshakes", "8"),
            ("limits.handshake_timeout_ms", "3000"),
        ],
    )
    .await;
    let refused = |m: &str, reason: &str| {
        metric(
            m,
            &format!("sealstream_quic_connections_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    // The server's answers never reach these clients: every handshake stalls half-way, the
    // server holding its state, however fast or loaded the machine is.
    let cut = Arc::new(AtomicBool::new(true));
    let front = crate::common::faults::relay_each_way(
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
        let mut client = sealstream::transport::client_config(
            vec![env.server().pin],
            certs,
            key,
            &sealstream::config::Limits::default(),
        )
        .unwrap();
        // Each sends its first packet once: with a 30 s RTT guess its retransmission is far
        // beyond this test, so the server sees exactly 40 first packets.
        let mut transport = quinn::TransportConfig::default();
        transport.initial_rtt(Duration::from_secs(30));
        client.transport_config(Arc::new(transport));
        let socket =
            sealstream::transport::udp_socket("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let ep = sealstream::transport::endpoint(socket, None).unwrap();
        let connecting = ep.connect_with(client, front, "sealstream").unwrap();
        stalled.push((ep, actix_rt::spawn(connecting)));
    }
    // All 40 arrived: 8 took the budget, the other 32 were sent a Retry (and stall there).
    let m = env
        .wait_metric(
            r#"sealstream_quic_connections_refused_total{reason="handshake_budget"}"#,
            32.0,
        )
        .await;
    assert_eq!(refused(&m, "handshake_budget"), 32.0, "{m}");
    assert_eq!(refused(&m, "handshake_timeout"), 0.0, "{m}");
    // An enrolled agent, directly: in while the 8 are held, and its DEK registers.
    let started = std::time::Instant::now();
    let (_ep, _conn, _s, _rec) =
        tokio::time::timeout(Duration::from_secs(5), env.registered("welcome"))
            .await
            .expect("the enrolled agent got in while 40 handshakes stalled");
    eprintln!("enrolled agent in after {:?}", started.elapsed());
    let m = env.metrics().await;
    assert_eq!(
        refused(&m, "handshake_timeout"),
        0.0,
        "the agent got in while every stalled handshake still held its place: {m}"
    );
    // Each of the 8 is dropped at the timeout; nothing else was refused, and the agent's
    // first packet, over the budget, got the one more Retry.
    let m = env
        .wait_metric(
            r#"sealstream_quic_connections_refused_total{reason="handshake_timeout"}"#,
            8.0,
        )
        .await;
    for (reason, want) in [
        ("handshake_timeout", 8.0),
        ("handshake_budget", 33.0),
        ("handshake", 0.0),
        ("connection_cap", 0.0),
        ("identity", 0.0),
    ] {
        assert_eq!(refused(&m, reason), want, "refused for {reason}: {m}");
    }
    for (_, t) in stalled {
        t.abort();
    }
    env.stop().await;
}

/// A slowloris on one connection: `streams` streams, each sending the header of a chunk
/// message with a `body`-byte body and then all of the body but its last byte, so that no
/// message ever completes. `written` counts the bytes QUIC took from the sender; each task
/// ends once its stream has written everything.
fn half_send(
    conn: &quinn::Connection,
    streams: usize,
    body: u32,
    written: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use std::sync::atomic::Ordering::SeqCst;
    (0..streams)
        .map(|_| {
            let (conn, written) = (conn.clone(), written.clone());
            actix_rt::spawn(async move {
                let (mut send, _recv) = conn.open_bi().await.unwrap();
                let mut header = vec![MSG_CHUNK];
                header.extend_from_slice(&body.to_be_bytes());
                send.write_all(&header).await.unwrap();
                written.fetch_add(header.len() as u64, SeqCst);
                let piece = vec![0x5a; 64 * 1024];
                let mut left = body as usize - 1;
                while left > 0 {
                    let n = send.write(&piece[..left.min(piece.len())]).await.unwrap();
                    written.fetch_add(n as u64, SeqCst);
                    left -= n;
                }
            })
        })
        .collect()
}

/// Half-sent messages: one connection declares four 15 MiB messages and sends their bodies as
/// fast as it can, never finishing one. The server reads about its per-connection budget of
/// them, then stops reading, and QUIC flow control stalls the sender with its connection open
/// while another agent is served. A server whose budget holds everything takes all 60 MiB.
#[actix_rt::test]
async fn half_sent_messages_are_bounded_by_the_partial_message_budget() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::time::Duration;
    const STREAMS: usize = 4;
    const BODY: u32 = 15 * 1024 * 1024;
    // Everything the slowloris has to send: far more than the budget and the QUIC windows.
    let all = (STREAMS * (5 + BODY as usize - 1)) as u64;
    let budget = sealstream::protocol::uplink::MAX_BODY + 5;
    let env = Env::start_tuned(Backend::Sqlite, true, |cfg| {
        cfg.limits.partial_bytes_per_connection = budget;
        cfg.limits.partial_bytes_total = 4 * budget;
    })
    .await;
    let cfg = env.enroll("slowloris");
    let (_ep, conn) = env.connect(&cfg.cert, &cfg.key).await.unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let writers = half_send(&conn, STREAMS, BODY, &written);
    // The server reads until the budget is held, then stops: the sender stalls once it has
    // filled the budget and QUIC's windows. Wait for the budget's worth, then for a second
    // with no byte taken (or for the sender to have written everything: no budget at all).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (0, tokio::time::Instant::now());
    loop {
        let now = written.load(SeqCst);
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        }
        if writers.iter().all(|w| w.is_finished()) {
            break;
        }
        if now + 64 * 1024 >= budget as u64 && since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sender neither stalled nor finished: {now} of {all} bytes written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stalled = written.load(SeqCst);
    assert!(
        !writers.iter().any(|w| w.is_finished()),
        "a half-sent message went through whole: {stalled} of {all} bytes taken from one connection"
    );

    // Meanwhile another agent registers a DEK and stores a chunk.
    let (_ep2, _conn2, mut s2, rec) = env.registered("patient").await;
    let mut sealer = rec.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
    let chunk = sealer
        .seal(b"frame", sealstream::crypto::now_us(), true)
        .unwrap();
    s2.send(MSG_CHUNK, chunk.bytes()).await.unwrap();
    assert_eq!(s2.response().await.unwrap().outcome, Ok(()));

    // While the server served that agent, the slowloris got not one byte further, and its
    // connection is still open: it is held back, not cut off.
    assert_eq!(
        written.load(SeqCst),
        stalled,
        "the sender stays stalled while the server serves others"
    );
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    // It took the budget (less one read the server waits to hold) and at most QUIC's connection
    // window beyond what the server read (the budget and one read per stream).
    let window = env.cfg.limits.connection_receive_window;
    let (low, high) = (
        (budget - 64 * 1024) as u64,
        budget as u64 + window + (STREAMS * 64 * 1024) as u64,
    );
    eprintln!(
        "half-sent with a budget of {budget}: the sender stalled at {stalled} of {all} bytes (bounds {low}..={high})"
    );
    assert!(
        (low..=high).contains(&stalled),
        "{stalled} bytes taken from one connection: not within {low}..={high}"
    );
    for w in &writers {
        w.abort();
    }
    conn.close(0u32.into(), b"done");
    env.stop().await;

    // The control: the same sender against a server whose budget holds all of it gets every
    // byte across, so the stall above was the budget's doing.
    let env = Env::start_tuned(Backend::Sqlite, true, |cfg| {
        cfg.limits.partial_bytes_per_connection = 128 * 1024 * 1024;
        cfg.limits.partial_bytes_total = 128 * 1024 * 1024;
    })
    .await;
    let cfg = env.enroll("slowloris");
    let (_ep, conn) = env.connect(&cfg.cert, &cfg.key).await.unwrap();
    let written = Arc::new(AtomicU64::new(0));
    for w in half_send(&conn, STREAMS, BODY, &written) {
        tokio::time::timeout(Duration::from_secs(180), w)
            .await
            .expect("with room for everything, the sender finishes")
            .unwrap();
    }
    assert_eq!(written.load(SeqCst), all);
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    eprintln!("control with a 128 MiB budget: all {all} bytes taken");
    conn.close(0u32.into(), b"done");
    env.stop().await;
}
