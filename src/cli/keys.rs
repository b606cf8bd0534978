//! `sealstream keys fingerprint | check | generate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sealstream::keys::{self, PassphraseSource};

pub fn fingerprint(pubfile: &Path) -> anyhow::Result<ExitCode> {
    let key = keys::load_public_key(pubfile)?;
    println!("{}", key.kek_id);
    Ok(ExitCode::SUCCESS)
}

pub fn check(
    privfile: &Path,
    public: Option<&Path>,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let source = PassphraseSource::from_process(passphrase_file);
    let prompt = format!("Passphrase for {}: ", privfile.display());
    let private = keys::load_private_key(privfile, || source.read(&prompt))?;
    println!("{}", private.kek_id);
    eprintln!(
        "{}: RSA {} bit, {}",
        privfile.display(),
        private.bits,
        private.format
    );
    if let Some(public) = public {
        let public = keys::load_public_key(public)?;
        match keys::check_pair(&private, &public) {
            Ok(()) => eprintln!("{}: matches ({})", public.path.display(), public.format),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn generate(
    out: &Path,
    bits: usize,
    passphrase_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let source = PassphraseSource::from_process(passphrase_file);
    let pass = source.read_new(8)?;
    let g = keys::generate_keypair(out, bits, &pass)?;
    println!("{}", g.kek_id);
    eprintln!(
        "wrote {} (RSA {bits}, PKCS#8 PBES2: PBKDF2-SHA256 x{}, AES-256-CBC) and {}",
        g.private_path.display(),
        keys::GENERATED_PBKDF2_ITERATIONS,
        g.public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn register(
    config: &Path,
    public: &Path,
    private: &Path,
    server_held: bool,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let cfg = sealstream::config::ServeConfig::load(config)?;
    let key = keys::load_public_key(public)?;
    let abs =
        |p: &Path| std::fs::canonicalize(p).with_context(|| format!("{}: not found", p.display()));
    let (public, private) = (abs(public)?, abs(private)?);
    let rt = super::runtime()?;
    rt.block_on(async {
        let md =
            sealstream::metadata::Metadata::open(&cfg.database_url, &cfg.sqlite_path()).await?;
        md.insert_kek(
            true,
            !server_held,
            &public.display().to_string(),
            &private.display().to_string(),
        )
        .await?;
        anyhow::Ok(())
    })?;
    println!("{}", key.kek_id);
    eprintln!(
        "registered KEK {} ({}) in encryption_kek; a running server picks it up within {} ms",
        key.kek_id,
        if server_held {
            "server-held"
        } else {
            "customer, end-to-end"
        },
        cfg.kek_poll_ms
    );
    Ok(ExitCode::SUCCESS)
}

/// `keys convert`: re-encrypt a private key file into openssl 3's default form (PKCS#8, PBES2,
/// PBKDF2-SHA256, AES-256-CBC), which the console's WebCrypto opens.
pub fn convert(
    input: &Path,
    out: &Path,
    passphrase_file: Option<PathBuf>,
    new_passphrase_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let source = PassphraseSource::from_process(passphrase_file);
    let prompt = format!("Passphrase for {}: ", input.display());
    let kept: std::cell::RefCell<Option<keys::Passphrase>> = Default::default();
    let kek = keys::convert_private_key(
        input,
        out,
        || {
            let p = source.read(&prompt)?;
            *kept.borrow_mut() = Some(keys::Passphrase::new(p.as_bytes().to_vec()));
            Ok(p)
        },
        || match (&new_passphrase_file, kept.borrow_mut().take()) {
            (Some(f), _) => PassphraseSource {
                file: Some(f.clone()),
                ..Default::default()
            }
            .read_new(8),
            (None, Some(old)) => Ok(old),
            (None, None) => PassphraseSource::from_process(None).read_new(8),
        },
    )?;
    println!("{kek}");
    eprintln!(
        "wrote {} (PKCS#8 PBES2: PBKDF2-SHA256 x{}, AES-256-CBC; same KEK, {})",
        out.display(),
        keys::GENERATED_PBKDF2_ITERATIONS,
        if new_passphrase_file.is_some() {
            "new passphrase"
        } else {
            "same passphrase"
        }
    );
    Ok(ExitCode::SUCCESS)
}
