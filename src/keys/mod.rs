//! KEK files as openssl writes them: private keys (PKCS#8 encrypted or not, traditional
//! PKCS#1 with `Proc-Type: 4,ENCRYPTED`), public keys (SPKI, PKCS#1, X.509 certificates),
//! passphrases, fingerprints and key generation. Every error names the file and what was
//! expected.

mod generate;
mod passphrase;
mod pem;
mod private;
mod public;
mod traditional;

use std::path::{Path, PathBuf};

use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use spki::EncodePublicKey;

use crate::protocol::KekId;

pub use generate::{
    GENERATED_PBKDF2_ITERATIONS, convert_private_key, encrypted_pkcs8_pem, generate_keypair,
};
pub use passphrase::{Passphrase, PassphraseSource};
pub use private::{PrivateKeyFile, load_private_key, parse_private_key};
pub use public::{PublicKeyFile, load_public_key, parse_public_key};

/// Smallest RSA modulus accepted for a KEK.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted for a KEK.
pub const MAX_RSA_BITS: usize = 4096;

/// What went wrong with a key file. Each message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: already exists; refusing to overwrite a key file")]
    Exists { path: PathBuf },
    #[error("{path}: file is empty; expected {expected}")]
    Empty {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path}: not a PEM file; expected {expected}")]
    NotPem {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path}: holds a PEM \"{found}\"; expected {expected}")]
    WrongBlock {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error(
        "{path}: is an {algorithm} key; sealstream KEKs are RSA (make one with `openssl genrsa -aes256 -out keypair.pem 2048`)"
    )]
    NotRsa { path: PathBuf, algorithm: String },
    #[error("{path}: RSA key of {bits} bits is too small; use 2048, 3072 or 4096 bits")]
    TooSmall { path: PathBuf, bits: usize },
    #[error("{path}: RSA key of {bits} bits is too large; use 2048, 3072 or 4096 bits")]
    TooLarge { path: PathBuf, bits: usize },
    #[error("{path}: wrong passphrase (the private key did not decrypt)")]
    WrongPassphrase { path: PathBuf },
    #[error("{path}: the private key is passphrase-protected: {reason}")]
    NeedPassphrase { path: PathBuf, reason: String },
    #[error(
        "{path}: unsupported key encryption {cipher}; re-encrypt with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
    )]
    UnsupportedCipher { path: PathBuf, cipher: String },
    #[error("{path}: malformed {what}: {detail}")]
    Malformed {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "public key {public} ({public_id}) does not match private key {private} ({private_id})"
    )]
    Mismatch {
        public: PathBuf,
        public_id: KekId,
        private: PathBuf,
        private_id: KekId,
    },
    #[error("cannot make an RSA key of {bits} bits: use 2048, 3072 or 4096")]
    BadSize { bits: usize },
    #[error("passphrase: {0}")]
    Passphrase(String),
}

/// The KEK id: SHA-256 of the SubjectPublicKeyInfo DER, as
/// `openssl pkey -pubin -outform der | sha256sum` computes it.
pub fn fingerprint(key: &PublicKey) -> KekId {
    let der = key
        .to_public_key_der()
        .expect("an RSA public key always encodes as SPKI");
    KekId(Sha256::digest(der.as_bytes()).into())
}

/// SPKI PEM (`BEGIN PUBLIC KEY`), what `openssl rsa -pubout` writes.
pub fn public_key_pem(key: &PublicKey) -> String {
    key.to_public_key_pem(pkcs8::LineEnding::LF)
        .expect("an RSA public key always encodes as SPKI")
}

pub(crate) fn check_size(path: &Path, bits: usize) -> Result<(), KeyError> {
    if bits < MIN_RSA_BITS {
        return Err(KeyError::TooSmall {
            path: path.to_owned(),
            bits,
        });
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyError::TooLarge {
            path: path.to_owned(),
            bits,
        });
    }
    Ok(())
}

pub(crate) fn bits_of(key: &PublicKey) -> usize {
    key.n().bit_width() as usize
}

/// Check that a private and a public key are one pair.
pub fn check_pair(private: &PrivateKeyFile, public: &PublicKeyFile) -> Result<(), KeyError> {
    if private.kek_id != public.kek_id {
        return Err(KeyError::Mismatch {
            public: public.path.clone(),
            public_id: public.kek_id,
            private: private.path.clone(),
            private_id: private.kek_id,
        });
    }
    Ok(())
}

/// Read a PEM file's blocks; empty, binary and unparsable files are errors naming `path` and
/// what was `expected`.
pub(crate) fn read_pem(path: &Path, expected: &'static str) -> Result<Vec<pem::Block>, KeyError> {
    let raw = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?);
    pem_blocks(path, &raw, expected)
}

/// The PEM blocks of a key file's bytes, `path` naming it in errors.
pub(crate) fn pem_blocks(
    path: &Path,
    raw: &[u8],
    expected: &'static str,
) -> Result<Vec<pem::Block>, KeyError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(KeyError::Empty {
            path: path.to_owned(),
            expected,
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| KeyError::NotPem {
        path: path.to_owned(),
        expected,
    })?;
    let blocks = pem::parse(text).map_err(|detail| KeyError::Malformed {
        path: path.to_owned(),
        what: "PEM",
        detail,
    })?;
    if blocks.is_empty() {
        return Err(KeyError::NotPem {
            path: path.to_owned(),
            expected,
        });
    }
    Ok(blocks)
}

/// The public half of a private key.
pub fn public_of(key: &PrivateKey) -> PublicKey {
    key.to_public_key()
}
