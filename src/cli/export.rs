//! `sealstream export`: decrypt a store's recordings into files and report every stream.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sealstream::export::{self, Report, Status};
use sealstream::keys::{self, PassphraseSource};
use sealstream::protocol::SessionId;
use sealstream::storage;

use super::{EXIT_MALFORMED, EXIT_MISSING_KEY, EXIT_TAMPERED};

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Store directory written by `sealstream seal` or `sealstream serve`.
    #[arg(long)]
    store: PathBuf,
    /// Output directory (must be new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Export only this session (a UUID).
    #[arg(long)]
    session: Option<String>,
    /// Private KEK file(s) (`keypair.pem`); repeat for several KEKs.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// File holding the private key passphrase (one trailing newline allowed).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let session = args
        .session
        .as_deref()
        .map(SessionId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--session: {e}"))?;
    if !args.store.is_dir() {
        anyhow::bail!("{}: no such store directory", args.store.display());
    }
    let source = PassphraseSource::from_process(args.passphrase_file);
    let mut private = Vec::new();
    for path in &args.keys {
        let prompt = format!("Passphrase for {}: ", path.display());
        private.push(keys::load_private_key(path, || source.read(&prompt))?);
    }
    let store = storage::open_local(&args.store)?;
    let report = super::runtime()?
        .block_on(export::export(store.as_ref(), &private, session, &args.out))
        .with_context(|| format!("exporting {}", args.store.display()))?;
    drop(private);
    print_report(&report);
    eprintln!("files and report.json are in {}", args.out.display());
    Ok(exit_code(&report))
}

pub fn exit_code(report: &Report) -> ExitCode {
    if report.tampered() {
        ExitCode::from(EXIT_TAMPERED)
    } else if report.missing_keys() {
        ExitCode::from(EXIT_MISSING_KEY)
    } else if report.malformed() {
        ExitCode::from(EXIT_MALFORMED)
    } else {
        ExitCode::SUCCESS
    }
}

fn utc(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{us} us"))
}

pub fn print_report(report: &Report) {
    println!(
        "{} segment(s), {} DEK record(s), {} stream(s)",
        report.segments,
        report.dek_records,
        report.streams.len()
    );
    for s in &report.streams {
        let status = match &s.status {
            Status::Complete => "complete".to_owned(),
            Status::Incomplete => "INCOMPLETE (no final chunk)".to_owned(),
            Status::Tampered(problems) => format!("TAMPERED: {}", problems.join("; ")),
            Status::Malformed(problems) => format!(
                "MALFORMED (authentic: the agent sealed these bytes; an agent bug, not tampering): {}",
                problems.join("; ")
            ),
            Status::NoKey(why) => format!("NOT DECRYPTED: {why}"),
        };
        println!(
            "  agent {:?} session {} stream {} ({}): {} chunks, {} bytes: {status}",
            s.agent, s.session, s.stream, s.kind, s.chunks, s.bytes
        );
    }
    for s in &report.streams {
        for g in &s.gaps {
            println!(
                "  GAP in session {} stream {}: {} chunks ({} to {}) dropped by the agent (spool full), captured {} to {}",
                s.session,
                s.stream,
                g.count,
                g.first_seq,
                g.last_seq,
                utc(g.first_capture_us),
                utc(g.last_capture_us)
            );
        }
    }
    for d in &report.damaged_objects {
        println!("  DAMAGED OBJECT: {d}");
    }
    if report.tampered() {
        println!("verification FAILED: the store was altered or corrupted (see above)");
    } else if report.streams.is_empty() {
        println!("nothing to export");
    } else {
        println!("verification passed: every chunk authentic");
    }
}
