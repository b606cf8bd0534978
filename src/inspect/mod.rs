//! Keyless inspection of a store, shared by `sealstream verify` and `sealstream export`: every
//! object's structure and checksum, its name against its contents, each stream's sequence
//! continuity, duplicates and final chunk, and the agent's signatures (docs/format.md
//! "Verifying a stream"). Segments are read in windows and chunks kept only as references
//! (where they are, their digests and signatures), so memory does not grow with the store's
//! bytes.

mod proof;
mod report;
mod scan;
mod segment;
mod stream;
mod verdict;

pub use proof::Proof;
pub use report::{StreamVerdict, VerifyReport, verify};
pub use scan::{
    ChunkRef, ChunkSink, Filter, Scan, StreamKey, chunk_from_bytes, read_chunk_bytes, scan,
    scan_into,
};
pub use stream::{StreamCheck, check_stream};
pub use verdict::{Verdict, exit_code};
