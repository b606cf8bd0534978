//! Room for half-received messages (`limits.partial_bytes_per_connection` and
//! `limits.partial_bytes_total`): a stream holds budget only for bytes it has buffered.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::metrics as m;

/// Room for half-received message bytes, taken from the connection's budget and the server's
/// as a message arrives and given back once it is whole.
pub struct Budget {
    connection: Arc<Semaphore>,
    server: Arc<Semaphore>,
    /// Bytes this stream holds of both.
    held: usize,
}

impl Budget {
    pub(super) fn new(connection: Arc<Semaphore>, server: Arc<Semaphore>) -> Self {
        Budget {
            connection,
            server,
            held: 0,
        }
    }

    pub(super) fn give_back(&mut self, bytes: usize) {
        let back = bytes.min(self.held);
        if back > 0 {
            self.connection.add_permits(back);
            self.server.add_permits(back);
            metrics::gauge!(m::PARTIAL_BYTES).decrement(back as f64);
            self.held -= back;
        }
    }

    /// Hold exactly `bytes`: give back what is no longer buffered, or wait for room for what
    /// is newly buffered.
    pub(super) async fn hold(&mut self, bytes: usize) {
        if bytes <= self.held {
            self.give_back(self.held - bytes);
            return;
        }
        let more = (bytes - self.held) as u32;
        let (Ok(conn), Ok(server)) = (
            self.connection.clone().acquire_many_owned(more).await,
            self.server.clone().acquire_many_owned(more).await,
        ) else {
            return;
        };
        conn.forget();
        server.forget();
        self.held = bytes;
        metrics::gauge!(m::PARTIAL_BYTES).increment(f64::from(more));
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.give_back(self.held);
    }
}
