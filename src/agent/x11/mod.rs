//! The X11 capture source (docs/capture.md "X11"): every X display on the host, found by its
//! socket in `/tmp/.X11-unix` and opened with its server's auth cookie, recorded as one
//! session: screens by GetImage when DAMAGE says something changed, keys by XInput2 raw
//! events through the keyboard mapping, the focused window by its WM_CLASS and title, idle
//! time by the screen saver extension, the pointer by XFIXES. One blocking thread per display
//! hands `Event`s to the agent.
//!
//! This file: a display's session opened (auth, root visual, extensions) and its state;
//! `windows`, `input`, `grab` and `record` add to it.

use std::os::unix::net::UnixStream;

use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::ConnectError;
use x11rb::protocol::xproto::{self, ConnectionExt as _, Window};
use x11rb::protocol::{damage, randr, screensaver, shm, xfixes, xinput};
use x11rb::rust_connection::{DefaultStream, RustConnection};

mod discover;
mod grab;
mod input;
mod keys;
mod record;
mod shm_segment;
mod windows;

use discover::auth_for;
#[cfg(test)]
use discover::cookie;
pub use discover::{DisplaySpec, discover};
use keys::Modifiers;
use shm_segment::Shm;
pub use windows::glob;

use crate::config::CaptureConfig;

struct Atoms {
    net_wm_name: u32,
    utf8_string: u32,
    wm_state: u32,
}

/// One display being recorded.
pub struct X11Session {
    spec: DisplaySpec,
    conn: RustConnection,
    root: Window,
    config: CaptureConfig,
    atoms: Atoms,
    damage: Option<u32>,
    xinput: bool,
    xfixes: bool,
    screensaver: bool,
    /// RandR screen-change notifications selected: the size is read again when one comes.
    randr: bool,
    /// MIT-SHM: whether to try it, and the segment once made.
    shm_usable: bool,
    shm: Option<Shm>,
    /// Whether the screen was read a moment before this read: only a busy screen gets a
    /// segment (`grab::shm_read`).
    shm_busy: bool,
    keymap: (u8, u8, Vec<u32>),
    mods: Modifiers,
    red_shift: u32,
    green_shift: u32,
    blue_shift: u32,
}

fn x_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl X11Session {
    /// Connect with the display's cookie and set up the extensions; why not, if it cannot.
    pub fn open(spec: DisplaySpec, config: CaptureConfig) -> Result<Self, String> {
        let stream = UnixStream::connect(&spec.socket)
            .map_err(|e| format!("cannot connect to {}: {e}", spec.socket.display()))?;
        let (stream, _) = DefaultStream::from_unix_stream(stream).map_err(x_err)?;
        let auth = auth_for(spec.number);
        let conn = RustConnection::connect_to_stream_with_auth_info(
            stream,
            0,
            auth.name.clone(),
            auth.data.clone(),
        )
        .map_err(|e| match e {
            ConnectError::SetupFailed(f) => {
                auth.refused(&spec.name(), &String::from_utf8_lossy(&f.reason))
            }
            ConnectError::SetupAuthenticate(a) => {
                auth.refused(&spec.name(), &String::from_utf8_lossy(&a.reason))
            }
            e => format!("the X server did not set up a connection ({e})"),
        })?;
        let screen = &conn.setup().roots[0];
        let root = screen.root;
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| &d.visuals)
            .find(|v| v.visual_id == screen.root_visual)
            .ok_or("the root visual is not described by the server")?;
        let shift = |mask: u32| mask.trailing_zeros();
        let (red_shift, green_shift, blue_shift) = (
            shift(visual.red_mask),
            shift(visual.green_mask),
            shift(visual.blue_mask),
        );
        if screen.root_depth < 24
            || [visual.red_mask, visual.green_mask, visual.blue_mask]
                .iter()
                .any(|m| m.count_ones() != 8)
        {
            return Err(format!(
                "the screen is {}-bit; only 24-bit true colour screens are recorded",
                screen.root_depth
            ));
        }
        let intern = |n: &[u8]| -> Result<u32, String> {
            Ok(conn
                .intern_atom(false, n)
                .map_err(x_err)?
                .reply()
                .map_err(x_err)?
                .atom)
        };
        let atoms = Atoms {
            net_wm_name: intern(b"_NET_WM_NAME")?,
            utf8_string: intern(b"UTF8_STRING")?,
            wm_state: intern(b"WM_STATE")?,
        };
        let has = |name: &'static str| conn.extension_information(name).ok().flatten().is_some();
        let damage = if has(damage::X11_EXTENSION_NAME) {
            damage::query_version(&conn, 1, 1)
                .map_err(x_err)?
                .reply()
                .map_err(x_err)?;
            let id = conn.generate_id().map_err(x_err)?;
            damage::create(&conn, id, root, damage::ReportLevel::NON_EMPTY).map_err(x_err)?;
            Some(id)
        } else {
            None
        };
        let xfixes = has(xfixes::X11_EXTENSION_NAME)
            && xfixes::query_version(&conn, 5, 0)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some();
        let xinput = has(xinput::X11_EXTENSION_NAME)
            && xinput::xi_query_version(&conn, 2, 2)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|r| (r.major_version, r.minor_version) >= (2, 1));
        if xinput {
            xinput::xi_select_events(
                &conn,
                root,
                &[xinput::EventMask {
                    deviceid: xinput::Device::ALL_MASTER.into(),
                    mask: vec![
                        xinput::XIEventMask::RAW_KEY_PRESS | xinput::XIEventMask::RAW_KEY_RELEASE,
                    ],
                }],
            )
            .map_err(x_err)?;
        }
        // RandR tells a change of the screen's size (a resolution change, a remote client
        // resizing its session); without it the size is read at every tick.
        let randr = has(randr::X11_EXTENSION_NAME)
            && randr::query_version(&conn, 1, 2)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some()
            && randr::select_input(&conn, root, randr::NotifyMask::SCREEN_CHANGE).is_ok();
        let screensaver = has(screensaver::X11_EXTENSION_NAME);
        let shm_usable = has(shm::X11_EXTENSION_NAME)
            && shm::query_version(&conn)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|v| (v.major_version, v.minor_version) >= (1, 2));
        conn.flush().map_err(x_err)?;
        let mut s = X11Session {
            spec,
            conn,
            root,
            config,
            atoms,
            damage,
            xinput,
            xfixes,
            screensaver,
            randr,
            shm_usable,
            shm: None,
            shm_busy: false,
            keymap: (0, 0, Vec::new()),
            mods: Modifiers::default(),
            red_shift,
            green_shift,
            blue_shift,
        };
        s.load_keymap()?;
        let pointer = s
            .conn
            .query_pointer(root)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        s.mods.caps = u16::from(pointer.mask) & u16::from(xproto::KeyButMask::LOCK) != 0;
        if !s.xinput {
            tracing::warn!(display = %s.spec.name(), "no XInput2 on this display: its keystrokes are not recorded");
        }
        Ok(s)
    }

    fn geometry(&self) -> Result<(usize, usize), String> {
        let g = self
            .conn
            .get_geometry(self.root)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        Ok((g.width as usize, g.height as usize))
    }

    /// Whether the X server still answers (a request refused is not a server gone).
    fn answers(&self) -> bool {
        self.conn
            .get_input_focus()
            .ok()
            .is_some_and(|c| c.reply().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_for_a_display_is_found_in_an_xauthority_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth");
        let entry = |num: &str, cookie: &[u8]| {
            let mut v = vec![1, 0]; // FamilyLocal
            for field in [
                b"host".as_slice(),
                num.as_bytes(),
                b"MIT-MAGIC-COOKIE-1",
                cookie,
            ] {
                v.extend_from_slice(&(field.len() as u16).to_be_bytes());
                v.extend_from_slice(field);
            }
            v
        };
        let mut data = entry("9", b"nine");
        data.extend(entry("10", b"ten"));
        std::fs::write(&f, data).unwrap();
        assert_eq!(cookie(&f, 10).unwrap().1, b"ten");
        assert_eq!(cookie(&f, 9).unwrap().0, b"MIT-MAGIC-COOKIE-1");
        assert!(cookie(&f, 11).is_none());
    }
}
