//! sealstream: end-to-end-encrypted recording ingest.
//!
//! `protocol` (formats, sans-IO) and `crypto` (keys and sealing) are the core; `keys` reads
//! and writes key files as openssl does; `storage` owns the object-store layout; `recorder`
//! is the agent-side sealing pipeline; `export` is the operator's offline decryptor.

pub mod agent;
pub mod audit;
pub mod config;
pub mod console;
pub mod crypto;
pub mod export;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod keys;
pub mod metadata;
pub mod pki;
pub mod protocol;
pub mod recorder;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod transport;
pub mod video;

#[cfg(test)]
mod layering;
