//! A session recorded: the loop that waits on X events and the frame tick, and hands the
//! agent keystrokes, screen updates and activity events (start, pause, idle, resize).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::{Event as XEvent, damage, screensaver, xinput};
use x11rb::rust_connection::RustConnection;

use super::windows::Focus;
use super::{X11Session, x_err};
use crate::agent::capture::{Event, SessionCapture};
use crate::agent::screen::Encoder;
use crate::crypto::now_us;

pub(super) fn line(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("JSON values serialise")
}

pub(super) fn now_ms() -> i64 {
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
        let mut resized = false;
        let mut paused = false;
        let mut idle = false;
        let mut focus = Focus::default();
        self.follow_focus(&mut focus)?;
        let mut last_pointer = None;
        let mut last_read = Instant::now();
        let mut read_before = false;
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
                    XEvent::RandrScreenChangeNotify(_) => resized = true,
                    XEvent::MappingNotify(_)
                    | XEvent::XkbMapNotify(_)
                    | XEvent::XkbNewKeyboardNotify(_) => self.load_keymap()?,
                    XEvent::XkbStateNotify(e) => self.xkb_state(&e),
                    XEvent::XinputRawKeyPress(k) | XEvent::XinputRawKeyRelease(k) => {
                        let press = k.event_type == xinput::RAW_KEY_PRESS_EVENT;
                        let Some(text) = self.key(k.detail, press) else {
                            continue;
                        };
                        if paused {
                            continue;
                        }
                        if self.key_excluded(&mut focus, out) {
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
                    ev => self.focus_event(&ev, &mut focus),
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
            let (w, h) = if !self.randr || std::mem::take(&mut resized) {
                self.geometry()?
            } else {
                (width, height)
            };
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
            self.shm_busy = read_before && last_read.elapsed() < SHM_IDLE;
            read_before = true;
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
}
