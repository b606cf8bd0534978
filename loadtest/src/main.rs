//! `sealstream-loadtest`: sizes sealstream for terminal servers and VDI farms. `run` drives N
//! simulated agents x M user sessions over real QUIC with enrolled certificates against the
//! real pipeline and, side by side, a transport-only sink, and reports the ratio. `seal`
//! measures the sealing pipeline against bare AES-256-GCM. Every figure is a ratio against a
//! baseline in the same run, because these machines are shared and absolute numbers drift.

mod balance;
mod console_bench;
mod console_player;
mod console_report;
mod export_check;
mod nodes;
mod pg;
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
        /// After each pipeline run, export its store with the run's KEK (as an operator
        /// would) and compare every frame and keystroke batch with what the agents sealed:
        /// `export_mismatches` in report.json, and a failed run if any.
        #[arg(long)]
        check_export: bool,
        /// Override the scenario's duration, agents or users per agent.
        #[arg(long)]
        duration: Option<f64>,
        #[arg(long)]
        agents: Option<usize>,
        #[arg(long)]
        users: Option<usize>,
        /// Run the pipeline on PostgreSQL: a server the harness may create a database on
        /// (e.g. postgres://postgres@127.0.0.1:5432/postgres); the run's own database is
        /// dropped afterwards. Overrides the scenario's `server.database_url`.
        #[arg(long, env = "SEALSTREAM_LOADTEST_DATABASE_URL")]
        database_url: Option<String>,
        /// With a PostgreSQL pipeline, also run the pipeline on the embedded SQLite file in
        /// the same invocation and report PostgreSQL / SQLite throughput.
        #[arg(long)]
        compare_sqlite: bool,
        /// Repeat the whole comparison this many times (the databases' order alternating) and
        /// report the medians: these machines are shared and one run can be off by 10%.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// The review console's list queries at scale: a database of its own filled with
    /// --sessions recorded sessions and --chunks-per-session index rows each, timed through
    /// the console's HTTP API beside a baseline request (docs/benchmarks.md).
    ConsoleList {
        /// PostgreSQL server to create the benchmark's database on; without it, SQLite.
        #[arg(long, env = "SEALSTREAM_LOADTEST_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, default_value_t = 100_000)]
        sessions: u64,
        #[arg(long, default_value_t = 100)]
        chunks_per_session: u64,
        #[arg(long, default_value_t = 1_000)]
        agents: u64,
        /// Timed requests per query.
        #[arg(long, default_value_t = 30)]
        requests: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The review console's player in headless Chromium (Debian's chromium and
    /// chromium-driver): time from a seek to the decrypted frame on screen (beside fetching
    /// the ciphertext alone), bytes fetched, page memory, and live capture-to-screen latency.
    ConsolePlayer {
        #[arg(long, default_value_t = 10_000)]
        frames: u32,
        #[arg(long, default_value_t = 64 * 1024)]
        frame_size: usize,
        #[arg(long, default_value_t = 100)]
        seeks: usize,
        /// Seconds of live view measured.
        #[arg(long, default_value_t = 20)]
        live_seconds: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The review console's keystrokes report in headless Chromium: --sessions sessions'
    /// keystrokes decrypted and searched in the page, time to the first and to the last
    /// result, beside fetching the same ciphertext alone (docs/benchmarks.md).
    ConsoleReport {
        #[arg(long, default_value_t = 1_000)]
        sessions: u32,
        #[arg(long, default_value_t = 10)]
        agents: u32,
        /// Keystroke batches (chunks) per session.
        #[arg(long, default_value_t = 40)]
        batches: u32,
        /// Events per batch.
        #[arg(long, default_value_t = 25)]
        events: u32,
        /// Searches timed, one after the other in the same page.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The scenario against 1 and against N ingest nodes (child processes) sharing one
    /// PostgreSQL database and one store (a directory, or S3 on a moto server the harness
    /// starts): aggregate and per-node throughput, ack latency, peak RSS per node, and store
    /// PUTs per second.
    Nodes {
        #[arg(long)]
        scenario: PathBuf,
        /// Node counts to compare, e.g. 1,3.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        nodes: Vec<usize>,
        #[arg(long, value_enum, default_value = "local")]
        store: nodes::StoreKind,
        /// A PostgreSQL server the harness may create databases on (several nodes need one).
        #[arg(long, env = "SEALSTREAM_LOADTEST_DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[arg(long)]
        duration: Option<f64>,
        #[arg(long)]
        agents: Option<usize>,
        #[arg(long)]
        users: Option<usize>,
        /// The `sealstream` binary to spawn; default: next to this one.
        #[arg(long)]
        sealstream: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
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
        Command::ConsoleList {
            database_url,
            sessions,
            chunks_per_session,
            agents,
            requests,
            json,
        } => console_bench::run(console_bench::Args {
            database_url,
            sessions,
            chunks_per_session,
            agents,
            requests,
            json,
        }),
        Command::ConsolePlayer {
            frames,
            frame_size,
            seeks,
            live_seconds,
            json,
        } => console_player::run(console_player::Args {
            frames,
            frame_size,
            seeks,
            live_seconds,
            json,
        }),
        Command::ConsoleReport {
            sessions,
            agents,
            batches,
            events,
            runs,
            json,
        } => console_report::run(console_report::Args {
            sessions,
            agents,
            batches,
            events,
            runs,
            json,
        }),
        Command::Seal {
            frame_size,
            total,
            rounds,
            json,
        } => seal_bench::seal(frame_size, total, rounds, json),
        Command::Nodes {
            scenario,
            nodes: counts,
            store,
            database_url,
            rounds,
            duration,
            agents,
            users,
            sealstream,
            out,
        } => {
            let sc = scenario_with(&scenario, duration, agents, users)?;
            anyhow::ensure!(
                rounds >= 1 && !counts.is_empty() && !counts.contains(&0),
                "--rounds and every --nodes count must be at least 1"
            );
            let bin = match sealstream {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("sealstream"),
            };
            anyhow::ensure!(
                bin.exists(),
                "{}: not found; build it (cargo build --release) or pass --sealstream",
                bin.display()
            );
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let out = out.unwrap_or_else(|| {
                PathBuf::from("loadtest-results").join(format!("{}-nodes-{secs}", sc.name))
            });
            let args = nodes::Args {
                scenario: sc,
                counts,
                store,
                database_url,
                rounds,
                bin,
                out: out.clone(),
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(nodes::run(args))?;
            std::fs::write(
                out.join("nodes.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            if let Some(s) = report.median_scaling {
                println!("aggregate throughput, most nodes / one node (median): {s:.3}");
            }
            println!("report: {}/nodes.json", out.display());
            let bad: Vec<_> = report
                .runs
                .iter()
                .filter(|r| {
                    r.lost > 0 || r.duplicates > 0 || r.stored_chunks as u64 != r.acked_chunks
                })
                .collect();
            anyhow::ensure!(
                bad.is_empty(),
                "{} run(s) lost a chunk, acked one twice or indexed one other than once",
                bad.len()
            );
            Ok(())
        }
        Command::Run {
            scenario,
            out,
            in_process,
            sealstream,
            pipeline_only,
            keep_data,
            check_export,
            duration,
            agents,
            users,
            database_url,
            compare_sqlite,
            rounds,
        } => {
            let mut sc = scenario_with(&scenario, duration, agents, users)?;
            if let Some(url) = database_url {
                sc.server.database_url = url;
            }
            anyhow::ensure!(
                !compare_sqlite || !sc.server.database_url.is_empty(),
                "--compare-sqlite compares with a PostgreSQL pipeline: give --database-url too"
            );
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
            anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
            let setup = Setup {
                sc,
                out: out.clone(),
                host,
                bin,
                keep_data,
                check_export,
            };
            let report = rt.block_on(run(setup, pipeline_only, compare_sqlite, rounds, command))?;
            println!("{}", report::summary(&report));
            report::write(&report, &out)?;
            println!("report: {}/report.html and report.json", out.display());
            for p in &report.problems {
                eprintln!("error: {p}");
            }
            anyhow::ensure!(
                report.problems.is_empty(),
                "chunks were lost, acked twice, not indexed exactly once or not exported as sealed (see above)"
            );
            Ok(())
        }
    }
}

/// A scenario file with the command line's overrides of its duration, agents and users.
fn scenario_with(
    path: &std::path::Path,
    duration: Option<f64>,
    agents: Option<usize>,
    users: Option<usize>,
) -> anyhow::Result<scenario::Scenario> {
    let mut sc = scenario::Scenario::load(path)?;
    if let Some(d) = duration {
        sc.duration_s = d;
    }
    if let Some(a) = agents {
        sc.agents = a;
    }
    if let Some(u) = users {
        sc.users_per_agent = u;
    }
    Ok(sc)
}

/// How a run is made: the scenario, where results go, where the server runs.
struct Setup {
    sc: scenario::Scenario,
    out: PathBuf,
    host: target::Host,
    bin: PathBuf,
    keep_data: bool,
    check_export: bool,
}

/// One measurement: a fresh server of `mode` (on `admin`'s PostgreSQL when given, else
/// SQLite), the scenario's agents against it, the index counted afterwards (and, with
/// `--check-export`, the store exported and compared with what the agents sealed).
async fn measure(
    setup: &Setup,
    mode: target::Mode,
    admin: &str,
    dir: &std::path::Path,
) -> anyhow::Result<runner::RunResult> {
    use target::Mode;
    let sc = &setup.sc;
    let database = match mode {
        Mode::Transport => None,
        Mode::Pipeline if admin.is_empty() => Some("sqlite"),
        Mode::Pipeline => Some("postgresql"),
    };
    let label = match database {
        None => "transport".to_string(),
        Some(db) => format!("pipeline-{db}"),
    };
    let dir = dir.join(&label);
    let temp_db = if admin.is_empty() {
        None
    } else {
        Some(pg::TempDatabase::create(admin, &sc.name.replace('-', "_")).await?)
    };
    let server_url = temp_db.as_ref().map(|d| d.url.clone()).unwrap_or_default();
    let prepared = target::Prepared::new(mode, &dir, sc, &server_url)?;
    let agents = prepared.enroll(sc.agents, sc)?;
    let expected = sc.ramp_up_s + sc.duration_s + sc.outage_s;
    let pb = indicatif::ProgressBar::new((expected * 10.0) as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .expect("valid template"),
    );
    let p = &prepared;
    let bin = &setup.bin;
    let host = setup.host;
    let outcome = runner::run(
        sc,
        mode,
        &label,
        agents,
        || async move {
            let r = p.start(host, bin).await?;
            let pid = r.pid();
            Ok((r, pid))
        },
        &pb,
    )
    .await;
    pb.finish_and_clear();
    let measured = match outcome {
        Ok((mut result, running)) => {
            running.stop().await;
            result.database = database.map(str::to_owned);
            if mode == Mode::Pipeline {
                let md =
                    sealstream::metadata::Metadata::open(&server_url, &prepared.cfg.sqlite_path())
                        .await?;
                result.stored_chunks = Some(md.count(sealstream::metadata::Table::Chunks).await?);
            }
            let reports = std::mem::take(&mut result.agent_reports);
            if mode == Mode::Pipeline && setup.check_export {
                let out = dir.join("export");
                let check = export_check::check(
                    &prepared.cfg.store_dir(),
                    &prepared.kek_private,
                    &reports,
                    &out,
                )
                .await;
                if !setup.keep_data {
                    // Plaintext of the whole run: as large as the store.
                    let _ = std::fs::remove_dir_all(&out);
                }
                let check = check.unwrap_or_else(|e| export_check::ExportCheck {
                    exported_chunks: 0,
                    frames_matched: 0,
                    mismatches: vec![format!("the export failed: {e:#}")],
                });
                result.exported_chunks = Some(check.exported_chunks);
                result.export_frames_matched = Some(check.frames_matched);
                result.export_mismatches = Some(check.mismatches.len() as u64);
                result.export_first_mismatches = check.mismatches.into_iter().take(10).collect();
            }
            Ok(result)
        }
        Err(e) => Err(e),
    };
    if let Some(db) = temp_db
        && let Err(e) = db.drop_now().await
    {
        eprintln!("warning: could not drop the run's database: {e:#}");
    }
    if !setup.keep_data {
        // The store of one throughput run is several GB: keep the log, drop the data.
        let _ = std::fs::remove_dir_all(prepared.cfg.store_dir());
        let _ = std::fs::remove_dir_all(dir.join("agents"));
    }
    measured
}

/// The transport baseline and the pipeline on each database, `rounds` times; the order of the
/// two databases alternates between rounds so that drift on a shared machine favours neither.
async fn run(
    setup: Setup,
    pipeline_only: bool,
    compare_sqlite: bool,
    rounds: usize,
    command: String,
) -> anyhow::Result<report::Report> {
    use target::Mode;
    let sc = &setup.sc;
    let pg = sc.server.database_url.clone();
    let mut report = report::Report {
        scenario: sc.clone(),
        machine: report::Machine::read(),
        command,
        database: if pg.is_empty() {
            "sqlite"
        } else {
            "postgresql"
        }
        .into(),
        transport: None,
        pipeline: None,
        pipeline_sqlite: None,
        ratio: None,
        postgres_to_sqlite: None,
        rounds: Vec::new(),
        problems: Vec::new(),
        median_ratio: None,
        median_postgres_to_sqlite: None,
    };
    for round in 0..rounds {
        // (mode, PostgreSQL admin URL or "" for SQLite), in the order they run.
        let mut plan: Vec<(Mode, String)> = Vec::new();
        if !pipeline_only {
            plan.push((Mode::Transport, String::new()));
        }
        let mut pipelines = vec![pg.clone()];
        if compare_sqlite {
            pipelines.insert(0, String::new());
            if round % 2 == 1 {
                pipelines.reverse();
            }
        }
        plan.extend(pipelines.into_iter().map(|db| (Mode::Pipeline, db)));
        let dir = if rounds > 1 {
            setup.out.join(format!("round-{}", round + 1))
        } else {
            setup.out.clone()
        };
        report.transport = None;
        report.pipeline = None;
        report.pipeline_sqlite = None;
        for (mode, admin) in plan {
            let result = measure(&setup, mode, &admin, &dir).await?;
            let stored_wrong = result
                .stored_chunks
                .is_some_and(|n| n as u64 != result.acked_chunks);
            if let Some(n) = result.export_mismatches.filter(|&n| n > 0) {
                report.problems.push(format!(
                    "round {}, {:?} on {}: the export of the store differs from what the agents sealed in {n} place(s), first: {}",
                    report.rounds.len() + 1,
                    mode,
                    result.database.as_deref().unwrap_or("the sink"),
                    result.export_first_mismatches.join("; ")
                ));
            }
            if result.lost > 0 || result.duplicates > 0 || stored_wrong {
                report.problems.push(format!(
                    "round {}, {:?} on {}: {} lost, {} acked twice, {} index rows for {} acked chunks",
                    report.rounds.len() + 1,
                    mode,
                    result.database.as_deref().unwrap_or("the sink"),
                    result.lost,
                    result.duplicates,
                    result.stored_chunks.unwrap_or(-1),
                    result.acked_chunks
                ));
            }
            match (mode, result.database.as_deref()) {
                (Mode::Transport, _) => report.transport = Some(result),
                (Mode::Pipeline, Some("sqlite")) if !pg.is_empty() => {
                    report.pipeline_sqlite = Some(result)
                }
                (Mode::Pipeline, _) => report.pipeline = Some(result),
            }
        }
        let transport = report.transport.as_ref().map(|t| t.mb_per_s.max(1e-9));
        for p in [&mut report.pipeline, &mut report.pipeline_sqlite]
            .into_iter()
            .flatten()
        {
            p.ratio_to_transport = transport.map(|t| p.mb_per_s / t);
        }
        report.ratio = report.pipeline.as_ref().and_then(|p| p.ratio_to_transport);
        report.postgres_to_sqlite = match (&report.pipeline, &report.pipeline_sqlite) {
            (Some(p), Some(s)) => Some(p.mb_per_s / s.mb_per_s.max(1e-9)),
            _ => None,
        };
        let round = report::Round::of(&report);
        println!("round {}: {}", report.rounds.len() + 1, round.line());
        report.rounds.push(round);
    }
    report.median_ratio = report::median(report.rounds.iter().filter_map(|r| r.ratio));
    report.median_postgres_to_sqlite =
        report::median(report.rounds.iter().filter_map(|r| r.postgres_to_sqlite));
    Ok(report)
}
