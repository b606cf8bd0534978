//! `sealstream export`: decrypt a store's recordings into files and report every stream.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sealstream::crypto::AgentCa;
use sealstream::export::{self, Options, Progress, Report, Status};
use sealstream::inspect::{Filter, Proof};
use sealstream::keys::{self, PassphraseSource};
use sealstream::protocol::SessionId;
use sealstream::{storage, video};

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The store: a directory written by `sealstream seal` or `sealstream serve`, a
    /// `file://` URL, or the server's `store_url` (`s3://bucket/prefix`, `gs://…`, `az://…`;
    /// endpoint and retries from `--config`'s `[store]` or the `AWS_*` environment).
    /// Default with `--config`: the server's store.
    #[arg(long)]
    store: Option<String>,
    /// Output directory: new, or one an earlier export of the same store wrote (it resumes:
    /// identical files are kept, and nothing is ever overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Export only this session (a UUID).
    #[arg(long)]
    session: Option<String>,
    /// Export only this agent's sessions (repeat for several).
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// Only streams with something captured at or after this time (RFC 3339, e.g.
    /// 2026-11-28T08:00:00Z, or a date 2026-11-28).
    #[arg(long)]
    since: Option<String>,
    /// Only streams with something captured at or before this time (RFC 3339 or a date,
    /// which means the end of that day).
    #[arg(long)]
    until: Option<String>,
    /// Private KEK file(s) (`keypair.pem`); repeat for several KEKs. Without one nothing is
    /// decrypted (`sealstream verify` checks a store without keys).
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// File holding the private key passphrase (one trailing newline, LF or CRLF, allowed).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// The agent CA certificate to check the agents' signatures against (the deployment's
    /// `pki/ca.crt`, or the offline CA's). Pin your own copy: a copy in the store proves
    /// nothing.
    #[arg(long)]
    agent_ca: Option<PathBuf>,
    /// Exit 0 even when streams are incomplete, or signed but not proven to their end (never
    /// for an unsigned stream when --agent-ca is given).
    #[arg(long)]
    allow_incomplete: bool,
    /// Also write each session's frames as an MP4 (H.264) video at their capture times, with
    /// the system's ffmpeg (Debian package `ffmpeg`).
    #[arg(long)]
    video: bool,
    /// The server's configuration: the export is recorded in its audit log first (and
    /// refused if it cannot be). Without it, the export's own signed receipt
    /// (receipt.json, receipt.sig) is the record.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Open a `--store` argument for reading: a directory (which must exist), a `file://` URL,
/// or an object store URL (`s3://bucket/prefix`, `gs://…`, `az://…`) reached with `settings`
/// (a server configuration's `[store]`, or the defaults and the environment).
pub fn open_store(
    store: &str,
    settings: &sealstream::config::Store,
) -> anyhow::Result<std::sync::Arc<dyn object_store::ObjectStore>> {
    let location = storage::Location::parse(store)?;
    if let Some(dir) = location.local_dir()
        && !dir.is_dir()
    {
        anyhow::bail!("{}: no such store directory", dir.display());
    }
    Ok(storage::open(store, settings)?.objects)
}

/// `--store` and `--config` as given to export and verify: the server configuration (if
/// any), the store's location, and the store opened with the configuration's `[store]`.
pub type StoreOfArgs = (
    Option<sealstream::config::ServeConfig>,
    String,
    std::sync::Arc<dyn object_store::ObjectStore>,
);

pub fn store_of_args(
    store: Option<&str>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<StoreOfArgs> {
    let serve = config
        .map(sealstream::config::ServeConfig::load)
        .transpose()?;
    let location = match (store, &serve) {
        (Some(s), _) => s.to_owned(),
        (None, Some(serve)) => serve.store_location(),
        (None, None) => anyhow::bail!("give --store (or --config for the server's store)"),
    };
    let settings = serve.as_ref().map(|s| s.store.clone()).unwrap_or_default();
    let opened = open_store(&location, &settings)?;
    Ok((serve, location, opened))
}

/// `--since` / `--until`: RFC 3339, or a date (its start, or with `end_of_day` its end).
pub fn parse_time(text: &str, end_of_day: bool) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1000) as i64);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).map_err(|_| {
        anyhow::anyhow!(
            "{text:?}: not a time; give RFC 3339 (2026-11-28T08:00:00Z) or a date (2026-11-28)"
        )
    })?;
    let start = date.midnight().assume_utc().unix_timestamp() * 1_000_000;
    Ok(if end_of_day {
        start + 86_400_000_000 - 1
    } else {
        start
    })
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let session = args
        .session
        .as_deref()
        .map(SessionId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--session: {e}"))?;
    let (serve, location, store) = store_of_args(args.store.as_deref(), args.config.as_deref())?;
    let ffmpeg = if args.video {
        Some(video::find_ffmpeg().map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let agent_ca = args
        .agent_ca
        .as_deref()
        .map(AgentCa::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--agent-ca {e}"))?;
    let filter = Filter {
        session,
        agents: args.agents.clone(),
        since_us: args
            .since
            .as_deref()
            .map(|t| parse_time(t, false))
            .transpose()?,
        until_us: args
            .until
            .as_deref()
            .map(|t| parse_time(t, true))
            .transpose()?,
    };
    let source = PassphraseSource::from_process(args.passphrase_file);
    let mut private = Vec::new();
    for path in &args.keys {
        let prompt = format!("Passphrase for {}: ", path.display());
        private.push(keys::load_private_key(path, || source.read(&prompt))?);
    }
    if let Some(serve) = &serve {
        // Fail-closed: no audit row, no export.
        let detail = format!(
            "store={} out={} session={} agents=[{}] since={} until={} keks=[{}]",
            location,
            args.out.display(),
            args.session.as_deref().unwrap_or("*"),
            args.agents.join(","),
            args.since.as_deref().unwrap_or("-"),
            args.until.as_deref().unwrap_or("-"),
            private
                .iter()
                .map(|k| k.kek_id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        super::runtime()?
            .block_on(async {
                let md = super::agent::metadata(serve).await?;
                md.audit(&super::agent::actor(), "export", &detail).await?;
                anyhow::Ok(())
            })
            .context("recording the export in the audit log (nothing was exported)")?;
    }
    let options = Options { filter, agent_ca };
    let bar = progress_bar();
    let mut report = super::runtime()?
        .block_on(export::export_with(
            store.as_ref(),
            &private,
            &options,
            &args.out,
            &mut |p| show(&bar, p),
        ))
        .with_context(|| format!("exporting {location}"))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(serve) = &serve {
        mark_still_recording(serve, &mut report)?;
        export::write_report(&args.out, &report)?;
    }
    if let Some(key) = private.first() {
        export::write_receipt(&args.out, &report, &location, key)?;
    }
    drop(private);
    print_report(&report, args.keys.is_empty());
    if let Some(ffmpeg) = ffmpeg {
        for s in &report.streams {
            if s.kind != sealstream::protocol::Kind::Frame.name() || s.frames.is_empty() {
                continue;
            }
            let frames = &s.frames;
            let mp4 = frames[0]
                .0
                .parent()
                .and_then(|d| d.parent())
                .map(|d| d.join(format!("video-{}.mp4", s.stream)))
                .expect("frames are written in a session directory");
            match video::encode(&ffmpeg, frames, &mp4) {
                Ok(video::Written::New) => println!("  video: {}", mp4.display()),
                Ok(video::Written::Kept) => println!("  video: {} (already there)", mp4.display()),
                Err(e) => anyhow::bail!("video for session {} stream {}: {e}", s.session, s.stream),
            }
        }
    }
    if report
        .streams
        .iter()
        .any(|s| s.verdict != sealstream::inspect::Verdict::Ok && !s.files.is_empty())
    {
        eprintln!(
            "files of streams whose verdict is not ok are under {} (receipt.json and report.json give each file's verdict)",
            args.out.join(export::QUARANTINE_DIR).display()
        );
    }
    eprintln!("files and report.json are in {}", args.out.display());
    Ok(exit_code(&report, args.allow_incomplete))
}

/// Incomplete streams whose session the server's index saw change within the console's live
/// window (`console.live_window_ms`) are still being recorded, not cut short.
fn mark_still_recording(
    serve: &sealstream::config::ServeConfig,
    report: &mut Report,
) -> anyhow::Result<()> {
    let window_us = serve
        .console
        .as_ref()
        .map_or(sealstream::config::Console::default().live_window_ms, |c| {
            c.live_window_ms
        }) as i64
        * 1000;
    super::runtime()?.block_on(async {
        let md = super::agent::metadata(serve).await?;
        for s in report.streams.iter_mut() {
            if s.status != Status::Incomplete {
                continue;
            }
            let Ok(session) = SessionId::parse(&s.session) else {
                continue;
            };
            if let Some(summary) = md.session(&s.agent, session.0).await? {
                s.still_recording = sealstream::crypto::now_us() - summary.updated_us <= window_us;
            }
        }
        anyhow::Ok(())
    })
}

fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:12} [{bar:40}] {pos}/{len} {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    Some(bar)
}

fn show(bar: &Option<indicatif::ProgressBar>, p: Progress) {
    let Some(bar) = bar else { return };
    match p {
        Progress::Scanned(bytes) => {
            bar.set_message("checking");
            bar.set_length(bytes.max(bar.length().unwrap_or(0)));
            bar.set_position(bytes);
        }
        Progress::Decrypted { done, total } => {
            bar.set_message("decrypting");
            bar.set_length(total);
            bar.set_position(done);
        }
    }
}

/// The export's exit code: docs/format.md "Verdicts and exit codes" (tampering first, then a
/// missing DEK record, a missing key, a malformed payload, and unsigned, incomplete or
/// unproven streams, the last two unless allowed).
pub fn exit_code(report: &Report, allow_incomplete: bool) -> ExitCode {
    ExitCode::from(report.exit_code(allow_incomplete))
}

pub fn utc(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{us} us"))
}

/// One stream's signature state, in words.
pub fn proof_text(proof: &Proof, ca_pinned: bool) -> String {
    match proof {
        Proof::Unsigned if ca_pinned => {
            "UNSIGNED (format version 1: nothing shows which agent made it)".into()
        }
        Proof::Unsigned => "unsigned".into(),
        Proof::Invalid => "signature INVALID".into(),
        Proof::Signed {
            cert,
            ca_checked,
            checkpoint,
            unproven,
            ..
        } => {
            let who = if *ca_checked {
                format!(
                    "signed by agent certificate {} (serial {})",
                    cert.fingerprint, cert.serial
                )
            } else {
                format!(
                    "signature valid for certificate {} but NOT CHECKED against an agent CA (pass --agent-ca)",
                    cert.fingerprint
                )
            };
            match (checkpoint, unproven) {
                (None, n) => format!("{who}; no checkpoint yet: all {n} chunks UNPROVEN"),
                (Some(k), 0) => format!("{who}, proven through chunk {k}"),
                (Some(k), n) => {
                    format!("{who}, proven through chunk {k}; {n} chunk(s) after it UNPROVEN")
                }
            }
        }
    }
}

pub fn print_report(report: &Report, no_keys: bool) {
    println!(
        "{} segment(s), {} DEK record(s), {} stream(s)",
        report.segments,
        report.dek_records,
        report.streams.len()
    );
    let pinned = report.agent_ca.is_some();
    for s in &report.streams {
        let status = match &s.status {
            Status::Complete => "complete".to_owned(),
            Status::Incomplete if s.still_recording => {
                "incomplete: still recording, as the server's index says".to_owned()
            }
            Status::Incomplete => "INCOMPLETE (no final chunk)".to_owned(),
            Status::Tampered(problems) => format!("TAMPERED: {}", problems.join("; ")),
            Status::Malformed(problems) => format!(
                "MALFORMED (authentic: the agent sealed these bytes; an agent bug, not tampering): {}",
                problems.join("; ")
            ),
            Status::NoKey(why) => format!("NOT DECRYPTED: {why}"),
            Status::NoDekRecord(why) => format!("NOT DECRYPTED: {why}"),
        };
        println!(
            "  agent {:?} session {} stream {} ({}): {} chunks, {} bytes: {status}; {}; verdict {}",
            s.agent,
            s.session,
            s.stream,
            s.kind,
            s.chunks,
            s.bytes,
            proof_text(&s.proof, pinned),
            s.verdict.name()
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
    let open = report.incomplete_or_unproven().len();
    if report.tampered() {
        println!("verification FAILED: the store was altered or corrupted (see above)");
    } else if report.streams.is_empty() {
        println!("nothing to export");
    } else if no_keys {
        println!(
            "nothing decrypted: no private key given (--key); the structure checks above passed"
        );
    } else if report.missing_dek_records() {
        println!(
            "verification INCOMPLETE: DEK records are missing, so some streams were not decrypted"
        );
    } else if report.missing_keys() {
        println!(
            "verification INCOMPLETE: {} chunk(s) decrypted and authentic; streams under other KEKs were not decrypted (see above)",
            report.decrypted_chunks
        );
    } else if report.malformed() {
        println!(
            "every chunk present is authentic ({} decrypted), but some payloads do not parse: MALFORMED (see above)",
            report.decrypted_chunks
        );
    } else if open > 0 {
        println!(
            "verification passed for every chunk present ({} decrypted and authentic), but {open} stream(s) are unsigned, incomplete or not proven to their end",
            report.decrypted_chunks
        );
    } else {
        println!(
            "verification passed: {} chunk(s) decrypted and authentic{}",
            report.decrypted_chunks,
            if pinned {
                ", every stream signed by its agent to its end"
            } else {
                " (agent signatures not checked: pass --agent-ca)"
            }
        );
    }
}
