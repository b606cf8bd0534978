//! `run --check-export`: after a pipeline run, export the server's store as an operator would
//! (the run's KEK private key and passphrase) and compare what it decrypts with what the agents
//! sealed: every frame by its SHA-256, each session's keystrokes, the number of chunks. An
//! acked chunk the store lost or altered, or a frame exported twice, is a mismatch.

use std::collections::BTreeSet;
use std::path::Path;

use sealstream::agent::AgentReport;
use sealstream::export::{self, Status};
use sealstream::keys::{self, Passphrase};
use sha2::{Digest, Sha256};

use crate::target;

/// What the export held beside what the agents sealed.
pub struct ExportCheck {
    /// Chunks the export decrypted and authenticated.
    pub exported_chunks: u64,
    /// Frames whose exported bytes have the SHA-256 of the frame the agent sealed.
    pub frames_matched: u64,
    /// Each difference, described.
    pub mismatches: Vec<String>,
}

/// Export the store in `store_dir` into `out` (a new directory) with the KEK at `kek_private`
/// and compare it with `reports`.
pub async fn check(
    store_dir: &Path,
    kek_private: &Path,
    reports: &[AgentReport],
    out: &Path,
) -> anyhow::Result<ExportCheck> {
    let key = keys::load_private_key(kek_private, || {
        Ok(Passphrase::new(target::KEK_PASSPHRASE.to_vec()))
    })?;
    let store = sealstream::storage::open_local(store_dir)?;
    let report = export::export(store.as_ref(), std::slice::from_ref(&key), None, out).await?;
    let mut mismatches: Vec<String> = report
        .damaged_objects
        .iter()
        .map(|o| format!("damaged object {o}"))
        .collect();
    for s in &report.streams {
        if s.status != Status::Complete {
            mismatches.push(format!(
                "{}/{} stream {}: {:?}",
                s.agent, s.session, s.stream, s.status
            ));
        }
    }
    let sealed: u64 = reports.iter().map(|r| r.chunks_sealed).sum();
    if report.decrypted_chunks != sealed {
        mismatches.push(format!(
            "the export decrypted {} chunks, the agents sealed {sealed}",
            report.decrypted_chunks
        ));
    }
    let mut frames_matched = 0;
    for r in reports {
        for s in &r.sessions {
            let base = out.join(r.agent.dir_name()).join(s.session.to_string());
            let at = format!("{}/{}", r.agent, s.session);
            let mut exported: BTreeSet<String> = match std::fs::read_dir(base.join("frames")) {
                Ok(dir) => dir
                    .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<_>>()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
                Err(e) => return Err(e.into()),
            };
            for (name, digest) in &s.frames {
                if !exported.remove(name) {
                    mismatches.push(format!("{at}: frame {name} sealed but not exported"));
                } else if Sha256::digest(std::fs::read(base.join("frames").join(name))?).as_slice()
                    != digest
                {
                    mismatches.push(format!("{at}: frame {name} differs from what was sealed"));
                } else {
                    frames_matched += 1;
                }
            }
            for extra in exported {
                mismatches.push(format!("{at}: frame {extra} exported but never sealed"));
            }
            let keystrokes = match std::fs::read(base.join("keystrokes.jsonl")) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            if Sha256::digest(&keystrokes).as_slice() != s.keystrokes_sha256 {
                mismatches.push(format!(
                    "{at}: keystrokes differ from what was sealed ({} bytes exported)",
                    keystrokes.len()
                ));
            }
        }
    }
    Ok(ExportCheck {
        exported_chunks: report.decrypted_chunks,
        frames_matched,
        mismatches,
    })
}
