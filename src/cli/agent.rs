//! `sealstream agent` and `sealstream agents enroll`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sealstream::agent::{self, Source, synthetic::SyntheticSpec};
use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::pki::Pki;
use sealstream::protocol::AgentId;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Agent configuration (`sealstream agents enroll` writes one).
    #[arg(long)]
    config: PathBuf,
    /// Replay captures instead of generating them: image files as frames and .jsonl keystrokes.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// Synthetic source: user sessions to simulate.
    #[arg(long, default_value_t = 5)]
    users: usize,
    /// Synthetic source: seconds to record.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Synthetic source: mean frame size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    frame_size: usize,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let cfg = AgentConfig::load(&args.config)?;
    let source = if args.replay.is_empty() {
        Source::Synthetic(SyntheticSpec {
            users: args.users,
            duration: Duration::from_secs(args.duration),
            frame_size: args.frame_size,
            ..SyntheticSpec::default()
        })
    } else {
        Source::Replay(args.replay)
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = tx.send(true);
        });
        agent::run(cfg, source, rx, Duration::from_secs(10)).await
    })?;
    println!(
        "agent {:?}: {} sessions, {} chunks sealed ({} bytes), {} acked, {} unacked; KEK {}",
        report.agent.as_str(),
        report.sessions.len(),
        report.chunks_sealed,
        report.sealed_bytes,
        report.chunks_acked,
        report.unacked,
        report.kek
    );
    if let Some(sp) = &report.spool {
        println!(
            "  spool: {} chunks recovered from the last run, {} records and {} bytes still held, {} corrupt records and {} torn tails skipped",
            sp.recovered_chunks, sp.records, sp.bytes, sp.corrupt_records, sp.torn_tails
        );
    }
    if report.dropped_chunks > 0 {
        println!(
            "  spool was full: dropped {} chunks, recorded as {} gap records (export reports them)",
            report.dropped_chunks, report.gap_records
        );
    }
    for (code, n) in &report.rejected {
        println!("  server answered {code}: {n} times");
    }
    Ok(if report.unacked == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(clap::Subcommand, Debug)]
pub enum AgentsCommand {
    /// Issue a client certificate for agent NAME and write a ready agent.toml.
    Enroll {
        /// The agent's name: printable text up to 64 characters (its identity on the server).
        name: String,
        /// Directory for agent.crt, agent.key and agent.toml.
        #[arg(long)]
        out: PathBuf,
        /// The server's configuration (for its data directory, where the agent CA lives).
        #[arg(long)]
        config: PathBuf,
        /// The address agents connect to; default: the server's listen address.
        #[arg(long)]
        server: Option<String>,
    },
}

pub fn agents(cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    let AgentsCommand::Enroll {
        name,
        out,
        config,
        server,
    } = cmd;
    let serve = ServeConfig::load(&config)?;
    let name = AgentId::new(name).map_err(|e| anyhow::anyhow!("agent name: {e}"))?;
    let server = server.unwrap_or_else(|| {
        let mut a = serve.listen;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        a.to_string()
    });
    let pin = enroll(&serve.data_dir, &name, &out, &server)?;
    println!("{pin}");
    eprintln!(
        "enrolled agent {:?}: {}/agent.crt, agent.key and agent.toml; server pin {pin}\n\
         copy the customer's public key (publickey.crt) to {}/kek.pem, then run: sealstream agent --config {}/agent.toml",
        name.as_str(),
        out.display(),
        out.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Write the agent's certificate, key and configuration into `out`; returns the server pin.
pub fn enroll(data_dir: &Path, name: &AgentId, out: &Path, server: &str) -> anyhow::Result<String> {
    let pki = Pki::open_or_create(data_dir)?;
    pki.enroll_agent(name, out)?;
    let pin = pki.server_pin().to_string();
    let toml = format!(
        "# Written by `sealstream agents enroll` for agent {name:?}. See config/agent.toml for every setting.\n\
         server = {server:?}\nserver_name = \"sealstream\"\n\
         # The server's key, and room for a backup pin before you rotate it.\nserver_pins = [{pin:?}]\n\
         cert = \"agent.crt\"\nkey = \"agent.key\"\n\
         # The customer's public key (the how-to's publickey.crt, renamed kek.pem).\ne2ee = true\nkek = \"kek.pem\"\n\
         # Chunks are kept here until the server acks them (ciphertext only).\nspool_dir = \"spool\"\n",
        name = name.as_str()
    );
    sealstream::fsutil::write_new(&out.join("agent.toml"), toml.as_bytes(), 0o644)
        .context("writing agent.toml")?;
    Ok(pin)
}
