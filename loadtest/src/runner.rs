//! Runs a scenario's agents against a started target and measures: acked throughput, ack
//! latency (HDR histogram), rejections by code, the server's CPU and RSS over time, and that
//! every chunk sealed was acked exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sealstream::agent::{self, Observer, Source, synthetic::SyntheticSpec};
use sealstream::config::AgentConfig;
use sealstream::protocol::uplink::Reject;
use serde::Serialize;

use crate::scenario::Scenario;
use crate::target::Mode;

pub struct Collector {
    latency_us: Mutex<Histogram<u64>>,
    acked_bytes: AtomicU64,
    acked_chunks: AtomicU64,
    sealed_chunks: AtomicU64,
    rejections: Mutex<BTreeMap<String, u64>>,
    /// Microseconds since `epoch` of the latest ack (0 before the first), and the longest
    /// time between two acks: a pipeline that stops for a while shows here.
    epoch: Instant,
    last_ack_us: AtomicU64,
    longest_gap_us: AtomicU64,
}

impl Collector {
    pub fn new() -> Self {
        Collector {
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            ),
            acked_bytes: AtomicU64::new(0),
            acked_chunks: AtomicU64::new(0),
            sealed_chunks: AtomicU64::new(0),
            rejections: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
            last_ack_us: AtomicU64::new(0),
            longest_gap_us: AtomicU64::new(0),
        }
    }
}

impl Observer for Collector {
    fn acked(&self, bytes: usize, latency: Duration) {
        self.acked_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.acked_chunks.fetch_add(1, Ordering::Relaxed);
        let us = (latency.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.latency_us.lock().expect("histogram lock").record(us);
        let now = self.epoch.elapsed().as_micros() as u64 + 1;
        let prev = self.last_ack_us.swap(now, Ordering::Relaxed);
        if prev != 0 {
            self.longest_gap_us
                .fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
        }
    }

    fn rejected(&self, code: Reject) {
        *self
            .rejections
            .lock()
            .expect("rejections lock")
            .entry(code.name().into())
            .or_default() += 1;
    }

    fn sealed(&self, _bytes: usize) {
        self.sealed_chunks.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the agents started.
    pub t: f64,
    pub acked_bytes: u64,
    pub acked_chunks: u64,
    /// Server CPU, percent of one core, over the last interval.
    pub cpu_pct: f64,
    pub rss_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub mode: Mode,
    /// The metadata database the pipeline ran on ("sqlite" or "postgresql"); none for the
    /// transport-only sink.
    pub database: Option<String>,
    /// Index rows in the pipeline's database after the run (each acked chunk once).
    pub stored_chunks: Option<i64>,
    /// `--check-export`: chunks an export of the pipeline's store decrypted, frames in it with
    /// the SHA-256 of the frame the agent sealed, and the differences from what the agents
    /// sealed (missing, altered, extra or duplicated frames, keystrokes, chunk count, damaged
    /// objects, streams not complete), the first few of them described.
    pub exported_chunks: Option<u64>,
    pub export_frames_matched: Option<u64>,
    pub export_mismatches: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export_first_mismatches: Vec<String>,
    /// This run's throughput / the transport-only run's, measured side by side.
    pub ratio_to_transport: Option<f64>,
    /// The longest time between two acks, anywhere, while agents were sending: a pipeline
    /// that stalls for a second shows a second here even when throughput averages well.
    pub longest_ack_gap_ms: f64,
    /// The steady window (after ramp-up, before the agents stop) the rates are measured over.
    pub window_s: f64,
    pub mb_per_s: f64,
    pub chunks_per_s: f64,
    pub sealed_chunks: u64,
    pub acked_chunks: u64,
    pub acked_bytes: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Ack latency in milliseconds.
    pub ack_latency_ms: Percentiles,
    pub rejections: BTreeMap<String, u64>,
    pub max_rss_bytes: u64,
    pub mean_cpu_pct: f64,
    /// Burst: chunks sealed before the server came up, and how long they took to drain.
    pub backlog_chunks: u64,
    pub drain_s: Option<f64>,
    pub samples: Vec<Sample>,
    /// What each agent sealed (frame digests per session), for `--check-export`.
    #[serde(skip)]
    pub agent_reports: Vec<sealstream::agent::AgentReport>,
}

/// Process stats from /proc (Linux): (cpu ticks, rss bytes).
fn proc_stats(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss_kb = sealstream_test_support::proc_kib(pid, "status", "VmRSS").ok()?;
    Some((ticks, rss_kb * 1024))
}

const TICKS_PER_S: f64 = 100.0;

/// Run the scenario's agents; `start_target` is awaited after `outage_s` (at once normally).
pub async fn run<F, Fut, T>(
    scenario: &Scenario,
    mode: Mode,
    label: &str,
    agents: Vec<AgentConfig>,
    start_target: F,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(RunResult, T)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(T, u32)>>,
{
    let collector = Arc::new(Collector::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let n = agents.len();
    let mut tasks = Vec::new();
    for (i, cfg) in agents.into_iter().enumerate() {
        let delay = Duration::from_secs_f64(scenario.ramp_up_s * i as f64 / n.max(1) as f64);
        let spec = SyntheticSpec {
            users: scenario.users_per_agent,
            duration: Duration::from_secs_f64(scenario.duration_s),
            frame_interval: Duration::from_millis(scenario.frames.interval_ms),
            frame_size: scenario.frames.size,
            frame_size_spread: scenario.frames.spread,
            keystroke_interval: Duration::from_millis(scenario.keystrokes.interval_ms),
            keystroke_events: scenario.keystrokes.events,
            seed: i as u64 + 1,
            images: false,
        };
        let (obs, stop) = (collector.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            agent::run_observed(
                cfg,
                Source::Synthetic(spec),
                stop,
                Duration::from_secs(60),
                Some(obs),
            )
            .await
        }));
    }
    if scenario.outage_s > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(scenario.outage_s)).await;
    }
    let backlog = collector.sealed_chunks.load(Ordering::Relaxed);
    let target_up = started.elapsed().as_secs_f64();
    let (target, pid) = start_target().await?;

    // Sample every 250 ms until every agent is done.
    let mut samples = Vec::new();
    let mut last = (Instant::now(), proc_stats(pid).map_or(0, |s| s.0));
    let mut drain_s = None;
    let expected_end = scenario.ramp_up_s + scenario.duration_s + scenario.outage_s;
    let deadline = started + Duration::from_secs_f64(expected_end + 120.0);
    while tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let (ticks, rss) = proc_stats(pid).unwrap_or((last.1, 0));
        let cpu = (ticks.saturating_sub(last.1)) as f64
            / TICKS_PER_S
            / now.duration_since(last.0).as_secs_f64()
            * 100.0;
        last = (now, ticks);
        let t = now.duration_since(started).as_secs_f64();
        let acked_bytes = collector.acked_bytes.load(Ordering::Relaxed);
        let acked_chunks = collector.acked_chunks.load(Ordering::Relaxed);
        if drain_s.is_none() && backlog > 0 && acked_chunks >= backlog {
            drain_s = Some(t - target_up);
        }
        samples.push(Sample {
            t,
            acked_bytes,
            acked_chunks,
            cpu_pct: cpu,
            rss_bytes: rss,
        });
        progress.set_position((t.min(expected_end) * 10.0) as u64);
        progress.set_message(format!(
            "{}: {:.1} MB acked, {} chunks, server RSS {} MiB",
            label,
            acked_bytes as f64 / 1e6,
            acked_chunks,
            rss / (1024 * 1024)
        ));
        if now > deadline {
            let _ = stop_tx.send(true);
        }
    }
    let mut lost = 0;
    let mut duplicates = 0;
    let mut agent_reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        let report = t.await??;
        lost += report.chunks_sealed - report.chunks_acked;
        duplicates += report.duplicate_acks;
        agent_reports.push(report);
    }
    let hist = collector.latency_us.lock().expect("histogram lock").clone();
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    // Rates over the steady window: after ramp-up (and the outage), until the recording stops.
    let w0 = scenario.ramp_up_s + scenario.outage_s;
    let w1 = scenario.duration_s + scenario.outage_s;
    let at = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
            .cloned()
            .unwrap_or(Sample {
                t,
                acked_bytes: 0,
                acked_chunks: 0,
                cpu_pct: 0.0,
                rss_bytes: 0,
            })
    };
    let (s0, s1) = (at(w0), at(w1.max(w0 + 0.25)));
    let window = (s1.t - s0.t).max(0.25);
    let busy: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= s0.t && s.t <= s1.t)
        .collect();
    let result = RunResult {
        mode,
        database: None,
        stored_chunks: None,
        exported_chunks: None,
        export_frames_matched: None,
        export_mismatches: None,
        export_first_mismatches: Vec::new(),
        ratio_to_transport: None,
        longest_ack_gap_ms: collector.longest_gap_us.load(Ordering::Relaxed) as f64 / 1000.0,
        window_s: window,
        mb_per_s: (s1.acked_bytes - s0.acked_bytes) as f64 / window / 1e6,
        chunks_per_s: (s1.acked_chunks - s0.acked_chunks) as f64 / window,
        sealed_chunks: collector.sealed_chunks.load(Ordering::Relaxed),
        acked_chunks: collector.acked_chunks.load(Ordering::Relaxed),
        acked_bytes: collector.acked_bytes.load(Ordering::Relaxed),
        lost,
        duplicates,
        ack_latency_ms: Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: hist.max() as f64 / 1000.0,
        },
        rejections: collector
            .rejections
            .lock()
            .expect("rejections lock")
            .clone(),
        max_rss_bytes: samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
        mean_cpu_pct: if busy.is_empty() {
            0.0
        } else {
            busy.iter().map(|s| s.cpu_pct).sum::<f64>() / busy.len() as f64
        },
        backlog_chunks: if scenario.outage_s > 0.0 { backlog } else { 0 },
        drain_s,
        samples,
        agent_reports,
    };
    Ok((result, target))
}
