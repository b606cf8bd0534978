//! The shared memory segment a display's screen is read into (MIT-SHM 1.2).

use std::os::fd::AsRawFd;

use x11rb::connection::Connection;
use x11rb::protocol::shm;
use x11rb::rust_connection::RustConnection;

use super::x_err;

/// A shared memory segment the X server writes screens into: a memfd mapped here and passed
/// to the server (MIT-SHM 1.2 `AttachFd`), so no System V segment exists for another process
/// to open.
pub(super) struct Shm {
    pub(super) seg: shm::Seg,
    map: *mut libc::c_void,
    pub(super) len: usize,
}

// SAFETY: the mapping is owned by this value alone and only used through `&mut self`.
unsafe impl Send for Shm {}

impl Shm {
    pub(super) fn attach(conn: &RustConnection, len: usize) -> Result<Shm, String> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: plain system calls; every result is checked, the fd is owned once made.
        unsafe {
            let fd = libc::memfd_create(c"sealstream-screen".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
            }
            let fd = OwnedFd::from_raw_fd(fd);
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
            }
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            if map == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            // Owned from here: unmapped on every way out.
            let mut shm = Shm { seg: 0, map, len };
            let seg = conn.generate_id().map_err(x_err)?;
            shm::attach_fd(conn, seg, fd, false)
                .map_err(x_err)?
                .check()
                .map_err(x_err)?;
            shm.seg = seg;
            Ok(shm)
        }
    }

    pub(super) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes mapped for reading and writing for as long as `self` lives,
        // borrowed once through `&mut self`; the server writes them only while a ShmGetImage
        // request is answered, before they are used here.
        unsafe { std::slice::from_raw_parts_mut(self.map as *mut u8, self.len) }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `attach`, unmapped once.
        unsafe { libc::munmap(self.map, self.len) };
    }
}
