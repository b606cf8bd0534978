//! Reading public KEK files: SPKI (`BEGIN PUBLIC KEY`, what `openssl rsa -pubout` writes, even
//! in a file named `.crt`), PKCS#1 (`BEGIN RSA PUBLIC KEY`) and X.509 certificates.

use std::path::{Path, PathBuf};

use pkcs1::DecodeRsaPublicKey;
use pkcs8::der::{Decode, Encode};
use rsa::PublicKey;
use spki::SubjectPublicKeyInfoRef;

use super::private::{algorithm_name, not_rsa};
use super::{KeyError, bits_of, check_size, fingerprint, pem_blocks, read_pem};
use crate::protocol::KekId;

const EXPECTED: &str = "an RSA public key in PEM (\"BEGIN PUBLIC KEY\", \"BEGIN RSA PUBLIC KEY\" or \"BEGIN CERTIFICATE\")";

#[derive(Clone, Debug)]
pub struct PublicKeyFile {
    pub path: PathBuf,
    pub key: PublicKey,
    pub kek_id: KekId,
    pub bits: usize,
    pub format: &'static str,
}

pub fn load_public_key(path: &Path) -> Result<PublicKeyFile, KeyError> {
    from_blocks(path, read_pem(path, EXPECTED)?)
}

/// Read a public key from a file's bytes already in memory; `path` names it in errors.
pub fn parse_public_key(path: &Path, raw: &[u8]) -> Result<PublicKeyFile, KeyError> {
    from_blocks(path, pem_blocks(path, raw, EXPECTED)?)
}

fn from_blocks(path: &Path, blocks: Vec<super::pem::Block>) -> Result<PublicKeyFile, KeyError> {
    let malformed = |what, detail: String| KeyError::Malformed {
        path: path.to_owned(),
        what,
        detail,
    };
    let block = &blocks[0];
    let (key, format) = match block.label.as_str() {
        "PUBLIC KEY" => (from_spki(path, &block.der)?, "SPKI public key"),
        "RSA PUBLIC KEY" => (
            PublicKey::from_pkcs1_der(&block.der)
                .map_err(|e| malformed("PKCS#1 RSA public key", e.to_string()))?,
            "PKCS#1 RSA public key",
        ),
        "CERTIFICATE" => {
            let cert = x509_cert::Certificate::from_der(&block.der)
                .map_err(|e| malformed("X.509 certificate", e.to_string()))?;
            let spki = cert
                .tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .map_err(|e| malformed("X.509 certificate", e.to_string()))?;
            (from_spki(path, &spki)?, "X.509 certificate")
        }
        "EC PRIVATE KEY" | "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY" => {
            return Err(KeyError::WrongBlock {
                path: path.to_owned(),
                found: block.label.clone(),
                expected: "a public key; this file holds a private key (extract the public one with `openssl rsa -in keypair.pem -pubout -out publickey.crt`)",
            });
        }
        other => {
            return Err(KeyError::WrongBlock {
                path: path.to_owned(),
                found: other.to_owned(),
                expected: EXPECTED,
            });
        }
    };
    let bits = bits_of(&key);
    check_size(path, bits)?;
    Ok(PublicKeyFile {
        path: path.to_owned(),
        kek_id: fingerprint(&key),
        key,
        bits,
        format,
    })
}

fn from_spki(path: &Path, der: &[u8]) -> Result<PublicKey, KeyError> {
    let info = SubjectPublicKeyInfoRef::from_der(der).map_err(|e| KeyError::Malformed {
        path: path.to_owned(),
        what: "SubjectPublicKeyInfo",
        detail: e.to_string(),
    })?;
    let oid = info.algorithm.oid;
    if oid != pkcs1::ALGORITHM_OID {
        return Err(not_rsa(path, algorithm_name(&oid.to_string())));
    }
    PublicKey::try_from(info).map_err(|e| match e {
        spki::Error::KeyMalformed => KeyError::Malformed {
            path: path.to_owned(),
            what: "RSA public key",
            detail: "modulus or exponent out of range (RSA keys below 1024 or above 4096 bits are refused)".into(),
        },
        other => KeyError::Malformed {
            path: path.to_owned(),
            what: "RSA public key",
            detail: other.to_string(),
        },
    })
}
