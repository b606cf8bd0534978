//! Keys as the user's keymap makes them: the text a press types at the current group (layout)
//! and level, a named special key (`[Enter]`), or a chord (`Ctrl+C`).
//!
//! With XKB (every current X server) the server's own map and state choose the keysym, as X
//! does for its clients: the key's type for the effective group picks the level from the
//! modifiers, and Caps Lock, where the type leaves it unused, capitalises what it gives. A dead
//! key or Compose is recorded as the key it is (`[dead_acute]`, `[Multi_key]`), not composed.
//! Without XKB the core mapping's first group and the modifiers tracked by their keys are used.

use xkeysym::Keysym;

/// The keyboard's state: without XKB the modifier keys held (and Caps Lock's state, read at
/// connect), with XKB the server's keymap and state.
#[derive(Default)]
pub(super) struct Modifiers {
    pub(super) shift: bool,
    pub(super) ctrl: bool,
    pub(super) alt: bool,
    pub(super) super_: bool,
    pub(super) level3: bool,
    pub(super) caps: bool,
    pub(super) xkb: Option<Xkb>,
}

/// A key type: the modifiers it looks at, and the level each combination of them chooses
/// (with the modifiers that combination leaves unused, "preserved").
pub(super) struct KeyType {
    pub(super) mask: u16,
    /// (modifiers, level, preserved) for each active entry.
    pub(super) levels: Vec<(u16, u8, u16)>,
}

/// A key's symbols: its type for each group, how an out-of-range group is brought into range
/// (XKB's group info byte), and `width` symbols per group.
pub(super) struct Key {
    pub(super) types: [u8; 4],
    pub(super) group_info: u8,
    pub(super) width: u8,
    pub(super) syms: Vec<u32>,
}

/// The server's XKB keymap and the keyboard's state as its StateNotify events tell.
#[derive(Default)]
pub(super) struct Xkb {
    pub(super) types: Vec<KeyType>,
    pub(super) min_keycode: u8,
    pub(super) keys: Vec<Key>,
    /// The effective group (0 is the first layout).
    pub(super) group: u8,
    /// The effective modifiers (as core events' state has them; XKB's "lookup" modifiers
    /// leave out Num Lock on Xvfb).
    pub(super) mods: u16,
    /// The real modifiers that Alt and Super (or Meta, Hyper) keys set.
    pub(super) alt_mask: u16,
    pub(super) super_mask: u16,
}

const SHIFT: u16 = 1;
const LOCK: u16 = 2;
const CONTROL: u16 = 4;

impl Xkb {
    /// The keysym `code` gives in the current state, the modifiers its type used up, and the
    /// symbol a chord with it is named by.
    pub(super) fn lookup(&self, code: u32) -> Option<(u32, u16, u32)> {
        let key = self
            .keys
            .get(code.checked_sub(u32::from(self.min_keycode))? as usize)?;
        // XKB has four groups at most; a server that says more is held to four.
        let groups = (key.group_info & 0x0f).min(4);
        if groups == 0 || key.width == 0 {
            return None;
        }
        let mut g = self.group;
        if g >= groups {
            g = match key.group_info & 0xc0 {
                // Clamp into range.
                0x40 => groups - 1,
                // Redirect into range: to the group in bits 4-5, or the first if that is out.
                0x80 => Some((key.group_info >> 4) & 3)
                    .filter(|r| *r < groups)
                    .unwrap_or(0),
                _ => g % groups,
            };
        }
        let ty = self
            .types
            .get(usize::from(*key.types.get(usize::from(g))?))?;
        let mods = self.mods & ty.mask;
        let (level, preserved) = ty
            .levels
            .iter()
            .find(|(m, _, _)| *m == mods)
            .map(|(_, l, p)| (*l, *p))
            .unwrap_or((0, 0));
        let row = usize::from(g) * usize::from(key.width);
        let at = |l: u8| {
            (l < key.width)
                .then(|| key.syms.get(row + usize::from(l)).copied())
                .flatten()
                .unwrap_or(0)
        };
        // A chord is named by the key's first level in the effective group, or if that is no
        // Latin-1 or special key (a Cyrillic layout's), in the first group where it is one,
        // as toolkits match shortcuts: Ctrl+C in either layout of `us,ru`.
        let latin = |s: u32| s != 0 && (s < 0x100 || special_name(s).is_some());
        let base = Some(at(0))
            .filter(|s| latin(*s))
            .or_else(|| {
                (0..usize::from(groups))
                    .filter_map(|g| key.syms.get(g * usize::from(key.width)).copied())
                    .find(|s| latin(*s))
            })
            .unwrap_or(at(0));
        Some((at(level), ty.mask & !preserved, base))
    }

    /// What a press of `code` typed in the current state, or `None` for a modifier or a
    /// group switch (which only change the state) and a key with no symbol here.
    pub(super) fn name(&self, code: u32) -> Option<String> {
        let (sym, consumed, base) = self.lookup(code)?;
        if sym == 0 || Keysym::new(sym).is_modifier_key() {
            return None;
        }
        let held = |mask: u16| mask != 0 && self.mods & mask != 0;
        let chord = [
            (held(CONTROL), "Ctrl+"),
            (held(self.alt_mask), "Alt+"),
            (held(self.super_mask), "Super+"),
        ];
        if chord.iter().any(|(h, _)| *h) {
            return Some(chord_name(&chord, held(SHIFT), base));
        }
        if let Some(n) = special_name(sym) {
            return Some(n.to_owned());
        }
        // Caps Lock where the key's type does not use it capitalises (as Xlib and xkbcommon
        // do): a letter at AltGr's level with Caps Lock on.
        let caps = self.mods & LOCK != 0 && consumed & LOCK == 0;
        Some(text_of(sym, caps))
    }
}

/// A chord: the modifiers held, then the key by its first-level symbol (`Ctrl+Shift+T`).
fn chord_name(held: &[(bool, &str)], shift: bool, base: u32) -> String {
    let mut out = String::new();
    for (h, name) in held.iter().chain([(shift, "Shift+")].iter()) {
        if *h {
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
    out
}

/// A symbol's text (capitalised if `caps`), or its name in brackets if it types none.
fn text_of(sym: u32, caps: bool) -> String {
    match Keysym::new(sym).key_char() {
        Some(c) if caps && c.is_lowercase() => c.to_uppercase().collect(),
        Some(c) if !c.is_control() => c.to_string(),
        _ => match Keysym::new(sym).name() {
            Some(n) => format!("[{}]", n.trim_start_matches("XK_")),
            None => format!("[0x{sym:x}]"),
        },
    }
}

/// Without XKB: what a key press typed: its text at the current level, a named special key (`[Enter]`), or
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
        let held = [(m.ctrl, "Ctrl+"), (m.alt, "Alt+"), (m.super_, "Super+")];
        return chord_name(&held, m.shift, base);
    }
    if let Some(n) = special {
        return n.to_owned();
    }
    text_of(sym, caps_at_level3)
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
        // The keypad's other level (Num Lock off) as the keys they stand for.
        key::KP_Home => "[Home]",
        key::KP_End => "[End]",
        key::KP_Left => "[Left]",
        key::KP_Right => "[Right]",
        key::KP_Up => "[Up]",
        key::KP_Down => "[Down]",
        key::KP_Prior => "[PageUp]",
        key::KP_Next => "[PageDown]",
        key::KP_Insert => "[Insert]",
        key::KP_Begin => "[Begin]",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xkeysym::key;

    const MOD2: u16 = 0x10; // Num Lock
    const MOD5: u16 = 0x80; // AltGr (ISO_Level3_Shift)

    /// xkeyboard-config's types: ONE_LEVEL, TWO_LEVEL, ALPHABETIC, KEYPAD and
    /// FOUR_LEVEL_SEMIALPHABETIC, with their real modifiers as the server resolves them.
    fn types() -> Vec<KeyType> {
        vec![
            KeyType {
                mask: 0,
                levels: vec![],
            },
            KeyType {
                mask: SHIFT,
                levels: vec![(SHIFT, 1, 0)],
            },
            KeyType {
                mask: SHIFT | LOCK,
                levels: vec![(SHIFT, 1, 0), (LOCK, 1, 0)],
            },
            KeyType {
                mask: SHIFT | MOD2,
                levels: vec![(SHIFT, 1, 0), (MOD2, 1, 0)],
            },
            KeyType {
                mask: SHIFT | LOCK | MOD5,
                levels: vec![
                    (SHIFT, 1, 0),
                    (LOCK, 1, 0),
                    (MOD5, 2, 0),
                    (SHIFT | MOD5, 3, 0),
                    (LOCK | MOD5, 2, LOCK),
                    (SHIFT | LOCK | MOD5, 3, LOCK),
                ],
            },
        ]
    }

    fn key(types: [u8; 4], group_info: u8, width: u8, syms: &[u32]) -> Key {
        Key {
            types,
            group_info,
            width,
            syms: syms.to_vec(),
        }
    }

    /// Keycodes 8..: Q of `us,ru`, 1 (one group, wrapped), KP_7, German Q and A, Return,
    /// Shift, a dead acute, ISO_Next_Group, and 1 again with clamped and redirected groups.
    fn keyboard(group: u8, mods: u16) -> Xkb {
        Xkb {
            types: types(),
            min_keycode: 8,
            keys: vec![
                key(
                    [2, 2, 0, 0],
                    2,
                    2,
                    &[key::q, key::Q, key::Cyrillic_shorti, key::Cyrillic_SHORTI],
                ),
                key([1, 0, 0, 0], 1, 2, &[key::_1, key::exclam]),
                key([3, 0, 0, 0], 1, 2, &[key::KP_Home, key::KP_7]),
                key(
                    [4, 0, 0, 0],
                    1,
                    4,
                    &[key::q, key::Q, key::at, key::Greek_OMEGA],
                ),
                key([4, 0, 0, 0], 1, 4, &[key::a, key::A, key::ae, key::AE]),
                key([0, 0, 0, 0], 1, 1, &[key::Return]),
                key([0, 0, 0, 0], 1, 1, &[key::Shift_L]),
                key([1, 0, 0, 0], 1, 2, &[key::dead_acute, key::dead_diaeresis]),
                key([0, 0, 0, 0], 1, 1, &[key::ISO_Next_Group]),
                key(
                    [1, 1, 1, 0],
                    0x40 | 2,
                    2,
                    &[key::_1, key::exclam, key::_2, key::at],
                ),
                key(
                    [1, 1, 1, 0],
                    0x80 | 2,
                    2,
                    &[key::_1, key::exclam, key::_2, key::at],
                ),
            ],
            group,
            mods,
            alt_mask: 0x08,
            super_mask: 0x40,
        }
    }

    fn typed(group: u8, mods: u16, code: u32) -> Option<String> {
        keyboard(group, mods).name(code)
    }

    #[test]
    fn the_effective_group_chooses_the_layout_and_the_type_the_level() {
        assert_eq!(typed(0, 0, 8).as_deref(), Some("q"));
        assert_eq!(typed(1, 0, 8).as_deref(), Some("й"));
        assert_eq!(typed(1, SHIFT, 8).as_deref(), Some("Й"));
        // Caps Lock is the ALPHABETIC type's: Lock gives the capital, Shift with Lock the
        // small letter again.
        assert_eq!(typed(1, LOCK, 8).as_deref(), Some("Й"));
        assert_eq!(typed(1, SHIFT | LOCK, 8).as_deref(), Some("й"));
        // Modifiers outside the type's (Num Lock) do not change the level.
        assert_eq!(typed(1, MOD2, 8).as_deref(), Some("й"));
        assert_eq!(typed(1, SHIFT | MOD2, 8).as_deref(), Some("Й"));
        // A key with one group gives it in the second too (wrapped into range); Caps Lock
        // does not touch a digit.
        assert_eq!(typed(1, 0, 9).as_deref(), Some("1"));
        assert_eq!(typed(1, SHIFT, 9).as_deref(), Some("!"));
        assert_eq!(typed(0, LOCK, 9).as_deref(), Some("1"));
        // Clamped: the third group is the last (the second, where wrapping gives the first);
        // redirected: the fourth to the first (where wrapping gives the second).
        assert_eq!(typed(2, 0, 17).as_deref(), Some("2"));
        assert_eq!(typed(3, 0, 18).as_deref(), Some("1"));
        assert_eq!(typed(3, SHIFT, 18).as_deref(), Some("!"));
        assert_eq!(typed(1, 0, 18).as_deref(), Some("2"));
    }

    /// A server that says a key has more groups than XKB's four (bits 0-3 hold up to 15) is
    /// held to four: no index past the key's four types.
    #[test]
    fn a_key_claiming_fifteen_groups_is_read_as_four() {
        let mut kb = keyboard(5, 0);
        kb.keys[0].group_info = 0x0f;
        kb.keys[0].syms.resize(2 * 15, key::q);
        // Group 5 of 4 wraps to group 2 (index 1): the Cyrillic level.
        assert_eq!(kb.name(8).as_deref(), Some("й"));
    }

    #[test]
    fn num_lock_makes_the_keypad_type_digits() {
        assert_eq!(typed(0, MOD2, 10).as_deref(), Some("7"));
        assert_eq!(typed(0, 0, 10).as_deref(), Some("[Home]"));
        // Shift undoes Num Lock on the keypad.
        assert_eq!(typed(0, MOD2 | SHIFT, 10).as_deref(), Some("[Home]"));
    }

    #[test]
    fn altgr_levels_and_caps_lock_where_the_type_leaves_it() {
        assert_eq!(typed(0, MOD5, 11).as_deref(), Some("@"));
        assert_eq!(typed(0, MOD5 | SHIFT, 11).as_deref(), Some("Ω"));
        assert_eq!(typed(0, MOD5 | LOCK, 11).as_deref(), Some("@"));
        assert_eq!(typed(0, MOD5, 12).as_deref(), Some("æ"));
        // Lock preserved at the third level: it capitalises what that level gives.
        assert_eq!(typed(0, MOD5 | LOCK, 12).as_deref(), Some("Æ"));
        assert_eq!(typed(0, LOCK, 12).as_deref(), Some("A"));
    }

    #[test]
    fn specials_dead_keys_modifiers_and_chords() {
        assert_eq!(typed(1, 0, 13).as_deref(), Some("[Enter]"));
        assert_eq!(typed(0, 0, 14), None, "a modifier only changes the state");
        assert_eq!(
            typed(0, 0, 16),
            None,
            "a group switch only changes the state"
        );
        assert_eq!(typed(0, 0, 15).as_deref(), Some("[dead_acute]"));
        assert_eq!(typed(0, SHIFT, 15).as_deref(), Some("[dead_diaeresis]"));
        assert_eq!(typed(9, 0, 300), None, "a keycode outside the map");
        // Chords by the Latin key in either layout.
        assert_eq!(typed(0, CONTROL, 8).as_deref(), Some("Ctrl+Q"));
        assert_eq!(typed(1, CONTROL, 8).as_deref(), Some("Ctrl+Q"));
        assert_eq!(
            typed(1, CONTROL | SHIFT | 0x08, 8).as_deref(),
            Some("Ctrl+Alt+Shift+Q")
        );
        assert_eq!(typed(0, 0x40, 13).as_deref(), Some("Super+Enter"));
        // AltGr is no chord.
        assert_eq!(typed(0, MOD5 | CONTROL, 11).as_deref(), Some("Ctrl+Q"));
    }
}
