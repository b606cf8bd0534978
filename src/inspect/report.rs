//! `sealstream verify`'s check of a whole store without keys and its report (`VerifyReport`).

use object_store::ObjectStore;
use serde::Serialize;

use crate::crypto::sign::AgentCa;
use crate::storage::StoreError;

use super::proof::Proof;
use super::scan::{Filter, scan};
use super::stream::check_stream;
use super::verdict::{Verdict, exit_code};

/// One stream in a `verify` report.
#[derive(Clone, Debug, Serialize)]
pub struct StreamVerdict {
    pub agent: String,
    pub session: String,
    pub stream: u32,
    pub kind: &'static str,
    pub chunks: u64,
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    pub final_seq: Option<u64>,
    /// Ranges the agent's gap records declare dropped (the key confirms them).
    pub declared_gaps: Vec<(u64, u64)>,
    pub problems: Vec<String>,
    pub missing_dek_records: Vec<String>,
    pub signature: Proof,
    pub verdict: Verdict,
}

/// What `sealstream verify` found (`--json`: docs/format.md "The verify report").
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub segments: usize,
    pub segment_bytes: u64,
    pub dek_records: usize,
    /// The pinned agent CA's fingerprint.
    pub agent_ca: Option<String>,
    pub damaged_objects: Vec<String>,
    pub streams: Vec<StreamVerdict>,
    pub outcome: Verdict,
}

impl VerifyReport {
    /// `verify`'s exit code (docs/format.md "Verdicts and exit codes").
    pub fn exit_code(&self, allow_incomplete: bool) -> u8 {
        exit_code(
            !self.damaged_objects.is_empty(),
            self.streams.iter().map(|s| s.verdict),
            allow_incomplete,
        )
    }
}

/// Check the whole store without keys.
pub async fn verify(
    store: &dyn ObjectStore,
    ca: Option<&AgentCa>,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let scan = scan(store, &Filter::default(), progress).await?;
    let mut streams = Vec::with_capacity(scan.streams.len());
    for (key, chunks) in &scan.streams {
        let c = check_stream(key, chunks, &scan.records, ca);
        let verdict = Verdict::of(&c, ca.is_some());
        streams.push(StreamVerdict {
            agent: key.0.to_string(),
            session: key.1.to_string(),
            stream: key.2.0,
            kind: c.kind.name(),
            chunks: c.chunks,
            first_capture_us: c.first_capture_us,
            last_capture_us: c.last_capture_us,
            final_seq: c.final_seq,
            declared_gaps: c.declared_gaps,
            problems: c.problems,
            missing_dek_records: c.missing_records.iter().map(|d| d.to_string()).collect(),
            signature: c.proof,
            verdict,
        });
    }
    let mut outcome = streams
        .iter()
        .map(|s| s.verdict)
        .min()
        .unwrap_or(Verdict::Ok);
    if !scan.damaged.is_empty() {
        outcome = Verdict::Tampered;
    }
    Ok(VerifyReport {
        segments: scan.segments.len(),
        segment_bytes: scan.segment_bytes,
        dek_records: scan.dek_objects,
        agent_ca: ca.map(|c| c.fingerprint.clone()),
        damaged_objects: scan.damaged,
        streams,
        outcome,
    })
}
