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
    /// Replay captures instead of generating them, as one user session: files, and
    /// directories read one level deep (not recursively), each sorted by name; image files
    /// (png, jpg, jpeg, gif, bmp, webp, tif, tiff, ppm) become frames, .jsonl files keystroke
    /// batches; other files in a directory are skipped.
    #[arg(long, num_args = 1.., conflicts_with = "drain")]
    replay: Vec<PathBuf>,
    /// Record nothing: send what the spool (spool_dir) holds from earlier runs, and exit once
    /// the server has acked all of it (exit 0), or on Ctrl-C with what is left still spooled.
    #[arg(long)]
    drain: bool,
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
    if args.drain && cfg.spool_dir.is_none() {
        anyhow::bail!(
            "{}: --drain sends what the spool holds, but this configuration has no spool_dir",
            args.config.display()
        );
    }
    let source = if args.drain {
        Source::SpoolOnly
    } else if args.replay.is_empty() {
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
        "agent {:?}: {} sessions, {} chunks sealed ({} bytes), {} acked, {} not acked yet; KEK {}",
        report.agent.as_str(),
        report.sessions.len(),
        report.chunks_sealed,
        report.sealed_bytes,
        report.chunks_acked,
        report.unacked,
        report.kek
    );
    let spooled = report.spool.as_ref().map_or(0, |s| s.records);
    if let Some(sp) = &report.spool {
        println!(
            "  spool: {} chunks recovered from the last run, {} chunks ({} bytes) held for the next start, {} corrupt records and {} torn tails skipped",
            sp.recovered_chunks, sp.records, sp.bytes, sp.corrupt_records, sp.torn_tails
        );
    }
    let lost = report.unacked.saturating_sub(spooled);
    if report.unacked > 0 {
        if lost == 0 {
            println!(
                "  the {} chunks not acked yet are held in the spool: `sealstream agent --drain --config {}` (or the next start) sends them",
                report.unacked,
                args.config.display()
            );
        } else {
            println!(
                "  {lost} chunks not acked were not in a spool and are lost{}",
                if report.spool.is_none() {
                    " (set spool_dir in the agent's configuration to keep them)"
                } else {
                    ""
                }
            );
        }
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
    // Success when nothing is lost: every chunk acked, or held in the spool for later.
    Ok(if lost == 0 {
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
    let server = match server {
        Some(s) => s,
        None => {
            let (addr, note) = default_server_address(serve.listen);
            eprintln!("{note}");
            addr
        }
    };
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

/// The address to write into agent.toml when `--server` is not given, and what to tell the
/// operator about it. A server on all interfaces is written as this machine's host name (an
/// agent elsewhere cannot use 0.0.0.0 or 127.0.0.1); a loopback address only works for agents
/// on this machine, which is said.
fn default_server_address(listen: std::net::SocketAddr) -> (String, String) {
    if listen.ip().is_unspecified() {
        let host = host_name().unwrap_or_else(|| "localhost".into());
        let addr = format!("{host}:{}", listen.port());
        let note = format!(
            "agent.toml: server = \"{addr}\" (this machine's host name: the server listens on {listen}, all interfaces); agents must resolve that name, else give --server NAME:{}",
            listen.port()
        );
        (addr, note)
    } else if listen.ip().is_loopback() {
        let addr = listen.to_string();
        let note = format!(
            "agent.toml: server = \"{addr}\": the server listens on loopback only, so only agents on this machine can reach it (set listen and give --server for others)"
        );
        (addr, note)
    } else {
        let addr = listen.to_string();
        (
            addr.clone(),
            format!("agent.toml: server = \"{addr}\" (the server's listen address)"),
        )
    }
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes a NUL-terminated name.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_owned();
    (!name.is_empty()).then_some(name)
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
