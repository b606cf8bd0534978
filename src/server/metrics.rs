//! Metric names (`sealstream_<area>_<name>_<unit>[_total]`) and their descriptions. Labels have
//! bounded values: outcomes and reasons, never an agent id.

pub const RECEIVED_BYTES: &str = "sealstream_ingest_received_bytes_total";
pub const CHUNKS: &str = "sealstream_ingest_chunks_total";
pub const ACK_LATENCY: &str = "sealstream_ingest_ack_latency_seconds";
pub const SECURITY_EVENTS: &str = "sealstream_ingest_security_events_total";
pub const SEGMENT_BYTES: &str = "sealstream_store_segment_bytes";
pub const FLUSH_DURATION: &str = "sealstream_store_flush_duration_seconds";
pub const PUT_ERRORS: &str = "sealstream_store_put_errors_total";
pub const COMMIT_ERRORS: &str = "sealstream_store_commit_errors_total";
pub const STORE_PENDING_BYTES: &str = "sealstream_store_pending_bytes";
pub const CONNECTIONS_OPEN: &str = "sealstream_quic_connections_open";
pub const CONNECTIONS_REFUSED: &str = "sealstream_quic_connections_refused_total";
pub const CONNECTIONS_CLOSED: &str = "sealstream_quic_connections_closed_total";
pub const CERTS_EXPIRING: &str = "sealstream_agent_certificates_expiring";
pub const ACCESS_REFRESH_ERRORS: &str = "sealstream_access_refresh_errors_total";
pub const STREAMS_OPEN: &str = "sealstream_quic_streams_open";
pub const DEK_REGISTRATIONS: &str = "sealstream_keys_dek_registrations_total";
pub const KEKS_ACTIVE: &str = "sealstream_keys_keks_active";
pub const KEY_QUEUE_DEPTH: &str = "sealstream_keys_queue_depth";
pub const PIPELINE_PENDING: &str = "sealstream_pipeline_pending";
pub const PIPELINE_STALLED: &str = "sealstream_pipeline_stalled";
pub const READY: &str = "sealstream_ready";
pub const PARTIAL_BYTES: &str = "sealstream_ingest_partial_message_bytes";
pub const DEK_RATE_LIMITED: &str = "sealstream_keys_dek_rate_limited_total";
pub const AUDIT_CHECKPOINT_SEQ: &str = "sealstream_audit_checkpoint_seq";
pub const VERIFY_STREAMS: &str = "sealstream_store_verify_streams";
pub const VERIFY_DAMAGED: &str = "sealstream_store_verify_damaged_objects";
pub const VERIFY_BYTES: &str = "sealstream_store_verify_bytes";
pub const VERIFY_SECONDS: &str = "sealstream_store_verify_seconds";
pub const DATABASE_UP: &str = "sealstream_database_up";
pub const VERIFY_LAST_RUN: &str = "sealstream_store_verify_last_run_timestamp_seconds";

pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        DATABASE_UP,
        "1 while this node reaches its PostgreSQL, 0 after three failed checks (agents are sent to other nodes)."
    );
    describe_gauge!(
        AUDIT_CHECKPOINT_SEQ,
        "The audit chain row of the newest signed audit checkpoint."
    );
    describe_gauge!(
        VERIFY_STREAMS,
        "Streams by verdict (ok, unproven, incomplete, unsigned, no_dek_record, tampered) in the last background verify of the store."
    );
    describe_gauge!(
        VERIFY_DAMAGED,
        "Objects the last background verify found corrupt, altered, renamed or moved."
    );
    describe_gauge!(
        VERIFY_BYTES,
        Unit::Bytes,
        "Segment bytes the last background verify read."
    );
    describe_gauge!(
        VERIFY_SECONDS,
        Unit::Seconds,
        "How long the last background verify took."
    );
    describe_gauge!(
        VERIFY_LAST_RUN,
        Unit::Seconds,
        "When the last background verify finished (Unix time)."
    );
    describe_counter!(
        RECEIVED_BYTES,
        Unit::Bytes,
        "Sealed chunk bytes received from agents."
    );
    describe_counter!(
        CHUNKS,
        "Chunks received, by outcome (stored, duplicate, or a rejection code)."
    );
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "From a chunk's arrival to its ack or rejection."
    );
    describe_counter!(
        SECURITY_EVENTS,
        "Security events: conflicting duplicates, agent mismatches."
    );
    describe_histogram!(
        SEGMENT_BYTES,
        Unit::Bytes,
        "Size of each segment object written."
    );
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Segment write (durable) plus index commit."
    );
    describe_counter!(
        PUT_ERRORS,
        "Segment or DEK record writes to the object store that failed."
    );
    describe_counter!(
        COMMIT_ERRORS,
        "Index commits to the metadata database that failed."
    );
    describe_gauge!(
        STORE_PENDING_BYTES,
        Unit::Bytes,
        "Chunk bytes accepted and not yet durable."
    );
    describe_gauge!(CONNECTIONS_OPEN, "Agent QUIC connections open.");
    describe_counter!(CONNECTIONS_REFUSED, "Connections refused, by reason.");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Open connections closed by the server because their certificate was revoked or superseded, or their agent disabled, by reason."
    );
    describe_gauge!(
        CERTS_EXPIRING,
        "Agents whose newest certificate not revoked (enrolled, or CA-signed and recorded at its first connection) expires in less than 14 days (or has): renew with `sealstream agents renew`, or with an offline CA `agents csr`, `ca sign` and `agents config`."
    );
    describe_counter!(
        ACCESS_REFRESH_ERRORS,
        "Failed reads of agent_credential/agent_account (the last rules read stay in force)."
    );
    describe_gauge!(STREAMS_OPEN, "Agent streams open.");
    describe_counter!(DEK_REGISTRATIONS, "DEK registrations, by outcome.");
    describe_gauge!(KEKS_ACTIVE, "Active KEKs loaded from encryption_kek.");
    describe_gauge!(KEY_QUEUE_DEPTH, "Requests waiting for the key actor.");
    describe_gauge!(
        PIPELINE_PENDING,
        "Items waiting in a pipeline stage (keys: DEK records; store, index: chunks)."
    );
    describe_gauge!(
        PIPELINE_STALLED,
        "1 while a pipeline stage has had work waiting and completed none for watchdog.stall_after_ms."
    );
    describe_gauge!(
        PARTIAL_BYTES,
        Unit::Bytes,
        "Bytes of half-received messages the server holds (bounded per connection and server-wide)."
    );
    describe_counter!(
        DEK_RATE_LIMITED,
        "New DEK records refused (retry_later) because their agent exceeded the per-minute limit."
    );
    describe_gauge!(
        READY,
        "1 when /readyz answers ready (listening, database answering, no stage stuck), else 0."
    );
    register_zeros();
}

/// Export every counter and gauge from the start, with each of its label values at zero, so
/// dashboards and alerts see a series before the first event.
fn register_zeros() {
    use crate::protocol::uplink::Reject;
    use metrics::{counter, gauge};
    for outcome in ["stored", "duplicate"]
        .into_iter()
        .chain(Reject::ALL.iter().map(|r| r.name()))
    {
        counter!(CHUNKS, "outcome" => outcome).increment(0);
    }
    for outcome in ["registered"]
        .into_iter()
        .chain(Reject::ALL.iter().map(|r| r.name()))
    {
        counter!(DEK_REGISTRATIONS, "outcome" => outcome).increment(0);
    }
    for kind in ["conflicting_duplicate", "agent_mismatch"] {
        counter!(SECURITY_EVENTS, "kind" => kind).increment(0);
    }
    for reason in [
        "handshake",
        "handshake_timeout",
        "handshake_budget",
        "identity",
        "connection_cap",
        "revoked",
        "not_current",
        "disabled",
    ] {
        counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(0);
    }
    for reason in ["revoked", "not_current", "disabled", "superseded"] {
        counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(0);
    }
    counter!(ACCESS_REFRESH_ERRORS).increment(0);
    gauge!(CERTS_EXPIRING).set(0.0);
    for stage in ["keys", "store", "index"] {
        gauge!(PIPELINE_PENDING, "stage" => stage).increment(0.0);
        gauge!(PIPELINE_STALLED, "stage" => stage).increment(0.0);
    }
    for name in [RECEIVED_BYTES, PUT_ERRORS, COMMIT_ERRORS, DEK_RATE_LIMITED] {
        counter!(name).increment(0);
    }
    for name in [
        STORE_PENDING_BYTES,
        CONNECTIONS_OPEN,
        STREAMS_OPEN,
        KEKS_ACTIVE,
        KEY_QUEUE_DEPTH,
        READY,
        PARTIAL_BYTES,
    ] {
        gauge!(name).increment(0.0);
    }
}
