//! Keyboard input: the keymap loaded (again when it changes), the keyboard's XKB state
//! followed (group and modifiers, from StateNotify events), and each XInput2 raw key event
//! turned into the text it typed in that state.

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xkb::{self, ConnectionExt as _};
use x11rb::protocol::xproto::ConnectionExt as _;

use super::keys::{Key, KeyType, Xkb, name_key};
use super::{X11Session, x_err};

/// The core keyboard, as XKB requests name it (XkbUseCoreKbd).
const CORE_KBD: xkb::DeviceSpec = 0x100;

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
        self.load_xkb()
    }

    /// XKB's keymap (key types, each key's groups) and the keyboard's state now, and its
    /// changes asked for; without XKB the core mapping serves.
    fn load_xkb(&mut self) -> Result<(), String> {
        let first = self.mods.xkb.is_none();
        if first {
            if self
                .conn
                .extension_information(xkb::X11_EXTENSION_NAME)
                .map_err(x_err)?
                .is_none()
            {
                return Ok(());
            }
            let used = self.conn.xkb_use_extension(1, 0).map_err(x_err)?.reply();
            if !used.is_ok_and(|r| r.supported) {
                return Ok(());
            }
            let state = xkb::StatePart::MODIFIER_STATE | xkb::StatePart::GROUP_STATE;
            let parts = xkb::MapPart::KEY_TYPES | xkb::MapPart::KEY_SYMS;
            self.conn
                .xkb_select_events(
                    CORE_KBD,
                    xkb::EventType::from(0u16),
                    xkb::EventType::NEW_KEYBOARD_NOTIFY | xkb::EventType::MAP_NOTIFY,
                    parts,
                    parts,
                    &xkb::SelectEventsAux::new().state_notify(xkb::SelectEventsAuxStateNotify {
                        affect_state: state,
                        state_details: state,
                    }),
                )
                .map_err(x_err)?;
        }
        let map = self
            .conn
            .xkb_get_map(
                CORE_KBD,
                xkb::MapPart::KEY_TYPES | xkb::MapPart::KEY_SYMS,
                xkb::MapPart::from(0u16),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                xkb::VMod::from(0u16),
                0,
                0,
                0,
                0,
                0,
                0,
            )
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let types = map
            .map
            .types_rtrn
            .unwrap_or_default()
            .into_iter()
            .map(|t| KeyType {
                mask: u16::from(t.mods_mask),
                levels: t
                    .map
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.active)
                    .map(|(i, e)| {
                        let kept = t.preserve.get(i).map_or(0, |p| u16::from(p.mask));
                        (u16::from(e.mods_mask), e.level, kept)
                    })
                    .collect(),
            })
            .collect();
        let keys = map
            .map
            .syms_rtrn
            .unwrap_or_default()
            .into_iter()
            .map(|k| Key {
                types: k.kt_index,
                group_info: k.group_info,
                width: k.width,
                syms: k.syms,
            })
            .collect();
        let state = self
            .conn
            .xkb_get_state(CORE_KBD)
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let (alt_mask, super_mask) = self.modifier_masks()?;
        self.mods.xkb = Some(Xkb {
            types,
            min_keycode: map.first_key_sym,
            keys,
            group: u8::from(state.group),
            mods: u16::from(state.mods),
            alt_mask,
            super_mask,
        });
        Ok(())
    }

    /// The real modifiers Alt (or Meta) and Super (or Hyper) keys set, from the modifier
    /// mapping (as Xlib finds them).
    fn modifier_masks(&self) -> Result<(u16, u16), String> {
        let map = self
            .conn
            .get_modifier_mapping()
            .map_err(x_err)?
            .reply()
            .map_err(x_err)?;
        let per = usize::from(map.keycodes_per_modifier()).max(1);
        let (mut alt, mut super_) = (0u16, 0u16);
        use xkeysym::key;
        for (i, codes) in map.keycodes.chunks(per).enumerate().take(8) {
            for sym in codes.iter().flat_map(|c| self.keysyms(u32::from(*c))) {
                match *sym {
                    key::Alt_L | key::Alt_R | key::Meta_L | key::Meta_R => alt |= 1 << i,
                    key::Super_L | key::Super_R | key::Hyper_L | key::Hyper_R => super_ |= 1 << i,
                    _ => {}
                }
            }
        }
        // Shift, Lock and Control are never Alt or Super.
        Ok((alt & !7, super_ & !7))
    }

    /// The keyboard's new XKB state (a StateNotify event): its effective group and modifiers.
    pub(super) fn xkb_state(&mut self, e: &xkb::StateNotifyEvent) {
        if let Some(x) = &mut self.mods.xkb {
            x.group = u8::from(e.group);
            x.mods = u16::from(e.mods);
        }
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
        if let Some(x) = &self.mods.xkb {
            return press.then(|| x.name(code)).flatten();
        }
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
