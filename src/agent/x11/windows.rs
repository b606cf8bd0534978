//! Windows as the user sees them: WM_CLASS and title, the focused one (followed, each change
//! an activity event), and the privacy exclusions (`exclude_classes`, `exclude_titles`) with
//! the screen areas they black out.

use x11rb::protocol::xproto::{self, ConnectionExt as _, Window};

use super::record::{line, now_ms};
use super::{X11Session, x_err};
use crate::agent::capture::Event;
use crate::agent::screen::Area;

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
pub(super) struct WindowInfo {
    /// WM_CLASS's class name (`XTerm`) ...
    pub(super) class: String,
    /// ... and its instance name (`xterm`).
    pub(super) instance: String,
    pub(super) title: String,
}

impl X11Session {
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
    pub(super) fn excluded_areas(&self) -> Result<Vec<Area>, String> {
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

    /// Follow the keyboard focus; a change is an activity event (an excluded window's title
    /// is not told).
    pub(super) fn track_focus(&self, focus: &mut Focus, out: &mut dyn FnMut(Event) -> bool) {
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
pub(super) struct Focus {
    pub(super) info: Option<WindowInfo>,
    pub(super) excluded: bool,
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
}
