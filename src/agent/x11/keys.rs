//! Keys as the user's keymap makes them: the text a press types at the current level, a named
//! special key (`[Enter]`), or a chord (`Ctrl+C`).

use xkeysym::Keysym;

/// Modifier keys held (and Caps Lock's state).
#[derive(Default)]
pub(super) struct Modifiers {
    pub(super) shift: bool,
    pub(super) ctrl: bool,
    pub(super) alt: bool,
    pub(super) super_: bool,
    pub(super) level3: bool,
    pub(super) caps: bool,
}

/// What a key press typed: its text at the current level, a named special key (`[Enter]`), or
/// a chord (`Ctrl+C`).
pub(super) fn name_key(syms: &[u32], m: &Modifiers) -> String {
    let pick = |i: usize| syms.get(i).copied().filter(|s| *s != 0);
    let base = pick(0).unwrap_or(0);
    let letter = Keysym::new(base)
        .key_char()
        .is_some_and(|c| c.is_alphabetic());
    let shifted = m.shift ^ (m.caps && letter);
    // At AltGr's levels Shift alone chooses the fourth; Caps Lock then capitalises a letter
    // found there (XKB's FOUR_LEVEL_SEMIALPHABETIC: AltGr+Q with Caps Lock on is `@`, not
    // the fourth level's `Ω`).
    let sym = if m.level3 {
        pick(if m.shift { 5 } else { 4 }).or(pick(shifted as usize))
    } else {
        pick(shifted as usize)
    }
    .or(pick(0))
    .unwrap_or(0);
    let caps_at_level3 = m.level3 && m.caps;
    let special = special_name(sym);
    if m.ctrl || m.alt || m.super_ {
        let mut out = String::new();
        for (held, name) in [
            (m.ctrl, "Ctrl+"),
            (m.alt, "Alt+"),
            (m.super_, "Super+"),
            (m.shift, "Shift+"),
        ] {
            if held {
                out.push_str(name);
            }
        }
        match special_name(base) {
            Some(n) => out.push_str(n.trim_start_matches('[').trim_end_matches(']')),
            None => match Keysym::new(base).key_char() {
                Some(c) => out.extend(c.to_uppercase()),
                None => out.push_str(&format!("0x{base:x}")),
            },
        }
        return out;
    }
    if let Some(n) = special {
        return n.to_owned();
    }
    match Keysym::new(sym).key_char() {
        Some(c) if caps_at_level3 && c.is_lowercase() => c.to_uppercase().collect(),
        Some(c) if !c.is_control() => c.to_string(),
        _ => match Keysym::new(sym).name() {
            Some(n) => format!("[{}]", n.trim_start_matches("XK_")),
            None => format!("[0x{sym:x}]"),
        },
    }
}

fn special_name(sym: u32) -> Option<&'static str> {
    use xkeysym::key;
    Some(match sym {
        key::Return | key::KP_Enter => "[Enter]",
        key::BackSpace => "[BackSpace]",
        key::Tab | key::ISO_Left_Tab => "[Tab]",
        key::Escape => "[Esc]",
        key::Delete | key::KP_Delete => "[Delete]",
        key::Insert => "[Insert]",
        key::Left => "[Left]",
        key::Right => "[Right]",
        key::Up => "[Up]",
        key::Down => "[Down]",
        key::Home => "[Home]",
        key::End => "[End]",
        key::Page_Up => "[PageUp]",
        key::Page_Down => "[PageDown]",
        key::F1 => "[F1]",
        key::F2 => "[F2]",
        key::F3 => "[F3]",
        key::F4 => "[F4]",
        key::F5 => "[F5]",
        key::F6 => "[F6]",
        key::F7 => "[F7]",
        key::F8 => "[F8]",
        key::F9 => "[F9]",
        key::F10 => "[F10]",
        key::F11 => "[F11]",
        key::F12 => "[F12]",
        key::Print => "[Print]",
        key::Menu => "[Menu]",
        _ => return None,
    })
}
