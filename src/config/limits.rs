//! `[limits]` and `[watchdog]` in serve.toml: how much the ingest server takes on, and how
//! long its pipeline may make no progress before it is reported stuck.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout_ms: u64,
    pub connection_receive_window: u64,
    pub stream_receive_window: u64,
    pub max_streams_per_connection: u64,
    /// Chunks accepted but not yet durable, per stream, before the server stops reading it.
    pub max_in_flight_per_stream: usize,
    /// SO_RCVBUF / SO_SNDBUF for the UDP socket (the kernel caps it at net.core.rmem_max).
    pub udp_buffer_bytes: usize,
    /// New DEK records one agent may register per minute (and at once): an agent makes one
    /// per start and per key rotation; more is refused `retry_later`.
    pub dek_records_per_minute: u32,
    /// Handshakes under way from addresses QUIC has not validated; beyond this, new ones get
    /// a stateless Retry (so a spoofed or stalled flood costs no state) and only validated
    /// addresses proceed. Handshakes do not count against `max_connections` until the client
    /// certificate is seen.
    pub max_handshakes: usize,
    /// A handshake not finished by then is dropped.
    pub handshake_timeout_ms: u64,
    /// Bytes of half-received messages one connection may have buffered in the server; more
    /// waits (QUIC flow control then holds the peer back). At least one whole message.
    pub partial_bytes_per_connection: usize,
    /// The same, summed over all connections.
    pub partial_bytes_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            idle_timeout_ms: 30_000,
            connection_receive_window: 8 * 1024 * 1024,
            stream_receive_window: 2 * 1024 * 1024,
            max_streams_per_connection: 512,
            max_in_flight_per_stream: 64,
            udp_buffer_bytes: 32 * 1024 * 1024,
            dek_records_per_minute: 12,
            max_handshakes: 128,
            handshake_timeout_ms: 5_000,
            partial_bytes_per_connection: 48 * 1024 * 1024,
            partial_bytes_total: 512 * 1024 * 1024,
        }
    }
}

/// The progress watchdog: a stage (keys, segment writes, index commits) with work waiting and
/// nothing completed for `stall_after_ms` is reported stuck: `/readyz` answers 503, the
/// `sealstream_pipeline_stalled{stage}` gauge is 1, and one log line names the stage.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Watchdog {
    pub stall_after_ms: u64,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            stall_after_ms: 30_000,
        }
    }
}
