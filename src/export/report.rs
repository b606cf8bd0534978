//! What an export found: each stream's status and verdict (`StreamReport`), the whole
//! export's `Report` and its exit code, written as `report.json`.

use std::path::Path;

use serde::Serialize;

use crate::inspect::{self, Proof, Verdict};
use crate::protocol::payload::Gap;

use super::ExportError;
use super::writer::FrameList;

/// The verdict on one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Status {
    /// Every chunk from 0 to the final one is present and authentic.
    Complete,
    /// Authentic and contiguous, but no final chunk (still recording, or cut short).
    Incomplete,
    /// Something is wrong that honest storage cannot cause; each problem is listed.
    Tampered(Vec<String>),
    /// Every chunk is authentic (sealed by the agent, intact), but some payloads do not parse
    /// as frames or keystrokes: an agent bug, not tampering. Each is listed.
    Malformed(Vec<String>),
    /// The private key for this stream's DEK was not supplied.
    NoKey(String),
    /// The DEK record the chunks name is not in the store (deleted, or never written).
    NoDekRecord(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub agent: String,
    pub session: String,
    pub stream: u32,
    pub kind: &'static str,
    pub chunks: u64,
    pub bytes: u64,
    /// The earliest and latest capture time of the stream's chunks present.
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    /// Each file written, relative to the output directory (as in `receipt.json`).
    pub files: Vec<String>,
    /// The SHA-256 of each file in `files`, taken as it was written (for `receipt.json`).
    #[serde(skip)]
    pub file_sha256: Vec<[u8; 32]>,
    /// Chunks the agent dropped (its spool was full), as its gap records declare.
    pub gaps: Vec<Gap>,
    /// Each frame file written, with its capture time (for `--video`).
    #[serde(skip)]
    pub frames: FrameList,
    #[serde(flatten)]
    pub status: Status,
    /// The stream's verdict (docs/format.md "Verdicts and exit codes"): its status and, with
    /// a pinned agent CA, its proof.
    pub verdict: Verdict,
    /// How far the agent's signatures prove this stream.
    #[serde(rename = "signature")]
    pub proof: Proof,
    /// Incomplete because it is still being recorded, as the server's index says (`export
    /// --config`): its incomplete verdict is not counted for the exit code.
    pub still_recording: bool,
}

impl StreamReport {
    /// Counted for the exit code: not waived by `--allow-incomplete` or by the server saying
    /// the stream is still being recorded.
    pub fn counted(&self, allow_incomplete: bool) -> bool {
        !(allow_incomplete && self.verdict.waivable()
            || self.still_recording && self.verdict == Verdict::Incomplete)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub segments: usize,
    /// DEK records read: only those the exported chunks name.
    pub dek_records: usize,
    /// The pinned agent CA certificate's fingerprint (`--agent-ca`), if one was given.
    pub agent_ca: Option<String>,
    /// Objects that could not be read back as what their key says (corrupt or altered).
    pub damaged_objects: Vec<String>,
    pub streams: Vec<StreamReport>,
    /// Chunks decrypted and authenticated.
    pub decrypted_chunks: u64,
    /// The worst verdict of the streams, or tampered when an object is damaged.
    pub outcome: Verdict,
}

impl Report {
    /// `export`'s exit code (docs/format.md "Verdicts and exit codes").
    pub fn exit_code(&self, allow_incomplete: bool) -> u8 {
        inspect::exit_code(
            !self.damaged_objects.is_empty(),
            self.streams
                .iter()
                .filter_map(|s| s.counted(allow_incomplete).then_some(s.verdict)),
            false,
        )
    }

    /// The outcome from the streams' verdicts and the damaged objects.
    pub fn set_outcome(&mut self) {
        self.outcome = if self.damaged_objects.is_empty() {
            self.streams
                .iter()
                .map(|s| s.verdict)
                .min()
                .unwrap_or(Verdict::Ok)
        } else {
            Verdict::Tampered
        };
    }

    pub fn tampered(&self) -> bool {
        !self.damaged_objects.is_empty()
            || self
                .streams
                .iter()
                .any(|s| matches!(s.status, Status::Tampered(_)))
    }

    /// Authentic chunks whose payload does not parse (an agent bug, not tampering).
    pub fn malformed(&self) -> bool {
        self.streams
            .iter()
            .any(|s| matches!(s.status, Status::Malformed(_)))
    }

    pub fn missing_keys(&self) -> bool {
        self.streams
            .iter()
            .any(|s| matches!(s.status, Status::NoKey(_)))
    }

    pub fn missing_dek_records(&self) -> bool {
        self.streams
            .iter()
            .any(|s| matches!(s.status, Status::NoDekRecord(_)))
    }

    /// Streams unsigned (with a pinned CA), incomplete or not proven to their end, and not
    /// known to be still recording.
    pub fn incomplete_or_unproven(&self) -> Vec<&StreamReport> {
        self.streams
            .iter()
            .filter(|s| s.verdict.exit_code() == 7 && s.counted(false))
            .collect()
    }
}

/// Write `report` as `out/report.json` (again, after the CLI learned more about its streams).
pub fn write_report(out: &Path, report: &Report) -> Result<(), ExportError> {
    let path = out.join("report.json");
    let json = serde_json::to_vec_pretty(report).expect("report serializes");
    std::fs::write(&path, json).map_err(|source| ExportError::Write { path, source })
}
