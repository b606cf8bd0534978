//! The tamper-evident audit log. Every `audit_log` row enters a hash chain as it is inserted
//! (a database trigger: migrations/*/0004_audit_chain.sql), and the server signs the chain's
//! head at intervals with an Ed25519 key of its own (`<data_dir>/pki/audit.key`), writing each
//! checkpoint to the object store and to a file that can be shipped elsewhere (that loop is the
//! server's: `server::audit_checkpoints`).
//! `sealstream audit verify` recomputes the chain and checks checkpoints: an edited, deleted,
//! inserted or reordered row shows, and with a checkpoint so do rows cut from the end.

use std::path::Path;

use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What every row hash starts with.
pub const CONTEXT: &[u8] = b"sealstream audit v1";
/// What a checkpoint's signature covers, before its fields.
pub const CHECKPOINT_CONTEXT: &[u8] = b"sealstream audit checkpoint v1";

fn field(h: &mut Sha256, text: Option<&str>) {
    match text {
        Some(t) => {
            h.update((t.len() as u32).to_be_bytes());
            h.update(t.as_bytes());
        }
        None => h.update([0xff; 4]),
    }
}

/// A row's hash: SHA-256 of the context, the previous row's hash, the row's chain number and
/// time, and its texts (each as a u32 byte length and its bytes; a NULL as 0xFFFFFFFF).
pub fn row_hash(
    prev: &[u8],
    chain_seq: i64,
    at_us: i64,
    actor: &str,
    action: &str,
    detail: &str,
    address: Option<&str>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CONTEXT);
    h.update(prev);
    h.update(chain_seq.to_be_bytes());
    h.update(at_us.to_be_bytes());
    field(&mut h, Some(actor));
    field(&mut h, Some(action));
    field(&mut h, Some(detail));
    field(&mut h, address);
    h.finalize().into()
}

/// One `audit_log` row as stored, chain columns included.
#[derive(Clone, Debug)]
pub struct ChainRow {
    pub id: i64,
    pub chain_seq: Option<i64>,
    pub at_us: Option<i64>,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub address: Option<String>,
    pub prev_hash: Option<Vec<u8>>,
    pub row_hash: Option<Vec<u8>>,
}

/// What a walk of the chain found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainReport {
    pub rows: usize,
    /// The last row's chain number and hash.
    pub head: Option<(i64, String)>,
    pub problems: Vec<String>,
    /// Rows numbered at the end of the chain but not hashed yet (SQLite: inserted by another
    /// program; the server hashes them at its next audit write or checkpoint).
    pub unhashed_tail: usize,
    /// Each chain number's hash (for checkpoints), in order.
    #[serde(skip)]
    pub hashes: std::collections::BTreeMap<i64, [u8; 32]>,
}

/// Walk `rows` (any order) and report every break in the chain.
pub fn verify_chain(rows: &[ChainRow]) -> ChainReport {
    let mut report = ChainReport {
        rows: rows.len(),
        ..Default::default()
    };
    let last_hashed = rows
        .iter()
        .filter(|r| r.row_hash.is_some())
        .filter_map(|r| r.chain_seq)
        .max()
        .unwrap_or(0);
    let mut chained: Vec<&ChainRow> = Vec::with_capacity(rows.len());
    for r in rows {
        match (r.chain_seq, r.at_us, &r.prev_hash, &r.row_hash) {
            (Some(_), Some(_), Some(_), Some(_)) => chained.push(r),
            (Some(seq), Some(_), _, None) if seq > last_hashed => report.unhashed_tail += 1,
            (Some(seq), ..) => report.problems.push(format!(
                "chain row {seq} (id {}, {} {:?}) has lost its hash: edited",
                r.id, r.action, r.actor
            )),
            _ => report.problems.push(format!(
                "row id {} ({} {:?}) is outside the chain: inserted around the trigger",
                r.id, r.action, r.actor
            )),
        }
    }
    chained.sort_by_key(|r| r.chain_seq);
    // The chain number, not the row id, is the order: PostgreSQL takes an id from its sequence
    // before the trigger takes its lock, so concurrent inserts may chain in another id order.
    let mut prev = [0u8; 32];
    let mut expected = 1i64;
    for r in chained {
        let seq = r.chain_seq.expect("checked");
        if seq > expected {
            report.problems.push(if seq - 1 == expected {
                format!("chain row {expected} is missing: deleted")
            } else {
                format!("chain rows {expected} to {} are missing: deleted", seq - 1)
            });
        } else if seq < expected {
            report
                .problems
                .push(format!("chain number {seq} appears twice"));
        }
        if r.prev_hash.as_deref() != Some(&prev[..]) && seq == expected {
            report.problems.push(format!(
                "chain row {seq} (id {}) does not follow the row before it: a row was inserted, removed or reordered here",
                r.id
            ));
        }
        let h = row_hash(
            r.prev_hash.as_deref().expect("checked"),
            seq,
            r.at_us.expect("checked"),
            &r.actor,
            &r.action,
            &r.detail,
            r.address.as_deref(),
        );
        if r.row_hash.as_deref() != Some(&h[..]) {
            report.problems.push(format!(
                "chain row {seq} (id {}, {} {:?}) was edited: its hash does not match its contents",
                r.id, r.action, r.actor
            ));
        }
        let stored: [u8; 32] = r
            .row_hash
            .as_deref()
            .and_then(|b| b.try_into().ok())
            .unwrap_or(h);
        report.hashes.insert(seq, stored);
        report.head = Some((seq, hex::encode(stored)));
        prev = stored;
        expected = seq + 1;
    }
    report
}

/// A signed statement of the chain's head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub chain_seq: i64,
    /// The row hash of row `chain_seq`, hex.
    pub head: String,
    pub at_us: i64,
    /// The server's Ed25519 public key, hex.
    pub key: String,
    /// Ed25519 over `CHECKPOINT_CONTEXT || chain_seq (i64) || head (32) || at_us (i64)`, hex.
    pub signature: String,
}

impl Checkpoint {
    fn message(chain_seq: i64, head: &[u8], at_us: i64) -> Vec<u8> {
        [
            CHECKPOINT_CONTEXT,
            &chain_seq.to_be_bytes(),
            head,
            &at_us.to_be_bytes(),
        ]
        .concat()
    }

    /// Check the signature (with `key` when the reader pins one, else the key it names) and
    /// that the chain holds row `chain_seq` with hash `head`.
    pub fn check(&self, chain: &ChainReport, pinned: Option<&[u8]>) -> Result<(), String> {
        let key = hex::decode(&self.key).map_err(|_| "the key is not hex".to_owned())?;
        if pinned.is_some_and(|p| p != key) {
            return Err(format!(
                "signed by key {}, not the server's audit key",
                self.key
            ));
        }
        let head = hex::decode(&self.head).map_err(|_| "the head is not hex".to_owned())?;
        let sig =
            hex::decode(&self.signature).map_err(|_| "the signature is not hex".to_owned())?;
        signature::UnparsedPublicKey::new(&signature::ED25519, &key)
            .verify(&Self::message(self.chain_seq, &head, self.at_us), &sig)
            .map_err(|_| "the signature does not verify (the checkpoint was altered)".to_owned())?;
        match chain.hashes.get(&self.chain_seq) {
            Some(h) if h[..] == head[..] => Ok(()),
            Some(_) => Err(format!(
                "the chain's row {} is not the one signed: rows up to it were rewritten",
                self.chain_seq
            )),
            None => Err(format!(
                "the chain has no row {} (its last is {}): rows were deleted from the end",
                self.chain_seq,
                chain.head.as_ref().map_or(0, |h| h.0)
            )),
        }
    }
}

/// The server's audit signing key (Ed25519, PKCS#8 in `<data_dir>/pki/audit.key`, 0600).
pub struct AuditKey {
    pair: Ed25519KeyPair,
}

impl AuditKey {
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join("pki").join("audit.key");
        let der = match std::fs::read(&path) {
            Ok(d) => zeroize::Zeroizing::new(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                    .map_err(|_| "cannot make an Ed25519 key".to_owned())?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                crate::fsutil::write_new(&path, doc.as_ref(), 0o600)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                zeroize::Zeroizing::new(doc.as_ref().to_vec())
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| format!("{}: not an Ed25519 PKCS#8 key", path.display()))?;
        Ok(AuditKey { pair })
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    pub fn sign(&self, chain_seq: i64, head: &[u8; 32], at_us: i64) -> Checkpoint {
        let sig = self.pair.sign(&Checkpoint::message(chain_seq, head, at_us));
        Checkpoint {
            chain_seq,
            head: hex::encode(head),
            at_us,
            key: hex::encode(self.public_key()),
            signature: hex::encode(sig.as_ref()),
        }
    }
}

/// Checkpoints in a file: one JSON object, or one per line.
pub fn read_checkpoints(path: &Path) -> Result<Vec<Checkpoint>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<ChainRow> {
        let mut prev = [0u8; 32];
        (1..=n)
            .map(|i| {
                let detail = format!("row {i}");
                let h = row_hash(&prev, i, i * 10, "ann", "view_session", &detail, None);
                let r = ChainRow {
                    id: i + 100,
                    chain_seq: Some(i),
                    at_us: Some(i * 10),
                    actor: "ann".into(),
                    action: "view_session".into(),
                    detail,
                    address: None,
                    prev_hash: Some(prev.to_vec()),
                    row_hash: Some(h.to_vec()),
                };
                prev = h;
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_each_break_is_named() {
        assert!(verify_chain(&chain(5)).problems.is_empty());
        let mut edited = chain(5);
        edited[2].detail = "row 3, edited".into();
        assert!(
            verify_chain(&edited).problems[0]
                .contains("chain row 3 (id 103, view_session \"ann\") was edited")
        );
        let mut deleted = chain(5);
        deleted.remove(2);
        assert!(verify_chain(&deleted).problems[0].contains("chain row 3 is missing: deleted"));
        let mut outside = chain(3);
        outside.push(ChainRow {
            id: 200,
            chain_seq: None,
            ..outside[0].clone()
        });
        assert!(verify_chain(&outside).problems[0].contains("outside the chain"));
    }

    #[test]
    fn a_checkpoint_catches_rows_cut_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(dir.path()).unwrap();
        let full = verify_chain(&chain(5));
        let (seq, head) = full.head.clone().unwrap();
        let head: [u8; 32] = hex::decode(head).unwrap().try_into().unwrap();
        let cp = key.sign(seq, &head, 1);
        cp.check(&full, Some(&key.public_key())).unwrap();
        let cut = verify_chain(&chain(4));
        assert!(
            cut.problems.is_empty(),
            "a cut chain is consistent by itself"
        );
        assert!(
            cp.check(&cut, None)
                .unwrap_err()
                .contains("rows were deleted from the end")
        );
        let mut forged = cp.clone();
        forged.chain_seq = 4;
        assert!(forged.check(&full, None).unwrap_err().contains("altered"));
        let other = AuditKey::load_or_create(&dir.path().join("x")).unwrap();
        assert!(
            cp.check(&full, Some(&other.public_key()))
                .unwrap_err()
                .contains("not the server's audit key")
        );
    }
}
