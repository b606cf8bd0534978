//! The X11 capture source (docs/capture.md "X11"): every X display on the host, found by its
//! socket in `/tmp/.X11-unix` and opened with its server's auth cookie, recorded as one
//! session: screens by GetImage when DAMAGE says something changed, keys by XInput2 raw
//! events through the keyboard mapping, the focused window by its WM_CLASS and title, idle
//! time by the screen saver extension, the pointer by XFIXES. One blocking thread per display
//! hands `Event`s to the agent.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat, Window};
use x11rb::protocol::{Event as XEvent, damage, screensaver, shm, xfixes, xinput};
use x11rb::rust_connection::{DefaultStream, RustConnection};

mod discover;
mod keys;
mod shm_segment;

use discover::auth_for;
#[cfg(test)]
use discover::cookie;
pub use discover::{DisplaySpec, discover};
use keys::{Modifiers, name_key};
use shm_segment::Shm;

use super::capture::{Event, SessionCapture};
use super::screen::{Area, BGRX, Capture, Cursor, Encoder, Pixels};
use crate::config::CaptureConfig;
use crate::crypto::now_us;

/// Shell-style pattern (`*`, `?`), whole string, any case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What a window is to the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct WindowInfo {
    /// WM_CLASS's class name (`XTerm`) ...
    class: String,
    /// ... and its instance name (`xterm`).
    instance: String,
    title: String,
}

struct Atoms {
    net_wm_name: u32,
    utf8_string: u32,
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
    /// MIT-SHM: whether to try it, and the segment once made.
    shm_usable: bool,
    shm: Option<Shm>,
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
        let (name, data) = auth_for(spec.number);
        let conn = RustConnection::connect_to_stream_with_auth_info(stream, 0, name, data)
            .map_err(|e| format!("the X server refused the connection ({e}): no usable auth cookie was found for it"))?;
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
            shm_usable,
            shm: None,
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

    fn load_keymap(&mut self) -> Result<(), String> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let reply = self
            .conn
            .get_keyboard_mapping(min, max - min + 1)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        self.keymap = (min, reply.keysyms_per_keycode, reply.keysyms);
        Ok(())
    }

    fn keysyms(&self, code: u32) -> &[u32] {
        let (min, per, syms) = (&self.keymap.0, self.keymap.1 as usize, &self.keymap.2);
        let Some(i) = code.checked_sub(*min as u32) else {
            return &[];
        };
        syms.get(i as usize * per..(i as usize + 1) * per)
            .unwrap_or(&[])
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

    fn property(&self, w: Window, prop: u32, ty: u32) -> Option<Vec<u8>> {
        let r = self
            .conn
            .get_property(false, w, prop, ty, 0, 4096)
            .ok()?
            .reply()
            .ok()?;
        (r.format == 8 && !r.value.is_empty()).then_some(r.value)
    }

    /// WM_CLASS and the title of `w` or, when it has none, of the first window above it (or
    /// below it, for a window manager's frame) that has one.
    fn window_info(&self, w: Window) -> Option<(Window, WindowInfo)> {
        let mut cur = w;
        for _ in 0..8 {
            if cur == 0 || cur == self.root {
                break;
            }
            if let Some(info) = self.own_info(cur) {
                return Some((cur, info));
            }
            let tree = self.conn.query_tree(cur).ok()?.reply().ok()?;
            cur = tree.parent;
        }
        None
    }

    fn own_info(&self, w: Window) -> Option<WindowInfo> {
        let class = self.property(
            w,
            xproto::AtomEnum::WM_CLASS.into(),
            xproto::AtomEnum::STRING.into(),
        )?;
        let mut names = class
            .split(|b| *b == 0)
            .map(|c| String::from_utf8_lossy(c).into_owned());
        let instance = names.next().unwrap_or_default();
        let class = names.next().unwrap_or_default();
        let title = self
            .property(w, self.atoms.net_wm_name, self.atoms.utf8_string)
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .or_else(|| {
                self.property(
                    w,
                    xproto::AtomEnum::WM_NAME.into(),
                    xproto::AtomEnum::ANY.into(),
                )
                .map(|t| t.iter().map(|&b| b as char).collect())
            })
            .unwrap_or_default();
        Some(WindowInfo {
            class,
            instance,
            title,
        })
    }

    fn focused(&self) -> Option<(Window, WindowInfo)> {
        let focus = self.conn.get_input_focus().ok()?.reply().ok()?.focus;
        if focus <= 1 {
            return None;
        }
        self.window_info(focus)
    }

    fn excluded(&self, info: &WindowInfo) -> bool {
        self.config
            .exclude_classes
            .iter()
            .any(|p| glob(p, &info.class) || glob(p, &info.instance))
            || self
                .config
                .exclude_titles
                .iter()
                .any(|p| glob(p, &info.title))
    }

    /// Screen areas of the viewable top-level windows that are excluded.
    fn excluded_areas(&self) -> Result<Vec<Area>, String> {
        if self.config.exclude_classes.is_empty() && self.config.exclude_titles.is_empty() {
            return Ok(Vec::new());
        }
        let tree = self
            .conn
            .query_tree(self.root)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let mut out = Vec::new();
        for &w in &tree.children {
            let Ok(attrs) = self.conn.get_window_attributes(w).map_err(x_err)?.reply() else {
                continue;
            };
            if attrs.map_state != xproto::MapState::VIEWABLE {
                continue;
            }
            let info = self.own_info(w).or_else(|| {
                let kids = self.conn.query_tree(w).ok()?.reply().ok()?.children;
                kids.iter().find_map(|&k| self.own_info(k))
            });
            if !info.is_some_and(|i| self.excluded(&i)) {
                continue;
            }
            let Ok(g) = self.conn.get_geometry(w).map_err(x_err)?.reply() else {
                continue;
            };
            let b = g.border_width as i32;
            out.push(Area {
                x: g.x as i32,
                y: g.y as i32,
                w: g.width as i32 + 2 * b,
                h: g.height as i32 + 2 * b,
            });
        }
        Ok(out)
    }

    /// The screen read into shared memory (MIT-SHM), or `None` when this server cannot
    /// (then it is read over the socket). The segment is made at the first read and again
    /// when the screen grows.
    fn shm_read(&mut self, width: usize, height: usize) -> Result<Option<&mut [u8]>, String> {
        let need = width * height * 4;
        if !self.shm_usable {
            return Ok(None);
        }
        if self.shm.as_ref().is_none_or(|s| s.len < need) {
            self.release_shm()?;
            match Shm::attach(&self.conn, need) {
                Ok(s) => self.shm = Some(s),
                Err(e) => {
                    tracing::info!(display = %self.spec.name(), reason = %e, "MIT-SHM not usable: the screen is read over the socket");
                    self.shm_usable = false;
                    return Ok(None);
                }
            }
        }
        let shm = self.shm.as_mut().expect("attached above");
        shm::get_image(
            &self.conn,
            self.root,
            0,
            0,
            width as u16,
            height as u16,
            !0,
            ImageFormat::Z_PIXMAP.into(),
            shm.seg,
            0,
        )
        .map_err(x_err)?
        .reply()
        .map_err(x_err)?;
        Ok(Some(&mut shm.bytes()[..need]))
    }

    /// Whether the X server still answers (a request refused is not a server gone).
    fn answers(&self) -> bool {
        self.conn
            .get_input_focus()
            .ok()
            .is_some_and(|c| c.reply().is_ok())
    }

    /// Unmap the shared segment and have the server let go of it (it keeps it until the
    /// connection closes otherwise): its memory is freed.
    fn release_shm(&mut self) -> Result<(), String> {
        if let Some(old) = self.shm.take() {
            shm::detach(&self.conn, old.seg).map_err(x_err)?;
            self.conn.flush().map_err(x_err)?;
        }
        Ok(())
    }

    /// The pointer's image and place, when it is drawn.
    fn cursor(&self) -> Result<Option<xfixes::GetCursorImageReply>, String> {
        if !(self.config.cursor && self.xfixes) {
            return Ok(None);
        }
        Ok(xfixes::get_cursor_image(&self.conn)
            .map_err(x_err)?
            .reply()
            .ok())
    }

    /// Read the screen, black out excluded windows, draw the pointer, and encode what changed.
    /// On the common server (32-bit little-endian BGRX) with MIT-SHM and no scaling, all of it
    /// happens in the shared segment: no copy of the screen is made or kept.
    fn grab(
        &mut self,
        width: usize,
        height: usize,
        pointer: Option<&xfixes::GetCursorImageReply>,
        encoder: &mut Encoder,
    ) -> Result<Option<super::screen::Encoded>, String> {
        let areas = self.excluded_areas()?;
        let pointer = pointer.map(cursor);
        let bgrx = self.conn.setup().image_byte_order == xproto::ImageOrder::LSB_FIRST
            && (self.red_shift, self.green_shift, self.blue_shift) == (16, 8, 0);
        let max = self.config.max_width as usize;
        if bgrx
            && (max == 0 || width <= max)
            && let Some(data) = self.shm_read(width, height)?
        {
            let mut px = Pixels {
                width,
                height,
                bpp: 4,
                order: BGRX,
                data,
            };
            for a in areas {
                px.black_out(a);
            }
            if let Some(c) = &pointer {
                px.draw_cursor(c);
            }
            return Ok(encoder.encode(&px, Instant::now()));
        }
        let mut shot = self.capture_rgb(width, height)?;
        for a in areas {
            shot.black_out(a);
        }
        if let Some(c) = &pointer {
            shot.draw_cursor(c);
        }
        let mut shot = shot.fit(max);
        Ok(encoder.encode(&shot.pixels(), Instant::now()))
    }

    /// The screen as RGB (scaling, or a server with other pixels or without MIT-SHM).
    fn capture_rgb(&mut self, width: usize, height: usize) -> Result<Capture, String> {
        let need = width * height * 4;
        let (r, g, b) = (self.red_shift, self.green_shift, self.blue_shift);
        let little = self.conn.setup().image_byte_order == xproto::ImageOrder::LSB_FIRST;
        let over_socket;
        let data: &[u8] = match self.shm_read(width, height)? {
            Some(shared) => shared,
            None => {
                over_socket = self
                    .conn
                    .get_image(
                        ImageFormat::Z_PIXMAP,
                        self.root,
                        0,
                        0,
                        width as u16,
                        height as u16,
                        !0,
                    )
                    .map_err(x_err)?
                    .reply()
                    .map_err(x_err)?
                    .data;
                &over_socket
            }
        };
        if data.len() != need {
            return Err(format!(
                "{} bytes for {width}×{height} pixels; only 32-bit pixels are recorded",
                data.len()
            ));
        }
        let mut rgb = vec![0u8; width * height * 3];
        for (d, px) in rgb.chunks_exact_mut(3).zip(data.chunks_exact(4)) {
            let v = if little {
                u32::from_le_bytes(px.try_into().expect("4 bytes"))
            } else {
                u32::from_be_bytes(px.try_into().expect("4 bytes"))
            };
            d.copy_from_slice(&[(v >> r) as u8, (v >> g) as u8, (v >> b) as u8]);
        }
        Ok(Capture { width, height, rgb })
    }

    /// The text of a key press, or `None` for a modifier (which only changes state).
    fn key(&mut self, code: u32, press: bool) -> Option<String> {
        let syms = self.keysyms(code).to_vec();
        let base = syms.first().copied().unwrap_or(0);
        use xkeysym::key;
        let m = &mut self.mods;
        match base {
            key::Shift_L | key::Shift_R => m.shift = press,
            key::Control_L | key::Control_R => m.ctrl = press,
            key::Alt_L | key::Alt_R | key::Meta_L | key::Meta_R => m.alt = press,
            key::Super_L | key::Super_R | key::Hyper_L | key::Hyper_R => m.super_ = press,
            key::ISO_Level3_Shift | key::Mode_switch => m.level3 = press,
            key::Caps_Lock => {
                if press {
                    m.caps = !m.caps;
                }
            }
            key::Num_Lock | key::Scroll_Lock => {}
            _ => {
                return press.then(|| name_key(&syms, m));
            }
        }
        None
    }
}

/// XFIXES' cursor image (premultiplied ARGB) as the RGBA `draw_cursor` blends.
fn cursor(c: &xfixes::GetCursorImageReply) -> Cursor {
    let mut rgba = Vec::with_capacity(c.cursor_image.len() * 4);
    for &p in &c.cursor_image {
        let a = p >> 24;
        let un = |v: u32| {
            (v * 255 + a / 2)
                .checked_div(a)
                .map_or(0, |c| c.min(255) as u8)
        };
        rgba.extend_from_slice(&[
            un((p >> 16) & 0xff),
            un((p >> 8) & 0xff),
            un(p & 0xff),
            a as u8,
        ]);
    }
    Cursor {
        x: c.x as i32 - c.xhot as i32,
        y: c.y as i32 - c.yhot as i32,
        width: c.width as usize,
        height: c.height as usize,
        rgba,
    }
}

fn line(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("JSON values serialise")
}

fn now_ms() -> i64 {
    now_us() / 1000
}

/// A session whose screen was not read for this long gives its shared segment back.
const SHM_IDLE: Duration = Duration::from_secs(10);

/// Wait until the connection has bytes to read or `timeout` passes.
fn wait_readable(conn: &RustConnection, timeout: Duration) {
    let mut fds = [libc::pollfd {
        fd: conn.stream().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
}

impl SessionCapture for X11Session {
    fn label(&self) -> String {
        format!("{}@{}", self.spec.user, self.spec.name())
    }

    fn run(mut self: Box<Self>, out: &mut dyn FnMut(Event) -> bool, stop: &AtomicBool) -> String {
        match self.record(out, stop) {
            Ok(reason) => reason,
            Err(e) => format!("display closed ({e})"),
        }
    }
}

impl X11Session {
    fn record(
        &mut self,
        out: &mut dyn FnMut(Event) -> bool,
        stop: &AtomicBool,
    ) -> Result<String, String> {
        let tick = Duration::from_secs_f64(1.0 / self.config.fps);
        let mut encoder = Encoder::new(Duration::from_secs(self.config.keyframe_seconds));
        let (mut width, mut height) = self.geometry()?;
        let display = self.spec.name();
        let user = self.spec.user.clone();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let mut frame_no = 0u64;
        let mut damaged = true;
        let mut paused = false;
        let mut idle = false;
        let mut focus = Focus::default();
        let mut last_pointer = None;
        let mut last_read = Instant::now();
        let mut next = Instant::now();
        if !out(Event::Activity(line(serde_json::json!({
            "ts": now_ms(), "event": "session_start", "user": user, "display": display,
            "host": host, "width": width, "height": height,
        })))) {
            return Ok("agent stopping".into());
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok("agent stopping".into());
            }
            let now = Instant::now();
            if now < next {
                wait_readable(&self.conn, (next - now).min(Duration::from_millis(200)));
            }
            while let Some(ev) = self.conn.poll_for_event().map_err(x_err)? {
                match ev {
                    XEvent::DamageNotify(_) => damaged = true,
                    XEvent::MappingNotify(_) => self.load_keymap()?,
                    XEvent::XinputRawKeyPress(k) | XEvent::XinputRawKeyRelease(k) => {
                        let press = k.event_type == xinput::RAW_KEY_PRESS_EVENT;
                        let Some(text) = self.key(k.detail, press) else {
                            continue;
                        };
                        if paused {
                            continue;
                        }
                        self.track_focus(&mut focus, out);
                        if focus.excluded {
                            continue;
                        }
                        let info = focus.info.clone().unwrap_or_default();
                        if !out(Event::Key(line(serde_json::json!({
                            "ts": now_ms(), "user": user, "display": display,
                            "app": info.class, "title": info.title, "key": text,
                        })))) {
                            return Ok("agent stopping".into());
                        }
                    }
                    _ => {}
                }
            }
            if Instant::now() < next {
                continue;
            }
            next = (next + tick).max(Instant::now());
            let now_paused = self.config.pause_file.as_ref().is_some_and(|f| f.exists());
            if now_paused != paused {
                paused = now_paused;
                let event = if paused { "paused" } else { "resumed" };
                out(Event::Activity(line(serde_json::json!({
                    "ts": now_ms(), "event": event, "reason": "pause_file",
                }))));
                // After a pause the screen starts again from a keyframe.
                damaged = true;
                encoder.restart();
            }
            if paused {
                continue;
            }
            self.track_focus(&mut focus, out);
            if self.screensaver {
                let info = screensaver::query_info(&self.conn, self.root)
                    .map_err(x_err)?
                    .reply()
                    .map_err(x_err)?;
                let now_idle =
                    u64::from(info.ms_since_user_input) >= self.config.idle_seconds * 1000;
                if now_idle != idle {
                    idle = now_idle;
                    out(Event::Activity(line(serde_json::json!({
                        "ts": now_ms(), "event": if idle { "idle" } else { "active" },
                        "idle_ms": info.ms_since_user_input,
                    }))));
                }
            }
            let (w, h) = self.geometry()?;
            if (w, h) != (width, height) {
                (width, height) = (w, h);
                damaged = true;
                out(Event::Activity(line(serde_json::json!({
                    "ts": now_ms(), "event": "resize", "width": w, "height": h,
                }))));
            }
            // The pointer moves without damaging the framebuffer: a new place or shape makes
            // the screen dirty.
            let pointer = self.cursor()?;
            let place = pointer.as_ref().map(|c| (c.x, c.y, c.cursor_serial));
            if place != last_pointer {
                last_pointer = place;
                damaged = true;
            }
            if !(damaged || self.damage.is_none()) {
                // A screen that stays still gives its shared segment back (a segment is the
                // size of the screen; a host has many idle sessions); the next change makes
                // another.
                if last_read.elapsed() >= SHM_IDLE {
                    self.release_shm()?;
                }
                continue;
            }
            last_read = Instant::now();
            if let Some(d) = self.damage {
                damage::subtract(&self.conn, d, 0u32, 0u32).map_err(x_err)?;
            }
            damaged = false;
            let captured = now_us();
            let grabbed = match self.grab(width, height, pointer.as_ref(), &mut encoder) {
                Ok(g) => g,
                // The screen shrank between reading its size and its pixels (BadMatch): read
                // the size again at the next tick. Only a lost server ends the session.
                Err(e) if self.answers() => {
                    tracing::debug!(display = %self.spec.name(), error = %e, "screen read refused; trying again at the next tick");
                    damaged = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(update) = grabbed {
                frame_no += 1;
                if !out(Event::Frame {
                    name: format!("screen-{frame_no:08}.ssu"),
                    image: update.bytes,
                    captured_us: captured,
                }) {
                    return Ok("agent stopping".into());
                }
            }
        }
    }

    /// Follow the keyboard focus; a change is an activity event (an excluded window's title
    /// is not told).
    fn track_focus(&self, focus: &mut Focus, out: &mut dyn FnMut(Event) -> bool) {
        let now = self.focused().map(|f| f.1);
        if now == focus.info {
            return;
        }
        let info = now.clone().unwrap_or_default();
        focus.excluded = self.excluded(&info);
        focus.info = now;
        let v = if focus.excluded {
            serde_json::json!({"ts": now_ms(), "event": "focus", "class": info.class, "title": "", "excluded": true})
        } else {
            serde_json::json!({"ts": now_ms(), "event": "focus", "class": info.class, "title": info.title})
        };
        out(Event::Activity(line(v)));
    }
}

/// The focused window as last told.
#[derive(Default)]
struct Focus {
    info: Option<WindowInfo>,
    excluded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names_in_any_case() {
        assert!(glob("keepass*", "KeePassXC"));
        assert!(glob("*bank*", "My Bank - Firefox"));
        assert!(glob("x?erm", "XTerm"));
        assert!(!glob("term", "XTerm"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acd"));
    }

    #[test]
    fn keys_are_named_as_the_keymap_and_modifiers_make_them() {
        use xkeysym::key;
        let m = Modifiers::default();
        assert_eq!(name_key(&[key::a, key::A], &m), "a");
        assert_eq!(name_key(&[key::Return], &m), "[Enter]");
        let shift = Modifiers {
            shift: true,
            ..Default::default()
        };
        assert_eq!(name_key(&[key::a, key::A], &shift), "A");
        assert_eq!(name_key(&[key::_1, key::exclam], &shift), "!");
        let caps = Modifiers {
            caps: true,
            ..Default::default()
        };
        assert_eq!(name_key(&[key::a, key::A], &caps), "A");
        assert_eq!(name_key(&[key::_1, key::exclam], &caps), "1");
        let ctrl = Modifiers {
            ctrl: true,
            ..Default::default()
        };
        assert_eq!(name_key(&[key::c, key::C], &ctrl), "Ctrl+C");
        let ctrl_shift = Modifiers {
            ctrl: true,
            shift: true,
            ..Default::default()
        };
        assert_eq!(name_key(&[key::t, key::T], &ctrl_shift), "Ctrl+Shift+T");
        assert_eq!(name_key(&[key::BackSpace], &m), "[BackSpace]");
    }

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
