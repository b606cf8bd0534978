//! The server's audit checkpoints (`audit_checkpoint_ms`): the audit chain's head signed with
//! the server's `AuditKey` whenever it moved, written to the store and to `<data_dir>/audit/`.
//! (The chain, its verifier and the checkpoint format are `audit`'s; the loop, where it writes
//! and its metric are the server's.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{AuditKey, Checkpoint};
use crate::metadata::Metadata;
use crate::storage::{self, paths};

use super::metrics as m;

/// Sign the chain's head whenever it moved, every `every`: into the store, into
/// `dir/checkpoint.json` (the latest, replaced atomically) and `dir/checkpoints.jsonl` (all).
pub async fn run_checkpoints(
    key: AuditKey,
    metadata: Metadata,
    store: Arc<dyn object_store::ObjectStore>,
    dir: PathBuf,
    every: Duration,
) {
    let mut last: Option<i64> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let head = match metadata.audit_head().await {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "audit checkpoint: cannot read the chain's head");
                continue;
            }
        };
        if last == Some(head.0) {
            continue;
        }
        let Ok(hash) = <[u8; 32]>::try_from(head.1.as_slice()) else {
            tracing::error!(
                chain_seq = head.0,
                "audit checkpoint: the head's hash is not 32 bytes"
            );
            continue;
        };
        let cp = key.sign(head.0, &hash, crate::crypto::now_us());
        match write_checkpoint(&cp, store.as_ref(), &dir).await {
            Ok(()) => {
                ::metrics::gauge!(m::AUDIT_CHECKPOINT_SEQ).set(cp.chain_seq as f64);
                last = Some(cp.chain_seq);
            }
            Err(e) => tracing::error!(error = %e, "audit checkpoint not written; retrying"),
        }
    }
}

async fn write_checkpoint(
    cp: &Checkpoint,
    store: &dyn object_store::ObjectStore,
    dir: &Path,
) -> Result<(), String> {
    let json = serde_json::to_string(cp).expect("checkpoint serializes");
    storage::put_new(
        store,
        &paths::audit_checkpoint(cp.chain_seq, cp.at_us),
        bytes::Bytes::from(json.clone()),
    )
    .await
    .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let latest = dir.join("checkpoint.json");
    let tmp = dir.join("checkpoint.json.tmp");
    std::fs::write(&tmp, format!("{json}\n")).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &latest).map_err(|e| format!("{}: {e}", latest.display()))?;
    use std::io::Write;
    let all = dir.join("checkpoints.jsonl");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&all)
        .and_then(|mut f| writeln!(f, "{json}"))
        .map_err(|e| format!("{}: {e}", all.display()))
}
