//! Reading private KEK files: PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`, OpenSSL 3's default, and
//! `BEGIN PRIVATE KEY`) and traditional PKCS#1 (`BEGIN RSA PRIVATE KEY`, optionally with
//! `Proc-Type: 4,ENCRYPTED`). The passphrase is asked for only when the file is encrypted.

use std::path::{Path, PathBuf};

use pkcs1::DecodeRsaPrivateKey;
use pkcs8::der::Decode;
use rsa::PrivateKey;

use super::passphrase::Passphrase;
use super::pem::Block;
use super::{KeyError, bits_of, check_size, fingerprint, pem_blocks, read_pem, traditional};
use crate::protocol::KekId;

const EXPECTED: &str = "an RSA private key in PEM (\"BEGIN ENCRYPTED PRIVATE KEY\", \"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\")";

/// A loaded private key. The key material is zeroized when this is dropped.
pub struct PrivateKeyFile {
    pub path: PathBuf,
    pub key: PrivateKey,
    pub kek_id: KekId,
    pub bits: usize,
    /// How the file was stored, e.g. "PKCS#8, PBES2 encrypted".
    pub format: String,
    pub encrypted: bool,
}

impl std::fmt::Debug for PrivateKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PrivateKeyFile({}, {}, <secret>)",
            self.path.display(),
            self.kek_id
        )
    }
}

/// Read a private key file. `passphrase` is called only if the file is encrypted.
pub fn load_private_key(
    path: &Path,
    passphrase: impl FnOnce() -> Result<Passphrase, KeyError>,
) -> Result<PrivateKeyFile, KeyError> {
    from_blocks(path, read_pem(path, EXPECTED)?, passphrase)
}

/// Read a private key from a file's bytes already in memory; `path` names it in errors.
pub fn parse_private_key(
    path: &Path,
    raw: &[u8],
    passphrase: impl FnOnce() -> Result<Passphrase, KeyError>,
) -> Result<PrivateKeyFile, KeyError> {
    from_blocks(path, pem_blocks(path, raw, EXPECTED)?, passphrase)
}

fn from_blocks(
    path: &Path,
    blocks: Vec<Block>,
    passphrase: impl FnOnce() -> Result<Passphrase, KeyError>,
) -> Result<PrivateKeyFile, KeyError> {
    let block = private_block(path, blocks)?;
    let malformed = |what, detail: String| KeyError::Malformed {
        path: path.to_owned(),
        what,
        detail,
    };
    let (key, format, encrypted) = match block.label.as_str() {
        "ENCRYPTED PRIVATE KEY" => {
            let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&block.der)
                .map_err(|e| malformed("encrypted PKCS#8 structure", e.to_string()))?;
            let scheme = describe_scheme(&info.encryption_algorithm);
            let pass = passphrase()?;
            let doc = info.decrypt(pass.as_bytes()).map_err(|e| match e {
                pkcs8::Error::EncryptedPrivateKey(pkcs5::Error::DecryptFailed) => {
                    KeyError::WrongPassphrase {
                        path: path.to_owned(),
                    }
                }
                pkcs8::Error::EncryptedPrivateKey(
                    pkcs5::Error::UnsupportedAlgorithm { .. } | pkcs5::Error::NoPbes1CryptSupport,
                ) => KeyError::UnsupportedCipher {
                    path: path.to_owned(),
                    cipher: scheme.clone(),
                },
                pkcs8::Error::EncryptedPrivateKey(pkcs5::Error::AlgorithmParametersInvalid {
                    ..
                }) => malformed("encrypted PKCS#8 parameters", e.to_string()),
                // The structure parsed above, so anything else comes from the decrypted bytes:
                // a wrong passphrase passes the padding check about once in 256 tries and
                // yields garbage that fails to parse.
                _ => KeyError::WrongPassphrase {
                    path: path.to_owned(),
                },
            })?;
            // The same garbage may also get past that parse and fail here.
            let key = from_pkcs8(path, doc.as_bytes()).map_err(|e| match e {
                KeyError::Malformed { .. } => KeyError::WrongPassphrase {
                    path: path.to_owned(),
                },
                other => other,
            })?;
            (key, format!("PKCS#8, encrypted with {scheme}"), true)
        }
        "PRIVATE KEY" => (
            from_pkcs8(path, &block.der)?,
            "PKCS#8, unencrypted".to_owned(),
            false,
        ),
        "RSA PRIVATE KEY" => match block.header("Proc-Type") {
            Some(proc_type) if proc_type.contains("ENCRYPTED") => {
                let dek_info = block.header("DEK-Info").ok_or_else(|| {
                    malformed("traditional encrypted key", "no DEK-Info header".into())
                })?;
                let params = traditional::Params::parse(dek_info).map_err(|e| match e {
                    traditional::Error::Unsupported(cipher) => KeyError::UnsupportedCipher {
                        path: path.to_owned(),
                        cipher,
                    },
                    other => malformed("DEK-Info header", other.to_string()),
                })?;
                let pass = passphrase()?;
                let der = params.decrypt(pass.as_bytes(), &block.der).map_err(|_| {
                    KeyError::WrongPassphrase {
                        path: path.to_owned(),
                    }
                })?;
                let key =
                    PrivateKey::from_pkcs1_der(&der).map_err(|_| KeyError::WrongPassphrase {
                        path: path.to_owned(),
                    })?;
                (
                    key,
                    format!(
                        "traditional PKCS#1, encrypted with {}",
                        params.cipher_name()
                    ),
                    true,
                )
            }
            _ => {
                let key = PrivateKey::from_pkcs1_der(&block.der)
                    .map_err(|e| malformed("PKCS#1 RSA private key", e.to_string()))?;
                (key, "traditional PKCS#1, unencrypted".to_owned(), false)
            }
        },
        _ => unreachable!("private_block returns only the labels matched above"),
    };
    let public = key.to_public_key();
    let bits = bits_of(&public);
    check_size(path, bits)?;
    Ok(PrivateKeyFile {
        path: path.to_owned(),
        kek_id: fingerprint(&public),
        key,
        bits,
        format,
        encrypted,
    })
}

fn private_block(path: &Path, blocks: Vec<Block>) -> Result<Block, KeyError> {
    let mut found = None;
    for block in blocks {
        match block.label.as_str() {
            "ENCRYPTED PRIVATE KEY" | "PRIVATE KEY" | "RSA PRIVATE KEY" => return Ok(block),
            "EC PRIVATE KEY" => return Err(not_rsa(path, "EC")),
            "DSA PRIVATE KEY" => return Err(not_rsa(path, "DSA")),
            "EC PARAMETERS" => continue,
            other => {
                found.get_or_insert(other.to_owned());
            }
        }
    }
    match found {
        Some(found) => Err(KeyError::WrongBlock {
            path: path.to_owned(),
            found,
            expected: EXPECTED,
        }),
        // Only EC PARAMETERS blocks.
        None => Err(not_rsa(path, "EC")),
    }
}

fn from_pkcs8(path: &Path, der: &[u8]) -> Result<PrivateKey, KeyError> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|e| KeyError::Malformed {
        path: path.to_owned(),
        what: "PKCS#8 private key",
        detail: e.to_string(),
    })?;
    let oid = info.algorithm.oid;
    if oid != pkcs1::ALGORITHM_OID {
        return Err(not_rsa(path, algorithm_name(&oid.to_string())));
    }
    PrivateKey::try_from(info).map_err(|e| KeyError::Malformed {
        path: path.to_owned(),
        what: "RSA private key",
        detail: e.to_string(),
    })
}

pub(crate) fn not_rsa(path: &Path, algorithm: &str) -> KeyError {
    KeyError::NotRsa {
        path: path.to_owned(),
        algorithm: algorithm.to_owned(),
    }
}

/// Names for the algorithm OIDs people are likely to hand us by mistake.
pub(crate) fn algorithm_name(oid: &str) -> &str {
    match oid {
        "1.2.840.10045.2.1" => "EC",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.3.101.110" => "X25519",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.113549.1.1.10" => "RSA-PSS (restricted to signatures)",
        other => other,
    }
}

fn describe_scheme(scheme: &pkcs5::EncryptionScheme) -> String {
    match scheme {
        pkcs5::EncryptionScheme::Pbes2(p) => {
            let kdf = match p.kdf.pbkdf2() {
                Some(k) => format!("PBKDF2 ({} rounds)", k.iteration_count),
                None if p.kdf.is_scrypt() => "scrypt".to_owned(),
                None => "an unknown KDF".to_owned(),
            };
            format!(
                "PBES2, {kdf}, {}",
                cipher_oid_name(&p.encryption.oid().to_string())
            )
        }
        pkcs5::EncryptionScheme::Pbes1(a) => format!("PBES1 {}", a.oid()),
        _ => "an unknown scheme".to_owned(),
    }
}

fn cipher_oid_name(oid: &str) -> &str {
    match oid {
        "2.16.840.1.101.3.4.1.2" => "AES-128-CBC",
        "2.16.840.1.101.3.4.1.22" => "AES-192-CBC",
        "2.16.840.1.101.3.4.1.42" => "AES-256-CBC",
        "1.2.840.113549.3.7" => "DES-EDE3-CBC",
        other => other,
    }
}
