//! Verdicts and exit codes (`Verdict`): docs/format.md's one table, for `verify` and `export`
//! alike.

use serde::Serialize;

use super::proof::Proof;
use super::stream::StreamCheck;

/// A stream's verdict, worst first: the table of docs/format.md "Verdicts and exit codes".
/// `verify` gives every verdict but `NoKey` and `Malformed`, which only decrypting finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Something honest storage cannot cause (or, as a store's outcome, a damaged object).
    Tampered,
    /// A DEK record the chunks name is not in the store.
    NoDekRecord,
    /// (export) No private key was given for the stream's KEK.
    NoKey,
    /// (export) Authentic chunks whose payload does not parse.
    Malformed,
    /// (with a pinned agent CA) No agent signature: anyone with the public KEK could have made
    /// it. `--allow-incomplete` does not accept it.
    Unsigned,
    /// No final chunk (still recording, or cut short).
    Incomplete,
    /// (with a pinned agent CA) Complete, but chunks after the last valid checkpoint.
    Unproven,
    #[default]
    Ok,
}

impl Verdict {
    pub const ALL: [Verdict; 8] = [
        Verdict::Tampered,
        Verdict::NoDekRecord,
        Verdict::NoKey,
        Verdict::Malformed,
        Verdict::Unsigned,
        Verdict::Incomplete,
        Verdict::Unproven,
        Verdict::Ok,
    ];

    /// What a keyless reader concludes from `check` (with the agent CA pinned or not).
    pub fn of(check: &StreamCheck, ca_pinned: bool) -> Verdict {
        if !check.problems.is_empty() {
            Verdict::Tampered
        } else if !check.missing_records.is_empty() {
            Verdict::NoDekRecord
        } else {
            Verdict::of_authentic(&check.proof, check.final_seq.is_some(), ca_pinned)
        }
    }

    /// The verdict on a stream with nothing wrong in it: unsigned, incomplete, unproven or ok.
    pub fn of_authentic(proof: &Proof, complete: bool, ca_pinned: bool) -> Verdict {
        match proof {
            Proof::Unsigned if ca_pinned => Verdict::Unsigned,
            _ if !complete => Verdict::Incomplete,
            // Nothing pinned, nothing to prove against: an unproven tail is not counted.
            Proof::Signed { unproven, .. } if ca_pinned && *unproven > 0 => Verdict::Unproven,
            _ => Verdict::Ok,
        }
    }

    /// The exit code this verdict gives `verify` and `export`.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Tampered => 3,
            Verdict::NoDekRecord => 6,
            Verdict::NoKey => 4,
            Verdict::Malformed => 5,
            Verdict::Unsigned | Verdict::Incomplete | Verdict::Unproven => 7,
            Verdict::Ok => 0,
        }
    }

    /// Whether `--allow-incomplete` accepts it: a missing final chunk or an unproven tail of a
    /// signed stream, never an unsigned stream.
    pub fn waivable(self) -> bool {
        matches!(self, Verdict::Incomplete | Verdict::Unproven)
    }

    /// The name in reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Tampered => "tampered",
            Verdict::NoDekRecord => "no_dek_record",
            Verdict::NoKey => "no_key",
            Verdict::Malformed => "malformed",
            Verdict::Unsigned => "unsigned",
            Verdict::Incomplete => "incomplete",
            Verdict::Unproven => "unproven",
            Verdict::Ok => "ok",
        }
    }
}

/// The exit code of `verify` or `export` for a store: 3 if an object is damaged, else that of
/// the worst verdict not accepted (`allow_incomplete` accepts the waivable ones).
pub fn exit_code(
    damaged: bool,
    verdicts: impl IntoIterator<Item = Verdict>,
    allow_incomplete: bool,
) -> u8 {
    if damaged {
        return Verdict::Tampered.exit_code();
    }
    verdicts
        .into_iter()
        .filter(|v| !(allow_incomplete && v.waivable()))
        .min()
        .unwrap_or(Verdict::Ok)
        .exit_code()
}
