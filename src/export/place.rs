//! Putting a staged file in place: never overwriting another file (`renameat2` with
//! `RENAME_NOREPLACE`), keeping an identical one from an earlier run (a resumed export).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{ExportError, io_error};

/// SHA-256 of a file, read in pieces.
pub(super) fn file_sha256(path: &Path) -> Result<[u8; 32], ExportError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io_error(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Rename `from` to `to` unless `to` exists (then `AlreadyExists`): one `renameat2` with
/// `RENAME_NOREPLACE` on Linux; elsewhere, or where the file system lacks it, a hard link and
/// an unlink.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: two valid NUL-terminated paths, relative to the working directory.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// Move the staged file `staged` to `path`, unless the same bytes are there (a resumed
/// export); a file with other contents is never overwritten, nor one appearing meanwhile.
pub(super) fn place_once(staged: &Path, path: &Path) -> Result<(), ExportError> {
    match rename_noreplace(staged, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let same = file_sha256(path)? == file_sha256(staged)?;
            std::fs::remove_file(staged).map_err(io_error(staged))?;
            if same {
                Ok(())
            } else {
                Err(ExportError::Exists(path.to_owned()))
            }
        }
        Err(e) => Err(io_error(path)(e)),
    }
}
