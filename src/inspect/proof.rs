//! How far an agent's signatures prove a stream (`Proof`): the DEK record's signature, the
//! agent certificate (against a pinned CA, if any), then the chain and each checkpoint.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::crypto::sign::{self, AgentCa, CertInfo};
use crate::protocol::{AgentId, DekId, DekRecord, VERSION_2};

use super::scan::ChunkRef;

/// How far a stream's signatures prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "proof", rename_all = "snake_case")]
pub enum Proof {
    /// Version-1 chunks: no signature says which agent made them.
    Unsigned,
    /// Signed by the agent certificate `cert`.
    Signed {
        cert: CertInfo,
        /// Whether the certificate was checked against a pinned agent CA (`--agent-ca`).
        ca_checked: bool,
        /// The last valid checkpoint's sequence number.
        checkpoint: Option<u64>,
        /// Chunks the checkpoint proves (the stream's first `proven` chunks present).
        proven: u64,
        /// Chunks after the last valid checkpoint.
        unproven: u64,
    },
    /// The signatures do not prove the stream: a signature or certificate was refused, the
    /// stream mixes versions or DEKs, or its DEK record is missing (each problem is listed
    /// with the stream's).
    Invalid,
}

/// The stream's signatures: the DEK record's, then the chain and each checkpoint.
pub(super) fn prove(
    agent: &AgentId,
    chunks: &BTreeMap<u64, Vec<ChunkRef>>,
    records: &HashMap<(AgentId, DekId), DekRecord>,
    ca: Option<&AgentCa>,
    problems: &mut Vec<String>,
) -> Proof {
    let v2 = chunks
        .values()
        .filter(|c| c[0].version == VERSION_2)
        .count();
    if v2 == 0 {
        // Unsigned chunks under a DEK whose record the agent signed: a signing agent seals
        // only version 2, so these were sealed by someone who unwrapped its DEK (a KEK holder).
        let signed_dek = chunks.values().find_map(|c| {
            records
                .get(&(agent.clone(), c[0].dek_id))
                .filter(|r| r.signed.is_some())
                .map(|r| r.dek_id)
        });
        if let Some(dek) = signed_dek {
            problems.push(format!(
                "unsigned (version 1) chunks under DEK {dek}, whose record its agent signed: sealed by someone who unwrapped the DEK, not by the agent"
            ));
            return Proof::Invalid;
        }
        return Proof::Unsigned;
    }
    if v2 != chunks.len() {
        problems.push("the stream mixes signed (version 2) and unsigned chunks".into());
        return Proof::Invalid;
    }
    let dek = chunks.values().next().expect("not empty")[0].dek_id;
    if chunks.values().any(|c| c[0].dek_id != dek) {
        problems.push("a signed stream's chunks name more than one DEK".into());
        return Proof::Invalid;
    }
    let Some(record) = records.get(&(agent.clone(), dek)) else {
        return Proof::Invalid; // reported as a missing DEK record
    };
    let Some(signed) = &record.signed else {
        problems.push(format!(
            "DEK {dek}: the record is unsigned but its chunks are signed (version 2)"
        ));
        return Proof::Invalid;
    };
    if let Err(e) = sign::verify_dek_record(record) {
        problems.push(format!("DEK {dek}: record signature: {e}"));
        return Proof::Invalid;
    }
    let cert = match ca {
        Some(ca) => match ca.check(&signed.cert, agent, record.created_us) {
            Ok(info) => info,
            Err(e) => {
                problems.push(format!("DEK {dek}: agent certificate: {e}"));
                return Proof::Invalid;
            }
        },
        None => CertInfo {
            fingerprint: crate::crypto::cert::fingerprint(&signed.cert),
            serial: crate::crypto::cert::serial_hex(&signed.cert).unwrap_or_default(),
        },
    };
    let mut head = sign::CHAIN_START;
    let (mut checkpoint, mut proven, mut failed) = (None, 0u64, false);
    for (i, (seq, copies)) in chunks.iter().enumerate() {
        let c = &copies[0];
        head = sign::chain_link(&head, &c.core_digest);
        let Some(sig) = &c.signature else { continue };
        match sign::verify(
            &signed.cert,
            sig.0,
            &sign::checkpoint_message(&head),
            &sig.1,
        ) {
            Ok(()) => {
                checkpoint = Some(*seq);
                proven = i as u64 + 1;
            }
            Err(e) => {
                failed = true;
                problems.push(format!(
                    "checkpoint at chunk {seq}: {e} (a chunk up to it was altered, removed, added or reordered, or the signature was forged)"
                ))
            }
        }
    }
    if failed {
        // A signature that does not verify: the stream's proof is not what its valid
        // checkpoints alone would say.
        return Proof::Invalid;
    }
    Proof::Signed {
        cert,
        ca_checked: ca.is_some(),
        checkpoint,
        proven,
        unproven: chunks.len() as u64 - proven,
    }
}
