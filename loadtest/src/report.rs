//! Reports: a summary on the terminal, a JSON file, and an HTML page with SVG charts
//! (throughput, latency percentiles, server RSS and CPU over time) to look at.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::runner::{RunResult, Sample};
use crate::scenario::Scenario;
use crate::target::Mode;

#[derive(Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub machine: Machine,
    pub command: String,
    /// The metadata database of `pipeline`: "sqlite" or "postgresql".
    pub database: String,
    pub transport: Option<RunResult>,
    /// The pipeline on `database`.
    pub pipeline: Option<RunResult>,
    /// With `--compare-sqlite`: the pipeline on the embedded SQLite file, same invocation.
    pub pipeline_sqlite: Option<RunResult>,
    /// pipeline throughput / transport-only throughput, measured side by side.
    pub ratio: Option<f64>,
    /// PostgreSQL pipeline throughput / SQLite pipeline throughput, same invocation.
    pub postgres_to_sqlite: Option<f64>,
    /// Every round's figures (`--rounds`); the runs above are the last round's.
    pub rounds: Vec<Round>,
    /// Runs that lost a chunk, acked one twice, indexed one other than once or (with
    /// `--check-export`) exported something other than what the agents sealed.
    pub problems: Vec<String>,
    pub median_ratio: Option<f64>,
    pub median_postgres_to_sqlite: Option<f64>,
}

/// One round's figures.
#[derive(Serialize)]
pub struct Round {
    pub transport_mb_per_s: Option<f64>,
    pub pipeline_mb_per_s: Option<f64>,
    pub pipeline_p99_ms: Option<f64>,
    pub pipeline_rss_mib: Option<u64>,
    pub pipeline_sqlite_mb_per_s: Option<f64>,
    pub pipeline_sqlite_p99_ms: Option<f64>,
    pub pipeline_sqlite_rss_mib: Option<u64>,
    pub ratio: Option<f64>,
    pub sqlite_ratio: Option<f64>,
    pub postgres_to_sqlite: Option<f64>,
}

impl Round {
    pub fn of(r: &Report) -> Round {
        Round {
            transport_mb_per_s: r.transport.as_ref().map(|t| t.mb_per_s),
            pipeline_mb_per_s: r.pipeline.as_ref().map(|p| p.mb_per_s),
            pipeline_p99_ms: r.pipeline.as_ref().map(|p| p.ack_latency_ms.p99),
            pipeline_rss_mib: r.pipeline.as_ref().map(|p| p.max_rss_bytes >> 20),
            pipeline_sqlite_mb_per_s: r.pipeline_sqlite.as_ref().map(|p| p.mb_per_s),
            pipeline_sqlite_p99_ms: r.pipeline_sqlite.as_ref().map(|p| p.ack_latency_ms.p99),
            pipeline_sqlite_rss_mib: r.pipeline_sqlite.as_ref().map(|p| p.max_rss_bytes >> 20),
            ratio: r.ratio,
            sqlite_ratio: r
                .pipeline_sqlite
                .as_ref()
                .and_then(|p| p.ratio_to_transport),
            postgres_to_sqlite: r.postgres_to_sqlite,
        }
    }

    pub fn line(&self) -> String {
        let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        format!(
            "transport {} MB/s | pipeline {} MB/s p99 {} ms RSS {} MiB (ratio {}) | sqlite {} MB/s p99 {} ms RSS {} MiB (ratio {}) | postgresql / sqlite {}",
            f(self.transport_mb_per_s, 1),
            f(self.pipeline_mb_per_s, 1),
            f(self.pipeline_p99_ms, 0),
            self.pipeline_rss_mib.map_or("-".into(), |v| v.to_string()),
            f(self.ratio, 3),
            f(self.pipeline_sqlite_mb_per_s, 1),
            f(self.pipeline_sqlite_p99_ms, 0),
            self.pipeline_sqlite_rss_mib
                .map_or("-".into(), |v| v.to_string()),
            f(self.sqlite_ratio, 3),
            f(self.postgres_to_sqlite, 3),
        )
    }
}

pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Report {
    /// Every run, in the order they ran.
    pub fn runs(&self) -> impl Iterator<Item = &RunResult> {
        [&self.transport, &self.pipeline_sqlite, &self.pipeline]
            .into_iter()
            .flatten()
    }
}

/// "transport", "pipeline (sqlite)", "pipeline (postgresql)".
fn run_name(run: &RunResult) -> String {
    match &run.database {
        Some(db) => format!("pipeline ({db})"),
        None => format!("{:?}", run.mode).to_lowercase(),
    }
}

#[derive(Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub rmem_max: Option<u64>,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let mem_kb = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: mem_kb / 1024.0 / 1024.0,
            rmem_max: std::fs::read_to_string("/proc/sys/net/core/rmem_max")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }
}

pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let sc = &r.scenario;
    let _ = writeln!(
        s,
        "scenario {}: {} agents x {} users ({} streams), {:.0} s, frames {} B every {} ms, keystrokes {} events every {} ms",
        sc.name,
        sc.agents,
        sc.users_per_agent,
        sc.streams(),
        sc.duration_s,
        sc.frames.size,
        sc.frames.interval_ms,
        sc.keystrokes.events,
        sc.keystrokes.interval_ms
    );
    for run in r.runs() {
        let l = &run.ack_latency_ms;
        let _ = writeln!(
            s,
            "  {:<21} {:8.1} MB/s {:9.0} chunks/s | ack ms p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} | longest without an ack {:.0} ms | server RSS max {} MiB, CPU {:.0}% | sealed {} acked {} lost {} duplicates {}{}{}",
            run_name(run),
            run.mb_per_s,
            run.chunks_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            run.longest_ack_gap_ms,
            run.max_rss_bytes / (1024 * 1024),
            run.mean_cpu_pct,
            run.sealed_chunks,
            run.acked_chunks,
            run.lost,
            run.duplicates,
            run.stored_chunks
                .map(|n| format!(" index rows {n}"))
                .unwrap_or_default()
                + &run
                    .export_mismatches
                    .map(|n| format!(
                        " | export: {} chunks, {} frames as sealed, {n} mismatches",
                        run.exported_chunks.unwrap_or(0),
                        run.export_frames_matched.unwrap_or(0)
                    ))
                    .unwrap_or_default(),
            run.drain_s
                .map(|d| format!(
                    " | backlog {} chunks drained in {d:.1} s",
                    run.backlog_chunks
                ))
                .unwrap_or_default()
        );
        if !run.rejections.is_empty() {
            let _ = writeln!(s, "            rejections: {:?}", run.rejections);
        }
    }
    for p in [&r.pipeline_sqlite, &r.pipeline].into_iter().flatten() {
        if let Some(ratio) = p.ratio_to_transport {
            let _ = writeln!(
                s,
                "  pipeline / transport throughput = {ratio:.3} ({})",
                p.database.as_deref().unwrap_or("?")
            );
        }
    }
    if let Some(x) = r.postgres_to_sqlite {
        let _ = writeln!(s, "  postgresql / sqlite pipeline throughput = {x:.3}");
    }
    if r.rounds.len() > 1 {
        let _ = writeln!(s, "  {} rounds:", r.rounds.len());
        for (i, round) in r.rounds.iter().enumerate() {
            let _ = writeln!(s, "    {}: {}", i + 1, round.line());
        }
        if let Some(m) = r.median_ratio {
            let _ = writeln!(s, "  median pipeline / transport throughput = {m:.3}");
        }
        if let Some(m) = r.median_postgres_to_sqlite {
            let _ = writeln!(
                s,
                "  median postgresql / sqlite pipeline throughput = {m:.3}"
            );
        }
    }
    s
}

pub fn write(r: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(r)?)?;
    std::fs::write(dir.join("report.html"), html(r))?;
    Ok(())
}

/// One line of a chart: name, colour, (seconds, value) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart of `series` as SVG.
fn chart(title: &str, unit: &str, series: &[Series<'_>]) -> String {
    let (w, h, pad) = (720.0, 220.0, 40.0);
    let xmax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1e-9_f64, f64::max)
        * 1.1;
    let mut svg = format!(
        "<h3>{title}</h3><svg width=\"{w}\" height=\"{h}\" style=\"background:#fafafa;border:1px solid #ddd\">\
         <text x=\"4\" y=\"14\" font-size=\"11\">{ymax:.1} {unit}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\">{xmax:.0} s</text>",
        h - pad + 4.0,
        w - 50.0,
        h - 8.0
    );
    for (i, (name, colour, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    pad + x / xmax * (w - 2.0 * pad),
                    h - pad - y / ymax * (h - 2.0 * pad)
                )
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"14\" font-size=\"11\" fill=\"{colour}\">{name}</text>",
            path.join(" "),
            200.0 + i as f64 * 140.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn rate(samples: &[Sample], f: impl Fn(&Sample) -> u64, scale: f64) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .map(|w| {
            (
                w[1].t,
                (f(&w[1]).saturating_sub(f(&w[0]))) as f64 / (w[1].t - w[0].t).max(1e-3) / scale,
            )
        })
        .collect()
}

fn html(r: &Report) -> String {
    let runs: Vec<&RunResult> = r.runs().collect();
    let names: Vec<String> = runs.iter().map(|m| run_name(m)).collect();
    // One line per run for a sample series.
    let series = |f: &dyn Fn(&RunResult) -> Vec<(f64, f64)>| -> Vec<Series<'_>> {
        runs.iter()
            .zip(&names)
            .map(|(m, name)| {
                let colour = match (m.mode, m.database.as_deref()) {
                    (Mode::Transport, _) => "#2471a3",
                    (Mode::Pipeline, Some("postgresql")) => "#7d3c98",
                    (Mode::Pipeline, _) => "#c0392b",
                };
                (name.as_str(), colour, f(m))
            })
            .collect()
    };
    let tput = series(&|m| rate(&m.samples, |s| s.acked_bytes, 1e6));
    let rss = series(&|m| {
        m.samples
            .iter()
            .map(|s| (s.t, s.rss_bytes as f64 / 1048576.0))
            .collect()
    });
    let cpu = series(&|m| m.samples.iter().map(|s| (s.t, s.cpu_pct)).collect());
    let mut lat = String::from(
        "<h3>Ack latency (ms)</h3><table border=\"1\" cellpadding=\"4\"><tr><th>run</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>",
    );
    for m in &runs {
        let l = &m.ack_latency_ms;
        let _ = write!(
            lat,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            run_name(m),
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        );
    }
    lat.push_str("</table>");
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>sealstream load test: {name}</title>\
         <body style=\"font-family:sans-serif;max-width:760px;margin:auto\"><h1>sealstream load test: {name}</h1>\
         <p>{desc}</p><pre>{summary}</pre><p>Machine: {cpus} CPUs ({model}), {mem:.0} GiB; command: <code>{cmd}</code></p>{t}{lat}{rss}{cpu}</body>",
        name = r.scenario.name,
        desc = r.scenario.description,
        summary = summary(r),
        cpus = r.machine.cpus,
        model = r.machine.cpu_model,
        mem = r.machine.memory_gib,
        cmd = r.command,
        t = chart("Acked throughput", "MB/s", &tput),
        rss = chart("Server RSS", "MiB", &rss),
        cpu = chart("Server CPU", "% of a core", &cpu),
    )
}
