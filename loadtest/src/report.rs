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
    pub transport: Option<RunResult>,
    pub pipeline: Option<RunResult>,
    /// pipeline throughput / transport-only throughput, measured side by side.
    pub ratio: Option<f64>,
    /// Stored chunk rows in the pipeline's index after the run (each chunk once).
    pub stored_chunks: Option<i64>,
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
    for run in [&r.transport, &r.pipeline].into_iter().flatten() {
        let l = &run.ack_latency_ms;
        let _ = writeln!(
            s,
            "  {:<9?} {:8.1} MB/s {:9.0} chunks/s | ack ms p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} | server RSS max {} MiB, CPU {:.0}% | sealed {} acked {} lost {} duplicates {}{}",
            run.mode,
            run.mb_per_s,
            run.chunks_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            run.max_rss_bytes / (1024 * 1024),
            run.mean_cpu_pct,
            run.sealed_chunks,
            run.acked_chunks,
            run.lost,
            run.duplicates,
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
    if let Some(ratio) = r.ratio {
        let _ = writeln!(s, "  pipeline / transport throughput = {ratio:.3}");
    }
    if let (Some(stored), Some(p)) = (r.stored_chunks, &r.pipeline) {
        let _ = writeln!(
            s,
            "  index rows {stored} for {} acked chunks",
            p.acked_chunks
        );
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
    let runs: Vec<&RunResult> = [&r.transport, &r.pipeline].into_iter().flatten().collect();
    // One line per run for a sample series.
    let series = |f: &dyn Fn(&RunResult) -> Vec<(f64, f64)>| -> Vec<Series<'_>> {
        runs.iter()
            .map(|m| match m.mode {
                Mode::Pipeline => ("pipeline", "#c0392b", f(m)),
                Mode::Transport => ("transport", "#2471a3", f(m)),
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
            "<tr><td>{:?}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            m.mode, l.p50, l.p90, l.p99, l.p999, l.max
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
