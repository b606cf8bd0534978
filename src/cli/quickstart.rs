//! `sealstream quickstart`: the whole offline round trip on the bundled sample recording —
//! generate a passphrase-protected KEK, seal the samples into a store, export them back with
//! the passphrase, and check every byte.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64ct::{Base64, Encoding};
use sealstream::export;
use sealstream::keys::{self, Passphrase};
use sealstream::protocol::{AgentId, SessionId};
use sealstream::recorder::{self, Recorder};
use sealstream::storage;

const SAMPLES: &[(&str, &[u8])] = &[
    (
        "screen-000.png",
        include_bytes!("../../samples/screen-000.png"),
    ),
    (
        "screen-001.png",
        include_bytes!("../../samples/screen-001.png"),
    ),
    (
        "screen-002.png",
        include_bytes!("../../samples/screen-002.png"),
    ),
    (
        "keystrokes.jsonl",
        include_bytes!("../../samples/keystrokes.jsonl"),
    ),
];
/// Text typed in the sample keystrokes; it must not appear anywhere in the store.
const CANARY: &[u8] = b"\"key\":\"q\"";

#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Where to put the run (a new `run-<time>` directory is made inside).
    #[arg(long, default_value = "sealstream-quickstart")]
    dir: PathBuf,
}

pub fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dir = args.dir.join(format!("run-{secs}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let keys_dir = dir.join("keys");
    let sample_dir = dir.join("sample");
    let store_dir = dir.join("store");
    let export_dir = dir.join("export");

    // 1. A demo KEK with a random passphrase, kept in a 0600 file so the run can be repeated
    //    by hand. Real deployments keep the passphrase with the operator, not on disk.
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw).context("reading the OS random source")?;
    let pass_text = zeroize::Zeroizing::new(Base64::encode_string(&raw));
    let pass_file = dir.join("passphrase.txt");
    write_private(&pass_file, pass_text.as_bytes())?;
    let pass = Passphrase::new(pass_text.as_bytes().to_vec());
    let generated = keys::generate_keypair(&keys_dir, 2048, &pass)?;
    println!(
        "1. generated KEK {} in {}",
        generated.kek_id,
        keys_dir.display()
    );

    // 2. The sample recording: three screen frames and a keystroke log.
    std::fs::create_dir_all(&sample_dir)?;
    for (name, bytes) in SAMPLES {
        std::fs::write(sample_dir.join(name), bytes)?;
    }
    let inputs = recorder::scan_inputs(std::slice::from_ref(&sample_dir))?;
    let kek = keys::load_public_key(&generated.public_path)?;
    let agent = AgentId::new("quickstart-agent").expect("valid name");
    let rec = Recorder::new(agent, &kek);
    let session = SessionId::random();
    let (chunks, summary) = recorder::seal_inputs(&rec, session, &inputs)?;
    let store = storage::open_local(&store_dir)?;
    let rt = super::runtime()?;
    let segments = rt.block_on(recorder::store_recording(
        store.as_ref(),
        rec.dek_record(),
        &chunks,
    ))?;
    drop(rec);
    println!(
        "2. sealed session {session}: {} frames + {} keystroke events -> {} chunks, {} bytes in {segments} segment(s) under {}",
        summary.frames,
        summary.keystroke_events,
        summary.chunks,
        summary.sealed_bytes,
        store_dir.display()
    );
    if contains_in_tree(&store_dir, CANARY)? {
        bail!("plaintext keystrokes found in the store: sealing is broken");
    }
    println!("3. searched the store for the typed text: not found (ciphertext only)");

    // 3. Export with the passphrase: the only way back to plaintext.
    let private = keys::load_private_key(&generated.private_path, || Ok(pass))?;
    let report = rt.block_on(export::export(
        store.as_ref(),
        std::slice::from_ref(&private),
        None,
        &export_dir,
    ))?;
    drop(private);
    super::export::print_report(&report);
    if report.tampered() || report.missing_keys() {
        return Ok(super::export::exit_code(&report));
    }

    // 4. Every exported byte equals its original.
    let out = export_dir
        .join("quickstart-agent")
        .join(session.to_string());
    let mut checked = 0;
    for (name, bytes) in SAMPLES {
        let exported = if name.ends_with(".jsonl") {
            out.join("keystrokes.jsonl")
        } else {
            out.join("frames").join(name)
        };
        let got =
            std::fs::read(&exported).with_context(|| format!("reading {}", exported.display()))?;
        if &got[..] != *bytes {
            bail!("{} differs from the original {name}", exported.display());
        }
        checked += bytes.len();
    }
    println!(
        "4. verified: {} files, {checked} bytes identical to the originals; exported to {}",
        SAMPLES.len(),
        out.display()
    );
    println!(
        "   try it yourself: sealstream export --store {} --key {} --passphrase-file {} --out {}",
        store_dir.display(),
        generated.private_path.display(),
        pass_file.display(),
        dir.join("export-again").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    Ok(())
}

fn contains_in_tree(dir: &Path, needle: &[u8]) -> anyhow::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if contains_in_tree(&path, needle)? {
                return Ok(true);
            }
        } else {
            let bytes = std::fs::read(&path)?;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
