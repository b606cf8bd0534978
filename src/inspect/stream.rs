//! The keyless rules for one stream (`check_stream`): numbering, gap records, duplicates,
//! final chunk, kinds and DEK records, with its signatures' `Proof`.

use std::collections::{BTreeMap, HashMap};

use crate::crypto::sign::AgentCa;
use crate::protocol::{AgentId, DekId, DekRecord, Kind};

use super::proof::{Proof, prove};
use super::scan::{ChunkRef, StreamKey};

/// What a keyless reader concludes about one stream.
#[derive(Clone, Debug)]
pub struct StreamCheck {
    pub kind: Kind,
    /// Things honest storage cannot cause.
    pub problems: Vec<String>,
    /// Holes in the numbering right before a gap record: the agent says it dropped them (the
    /// key confirms the range).
    pub declared_gaps: Vec<(u64, u64)>,
    /// Chunk numbers without a DEK record.
    pub missing_records: Vec<DekId>,
    pub final_seq: Option<u64>,
    pub chunks: u64,
    pub proof: Proof,
    /// The earliest and latest capture time of the chunks present (gap records and empty
    /// chunks included), whatever their order.
    pub first_capture_us: i64,
    pub last_capture_us: i64,
}

/// Check one stream without keys: numbering, duplicates, final chunk, kinds, DEK records and
/// signatures.
pub fn check_stream(
    key: &StreamKey,
    chunks: &BTreeMap<u64, Vec<ChunkRef>>,
    records: &HashMap<(AgentId, DekId), DekRecord>,
    ca: Option<&AgentCa>,
) -> StreamCheck {
    let agent = &key.0;
    let first = chunks
        .values()
        .next()
        .and_then(|v| v.first())
        .expect("a stream holds at least one chunk");
    let kind = first.kind;
    let mut check = StreamCheck {
        kind,
        problems: Vec::new(),
        declared_gaps: Vec::new(),
        missing_records: Vec::new(),
        final_seq: None,
        chunks: chunks.len() as u64,
        proof: Proof::Unsigned,
        first_capture_us: first.capture_us,
        last_capture_us: first.capture_us,
    };
    let mut expected = 0u64;
    for (seq, copies) in chunks {
        let c = &copies[0];
        check.first_capture_us = check.first_capture_us.min(c.capture_us);
        check.last_capture_us = check.last_capture_us.max(c.capture_us);
        if copies.iter().any(|o| o.digest != c.digest) {
            check.problems.push(format!(
                "different chunks stored under sequence number {seq}"
            ));
        }
        if *seq > expected {
            if c.gap {
                check.declared_gaps.push((expected, seq - 1));
            } else {
                check.problems.push(missing(expected, seq - 1));
            }
        } else if c.gap {
            check.problems.push(format!(
                "chunk {seq} is a gap record with no missing chunks before it"
            ));
        }
        expected = seq.saturating_add(1);
        if let Some(f) = check.final_seq {
            check
                .problems
                .push(format!("chunk {seq} comes after the final chunk {f}"));
        }
        if c.last {
            check.final_seq.get_or_insert(*seq);
        }
        if c.kind != kind {
            check.problems.push(format!(
                "chunk {seq} is {} in a {} stream",
                c.kind.name(),
                kind.name()
            ));
        }
        match records.get(&(agent.clone(), c.dek_id)) {
            Some(_) => {}
            None if !check.missing_records.contains(&c.dek_id) => {
                check.missing_records.push(c.dek_id)
            }
            None => {}
        }
    }
    check.proof = prove(agent, chunks, records, ca, &mut check.problems);
    check
}

fn missing(from: u64, to: u64) -> String {
    if from == to {
        format!("chunk {from} is missing")
    } else {
        format!("chunks {from} to {to} are missing")
    }
}
