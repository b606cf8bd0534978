//! The agent's own Prometheus metrics (`metrics_listen`): spool bytes and records, the age of
//! the oldest unacked chunk, unacked and dropped chunks, the certificate's expiry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::stream::AbortOnDrop;
use super::{Agent, AgentError};
use crate::crypto::now_us;
use crate::telemetry;

pub const SPOOL_BYTES: &str = "sealstream_agent_spool_bytes";
pub const SPOOL_RECORDS: &str = "sealstream_agent_spool_records";
pub const OLDEST_UNACKED_AGE: &str = "sealstream_agent_oldest_unacked_age_seconds";
pub const UNACKED_CHUNKS: &str = "sealstream_agent_unacked_chunks";
pub const DROPPED_CHUNKS: &str = "sealstream_agent_dropped_chunks_total";
pub const CERT_EXPIRY: &str = "sealstream_agent_certificate_expiry_timestamp_seconds";
/// Its buckets are its own (`telemetry::CAPTURE_TO_ACK_BUCKETS`), finer than other latencies'.
pub const CAPTURE_TO_ACK: &str = telemetry::CAPTURE_TO_ACK;

/// Describe the agent's own histogram to whichever recorder is installed (the agent's
/// listener, or a server's in the same process).
pub(super) fn describe() {
    metrics::describe_histogram!(
        CAPTURE_TO_ACK,
        metrics::Unit::Seconds,
        "From a chunk's capture time to the server's ack of it (spool, network, the server's batching and durable write)."
    );
}

/// The agent's /metrics listener, and a task refreshing its gauges every second.
pub(super) async fn start_metrics(
    agent: Arc<Agent>,
    addr: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    use metrics::{Unit, describe_counter, describe_gauge};
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Credentials {
                path: format!("metrics_listen {addr}").into(),
                detail: e.to_string(),
            })?;
    telemetry::prometheus();
    describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Bytes in the agent's disk spool.");
    describe_gauge!(
        SPOOL_RECORDS,
        "Chunks in the agent's disk spool, not yet acked."
    );
    describe_gauge!(
        OLDEST_UNACKED_AGE,
        Unit::Seconds,
        "Age of the oldest chunk not yet acked (by capture time)."
    );
    describe_gauge!(UNACKED_CHUNKS, "Chunks waiting for the server's ack.");
    describe_gauge!(
        CERT_EXPIRY,
        Unit::Seconds,
        "When the agent's certificate expires (notAfter, Unix time); renew before then."
    );
    describe();
    describe_counter!(
        DROPPED_CHUNKS,
        "Chunks dropped because the spool was full (reported as gaps)."
    );
    let serve = tokio::spawn(telemetry::serve(listener, telemetry::AlwaysReady));
    Ok(tokio::spawn(async move {
        let _serve = AbortOnDrop(serve);
        let mut dropped = 0;
        loop {
            if let Some(sp) = &agent.spool {
                let st = sp.lock().expect("spool lock").stats();
                metrics::gauge!(SPOOL_BYTES).set(st.bytes as f64);
                metrics::gauge!(SPOOL_RECORDS).set(st.records as f64);
            }
            let oldest = agent
                .queues
                .lock()
                .expect("queues lock")
                .iter()
                .filter_map(|q| {
                    q.state
                        .lock()
                        .expect("queue lock")
                        .unacked
                        .front()
                        .map(|e| e.chunk.header.capture_time_us)
                })
                .min();
            let age = oldest.map_or(0.0, |t| ((now_us() - t).max(0) as f64) / 1e6);
            metrics::gauge!(OLDEST_UNACKED_AGE).set(age);
            metrics::gauge!(UNACKED_CHUNKS).set(agent.unacked() as f64);
            agent.uplink.export(agent.uplink.state());
            metrics::gauge!(CERT_EXPIRY).set(agent.certificate_not_after() as f64);
            let d = agent.dropped.load(Ordering::Relaxed);
            metrics::counter!(DROPPED_CHUNKS).increment(d - dropped);
            dropped = d;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}
