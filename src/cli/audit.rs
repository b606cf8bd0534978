//! `sealstream audit verify`: recompute the audit log's hash chain and check the server's
//! signed checkpoints against it.

use std::path::PathBuf;
use std::process::ExitCode;

use sealstream::audit::{self, Checkpoint};
use sealstream::config::ServeConfig;
use sealstream::storage;

use super::EXIT_TAMPERED;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Find edited, deleted, inserted or reordered audit rows; with checkpoints (from the
    /// store, and any FILE shipped elsewhere), also rows cut from the end or rewritten.
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// A checkpoint file (`<data_dir>/audit/checkpoint.json` or `checkpoints.jsonl`, as
        /// copied away from the server); repeat for several.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// The server's audit public key (hex) to pin; default: the key in
        /// `<data_dir>/pki/audit.key`.
        #[arg(long)]
        audit_key: Option<String>,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify {
        config,
        checkpoint,
        audit_key,
    } = cmd;
    let serve = ServeConfig::load(&config)?;
    let pinned = match audit_key {
        Some(k) => {
            Some(hex::decode(k.trim()).map_err(|_| anyhow::anyhow!("--audit-key: not hex"))?)
        }
        None if serve.data_dir.join("pki/audit.key").exists() => Some(
            audit::AuditKey::load_or_create(&serve.data_dir)
                .map_err(anyhow::Error::msg)?
                .public_key(),
        ),
        None => None,
    };
    let mut checkpoints: Vec<(String, Checkpoint)> = Vec::new();
    for path in &checkpoint {
        for cp in audit::read_checkpoints(path).map_err(anyhow::Error::msg)? {
            checkpoints.push((path.display().to_string(), cp));
        }
    }
    let (rows, stored) = super::runtime()?.block_on(async {
        let md = super::agent::metadata(&serve).await?;
        let rows = md.audit_chain_rows().await?;
        let store = storage::open(&serve.store_location(), &serve.store)?.objects;
        let mut stored = Vec::new();
        for path in
            storage::list(store.as_ref(), &storage::paths::audit_checkpoints_prefix()).await?
        {
            let bytes = storage::get(store.as_ref(), &path).await?;
            match serde_json::from_slice::<Checkpoint>(&bytes) {
                Ok(cp) => stored.push((path.to_string(), Ok(cp))),
                Err(e) => stored.push((path.to_string(), Err(e.to_string()))),
            }
        }
        anyhow::Ok((rows, stored))
    })?;
    let report = audit::verify_chain(&rows);
    let mut failed = !report.problems.is_empty();
    println!(
        "audit chain: {} row(s){}",
        report.rows,
        report
            .head
            .as_ref()
            .map(|(seq, h)| format!(", head row {seq} hash {h}"))
            .unwrap_or_default()
    );
    for p in &report.problems {
        println!("  BROKEN: {p}");
    }
    if report.unhashed_tail > 0 {
        println!(
            "  {} row(s) at the end are numbered but not hashed yet (inserted outside sealstream; the server hashes them within audit_checkpoint_ms)",
            report.unhashed_tail
        );
    }
    for (from, cp) in stored {
        match cp {
            Ok(cp) => failed |= !show(&from, &cp, &report, pinned.as_deref()),
            Err(e) => {
                failed = true;
                println!("  checkpoint {from}: UNREADABLE: {e}");
            }
        }
    }
    for (from, cp) in &checkpoints {
        failed |= !show(from, cp, &report, pinned.as_deref());
    }
    if failed {
        println!("audit verify FAILED: the audit log was altered (see above)");
        Ok(ExitCode::from(EXIT_TAMPERED))
    } else {
        println!(
            "audit verify passed: every row chained{}",
            if checkpoints.is_empty() {
                "; rows after the newest checkpoint are only as safe as the database (pass --checkpoint with a copy kept elsewhere)"
            } else {
                ", and the checkpoints you gave match"
            }
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn show(from: &str, cp: &Checkpoint, chain: &audit::ChainReport, pinned: Option<&[u8]>) -> bool {
    match cp.check(chain, pinned) {
        Ok(()) => {
            println!(
                "  checkpoint {from}: row {} signed at {}: matches",
                cp.chain_seq,
                super::export::utc(cp.at_us)
            );
            true
        }
        Err(e) => {
            println!("  checkpoint {from}: row {}: FAILED: {e}", cp.chain_seq);
            false
        }
    }
}
