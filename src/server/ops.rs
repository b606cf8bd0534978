//! The operations listener: `/metrics` (Prometheus text format), `/healthz` (the process is up)
//! and `/readyz` (QUIC is listening and the metadata database answers).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metadata::Metadata;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the Prometheus recorder once per process; `None` if another recorder was installed.
pub fn prometheus() -> Option<PrometheusHandle> {
    prometheus_for(None)
}

/// `prometheus`, with every metric labelled `node` when the recorder is installed by this
/// call (the first in the process wins).
pub fn prometheus_for(node: Option<&str>) -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let latency = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let sizes: Vec<f64> = (16..=30).map(|p| f64::from(1u32 << p)).collect();
            let mut builder = PrometheusBuilder::new();
            if let Some(node) = node {
                builder = builder.add_global_label("node", node);
            }
            let recorder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &sizes))
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

#[derive(Clone)]
pub struct OpsState {
    /// Checked by /readyz (the agent has none).
    pub metadata: Option<Metadata>,
    pub ready: Arc<AtomicBool>,
    /// The server's progress watchdog: a stuck stage makes /readyz unready.
    pub progress: Option<Arc<super::watchdog::Progress>>,
}

/// Serve the ops endpoints on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: OpsState) {
    let handle = prometheus();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (state, handle) = (state.clone(), handle.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (state, handle) = (state.clone(), handle.clone());
                async move {
                    Ok::<_, Infallible>(route(req.uri().path(), &state, handle.as_ref()).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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

/// `--features failpoints` only (the soak): `/failpoint/NAME/off`, `/failpoint/NAME/fail-P`
/// (fail P percent of the calls) or `/failpoint/NAME/sleep-MS` (delay each call).
#[cfg(feature = "failpoints")]
fn set_failpoint(spec: &str) -> Result<String, String> {
    let (name, mode) = spec.split_once('/').ok_or("use /failpoint/NAME/MODE")?;
    let action = match mode.split_once('-') {
        None if mode == "off" => "off".to_owned(),
        Some(("fail", p)) => format!("{}%return", p.parse::<u8>().map_err(|e| e.to_string())?),
        Some(("sleep", ms)) => format!("sleep({})", ms.parse::<u64>().map_err(|e| e.to_string())?),
        _ => return Err(format!("unknown mode {mode:?}: off, fail-P or sleep-MS")),
    };
    fail::cfg(name, &action)?;
    Ok(format!("{name}={action}"))
}

async fn route(
    path: &str,
    state: &OpsState,
    handle: Option<&PrometheusHandle>,
) -> Response<Full<Bytes>> {
    let text = |code: StatusCode, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    match path {
        "/metrics" => match handle {
            Some(h) => text(StatusCode::OK, h.render()),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics recorder not installed\n".into(),
            ),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness(state).await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        #[cfg(feature = "failpoints")]
        p if p.starts_with("/failpoint/") => match set_failpoint(&p["/failpoint/".len()..]) {
            Ok(action) => text(StatusCode::OK, format!("{action}\n")),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}
