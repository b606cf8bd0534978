//! Telemetry any sealstream process exports: the Prometheus recorder (installed once per
//! process) and the HTTP listener that serves `/metrics` (Prometheus text format), `/healthz`
//! (the process is up) and `/readyz` (what the process's `Readiness` says). The server's
//! readiness is `server::ops::OpsState`; the agent's listener is always ready.

use std::convert::Infallible;
use std::future::Future;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The agent's capture-to-ack histogram (`agent::metrics::CAPTURE_TO_ACK`).
pub const CAPTURE_TO_ACK: &str = "sealstream_agent_capture_to_ack_seconds";

/// Its buckets: 25 ms apart up to 100 ms and 50 ms apart up to 500 ms (where a healthy
/// agent's acks fall, docs/benchmarks.md), so a p50 or p99 read as a bucket bound is within
/// 25 or 50 ms of the truth, not within the 250 ms of the shared latency buckets.
pub const CAPTURE_TO_ACK_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
];

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
                // The exporter tries full-name matchers before suffixes, so this one wins.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(CAPTURE_TO_ACK.into()),
                        CAPTURE_TO_ACK_BUCKETS,
                    )
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &sizes))
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// What `/readyz` answers: ready, or why not (the text after the 503).
pub trait Readiness: Clone + Send + Sync + 'static {
    fn check(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// A process that is ready whenever it is up (the agent's listener).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Serve `/metrics`, `/healthz` and `/readyz` (asking `ready`) on `listener` until the task
/// is dropped.
pub async fn serve<R: Readiness>(listener: tokio::net::TcpListener, ready: R) {
    let handle = prometheus();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (ready, handle) = (ready.clone(), handle.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (ready, handle) = (ready.clone(), handle.clone());
                async move {
                    Ok::<_, Infallible>(route(req.uri().path(), &ready, handle.as_ref()).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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

async fn route<R: Readiness>(
    path: &str,
    ready: &R,
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
        "/readyz" => match ready.check().await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone)]
    struct Starting;

    impl Readiness for Starting {
        async fn check(&self) -> Result<(), String> {
            Err("starting".into())
        }
    }

    /// The status line and body `path` gets from `addr`.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    async fn listen<R: Readiness>(ready: R) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, ready));
        addr
    }

    #[tokio::test]
    async fn the_listener_answers_each_path() {
        let up = listen(AlwaysReady).await;
        let starting = listen(Starting).await;
        assert_eq!(
            get(up, "/healthz").await,
            ("HTTP/1.1 200 OK".into(), "ok\n".into())
        );
        assert_eq!(
            get(up, "/readyz").await,
            ("HTTP/1.1 200 OK".into(), "ready\n".into())
        );
        assert_eq!(
            get(starting, "/healthz").await,
            ("HTTP/1.1 200 OK".into(), "ok\n".into())
        );
        assert_eq!(
            get(starting, "/readyz").await,
            (
                "HTTP/1.1 503 Service Unavailable".into(),
                "starting\n".into()
            )
        );
        assert_eq!(
            get(up, "/nope").await,
            (
                "HTTP/1.1 404 Not Found".into(),
                "not found: try /metrics, /healthz or /readyz\n".into()
            )
        );
        let (status, _) = get(up, "/metrics").await;
        if prometheus().is_some() {
            assert_eq!(status, "HTTP/1.1 200 OK");
        } else {
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        }
    }
}
