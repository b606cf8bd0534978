//! `sealstream verify`: check a store without any private key — every object's structure,
//! checksum and name, every stream's numbering, duplicates and end, and (with `--agent-ca`)
//! the agents' signatures — and say so in text or JSON, with an exit code per outcome.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use sealstream::crypto::AgentCa;
use sealstream::inspect::{self, Verdict, VerifyReport};

use super::export::{proof_text, store_of_args, utc};

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The store: a directory, a `file://` URL, or an object store URL (`s3://bucket/prefix`,
    /// `gs://…`, `az://…`). Default with `--config`: the server's store.
    #[arg(long)]
    store: Option<String>,
    /// A server configuration: its store (unless `--store`) and its `[store]` settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The agent CA certificate to check signatures against (pin your own copy).
    #[arg(long)]
    agent_ca: Option<PathBuf>,
    /// Also write the report as JSON to this file (`-` for standard output, instead of text).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit 0 even when streams are incomplete, or signed but not proven to their end (never
    /// for an unsigned stream when --agent-ca is given).
    #[arg(long)]
    allow_incomplete: bool,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (_, _, store) = store_of_args(args.store.as_deref(), args.config.as_deref())?;
    let ca = args
        .agent_ca
        .as_deref()
        .map(AgentCa::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--agent-ca {e}"))?;
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message("checking");
        b
    });
    let mut read = 0u64;
    let report = super::runtime()?.block_on(inspect::verify(store.as_ref(), ca.as_ref(), |n| {
        read += n;
        if let Some(b) = &bar {
            b.set_message(format!("checked {} MB", read / 1_000_000));
            b.tick();
        }
    }))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    let text_to_stdout = args.json.as_deref() != Some(std::path::Path::new("-"));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes");
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n")
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    if text_to_stdout {
        print_text(&report);
    }
    eprintln!(
        "checked {} segment(s), {:.1} MB in {secs:.2} s ({:.0} MB/s)",
        report.segments,
        report.segment_bytes as f64 / 1e6,
        report.segment_bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(ExitCode::from(report.exit_code(args.allow_incomplete)))
}

fn print_text(report: &VerifyReport) {
    println!(
        "{} segment(s), {} DEK record(s), {} stream(s){}",
        report.segments,
        report.dek_records,
        report.streams.len(),
        match &report.agent_ca {
            Some(fp) => format!(", signatures checked against agent CA {fp}"),
            None => ", signatures NOT checked against an agent CA (pass --agent-ca)".into(),
        }
    );
    let pinned = report.agent_ca.is_some();
    for s in &report.streams {
        let state = match s.verdict {
            Verdict::Tampered => format!("TAMPERED: {}", s.problems.join("; ")),
            Verdict::NoDekRecord => format!(
                "NO DEK RECORD for DEK {} (deleted, or never written)",
                s.missing_dek_records.join(", ")
            ),
            Verdict::Incomplete => "INCOMPLETE (no final chunk)".into(),
            Verdict::Unsigned if s.final_seq.is_none() => {
                "INCOMPLETE (no final chunk), and UNSIGNED".into()
            }
            Verdict::Unsigned => "complete, but UNSIGNED".into(),
            Verdict::Unproven => "complete, but NOT PROVEN to its end".into(),
            Verdict::Ok => "complete".into(),
            // Only decrypting finds these.
            Verdict::NoKey | Verdict::Malformed => s.verdict.name().into(),
        };
        println!(
            "  agent {:?} session {} stream {} ({}): {} chunks, captured {} to {}: {state}; {}",
            s.agent,
            s.session,
            s.stream,
            s.kind,
            s.chunks,
            utc(s.first_capture_us),
            utc(s.last_capture_us),
            proof_text(&s.signature, pinned)
        );
        for (a, b) in &s.declared_gaps {
            println!(
                "    gap declared by the agent: chunks {a} to {b} dropped (export with the key confirms the range)"
            );
        }
    }
    for d in &report.damaged_objects {
        println!("  DAMAGED OBJECT: {d}");
    }
    println!(
        "{}",
        match report.outcome {
            Verdict::Tampered => "verify FAILED: the store was altered or corrupted (see above)",
            Verdict::NoDekRecord => "verify FAILED: DEK records are missing (see above)",
            Verdict::NoKey | Verdict::Malformed => "verify: see above",
            Verdict::Unsigned =>
                "verify: structure intact, but some streams are UNSIGNED: nothing shows their agent made them (--allow-incomplete does not accept them)",
            Verdict::Incomplete => "verify: structure intact, but some streams are incomplete",
            Verdict::Unproven =>
                "verify: structure intact, but some streams are not proven by their agent's signature to their end",
            Verdict::Ok if report.streams.is_empty() => "verify: the store holds no recordings",
            Verdict::Ok => "verify passed: every object intact, every stream complete",
        }
    );
}
