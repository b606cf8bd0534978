//! The server's readiness for the operations listener (`crate::telemetry::serve`): `/readyz`
//! is ready once QUIC is listening, while the metadata database answers and no pipeline stage
//! is stuck; `sealstream_ready` follows it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::metadata::Metadata;
use crate::telemetry::Readiness;

#[derive(Clone)]
pub struct OpsState {
    /// Checked by /readyz.
    pub metadata: Option<Metadata>,
    pub ready: Arc<AtomicBool>,
    /// The server's progress watchdog: a stuck stage makes /readyz unready.
    pub progress: Option<Arc<super::watchdog::Progress>>,
}

impl Readiness for OpsState {
    async fn check(&self) -> Result<(), String> {
        readiness(self).await
    }
}

/// What `/readyz` answers: ready, or why not (starting; the metadata database does not
/// answer; a pipeline stage is stuck).
pub async fn readiness(state: &OpsState) -> Result<(), String> {
    if !state.ready.load(Ordering::Relaxed) {
        return Err("starting".into());
    }
    if let Some(p) = &state.progress {
        let stuck = p.stalled_stages();
        if !stuck.is_empty() {
            let names: Vec<&str> = stuck.iter().map(|s| s.name()).collect();
            return Err(format!(
                "pipeline stalled in stage {}: work waiting and none completed (see the server log)",
                names.join(", ")
            ));
        }
    }
    if let Some(md) = &state.metadata {
        md.ping()
            .await
            .map_err(|e| format!("metadata unavailable: {e}"))?;
    }
    Ok(())
}

/// Keep `sealstream_ready` (1 or 0) equal to what `/readyz` would answer, so that Prometheus
/// alerts on readiness, not only on the process being up.
pub async fn export_readiness(state: OpsState, every: std::time::Duration) {
    loop {
        let ready = readiness(&state).await.is_ok();
        metrics::gauge!(super::metrics::READY).set(if ready { 1.0 } else { 0.0 });
        tokio::time::sleep(every).await;
    }
}
