//! The start-up checks of `sealstream serve` and `sealstream agent` configurations: each
//! refusal names the offending field.

use std::path::Path;

use super::{AgentConfig, ConfigError, Location, ServeConfig};

impl ServeConfig {
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field, message: &str| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                field,
                message: message.to_owned(),
            })
        };
        if !(self.database_url.is_empty()
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
            || self.database_url.starts_with("host="))
        {
            return bad(
                "database_url",
                "use postgres://user@host/db, or leave it empty for the embedded SQLite file",
            );
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        if let Err(e) = Location::parse(&self.store_location()) {
            return bad("store_url", &e.to_string());
        }
        if self.store.multipart_part_bytes < 5 * 1024 * 1024
            || self.store.multipart_threshold_bytes < self.store.multipart_part_bytes
        {
            return bad(
                "store.multipart_part_bytes",
                "must be at least 5 MiB (S3's smallest part) and at most multipart_threshold_bytes",
            );
        }
        if self.store.retry_timeout_ms == 0 || self.store.request_timeout_ms == 0 {
            return bad(
                "store",
                "retry_timeout_ms and request_timeout_ms must be at least 1",
            );
        }
        if self.node_id.len() > 128 || self.node_id.chars().any(|c| c.is_control()) {
            return bad("node_id", "at most 128 printable characters");
        }
        if let Some(c) = &self.console {
            if c.tls_cert.is_some() != c.tls_key.is_some() {
                return bad("console", "set both tls_cert and tls_key, or neither");
            }
            if c.tls_cert.is_none() && !c.listen.ip().is_loopback() {
                return bad(
                    "console.listen",
                    "plain HTTP is allowed only on a loopback address (the browser needs a secure context for WebCrypto); set tls_cert and tls_key",
                );
            }
            if c.idle_minutes == 0 || c.max_failed_logins == 0 {
                return bad(
                    "console",
                    "idle_minutes and max_failed_logins must be at least 1",
                );
            }
        }
        if self.limits.stream_receive_window < 64 * 1024
            || self.limits.connection_receive_window < self.limits.stream_receive_window
        {
            return bad(
                "limits.stream_receive_window",
                "must be at least 64 KiB and at most connection_receive_window",
            );
        }
        if self.limits.max_handshakes == 0 || self.limits.handshake_timeout_ms == 0 {
            return bad(
                "limits",
                "max_handshakes and handshake_timeout_ms must be at least 1",
            );
        }
        let whole = crate::protocol::uplink::MAX_BODY + 5;
        if self.limits.partial_bytes_per_connection < whole
            || self.limits.partial_bytes_total < self.limits.partial_bytes_per_connection
        {
            return bad(
                "limits.partial_bytes_per_connection",
                "must hold one whole message (16 MiB + 5 bytes) and be at most partial_bytes_total",
            );
        }
        if self.limits.dek_records_per_minute == 0 {
            return bad("limits.dek_records_per_minute", "must be at least 1");
        }
        if self.limits.max_in_flight_per_stream == 0 {
            return bad("limits.max_in_flight_per_stream", "must be at least 1");
        }
        if self.segments.max_bytes < 64 * 1024 || self.segments.max_bytes > 512 * 1024 * 1024 {
            return bad("segments.max_bytes", "must be between 64 KiB and 512 MiB");
        }
        if self.segments.max_age_ms == 0 || self.segments.store_actors == 0 {
            return bad("segments", "max_age_ms and store_actors must be at least 1");
        }
        if self.access_poll_ms == 0 {
            return bad("access_poll_ms", "must be at least 1");
        }
        if self.kek_poll_ms == 0 {
            return bad("kek_poll_ms", "must be at least 1");
        }
        if self.database.index_connections == 0 || self.database.key_connections == 0 {
            return bad(
                "database",
                "index_connections and key_connections must be at least 1",
            );
        }
        if self.database.acquire_timeout_ms == 0 || self.database.connect_timeout_ms == 0 {
            return bad(
                "database",
                "acquire_timeout_ms and connect_timeout_ms must be at least 1",
            );
        }
        if self.watchdog.stall_after_ms < 100 {
            return bad("watchdog.stall_after_ms", "must be at least 100");
        }
        Ok(())
    }
}

impl AgentConfig {
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field, message: String| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                field,
                message,
            })
        };
        if self.addresses().is_empty() {
            return bad(
                "server",
                "give the ingest server's host:port (and more nodes in `servers`)".into(),
            );
        }
        if self.server_pins.is_empty() {
            return bad(
                "server_pins",
                "give at least one pin (`sealstream agents enroll` prints it)".into(),
            );
        }
        for pin in &self.server_pins {
            if crate::protocol::KekId::parse(pin).is_err() {
                return bad(
                    "server_pins",
                    format!("{pin:?} is not sha256: and 64 hex digits"),
                );
            }
        }
        if !self.e2ee && self.server_kek.is_none() {
            return bad(
                "server_kek",
                "e2ee = false needs the server-held KEK's public key".into(),
            );
        }
        if let Some((field, message)) = self.capture.problem() {
            return bad(field, message);
        }
        if self.window == 0 || self.max_unacked_bytes < 1024 * 1024 {
            return bad(
                "window",
                "window >= 1 and max_unacked_bytes >= 1 MiB".into(),
            );
        }
        Ok(())
    }
}
