//! Wire and at-rest formats, sans-IO: sealed chunks, DEK records, segment objects and the
//! plaintext payloads inside chunks. Nothing here touches a socket, a file or a runtime;
//! `docs/format.md` is the byte-level specification these decoders implement.

pub mod chunk;
pub mod dek_record;
pub mod ids;
pub mod payload;
pub mod screen;
pub mod segment;
pub mod uplink;
mod wire;

pub use chunk::{ChunkHeader, SealedChunk};
pub use dek_record::DekRecord;
pub use ids::{AgentId, DekId, KekId, Kind, SessionId, StreamId};
pub use segment::Segment;
pub use wire::DecodeError;

/// Format version 1: unsigned chunks and DEK records; the segment layout (still version 1).
pub const VERSION_1: u8 = 1;
/// Format version 2: chunks and DEK records that may carry the agent's signature
/// (docs/format.md "Agent signatures").
pub const VERSION_2: u8 = 2;
/// Cipher suite 1: AES-256-GCM chunks, HKDF-SHA256 stream keys, RSA-OAEP-SHA256 DEK wrap.
pub const SUITE_AES256GCM_HKDF_OAEP: u8 = 1;
