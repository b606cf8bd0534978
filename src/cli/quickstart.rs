//! `sealstream quickstart`: the whole pipeline on the embedded defaults (SQLite, a local store
//! directory) — a passphrase-protected KEK registered the how-to's way, an enrolled agent,
//! the QUIC server, about ten seconds of synthetic frames and keystrokes from several users,
//! then an export with the passphrase, checked byte for byte against what the agent sent.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64ct::{Base64, Encoding};
use sealstream::agent::{self, Source, synthetic};
use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::export;
use sealstream::keys::{self, Passphrase};
use sealstream::metadata::Table;
use sealstream::protocol::AgentId;
use sealstream::server::Server;
use sealstream::storage;
use sha2::{Digest, Sha256};

#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Where to put the run (a new `run-<time>` directory is made inside).
    #[arg(long, default_value = "sealstream-quickstart")]
    dir: PathBuf,
    /// Simulated user sessions.
    #[arg(long, default_value_t = 5)]
    users: usize,
    /// Seconds of recording.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// After the round trip, keep the server and the review console running (with a demo
    /// reviewer and one user still recording, for live view) until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// The console's address with --serve (plain HTTP: loopback only).
    #[arg(long, default_value = "127.0.0.1:8443")]
    console_listen: std::net::SocketAddr,
}

pub fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dir = std::path::absolute(args.dir.join(format!("run-{secs}")))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let console = args.serve.then_some(args.console_listen);
    if let Some(addr) = console
        && !addr.ip().is_loopback()
    {
        bail!(
            "--console-listen {addr}: quickstart serves plain HTTP, so only on a loopback address"
        );
    }
    actix_rt::System::new().block_on(pipeline(dir, args.users, args.seconds, console))
}

async fn pipeline(
    dir: PathBuf,
    users: usize,
    seconds: u64,
    console: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    // 1. The customer's KEK, passphrase-protected. The demo passphrase is kept in a 0600 file
    //    so the export can be repeated by hand; real operators keep it to themselves.
    let keys_dir = dir.join("customer");
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw).context("reading the OS random source")?;
    let pass_text = zeroize::Zeroizing::new(Base64::encode_string(&raw));
    let pass_file = dir.join("passphrase.txt");
    sealstream::fsutil::write_new(&pass_file, format!("{}\n", *pass_text).as_bytes(), 0o600)?;
    let generated = keys::generate_keypair(
        &keys_dir,
        2048,
        &Passphrase::new(pass_text.as_bytes().to_vec()),
    )?;
    println!(
        "1. customer KEK {} in {}",
        generated.kek_id,
        keys_dir.display()
    );

    // 2. The server on the embedded defaults, and the KEK registered with the how-to's statement.
    let serve_toml = dir.join("serve.toml");
    let mut toml = "# quickstart server: embedded SQLite and a local store under ./server\n\
         listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"server\"\nkek_poll_ms = 200\n"
        .to_owned();
    if let Some(addr) = console {
        toml.push_str(&format!(
            "\n# the review console, plain HTTP on loopback (use tls_cert/tls_key elsewhere)\n[console]\nlisten = \"{addr}\"\n"
        ));
    }
    std::fs::write(&serve_toml, toml)?;
    let cfg = ServeConfig::load(&serve_toml)?;
    let server = Server::start(&cfg).await.context("starting the server")?;
    server
        .metadata
        .insert_kek(
            true,
            true,
            &generated.public_path.display().to_string(),
            &generated.private_path.display().to_string(),
        )
        .await?;
    server.reload_keks().await;
    println!(
        "2. server on QUIC {} (metrics http://{}/metrics), SQLite {}, store {}",
        server.quic_addr,
        server.ops_addr,
        cfg.sqlite_path().display(),
        cfg.store_dir().display()
    );

    // 3. An enrolled agent with the customer's public key as kek.pem.
    let agent_dir = dir.join("agent");
    let name = AgentId::new("quickstart-ts01").expect("valid name");
    let (pin, issued) = super::agent::enroll(
        &cfg.data_dir,
        &name,
        &agent_dir,
        &server.quic_addr.to_string(),
        sealstream::pki::DEFAULT_AGENT_DAYS,
    )?;
    super::agent::record_issue(&server.metadata, &name, &issued).await?;
    std::fs::copy(&generated.public_path, agent_dir.join("kek.pem"))?;
    let agent_cfg = AgentConfig::load(&agent_dir.join("agent.toml"))?;
    println!(
        "3. agent {:?} enrolled (server pin {pin}); recording {users} users for {seconds} s ...",
        name.as_str()
    );

    // 4. Record and stream.
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let spec = synthetic::SyntheticSpec {
        users,
        duration: Duration::from_secs(seconds),
        images: true,
        ..Default::default()
    };
    let report = agent::run(
        agent_cfg,
        Source::Synthetic(spec),
        stop,
        Duration::from_secs(10),
    )
    .await?;
    let stored_chunks = server.metadata.count(Table::Chunks).await?;
    let deks = server.metadata.count(Table::EncryptionDek).await?;
    // Acked chunks are durable already; shutting down writes nothing the export needs.
    let server = match console {
        Some(_) => Some(server),
        None => {
            server.shutdown().await;
            None
        }
    };
    println!(
        "4. streamed {} chunks ({} bytes sealed) over one QUIC connection; {} acked, {} unacked; server indexed {stored_chunks} chunks, {deks} DEK record(s)",
        report.chunks_sealed, report.sealed_bytes, report.chunks_acked, report.unacked
    );
    if report.unacked > 0 {
        bail!("{} chunks were not acked", report.unacked);
    }

    // 5. Nothing readable on the server: search the store and the database for the canary.
    for place in [cfg.store_dir(), cfg.data_dir.clone()] {
        if let Some(hit) = find_in_tree(&place, synthetic::CANARY.as_bytes())? {
            bail!("plaintext found on the server in {}", hit.display());
        }
    }
    println!(
        "5. searched the server's store and database for the recorded text: not found (ciphertext only)"
    );

    // 6. Export with the passphrase, and compare with what the agent recorded.
    let private = keys::load_private_key(&generated.private_path, || {
        keys::PassphraseSource {
            file: Some(pass_file.clone()),
            ..Default::default()
        }
        .read("")
    })?;
    let store = storage::open_local(&cfg.store_dir())?;
    let export_dir = dir.join("export");
    // The agents sign their recordings: check them against this deployment's agent CA.
    let options = export::Options {
        agent_ca: Some(
            sealstream::crypto::AgentCa::load(&cfg.data_dir.join("pki/ca.crt"))
                .map_err(anyhow::Error::msg)?,
        ),
        ..Default::default()
    };
    let exported = export::export_with(
        store.as_ref(),
        std::slice::from_ref(&private),
        &options,
        &export_dir,
        &mut |_| {},
    )
    .await?;
    drop(private);
    super::export::print_report(&exported, false);
    if exported.tampered() || exported.missing_keys() {
        return Ok(super::export::exit_code(&exported, false));
    }
    let mut files = 0;
    let mut bytes = 0u64;
    for s in &report.sessions {
        let base = export_dir.join(name.dir_name()).join(s.session.to_string());
        for (frame, digest) in &s.frames {
            let got = std::fs::read(base.join("frames").join(frame)).with_context(|| {
                format!(
                    "frame {frame} of session {} missing from the export",
                    s.session
                )
            })?;
            if Sha256::digest(&got).as_slice() != digest {
                bail!(
                    "frame {frame} of session {} differs from what was recorded",
                    s.session
                );
            }
            files += 1;
            bytes += got.len() as u64;
        }
        let ks = std::fs::read(base.join("keystrokes.jsonl")).unwrap_or_default();
        if Sha256::digest(&ks).as_slice() != s.keystrokes_sha256 {
            bail!(
                "keystrokes of session {} differ from what was recorded",
                s.session
            );
        }
        files += 1;
        bytes += ks.len() as u64;
    }
    let complete = exported
        .streams
        .iter()
        .filter(|s| matches!(s.status, export::Status::Complete))
        .count();
    println!(
        "6. verified: {} sessions, {complete} complete streams, {files} files, {bytes} bytes identical to what the agent recorded",
        report.sessions.len()
    );
    println!("   export: {}", export_dir.display());
    println!(
        "   again by hand: sealstream export --store {} --key {} --passphrase-file {} --out {}",
        cfg.store_dir().display(),
        generated.private_path.display(),
        pass_file.display(),
        dir.join("export-again").display()
    );
    match (server, console) {
        (Some(server), Some(addr)) => {
            serve_console(server, &cfg, addr, &dir, &agent_dir, &pass_file).await
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `--serve`: the review console beside the still-running server, a demo reviewer, and one
/// synthetic user still recording (live view), until Ctrl-C.
async fn serve_console(
    server: Server,
    cfg: &ServeConfig,
    addr: std::net::SocketAddr,
    dir: &Path,
    agent_dir: &Path,
    pass_file: &Path,
) -> anyhow::Result<ExitCode> {
    use sealstream::metadata::{ConsoleUser, Role};
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).context("reading the OS random source")?;
    let password = zeroize::Zeroizing::new(Base64::encode_string(&raw));
    let password_file = dir.join("console-password.txt");
    sealstream::fsutil::write_new(&password_file, format!("{}\n", *password).as_bytes(), 0o600)?;
    let hash = sealstream::console::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    server
        .metadata
        .put_console_user(
            ConsoleUser {
                name: "demo".into(),
                role: Role::Reviewer,
                password_hash: hash,
                agents: vec!["quickstart-*".into()],
                created_us: sealstream::metadata::now_us(),
                disabled_us: None,
            },
            true,
            "quickstart",
            "user_add",
        )
        .await?;
    let store = storage::open_local(&cfg.store_dir())?;
    let console_cfg = cfg.console.clone().unwrap_or_default();
    let console = sealstream::console::Console::start(
        &sealstream::config::Console {
            listen: addr,
            agent_ca: Some(cfg.data_dir.join("pki").join("ca.crt")),
            ..console_cfg
        },
        server.metadata.clone(),
        store,
    )
    .await
    .context("starting the review console (is the port taken? use --console-listen)")?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let agent_cfg = AgentConfig::load(&agent_dir.join("agent.toml"))?;
    let live = actix_rt::spawn(agent::run(
        agent_cfg,
        Source::Synthetic(synthetic::SyntheticSpec {
            users: 1,
            duration: Duration::from_secs(24 * 3600),
            images: true,
            ..Default::default()
        }),
        stop,
        Duration::from_secs(10),
    ));
    println!(
        "7. review console: {}\n   log in as demo, password in {}\n   decrypt with the passphrase in {}\n   one user keeps recording (live view); Ctrl-C stops everything",
        console.url(),
        password_file.display(),
        pass_file.display()
    );
    super::serve::wait_for_signal().await;
    let _ = stop_tx.send(true);
    let _ = live.await;
    console.stop().await;
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn find_in_tree(dir: &Path, needle: &[u8]) -> anyhow::Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(hit) = find_in_tree(&path, needle)? {
                return Ok(Some(hit));
            }
        } else {
            let bytes = std::fs::read(&path)?;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}
