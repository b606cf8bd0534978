//! Cryptography: data keys (generation, RSA-OAEP wrap and unwrap), chunk sealing (HKDF
//! per-stream keys, AES-256-GCM with derived nonces), agent signatures and what a certificate
//! says (`cert`). Sans-IO: no files, no sockets.

pub mod cert;
pub mod dek;
pub mod seal;
pub mod sha256x2;
pub mod sign;

pub use dek::{Dek, OAEP_LABEL, UnwrapError};
pub use seal::{Checkpoints, OpenError, SealError, StreamKey, StreamSealer};
pub use sign::{AgentCa, AgentSigner};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_micros() as i64
}
