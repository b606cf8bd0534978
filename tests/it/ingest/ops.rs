//! The ops listener (health, readiness, metrics) and no connection state left by agents gone.

use super::*;

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
