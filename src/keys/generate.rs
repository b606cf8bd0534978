//! `sealstream keys generate`: a new RSA KEK written as `keypair.pem` (PKCS#8, PBES2 with
//! PBKDF2-HMAC-SHA256 at many more rounds than openssl's 2048, AES-256-CBC; `openssl rsa`
//! reads it) and `publickey.crt` (SPKI PEM, as the how-to names it).

use std::path::{Path, PathBuf};

use pkcs8::der::Decode;
use rsa::PrivateKey;
use rsa::pkcs8::EncodePrivateKey;

use super::passphrase::Passphrase;
use super::{KeyError, MAX_RSA_BITS, MIN_RSA_BITS, fingerprint, public_key_pem};
use crate::protocol::KekId;

/// PBKDF2-HMAC-SHA256 rounds for generated keys (OWASP's 2023 figure; openssl uses 2048).
pub const GENERATED_PBKDF2_ITERATIONS: u32 = 600_000;

pub struct Generated {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    pub kek_id: KekId,
}

/// Write `keypair.pem` and `publickey.crt` into `dir` (created if absent; files never overwritten).
pub fn generate_keypair(dir: &Path, bits: usize, pass: &Passphrase) -> Result<Generated, KeyError> {
    let private_path = dir.join("keypair.pem");
    let public_path = dir.join("publickey.crt");
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || !bits.is_multiple_of(1024) {
        return Err(KeyError::BadSize { bits });
    }
    for p in [&private_path, &public_path] {
        if p.exists() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Write { path, source }
    };
    let mut rng = getrandom::SysRng;
    let key = PrivateKey::new(&mut rng, bits).map_err(|e| KeyError::Malformed {
        path: private_path.clone(),
        what: "generated key",
        detail: e.to_string(),
    })?;
    let pem = encrypted_pkcs8_pem(&key, pass, &private_path)?;

    crate::fsutil::write_new(&private_path, pem.as_bytes(), 0o600)
        .map_err(write_err(&private_path))?;
    let public = key.to_public_key();
    crate::fsutil::write_new(&public_path, public_key_pem(&public).as_bytes(), 0o644)
        .map_err(write_err(&public_path))?;
    Ok(Generated {
        private_path,
        public_path,
        kek_id: fingerprint(&public),
    })
}

/// `key` as openssl 3's default encrypted form, which browsers' WebCrypto also opens: PKCS#8,
/// PBES2 with PBKDF2-HMAC-SHA256 (`GENERATED_PBKDF2_ITERATIONS`) and AES-256-CBC, in PEM.
/// `path` names the file in errors.
pub fn encrypted_pkcs8_pem(
    key: &PrivateKey,
    pass: &Passphrase,
    path: &Path,
) -> Result<zeroize::Zeroizing<String>, KeyError> {
    let der = key
        .to_pkcs8_der()
        .map_err(|e| encode_err(path, e.to_string()))?;
    let info = pkcs8::PrivateKeyInfoRef::from_der(der.as_bytes())
        .map_err(|e| encode_err(path, e.to_string()))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    getrandom::fill(&mut salt).expect("operating system random source failed");
    getrandom::fill(&mut iv).expect("operating system random source failed");
    let params = pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(
        GENERATED_PBKDF2_ITERATIONS,
        &salt,
        iv,
    )
    .map_err(|e| encode_err(path, e.to_string()))?;
    let encrypted = info
        .encrypt_with_params(params, pass.as_bytes())
        .map_err(|e| encode_err(path, e.to_string()))?;
    let pem = encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
        .map_err(|e| encode_err(path, e.to_string()))?;
    Ok(pem)
}

/// Re-encrypt a private key file in any form `load_private_key` reads (traditional
/// `Proc-Type` with DES-EDE3 or AES, PKCS#8 with scrypt or AES-192, …) as `encrypted_pkcs8_pem`
/// writes it, into a new file `out` (mode 0600, never overwritten). Returns the KEK id.
pub fn convert_private_key(
    input: &Path,
    out: &Path,
    old: impl FnOnce() -> Result<Passphrase, KeyError>,
    new: impl FnOnce() -> Result<Passphrase, KeyError>,
) -> Result<KekId, KeyError> {
    if out.exists() {
        return Err(KeyError::Exists {
            path: out.to_owned(),
        });
    }
    let key = super::load_private_key(input, old)?;
    let pass = new()?;
    let pem = encrypted_pkcs8_pem(&key.key, &pass, out)?;
    crate::fsutil::write_new(out, pem.as_bytes(), 0o600).map_err(|source| KeyError::Write {
        path: out.to_owned(),
        source,
    })?;
    Ok(key.kek_id)
}

fn encode_err(path: &Path, detail: String) -> KeyError {
    KeyError::Malformed {
        path: path.to_owned(),
        what: "generated key encoding",
        detail,
    }
}
