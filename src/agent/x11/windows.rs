//! Windows as the user sees them: WM_CLASS and title, the focused one (followed, each change
//! an activity event), and the privacy exclusions (`exclude_classes`, `exclude_titles`) with
//! the screen areas they black out. Keys are judged against the focus at their time: the focus
//! is also followed in the event stream the keys come in (focus and crossing events on the
//! top-level windows), not only asked when a key is read.

use x11rb::cookie::Cookie;
use x11rb::protocol::Event as XEvent;
use x11rb::protocol::xproto::{
    self, ChangeWindowAttributesAux, ConnectionExt as _, EventMask, GetPropertyReply, NotifyDetail,
    NotifyMode, Window,
};
use x11rb::rust_connection::RustConnection;

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

/// How far below a top-level window its client window (ICCCM: the one with `WM_STATE`) is
/// looked for: a reparenting window manager puts one or two windows between them (KWin:
/// frame, wrapper, client); and how many windows at most are looked at.
const CLIENT_DEPTH: usize = 4;
const CLIENT_SEARCH: usize = 256;

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

    /// WM_CLASS and the title of `w`, when it has a WM_CLASS.
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
        Some(WindowInfo {
            class,
            instance,
            title: self.title(w),
        })
    }

    fn title(&self, w: Window) -> String {
        self.property(w, self.atoms.net_wm_name, self.atoms.utf8_string)
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .or_else(|| {
                self.property(
                    w,
                    xproto::AtomEnum::WM_NAME.into(),
                    xproto::AtomEnum::ANY.into(),
                )
                .map(|t| t.iter().map(|&b| b as char).collect())
            })
            .unwrap_or_default()
    }

    /// What the top-level window `top` (a child of the root) shows: its client window's
    /// WM_CLASS and title. The client is the first window, breadth first from `top` down to
    /// `CLIENT_DEPTH` levels, that has `WM_STATE` (a window manager sets it on the clients it
    /// manages, under whatever frame and wrapper windows it put around them); with no window
    /// manager (no `WM_STATE` anywhere) the first that has a WM_CLASS.
    fn client_info(&self, top: Window) -> Option<WindowInfo> {
        let present = |c: Option<Cookie<'_, RustConnection, GetPropertyReply>>| {
            c.and_then(|c| c.reply().ok())
                .is_some_and(|r| r.type_ != u32::from(xproto::AtomEnum::NONE))
        };
        let mut level = vec![top];
        let mut looked = 0;
        let mut first_class = None;
        for depth in 0..=CLIENT_DEPTH {
            if level.is_empty() {
                break;
            }
            looked += level.len();
            // One round trip a level: every request of the level sent, then the replies read.
            let asked: Vec<_> = level
                .iter()
                .map(|&w| {
                    let prop = |atom: u32| {
                        let any = xproto::AtomEnum::ANY;
                        self.conn.get_property(false, w, atom, any, 0, 0).ok()
                    };
                    let tree = (depth < CLIENT_DEPTH)
                        .then(|| self.conn.query_tree(w).ok())
                        .flatten();
                    (
                        w,
                        prop(self.atoms.wm_state),
                        prop(xproto::AtomEnum::WM_CLASS.into()),
                        tree,
                    )
                })
                .collect();
            let mut client = None;
            let mut next = Vec::new();
            for (w, state, class, tree) in asked {
                if client.is_none() && present(state) {
                    client = Some(w);
                }
                if first_class.is_none() && present(class) {
                    first_class = Some(w);
                }
                if let Some(t) = tree.and_then(|t| t.reply().ok()) {
                    next.extend(t.children);
                }
            }
            if let Some(w) = client {
                return Some(self.own_info(w).unwrap_or_else(|| WindowInfo {
                    title: self.title(w),
                    ..WindowInfo::default()
                }));
            }
            next.truncate(CLIENT_SEARCH.saturating_sub(looked));
            level = next;
        }
        first_class.and_then(|w| self.own_info(w))
    }

    /// Whether the top-level window `top` holds an excluded window: any window, breadth first
    /// down to `CLIENT_DEPTH` levels, whose WM_CLASS or title an exclusion matches (a frame
    /// may hold several clients, as tabbed window managers' do: one excluded is enough). Fails
    /// closed: a window that is gone by the time it is asked (it took the focus, was typed
    /// into and closed between two ticks), or a tree larger than `CLIENT_SEARCH`, counts as
    /// excluded.
    fn subtree_excluded(&self, top: Window) -> bool {
        let mut level = vec![top];
        let mut looked = 0;
        for depth in 0..=CLIENT_DEPTH {
            if level.is_empty() {
                return false;
            }
            looked += level.len();
            if looked > CLIENT_SEARCH {
                return true;
            }
            let trees: Vec<_> = level
                .iter()
                .map(|&w| {
                    (depth < CLIENT_DEPTH)
                        .then(|| self.conn.query_tree(w).ok())
                        .flatten()
                })
                .collect();
            let mut next = Vec::new();
            for (&w, tree) in level.iter().zip(trees) {
                let info = self.own_info(w).or_else(|| {
                    Some(WindowInfo {
                        title: self.title(w),
                        ..WindowInfo::default()
                    })
                });
                if info.is_some_and(|i| self.excluded(&i)) {
                    return true;
                }
                match tree.map(|t| t.reply()) {
                    Some(Ok(t)) => next.extend(t.children),
                    // The window is gone: nothing can say what it was.
                    Some(Err(_)) if w == top => return true,
                    _ => {}
                }
            }
            level = next;
        }
        false
    }

    /// The deepest window under the pointer, if any but the root.
    fn pointer_window(&self) -> Option<Window> {
        let (mut w, mut under) = (self.root, None);
        for _ in 0..16 {
            let child = self
                .conn
                .query_pointer(w)
                .ok()
                .and_then(|c| c.reply().ok())
                .map_or(0, |r| r.child);
            if child == 0 {
                break;
            }
            (w, under) = (child, Some(child));
        }
        under
    }

    /// The window keys go to now, what it is, and whether it is excluded. That is the focus
    /// window or, when the focus is PointerRoot, None or the root window (no window manager,
    /// focus following the mouse), the window under the pointer. It is what the first window
    /// up from there with a WM_CLASS says it is; excluded when that window is, or when its
    /// top-level window's client is (the window whose area is blacked out).
    fn focused(&self) -> Option<(WindowInfo, bool)> {
        let focus = self.conn.get_input_focus().ok()?.reply().ok()?.focus;
        let target = if focus <= 1 || focus == self.root {
            self.pointer_window()?
        } else {
            focus
        };
        let (mut cur, mut info, mut top) = (target, None, None);
        for _ in 0..16 {
            if info.is_none() {
                info = self.own_info(cur);
            }
            let parent = self.conn.query_tree(cur).ok()?.reply().ok()?.parent;
            if parent == self.root || parent == 0 {
                top = Some(cur);
                break;
            }
            cur = parent;
        }
        let client = top.and_then(|t| self.client_info(t));
        let excluded = info.as_ref().is_some_and(|i| self.excluded(i))
            || top.map_or(self.excludes_anything(), |t| self.top_excluded(t));
        Some((info.or(client)?, excluded))
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

    fn excludes_anything(&self) -> bool {
        !(self.config.exclude_classes.is_empty() && self.config.exclude_titles.is_empty())
    }

    /// Whether the top-level window `top` is excluded: itself or a window in it
    /// (`subtree_excluded`, which fails closed).
    fn top_excluded(&self, top: Window) -> bool {
        self.excludes_anything() && self.subtree_excluded(top)
    }

    /// Screen areas of the viewable top-level windows that are excluded (judged by every
    /// window in them, `subtree_excluded`).
    pub(super) fn excluded_areas(&self) -> Result<Vec<Area>, String> {
        if !self.excludes_anything() {
            return Ok(Vec::new());
        }
        let tree = self
            .conn
            .query_tree(self.root)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let attrs = tree
            .children
            .iter()
            .map(|&w| Ok((w, self.conn.get_window_attributes(w).map_err(x_err)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let mut out = Vec::new();
        for (w, attrs) in attrs {
            let Ok(attrs) = attrs.reply() else {
                continue;
            };
            if attrs.map_state != xproto::MapState::VIEWABLE || !self.subtree_excluded(w) {
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
        let (now, excluded) = match self.focused() {
            Some((info, excluded)) => (Some(info), excluded),
            None => (None, false),
        };
        if now == focus.info && excluded == focus.excluded {
            return;
        }
        let info = now.clone().unwrap_or_default();
        focus.excluded = excluded;
        focus.info = now;
        let v = if focus.excluded {
            serde_json::json!({"ts": now_ms(), "event": "focus", "class": info.class, "title": "", "excluded": true})
        } else {
            serde_json::json!({"ts": now_ms(), "event": "focus", "class": info.class, "title": info.title})
        };
        out(Event::Activity(line(v)));
    }

    /// Whether a key read now goes unrecorded: the window focused now is excluded, or the
    /// one the event stream says had the keyboard when the key was pressed (the focus may
    /// have moved since, while the key waited behind a screen read).
    pub(super) fn key_excluded(
        &self,
        focus: &mut Focus,
        out: &mut dyn FnMut(Event) -> bool,
    ) -> bool {
        self.track_focus(focus, out);
        focus.excluded || focus.ordered.excluded
    }

    /// Have the server tell, in the stream the keys come in, where the keyboard goes: focus
    /// changes on the root window and on every top-level window (each new one as it is
    /// made), and the pointer entering and leaving them (with the focus at PointerRoot, keys
    /// go to the window under the pointer). Then the state now, which those events change.
    pub(super) fn follow_focus(&self, focus: &mut Focus) -> Result<(), String> {
        let mask = EventMask::SUBSTRUCTURE_NOTIFY | EventMask::FOCUS_CHANGE;
        self.conn
            .change_window_attributes(
                self.root,
                &ChangeWindowAttributesAux::new().event_mask(mask),
            )
            .map_err(x_err)?;
        let tree = self
            .conn
            .query_tree(self.root)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        for &w in &tree.children {
            self.watch(w);
        }
        let f = self
            .conn
            .get_input_focus()
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?
            .focus;
        let o = &mut focus.ordered;
        o.held = if f <= 1 || f == self.root {
            Held::Pointer
        } else {
            self.top_of(f).map_or(Held::Unknown, Held::Window)
        };
        let child = self
            .conn
            .query_pointer(self.root)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?
            .child;
        o.under_pointer = (child != 0).then_some(child);
        self.judge(o);
        Ok(())
    }

    fn watch(&self, w: Window) {
        let mask = EventMask::FOCUS_CHANGE | EventMask::ENTER_WINDOW | EventMask::LEAVE_WINDOW;
        // Unchecked: a window already gone is an error event, ignored.
        let _ = self
            .conn
            .change_window_attributes(w, &ChangeWindowAttributesAux::new().event_mask(mask));
    }

    fn top_of(&self, mut w: Window) -> Option<Window> {
        for _ in 0..16 {
            let parent = self.conn.query_tree(w).ok()?.reply().ok()?.parent;
            if parent == self.root || parent == 0 {
                return Some(w);
            }
            w = parent;
        }
        None
    }

    fn judge(&self, o: &mut Ordered) {
        let target = match o.held {
            Held::Window(w) => Some(w),
            Held::Pointer => o.under_pointer,
            Held::Unknown => None,
        };
        o.excluded = target.is_some_and(|t| self.top_excluded(t));
    }

    /// Take an event the server sent in order with the keys: a new top-level window is
    /// watched, a focus change or the pointer crossing into or out of a top-level window
    /// changes where the keys that follow it go.
    pub(super) fn focus_event(&self, ev: &XEvent, focus: &mut Focus) {
        let o = &mut focus.ordered;
        match ev {
            XEvent::CreateNotify(e) if e.parent == self.root => self.watch(e.window),
            XEvent::ReparentNotify(e) if e.parent == self.root => self.watch(e.window),
            XEvent::FocusIn(e) if e.event == self.root => {
                // Virtual: the focus went into a top-level window, whose own event follows.
                if !matches!(
                    e.detail,
                    NotifyDetail::VIRTUAL | NotifyDetail::NONLINEAR_VIRTUAL
                ) {
                    o.held = Held::Pointer;
                }
            }
            XEvent::FocusIn(e) if e.detail == NotifyDetail::POINTER => {
                o.under_pointer = Some(e.event)
            }
            XEvent::FocusIn(e) => o.held = Held::Window(e.event),
            XEvent::FocusOut(e)
                if o.held == Held::Window(e.event)
                    && !matches!(e.detail, NotifyDetail::INFERIOR | NotifyDetail::POINTER) =>
            {
                o.held = Held::Unknown
            }
            XEvent::EnterNotify(e) if e.mode != NotifyMode::GRAB && e.event != self.root => {
                o.under_pointer = Some(e.event)
            }
            XEvent::LeaveNotify(e)
                if e.mode != NotifyMode::GRAB
                    && e.detail != NotifyDetail::INFERIOR
                    && o.under_pointer == Some(e.event) =>
            {
                o.under_pointer = None
            }
            _ => return,
        }
        self.judge(o);
    }
}

/// The focused window as last told.
#[derive(Default)]
pub(super) struct Focus {
    pub(super) info: Option<WindowInfo>,
    pub(super) excluded: bool,
    /// Where the keys go as the event stream says, at the point of the stream read so far.
    ordered: Ordered,
}

#[derive(Default)]
struct Ordered {
    held: Held,
    /// The top-level window under the pointer.
    under_pointer: Option<Window>,
    /// Whether the window the keys go to is excluded.
    excluded: bool,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
enum Held {
    /// Not told yet (the focus left a window; the next event tells where it went).
    #[default]
    Unknown,
    /// In this top-level window.
    Window(Window),
    /// PointerRoot, None or the root window: the keys go to the window under the pointer.
    Pointer,
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
