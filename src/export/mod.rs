//! Offline export: check a store without keys (`inspect`), unwrap DEKs with the operator's
//! private keys, then decrypt every stream one chunk at a time (read back by range from its
//! segment), write frames back as files and keystrokes as JSON lines, and report each stream:
//! complete, incomplete, tampered, malformed, without key or without DEK record, how far its
//! agent's signatures prove it, and its verdict. A stream's files are staged until its verdict
//! is known: those of a stream whose verdict is ok go under `<agent>/<session>/`, any other's
//! under `@quarantine/<agent>/<session>/`, never beside them. Memory does not grow with the
//! store's bytes; an export into a directory that already holds an earlier run's files resumes
//! it (identical files are kept, a different file is never overwritten).

mod place;
mod prestage;
mod receipt;
mod report;
mod stream;
mod writer;

pub use receipt::{Receipt, ReceiptFile, write_receipt};
pub use report::{Report, Status, StreamReport, write_report};
pub use stream::QUARANTINE_DIR;
pub use writer::FrameList;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;

use crate::crypto::{AgentCa, Dek};
use crate::inspect::{self, Filter};
use crate::keys::PrivateKeyFile;
use crate::protocol::{AgentId, DekId, Kind, SessionId};
use crate::storage::StoreError;

use stream::export_stream;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}: exists with different contents from an earlier export; nothing was overwritten (export into a new directory, or move it away)"
    )]
    Exists(PathBuf),
}

/// A DEK as its record names it: (agent, DEK id).
type Owner = (AgentId, DekId);

/// What to export and how to check it.
#[derive(Default)]
pub struct Options {
    pub filter: Filter,
    /// The agent CA certificate the reviewer pins; signatures are checked against it.
    pub agent_ca: Option<AgentCa>,
}

/// Export every session in `store` (or only `session`) into `out`.
pub async fn export(
    store: &dyn ObjectStore,
    keys: &[PrivateKeyFile],
    session: Option<SessionId>,
    out: &Path,
) -> Result<Report, ExportError> {
    let options = Options {
        filter: Filter {
            session,
            ..Filter::default()
        },
        agent_ca: None,
    };
    export_with(store, keys, &options, out, &mut |_| {}).await
}

/// What an export is doing, for a progress display.
pub enum Progress {
    /// Scanning: the store's segment bytes read so far.
    Scanned(u64),
    /// Decrypting: `done` of `total` chunks.
    Decrypted { done: u64, total: u64 },
}

/// Export what `options` selects from `store` into `out`.
pub async fn export_with(
    store: &dyn ObjectStore,
    keys: &[PrivateKeyFile],
    options: &Options,
    out: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report, ExportError> {
    let mut scanned = 0u64;
    // Chunks are opened while the scan holds their bytes (prestage.rs).
    let mut ahead = prestage::Prestage::new(store, keys, out);
    let scan = inspect::scan_into(
        store,
        &options.filter,
        |n| {
            scanned += n;
            progress(Progress::Scanned(scanned));
        },
        &mut ahead,
    )
    .await?;
    let mut opened = ahead.finish(&scan).await;
    let mut report = Report {
        segments: scan.segments.len(),
        dek_records: scan.dek_objects,
        agent_ca: options.agent_ca.as_ref().map(|c| c.fingerprint.clone()),
        damaged_objects: scan.damaged.clone(),
        ..Report::default()
    };

    // Unwrap each DEK that a supplied key can open; the keys stay in memory only here.
    let mut deks: HashMap<Owner, Arc<Dek>> = HashMap::new();
    let mut dek_problems: HashMap<Owner, String> = HashMap::new();
    for (owner, record) in &scan.records {
        if let Some(dek) = opened.deks.get(owner) {
            deks.insert(owner.clone(), dek.clone());
            continue;
        }
        match keys.iter().find(|k| k.kek_id == record.kek_id) {
            Some(k) => match Dek::unwrap(record, &k.key, k.kek_id) {
                Ok(dek) => {
                    deks.insert(owner.clone(), Arc::new(dek));
                }
                Err(e) => {
                    dek_problems.insert(owner.clone(), e.to_string());
                }
            },
            None => {
                dek_problems.insert(
                    owner.clone(),
                    format!(
                        "no private key given for KEK {} (pass its key file with --key)",
                        record.kek_id
                    ),
                );
            }
        }
    }

    // How many streams of each kind a session has decides the output names.
    let mut per_kind: HashMap<(AgentId, SessionId, Kind), usize> = HashMap::new();
    for (id, chunks) in &scan.streams {
        let first = &chunks.values().next().expect("not empty")[0];
        *per_kind
            .entry((id.0.clone(), id.1, first.kind))
            .or_default() += 1;
    }
    let total: u64 = scan.streams.values().map(|c| c.len() as u64).sum();
    let mut done = 0u64;
    for (id, chunks) in &scan.streams {
        let check = inspect::check_stream(id, chunks, &scan.records, options.agent_ca.as_ref());
        let unique = per_kind.get(&(id.0.clone(), id.1, check.kind)).copied() == Some(1);
        let sr = export_stream(
            store,
            &scan,
            id,
            chunks,
            check,
            unique,
            options.agent_ca.is_some(),
            (&deks, &dek_problems),
            &mut opened.staged,
            out,
            &mut |n| {
                done += n;
                progress(Progress::Decrypted { done, total });
            },
        )
        .await?;
        report.decrypted_chunks += sr.1;
        report.streams.push(sr.0);
    }

    drop(opened);
    report.set_outcome();
    std::fs::create_dir_all(out).map_err(|source| ExportError::Write {
        path: out.to_owned(),
        source,
    })?;
    write_report(out, &report)?;
    Ok(report)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Write {
        path: path.to_owned(),
        source,
    }
}
