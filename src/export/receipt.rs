//! The signed receipt of an export: `receipt.json` (every file with its SHA-256 and its
//! stream's verdict) and `receipt.sig`, an RSA-PSS signature by the KEK private key used.

use std::path::Path;

use serde::Serialize;

use crate::inspect::Verdict;
use crate::keys::PrivateKeyFile;

use super::place::file_sha256;
use super::report::Report;
use super::{ExportError, io_error};

/// What `receipt.json` says about an export.
#[derive(Debug, Serialize)]
pub struct Receipt<'a> {
    pub format: &'static str,
    pub exported_at_us: i64,
    pub store: &'a str,
    /// The KEK whose private key signs this receipt (`receipt.sig`).
    pub signed_with_kek: String,
    pub agent_ca: Option<&'a str>,
    /// Every file written, relative to the output directory, with its SHA-256 and its
    /// stream's verdict.
    pub files: Vec<ReceiptFile>,
}

/// One file in `receipt.json`.
#[derive(Debug, Serialize)]
pub struct ReceiptFile {
    pub path: String,
    pub sha256: String,
    /// The verdict of the stream the file holds (absent for `report.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// Write `receipt.json` (every exported file with its SHA-256 and its stream's verdict,
/// report.json included) and `receipt.sig`, an RSA-PSS signature over it by `key`, the KEK
/// private key used (SHA-256, MGF1 with SHA-256, 32-byte salt):
/// `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -verify publickey.crt -signature
/// receipt.sig receipt.json` checks it.
pub fn write_receipt(
    out: &Path,
    report: &Report,
    store: &str,
    key: &PrivateKeyFile,
) -> Result<(), ExportError> {
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    // Each stream's files with the SHA-256 taken as they were written (a report made
    // elsewhere, without them, has its files read back and hashed).
    let mut files = Vec::new();
    for s in &report.streams {
        for (i, path) in s.files.iter().enumerate() {
            let sha256 = match s.file_sha256.get(i) {
                Some(d) if s.file_sha256.len() == s.files.len() => *d,
                _ => file_sha256(&out.join(path))?,
            };
            files.push(ReceiptFile {
                path: path.clone(),
                sha256: hex::encode(sha256),
                verdict: Some(s.verdict),
            });
        }
    }
    files.push(ReceiptFile {
        sha256: hex::encode(file_sha256(&out.join("report.json"))?),
        path: "report.json".to_owned(),
        verdict: None,
    });
    let receipt = Receipt {
        format: "sealstream export receipt v2",
        exported_at_us: crate::crypto::now_us(),
        store,
        signed_with_kek: key.kek_id.to_string(),
        agent_ca: report.agent_ca.as_deref(),
        files,
    };
    let json = serde_json::to_vec_pretty(&receipt).expect("receipt serializes");
    // `new` salts with as many bytes as the digest has: 32.
    let signer = rsa::pss::SigningKey::<rsa::sha2::Sha256>::new(key.key.clone());
    let sig = signer
        .try_sign_with_rng(&mut getrandom::SysRng, &json)
        .map_err(|e| ExportError::Write {
            path: out.join("receipt.sig"),
            source: std::io::Error::other(e.to_string()),
        })?;
    let (rj, rs) = (out.join("receipt.json"), out.join("receipt.sig"));
    std::fs::write(&rj, &json).map_err(io_error(&rj))?;
    std::fs::write(&rs, sig.to_bytes()).map_err(io_error(&rs))?;
    Ok(())
}
