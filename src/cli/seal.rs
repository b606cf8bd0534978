//! `sealstream seal`: seal files as one recording into a store directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sealstream::keys;
use sealstream::protocol::{AgentId, SessionId};
use sealstream::recorder::{self, Recorder};
use sealstream::storage;

#[derive(clap::Args, Debug)]
pub struct SealArgs {
    /// The KEK's public key (SPKI PEM such as publickey.crt, PKCS#1 PEM, or a certificate).
    #[arg(long)]
    kek: PathBuf,
    /// Store directory (created if absent).
    #[arg(long)]
    store: PathBuf,
    /// Agent name: printable text up to 64 characters. Default: this host's name.
    #[arg(long)]
    agent_id: Option<String>,
    /// Image files (frames) and .jsonl files (one keystroke event per line), or directories of them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: SealArgs) -> anyhow::Result<ExitCode> {
    let kek = keys::load_public_key(&args.kek)?;
    let agent = match args.agent_id {
        Some(name) => AgentId::new(name).map_err(|e| anyhow::anyhow!("--agent-id: {e}"))?,
        None => default_agent_id()?,
    };
    let inputs = recorder::scan_inputs(&args.files)?;
    let recorder = Recorder::new(agent.clone(), &kek);
    let session = SessionId::random();
    let (chunks, mut summary) = recorder::seal_inputs(&recorder, session, &inputs)?;
    let store = storage::open_local(&args.store)?;
    summary.segments = super::runtime()?
        .block_on(recorder::store_recording(
            store.as_ref(),
            recorder.dek_record(),
            &chunks,
        ))
        .with_context(|| format!("writing to store {}", args.store.display()))?;
    println!("{session}");
    eprintln!(
        "sealed session {session} for agent {:?} under KEK {}: {} frames, {} keystroke events, \
         {} chunks, {} plaintext bytes -> {} sealed bytes in {} segment(s) in {}",
        agent.as_str(),
        kek.kek_id,
        summary.frames,
        summary.keystroke_events,
        summary.chunks,
        summary.plaintext_bytes,
        summary.sealed_bytes,
        summary.segments,
        args.store.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn default_agent_id() -> anyhow::Result<AgentId> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .context("cannot tell this host's name; pass --agent-id NAME")?;
    let name: String = name.chars().take(64).collect();
    AgentId::new(name).map_err(|e| {
        anyhow::anyhow!("host name is not a valid agent id ({e}); pass --agent-id NAME")
    })
}
