//! `sealstream agent` and `sealstream agents enroll|renew|revoke|disable|enable|list|csr`
//! (`agents config` and the agent.toml writer are in `agent_toml`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sealstream::agent::{self, Source, synthetic::SyntheticSpec};
use sealstream::config::{AgentConfig, CaptureSource, ServeConfig};
use sealstream::metadata::{
    AccessChange, AccessOutcome, AccessRows, CertSeen, Credential, Metadata,
};
use sealstream::pki::{IssuedCert, Pki};
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
    /// Synthetic frames as viewable PNG images of random pixels (for the console) rather than
    /// a PNG signature and random bytes (cheaper, for load).
    #[arg(long)]
    images: bool,
    /// Record for real: `x11` records every X display on this host, one session each, until
    /// Ctrl-C or SIGTERM (default: agent.toml's `[capture] source`, else synthetic users).
    #[arg(long, value_enum, conflicts_with_all = ["drain", "replay"])]
    capture: Option<CaptureArg>,
    /// With `--capture x11`: only this display (`:10`); repeat for more.
    #[arg(long = "display", value_name = "DISPLAY")]
    displays: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CaptureArg {
    Synthetic,
    X11,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let cfg = AgentConfig::load(&args.config)?;
    if args.drain && cfg.spool_dir.is_none() {
        anyhow::bail!(
            "{}: --drain sends what the spool holds, but this configuration has no spool_dir",
            args.config.display()
        );
    }
    let live = match args.capture {
        Some(CaptureArg::X11) => true,
        Some(CaptureArg::Synthetic) => false,
        None => args.replay.is_empty() && !args.drain && cfg.capture.source == CaptureSource::X11,
    };
    if !args.displays.is_empty() && !live {
        anyhow::bail!("--display limits X11 capture: give it with --capture x11");
    }
    let source = if args.drain {
        Source::SpoolOnly
    } else if live {
        let mut capture = cfg.capture.clone();
        if !args.displays.is_empty() {
            for d in &args.displays {
                if sealstream::config::parse_display(d).is_none() {
                    anyhow::bail!("--display {d:?}: give a display like :10");
                }
            }
            capture.displays = args.displays.clone();
        }
        Source::X11(capture)
    } else if args.replay.is_empty() {
        Source::Synthetic(SyntheticSpec {
            users: args.users,
            duration: Duration::from_secs(args.duration),
            frame_size: args.frame_size,
            images: args.images,
            ..SyntheticSpec::default()
        })
    } else {
        Source::Replay(args.replay)
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: final chunks are sealed, then sent or spooled");
            let _ = tx.send(true);
        });
        anyhow::Ok(agent::run(cfg, source, rx, Duration::from_secs(10)).await?)
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
    /// Issue a client certificate for agent NAME and write a ready agent.toml. Enrolling a
    /// name again revokes its earlier certificates.
    Enroll {
        /// The agent's name: printable text up to 64 characters (its identity on the server).
        name: String,
        /// Directory for agent.crt, agent.key and agent.toml.
        #[arg(long)]
        out: PathBuf,
        /// The server's configuration (its data directory holds the agent CA; its database
        /// records the certificate).
        #[arg(long)]
        config: PathBuf,
        /// The address agents connect to; default: the server's listen address.
        #[arg(long)]
        server: Option<String>,
        /// Days the certificate is valid; renew before then with `agents renew`.
        #[arg(long, default_value_t = sealstream::pki::DEFAULT_AGENT_DAYS)]
        days: u32,
    },
    /// Replace agent NAME's certificate and key in DIR (its agent.crt and agent.key) with new
    /// ones; the old certificate is revoked, so a running agent is disconnected and comes
    /// back with the new files on its next connection.
    Renew {
        name: String,
        /// The agent's directory (where agent.crt and agent.key are).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = sealstream::pki::DEFAULT_AGENT_DAYS)]
        days: u32,
    },
    /// Revoke every certificate agent NAME holds: refused at the next handshake, open
    /// connections closed within access_poll_ms. To let it back: `agents enroll` again, or with
    /// the CA offline a new `agents csr`, `ca sign`, `agents config` (docs/deploy.md).
    Revoke {
        name: String,
        #[arg(long)]
        config: PathBuf,
        /// Why, for the audit log and the agent's refusal message.
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
    },
    /// Refuse agent NAME (every certificate) until `agents enable`; open connections close.
    Disable {
        name: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Accept agent NAME again after `agents disable`.
    Enable {
        name: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Every agent with a registered certificate (enrolled, registered by `agents config`, or
    /// recorded by a node at its first connection): state, expiry, and under each agent its
    /// certificates with serial, expiry, first and last seen.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// With the agent CA kept offline: write a complete agent.toml for a certificate from
    /// `sealstream ca sign` (every node and pin, cert, key, kek, spool), after checking that the
    /// deployment's agent CA issued it and that it matches the agent's key; registers it like
    /// `agents enroll` (the agent's earlier certificates are revoked as superseded).
    Config(super::agent_toml::ConfigArgs),
    /// On the endpoint, with an agent CA kept offline: make this agent's key (agent.key,
    /// which never leaves DIR) and a certificate signing request (agent.csr) for the CA
    /// holder's `sealstream ca sign`.
    Csr {
        /// The agent's name (its identity on the server).
        name: String,
        /// Directory for agent.key and agent.csr.
        #[arg(long)]
        dir: PathBuf,
    },
}

pub fn agents(cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentsCommand::Enroll {
            name,
            out,
            config,
            server,
            days,
        } => {
            let serve = ServeConfig::load(&config)?;
            let name = agent_name(name)?;
            // Refused before anything is said about an agent.toml it would write.
            if sealstream::pki::ca_is_offline(&serve.data_dir) {
                anyhow::bail!(
                    "{}:\n  on the endpoint: sealstream agents csr {name} --dir /etc/sealstream/agent\n  \
                     where the CA is: sealstream ca sign --ca-dir CA_DIR --csr agent.csr --out agent.crt\n{}",
                    sealstream::pki::PkiError::OfflineCa(serve.data_dir.join("pki/ca.key")),
                    super::agent_toml::config_step(name.as_str(), "agent", "/etc/sealstream"),
                    name = name.as_str()
                );
            }
            let server = match server {
                Some(s) => s,
                None => {
                    let (addr, note) = default_server_address(serve.listen);
                    eprintln!("{note}");
                    addr
                }
            };
            let (pin, issued) = enroll(&serve.data_dir, &name, &out, &server, days)?;
            let outcome = super::runtime()?.block_on(async {
                let md = metadata(&serve).await?;
                record_issue(&md, &name, &issued).await
            })?;
            println!("{pin}");
            eprintln!(
                "enrolled agent {:?}: {}/agent.crt (valid until {}), agent.key and agent.toml; server pin {pin}{}\n\
                 copy the customer's public key (publickey.crt) to {}/kek.pem, then run: sealstream agent --config {}/agent.toml",
                name.as_str(),
                out.display(),
                date(issued.not_after_us),
                superseded_note(&outcome.revoked),
                out.display(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Renew {
            name,
            dir,
            config,
            days,
        } => {
            let serve = ServeConfig::load(&config)?;
            let name = agent_name(name)?;
            if sealstream::pki::ca_is_offline(&serve.data_dir) {
                anyhow::bail!(
                    "this server holds no agent CA key (the CA is kept offline), so it cannot renew {name:?}'s certificate:\n  \
                     on the endpoint, a new key beside the current one: sealstream agents csr {name} --dir /etc/sealstream/agent.new\n  \
                     where the CA is: sealstream ca sign --ca-dir CA_DIR --csr agent.csr --out agent.crt\n{}\n\
                     agents config registers the new certificate and revokes the old (docs/deploy.md, \"Renewing or re-admitting an offline-CA agent\")",
                    super::agent_toml::config_step(
                        &format!("{}.new", name.as_str()),
                        "agent.new",
                        "/etc/sealstream"
                    ),
                    name = name.as_str()
                );
            }
            for f in ["agent.crt", "agent.key"] {
                anyhow::ensure!(
                    dir.join(f).is_file(),
                    "{}: no {f}; renew an enrolled agent's directory (or enrol it with `agents enroll`)",
                    dir.display()
                );
            }
            let current = std::fs::read_to_string(dir.join("agent.crt"))
                .with_context(|| format!("reading {}/agent.crt", dir.display()))?;
            use rustls::pki_types::pem::PemObject;
            let pem = rustls::pki_types::CertificateDer::from_pem_slice(current.as_bytes())
                .map_err(|e| anyhow::anyhow!("{}/agent.crt: {e}", dir.display()))?;
            let holder = sealstream::crypto::cert::agent_identity(&pem)
                .map_err(|e| anyhow::anyhow!("{}/agent.crt: {e}", dir.display()))?;
            anyhow::ensure!(
                holder == name,
                "{}/agent.crt belongs to agent {:?}, not {:?}",
                dir.display(),
                holder.as_str(),
                name.as_str()
            );
            let pki = Pki::open_or_create(&serve.data_dir)?;
            let files = pki.renew_agent(&name, &dir, days)?;
            let outcome = super::runtime()?.block_on(async {
                let md = metadata(&serve).await?;
                record_issue(&md, &name, &files.issued).await
            })?;
            eprintln!(
                "renewed agent {:?}: {} and {} replaced (valid until {}){}; the agent reconnects with them",
                name.as_str(),
                files.cert.display(),
                files.key.display(),
                date(files.issued.not_after_us),
                superseded_note(&outcome.revoked)
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Revoke {
            name,
            config,
            reason,
        } => {
            let name = agent_name(name)?;
            let serve = ServeConfig::load(&config)?;
            let (outcome, rows, seen) = super::runtime()?.block_on(async {
                let md = metadata(&serve).await?;
                let change = AccessChange::Revoke {
                    agent: name.as_str().to_owned(),
                    reason,
                };
                let outcome = md.change_access(change, &actor()).await?;
                anyhow::Ok((
                    outcome,
                    md.access_rows().await?,
                    md.certificates_seen().await?,
                ))
            })?;
            eprint!(
                "{}",
                revoke_text(name.as_str(), &outcome.revoked, &rows, &seen)
            );
            eprintln!(
                "{}",
                super::agent_toml::readmit_hint(&serve.data_dir, name.as_str())
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Disable { name, config } => set_disabled(&config, name, true),
        AgentsCommand::Enable { name, config } => set_disabled(&config, name, false),
        AgentsCommand::Csr { name, dir } => {
            let name = agent_name(name)?;
            if let Some(why) = super::agent_toml::csr_refusal(&dir) {
                anyhow::bail!(why);
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (csr, key) = sealstream::pki::agent_csr(&name)?;
            sealstream::fsutil::write_new(&dir.join("agent.key"), key.as_bytes(), 0o600)
                .with_context(|| format!("writing {}/agent.key", dir.display()))?;
            sealstream::fsutil::write_new(&dir.join("agent.csr"), csr.as_bytes(), 0o644)
                .with_context(|| format!("writing {}/agent.csr", dir.display()))?;
            let (base, endpoint_dir) = super::agent_toml::endpoint_layout(&dir);
            eprintln!(
                "wrote {dir}/agent.key (keep it here) and {dir}/agent.csr for agent {name:?}.\n\
                 Give agent.csr to the agent CA's holder, who runs: sealstream ca sign --ca-dir CA_DIR --csr agent.csr --out agent.crt\n{}",
                super::agent_toml::config_step(name.as_str(), &base, &endpoint_dir),
                dir = dir.display(),
                name = name.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::List { config } => {
            let serve = ServeConfig::load(&config)?;
            let (rows, seen) = super::runtime()?.block_on(async {
                let md = metadata(&serve).await?;
                anyhow::Ok((md.access_rows().await?, md.certificates_seen().await?))
            })?;
            print!("{}", list_text(&rows, &seen));
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Config(args) => super::agent_toml::config(args),
    }
}

/// The address to write into agent.toml when `--server` is not given, and what to tell the
/// operator about it. A server on all interfaces is written as this machine's host name (an
/// agent elsewhere cannot use 0.0.0.0 or 127.0.0.1); a loopback address only works for agents
/// on this machine, which is said.
pub(crate) fn default_server_address(listen: std::net::SocketAddr) -> (String, String) {
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

fn agent_name(name: String) -> anyhow::Result<AgentId> {
    AgentId::new(name).map_err(|e| anyhow::anyhow!("agent name: {e}"))
}

pub(crate) async fn metadata(serve: &ServeConfig) -> anyhow::Result<Metadata> {
    Metadata::open_with(
        &serve.database_url,
        &serve.sqlite_path(),
        &(&serve.database).into(),
    )
    .await
    .with_context(|| match serve.database_url.is_empty() {
        true => format!(
            "opening the server's database {}",
            serve.sqlite_path().display()
        ),
        false => "opening the server's PostgreSQL database".to_owned(),
    })
}

/// Who made a change, for the audit log: `cli:<login name>`.
pub(crate) fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            // SAFETY: getuid has no preconditions and cannot fail.
            .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
    )
}

/// Record a certificate just issued (revoking the agent's earlier ones), with its audit row,
/// and its serial.
pub async fn record_issue(
    md: &Metadata,
    name: &AgentId,
    issued: &IssuedCert,
) -> anyhow::Result<AccessOutcome> {
    let cred = Credential {
        fingerprint: issued.fingerprint.clone(),
        agent: name.as_str().to_owned(),
        issued_us: issued.issued_us,
        not_after_us: issued.not_after_us,
        revoked_us: None,
        revoked_reason: None,
    };
    let outcome = md
        .change_access(AccessChange::Issue(cred), &actor())
        .await
        .context("recording the certificate in agent_credential")?;
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the certificate just issued: {e}"))?;
    if let Ok(serial) = sealstream::crypto::cert::serial_hex(&der) {
        md.note_serial(&issued.fingerprint, &serial).await?;
    }
    Ok(outcome)
}

fn change(config: &Path, change: AccessChange) -> anyhow::Result<AccessOutcome> {
    let serve = ServeConfig::load(config)?;
    super::runtime()?.block_on(async {
        let md = metadata(&serve).await?;
        Ok(md.change_access(change, &actor()).await?)
    })
}

fn set_disabled(config: &Path, name: String, disabled: bool) -> anyhow::Result<ExitCode> {
    let name = agent_name(name)?;
    let outcome = change(
        config,
        AccessChange::Disable {
            agent: name.as_str().to_owned(),
            disabled,
        },
    )?;
    let (now, was) = if disabled {
        (
            "disabled: servers refuse it within access_poll_ms and close its connections",
            "was already disabled",
        )
    } else {
        (
            "enabled: servers accept its current certificate again",
            "was not disabled",
        )
    };
    eprintln!(
        "agent {:?} {}",
        name.as_str(),
        if outcome.changed { now } else { was }
    );
    Ok(ExitCode::SUCCESS)
}

fn superseded_note(revoked: &[String]) -> String {
    match revoked.len() {
        0 => String::new(),
        n => format!("; its {n} earlier certificate(s) are revoked"),
    }
}

/// A UTC date (YYYY-MM-DD) from microseconds since the epoch.
pub(crate) fn date(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(us / 1_000_000)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A UTC time to the minute (YYYY-MM-DD HH:MM) from microseconds since the epoch.
fn minute(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(us / 1_000_000)
        .map(|t| format!("{} {:02}:{:02}", t.date(), t.hour(), t.minute()))
        .unwrap_or_else(|_| "?".into())
}

/// One certificate as `agents list` and `agents revoke` show it.
fn cert_line(c: &Credential, seen: Option<&CertSeen>) -> String {
    let seen_at = |t: Option<i64>| t.map_or("never".to_owned(), minute);
    format!(
        "serial {} valid until {}, first seen {}, last seen {}",
        seen.and_then(|s| s.serial.as_deref()).unwrap_or("-"),
        date(c.not_after_us),
        seen_at(seen.and_then(|s| s.first_seen_us)),
        seen_at(seen.and_then(|s| s.last_seen_us)),
    )
}

/// `agents list`: one line per agent, then its certificates (indented), newest first.
fn list_text(rows: &AccessRows, seen: &[CertSeen]) -> String {
    use std::collections::BTreeMap;
    let mut agents: BTreeMap<
        &str,
        (
            Option<&sealstream::metadata::AgentAccount>,
            Vec<&Credential>,
        ),
    > = BTreeMap::new();
    for a in &rows.accounts {
        agents.entry(&a.agent).or_default().0 = Some(a);
    }
    for c in &rows.credentials {
        agents.entry(&c.agent).or_default().1.push(c);
    }
    let now = sealstream::metadata::now_us();
    let mut out = format!(
        "{:<24} {:<9} {:<12} {}\n",
        "AGENT", "STATE", "VALID UNTIL", "CERTIFICATES"
    );
    for (agent, (account, mut creds)) in agents {
        creds.sort_by_key(|c| std::cmp::Reverse(c.issued_us));
        let current = creds
            .iter()
            .filter(|c| c.revoked_us.is_none())
            .max_by_key(|c| c.not_after_us);
        let state = if account.is_some_and(|a| a.disabled_us.is_some()) {
            "disabled"
        } else if current.is_some_and(|c| c.not_after_us < now) {
            "expired"
        } else if current.is_none() {
            "revoked"
        } else {
            "enabled"
        };
        out.push_str(&format!(
            "{agent:<24} {state:<9} {:<12} {} current, {} revoked\n",
            current.map_or("-".into(), |c| date(c.not_after_us)),
            creds.iter().filter(|c| c.revoked_us.is_none()).count(),
            creds.iter().filter(|c| c.revoked_us.is_some()).count(),
        ));
        for c in creds {
            let s = seen.iter().find(|s| s.fingerprint == c.fingerprint);
            let state = match (&c.revoked_us, &c.revoked_reason) {
                (Some(t), reason) => format!(
                    "revoked {} ({})",
                    minute(*t),
                    reason.as_deref().unwrap_or("no reason given")
                ),
                (None, _) => "current".into(),
            };
            out.push_str(&format!("  {}: {state}\n", cert_line(c, s)));
        }
    }
    out
}

/// What `agents revoke` did: each certificate revoked, or why none was.
fn revoke_text(agent: &str, revoked: &[String], rows: &AccessRows, seen: &[CertSeen]) -> String {
    let mut out = match revoked.len() {
        0 => format!(
            "agent {agent:?}: 0 certificate(s) revoked: none of its certificates is registered or was seen by a node \
             (it never connected, or is not a name of this deployment); from now on only certificates registered \
             with `agents enroll` or `agents config` are accepted for it\n"
        ),
        n => format!(
            "agent {agent:?}: {n} certificate(s) revoked; servers refuse them within access_poll_ms and close open connections:\n"
        ),
    };
    for fp in revoked {
        if let Some(c) = rows.credentials.iter().find(|c| &c.fingerprint == fp) {
            let s = seen.iter().find(|s| &s.fingerprint == fp);
            out.push_str(&format!("  {} ({fp})\n", cert_line(c, s)));
        }
    }
    out
}

/// Write the agent's certificate, key and configuration into `out`; returns the server pin
/// and the certificate issued (for `record_issue`).
pub fn enroll(
    data_dir: &Path,
    name: &AgentId,
    out: &Path,
    server: &str,
    days: u32,
) -> anyhow::Result<(String, IssuedCert)> {
    let pki = Pki::open_or_create(data_dir)?;
    let files = pki.enroll_agent_for(name, out, days)?;
    let pin = pki.server_pin().to_string();
    super::agent_toml::AgentToml {
        written_by: "sealstream agents enroll",
        agent: name,
        server,
        servers: &[],
        pins: std::slice::from_ref(&pin),
        cert: "agent.crt",
        key: "agent.key",
        kek: "kek.pem",
        spool_dir: "spool",
    }
    .write(&out.join("agent.toml"))?;
    Ok((pin, files.issued))
}
