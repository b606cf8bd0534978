//! Keyboard input: the keymap loaded (again on MappingNotify), and each XInput2 raw key
//! event turned into the text it typed, with the modifiers it sets tracked.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;

use super::keys::name_key;
use super::{X11Session, x_err};

impl X11Session {
    pub(super) fn load_keymap(&mut self) -> Result<(), String> {
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

    /// The text of a key press, or `None` for a modifier (which only changes state).
    pub(super) fn key(&mut self, code: u32, press: bool) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::keys::Modifiers;

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
        // German Q and A: AltGr's levels; Caps Lock does not choose the fourth there, it
        // capitalises a letter (as X does: AltGr+Q is @, AltGr+A is Æ with Caps Lock on).
        let q = [key::q, key::Q, key::q, key::Q, key::at, key::Greek_OMEGA];
        let a = [key::a, key::A, key::a, key::A, key::ae, key::AE];
        let level3 = |shift, caps| Modifiers {
            level3: true,
            shift,
            caps,
            ..Default::default()
        };
        assert_eq!(name_key(&q, &level3(false, false)), "@");
        assert_eq!(name_key(&q, &level3(true, false)), "Ω");
        assert_eq!(name_key(&q, &level3(false, true)), "@");
        assert_eq!(name_key(&q, &level3(true, true)), "Ω");
        assert_eq!(name_key(&a, &level3(false, false)), "æ");
        assert_eq!(name_key(&a, &level3(false, true)), "Æ");
    }
}
