//! `sealstream-loadtest`: sizes sealstream for terminal servers and VDI farms. `run` drives N
//! simulated agents x M user sessions over real QUIC with enrolled certificates against the
//! real pipeline and, side by side, a transport-only sink, and reports the ratio. `seal`
//! measures the sealing pipeline against bare AES-256-GCM. Every figure is a ratio against a
//! baseline in the same run, because these machines are shared and absolute numbers drift.

mod report;
mod runner;
mod scenario;
mod seal_bench;
mod target;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sealstream-loadtest", about = "sealstream load-test harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario against the transport-only sink and the pipeline, side by side.
    Run {
        /// Scenario file (loadtest/scenarios/*.toml).
        #[arg(long)]
        scenario: PathBuf,
        /// Directory for report.json, report.html and the servers' data.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run the server inside this process instead of a child `sealstream serve`.
        #[arg(long)]
        in_process: bool,
        /// The `sealstream` binary to spawn; default: next to this one.
        #[arg(long)]
        sealstream: Option<PathBuf>,
        /// Only the pipeline (no transport baseline, no ratio).
        #[arg(long)]
        pipeline_only: bool,
        /// Keep the servers' data directories (stores can be many GB) after the run.
        #[arg(long)]
        keep_data: bool,
        /// Override the scenario's duration, agents or users per agent.
        #[arg(long)]
        duration: Option<f64>,
        #[arg(long)]
        agents: Option<usize>,
        #[arg(long)]
        users: Option<usize>,
    },
    /// Sealing pipeline throughput as a ratio of bare AES-256-GCM throughput.
    Seal {
        #[arg(long, default_value_t = 64 * 1024)]
        frame_size: usize,
        #[arg(long, default_value_t = 256 * 1024 * 1024)]
        total: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEALSTREAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Seal {
            frame_size,
            total,
            rounds,
            json,
        } => seal_bench::seal(frame_size, total, rounds, json),
        Command::Run {
            scenario,
            out,
            in_process,
            sealstream,
            pipeline_only,
            keep_data,
            duration,
            agents,
            users,
        } => {
            let mut sc = scenario::Scenario::load(&scenario)?;
            if let Some(d) = duration {
                sc.duration_s = d;
            }
            if let Some(a) = agents {
                sc.agents = a;
            }
            if let Some(u) = users {
                sc.users_per_agent = u;
            }
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let out = out.unwrap_or_else(|| {
                PathBuf::from("loadtest-results").join(format!("{}-{secs}", sc.name))
            });
            let bin = match sealstream {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("sealstream"),
            };
            let host = if in_process {
                target::Host::InProcess
            } else {
                target::Host::Spawn
            };
            if host == target::Host::Spawn {
                anyhow::ensure!(
                    bin.exists(),
                    "{}: not found; build it (cargo build --release) or pass --sealstream",
                    bin.display()
                );
            }
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(run(
                sc,
                out.clone(),
                host,
                bin,
                pipeline_only,
                keep_data,
                command,
            ))?;
            println!("{}", report::summary(&report));
            report::write(&report, &out)?;
            println!("report: {}/report.html and report.json", out.display());
            let bad = [&report.transport, &report.pipeline]
                .into_iter()
                .flatten()
                .any(|r| r.lost > 0 || r.duplicates > 0);
            anyhow::ensure!(!bad, "chunks were lost or acked twice (see above)");
            Ok(())
        }
    }
}

async fn run(
    sc: scenario::Scenario,
    out: PathBuf,
    host: target::Host,
    bin: PathBuf,
    pipeline_only: bool,
    keep_data: bool,
    command: String,
) -> anyhow::Result<report::Report> {
    use target::Mode;
    let modes: &[Mode] = if pipeline_only {
        &[Mode::Pipeline]
    } else {
        &[Mode::Transport, Mode::Pipeline]
    };
    let mut report = report::Report {
        scenario: sc.clone(),
        machine: report::Machine::read(),
        command,
        transport: None,
        pipeline: None,
        ratio: None,
        stored_chunks: None,
    };
    for &mode in modes {
        let dir = out.join(format!("{mode:?}").to_lowercase());
        let prepared = target::Prepared::new(mode, &dir, &sc)?;
        let agents = prepared.enroll(sc.agents, &sc)?;
        let expected = sc.ramp_up_s + sc.duration_s + sc.outage_s;
        let pb = indicatif::ProgressBar::new((expected * 10.0) as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
                .expect("valid template"),
        );
        let p = &prepared;
        let bin = &bin;
        let (result, running) = runner::run(
            &sc,
            mode,
            agents,
            || async move {
                let r = p.start(host, bin).await?;
                let pid = r.pid();
                Ok((r, pid))
            },
            &pb,
        )
        .await?;
        pb.finish_and_clear();
        running.stop().await;
        if mode == Mode::Pipeline {
            let md = sealstream::metadata::Metadata::open("", &prepared.cfg.sqlite_path()).await?;
            report.stored_chunks = Some(md.count(sealstream::metadata::Table::Chunks).await?);
            report.pipeline = Some(result);
        } else {
            report.transport = Some(result);
        }
        if !keep_data {
            // The store of one throughput run is several GB: keep the log, drop the data.
            let _ = std::fs::remove_dir_all(prepared.cfg.store_dir());
            let _ = std::fs::remove_dir_all(dir.join("agents"));
        }
    }
    if let (Some(t), Some(p)) = (&report.transport, &report.pipeline) {
        report.ratio = Some(p.mb_per_s / t.mb_per_s.max(1e-9));
    }
    Ok(report)
}
