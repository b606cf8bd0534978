//! Writing files that hold keys, certificates and configuration: created new (never
//! overwriting), with the given permissions, and flushed to disk before returning.

use std::io::Write;
use std::path::Path;

/// Create `path`, which must not exist yet, with `mode` (Unix), write `bytes` and fsync.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
