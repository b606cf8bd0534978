//! Helpers shared by the integration tests: running the real `openssl` CLI.

pub mod agents;
pub mod browser;
pub mod child;
pub mod console;
pub mod faults;
pub mod moto;
pub mod nodes;
pub mod object_faults;
pub mod server;
pub mod xvfb;

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PASS: &str = "correct horse battery";

/// `check(backend)` as two tests, `sqlite` on the embedded SQLite and `postgres` on a fresh
/// PostgreSQL database.
macro_rules! on_both_backends {
    ($check:ident, sqlite: $sqlite:ident, postgres: $postgres:ident $(,)?) => {
        #[actix_rt::test]
        async fn $sqlite() {
            $check($crate::common::server::Backend::Sqlite).await;
        }

        #[actix_rt::test]
        async fn $postgres() {
            $check($crate::common::server::Backend::Postgres).await;
        }
    };
}
pub(crate) use on_both_backends;

/// Run `openssl` with `args` in `dir`; panics with its stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What `openssl pkey -pubin -in F -outform der | sha256sum` prints, as sealstream shows it.
pub fn openssl_fingerprint(dir: &Path, spki_pem: &str) -> String {
    use sha2::Digest;
    let der = openssl(dir, &["pkey", "-pubin", "-in", spki_pem, "-outform", "der"]);
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&der)))
}

/// Write the passphrase file the way `echo` does (with a trailing newline).
pub fn pass_file(dir: &Path) -> PathBuf {
    let p = dir.join("pass.txt");
    std::fs::write(&p, format!("{PASS}\n")).unwrap();
    p
}

/// `openssl genrsa` with extra flags, encrypted with PASS unless `flags` is empty.
pub fn genrsa(dir: &Path, name: &str, bits: u32, flags: &[&str]) -> PathBuf {
    let mut args = vec!["genrsa"];
    args.extend_from_slice(flags);
    let pass = format!("pass:{PASS}");
    if flags
        .iter()
        .any(|f| matches!(*f, "-aes256" | "-aes128" | "-aes192" | "-des3"))
    {
        args.extend_from_slice(&["-passout", &pass]);
    }
    let bits = bits.to_string();
    args.extend_from_slice(&["-out", name, &bits]);
    openssl(dir, &args);
    dir.join(name)
}

/// Extract the SPKI public key (`openssl rsa -pubout`), as the how-to does.
pub fn pubout(dir: &Path, private: &str, out: &str, encrypted: bool) -> PathBuf {
    let pass = format!("pass:{PASS}");
    let mut args = vec!["rsa", "-in", private, "-pubout", "-out", out];
    if encrypted {
        args.extend_from_slice(&["-passin", &pass]);
    }
    openssl(dir, &args);
    dir.join(out)
}

/// Every file below `dir`, depth first.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
