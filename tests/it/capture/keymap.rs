//! Keys as the keyboard's XKB state makes them on a real display: a second layout (group)
//! switched by its toggle key and by xdotool, Num Lock on the keypad, the state the agent
//! finds at connect, a chord and a dead key; and the pointer drawn into frames (`cursor = true`, the default) where
//! it is and nowhere else.

use super::*;
use sealstream::config::CaptureConfig;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::{DefaultStream, RustConnection};

/// A connection of the test's own to `x` (with its cookie).
fn connect(x: &Xvfb) -> RustConnection {
    let socket = format!("/tmp/.X11-unix/X{}", x.number);
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let (stream, _) = DefaultStream::from_unix_stream(stream).unwrap();
    RustConnection::connect_to_stream_with_auth_info(
        stream,
        0,
        b"MIT-MAGIC-COOKIE-1".to_vec(),
        x.cookie.to_vec(),
    )
    .unwrap()
}

/// Press and release each keycode through XTEST (with `held` held down around them), as a
/// keyboard does: unlike xdotool, which locks the group a symbol is found in while it types,
/// this leaves the keyboard's state as the keys make it.
fn press_with(x: &Xvfb, held: &[u8], codes: &[u8]) {
    let conn = connect(x);
    let root = conn.setup().roots[0].root;
    let (down, up) = (xproto::KEY_PRESS_EVENT, xproto::KEY_RELEASE_EVENT);
    let events = held
        .iter()
        .map(|c| (down, *c))
        .chain(codes.iter().flat_map(|c| [(down, *c), (up, *c)]))
        .chain(held.iter().map(|c| (up, *c)));
    for (kind, code) in events {
        conn.xtest_fake_input(kind, code, 0, root, 0, 0, 0).unwrap();
        // Each event handled before the next.
        conn.get_input_focus().unwrap().reply().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn press(x: &Xvfb, codes: &[u8]) {
    press_with(x, &[], codes);
}

/// Keycodes on Xvfb's evdev keymap.
const Q: u8 = 24;
const W: u8 = 25;
const E: u8 = 26;
const CAPS: u8 = 66;
const SHIFT: u8 = 50;
const CONTROL: u8 = 37;
const C: u8 = 54;
const A: u8 = 38;
const APOSTROPHE: u8 = 48;
const NUM_LOCK: u8 = 77;
const KP_7: u8 = 79;
const KP_1: u8 = 87;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_the_layout_group_and_num_lock_as_x_does() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let (_term, _) = x.xterm("keymap-term", "60x10+10+10");
    // Two layouts, the Caps Lock key switching between them (a common setup); the second
    // layout and Num Lock already on when the agent connects: it reads the state then.
    x.ok(
        "setxkbmap",
        &[
            "-layout",
            "us,ru",
            "-option",
            "",
            "-option",
            "grp:caps_toggle",
        ],
    );
    press(&x, &[CAPS, NUM_LOCK]);
    let (stop, agent) = start_agent(env.enroll("ts-keymap"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The same keys in the second layout, then the keypad with Num Lock on.
    press(&x, &[Q, W, E, KP_7, KP_1]);
    // Back to the first layout and Num Lock off: the same keys again.
    press(&x, &[CAPS, NUM_LOCK, Q, W, E, KP_7, KP_1]);
    // Shift's level in the second layout.
    press(&x, &[CAPS]);
    press_with(&x, &[SHIFT], &[Q]);
    // A chord there is named by the key's Latin letter (as toolkits match shortcuts).
    press_with(&x, &[CONTROL], &[C]);
    press(&x, &[CAPS]);
    // xdotool types a Cyrillic text by locking the group its symbols are in while it types.
    x.type_text("йцу qwe");
    // A dead key is recorded as itself, then the key it would compose with.
    x.ok(
        "setxkbmap",
        &["-layout", "us", "-variant", "intl", "-option", ""],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    press(&x, &[APOSTROPHE, A]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, all) = export_complete(&env.store_dir(), env.private_key(), "ts-keymap").await;
    assert_eq!(all.len(), 1, "one session");
    holds_all_reported(&all[0], &report);
    let keys: Vec<String> = all[0]
        .keystrokes
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        keys.concat(),
        "йцу71qwe[Home][End]ЙCtrl+Cйцу qwe[Enter][dead_acute]a",
        "typed: {keys:?}"
    );
    env.stop().await;
}

/// Pixels (x, y) where the exported frame at `path` differs from the screenshot `shot`.
fn differences(path: &Path, (w, h, shot): &(usize, usize, Vec<u8>)) -> Vec<(usize, usize)> {
    assert_eq!(png_size(path), (*w, *h), "{}", path.display());
    let frame = decode_png(&std::fs::read(path).unwrap(), *w as u16, *h as u16).unwrap();
    frame
        .chunks_exact(3)
        .zip(shot.chunks_exact(3))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| (i % w, i / w))
        .collect()
}

/// Whether every difference lies within the 32×32 square around the pointer at `(px, py)`
/// (a cursor is at most that size here, its hotspot inside it).
fn all_near(diffs: &[(usize, usize)], (px, py): (usize, usize)) -> bool {
    diffs
        .iter()
        .all(|&(x, y)| x.abs_diff(px) < 32 && y.abs_diff(py) < 32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pointer_is_drawn_where_it_is_and_nowhere_else() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(480, 360);
    // One colour under the pointer: what differs from it there is the cursor.
    x.ok("xsetroot", &["-solid", "#336699"]);
    let first = (100, 120);
    let second = (380, 250);
    x.ok("xdotool", &["mousemove", "100", "120"]);
    let capture = CaptureConfig {
        cursor: true,
        ..capture_config(&[&x])
    };
    let (stop, agent) = start_agent(env.enroll("ts-cursor"), capture);
    let dir = tempfile::tempdir().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot_first = x.screenshot(&dir.path().join("first.png"));
    x.ok("xdotool", &["mousemove", "380", "250"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shot_second = x.screenshot(&dir.path().join("second.png"));
    let report = stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, all) = export_complete(&env.store_dir(), env.private_key(), "ts-cursor").await;
    assert_eq!(all.len(), 1, "one session");
    holds_all_reported(&all[0], &report);
    let frames = &all[0].frames;
    // The screenshots hold no pointer and only the background where it is.
    for (shot, (px, py)) in [(&shot_first, first), (&shot_second, second)] {
        let at = (py * shot.0 + px) * 3;
        assert_eq!(
            &shot.2[at..at + 3],
            &[0x33, 0x66, 0x99],
            "background at the pointer"
        );
    }
    // Some frame shows the pointer at the first place and nothing else different.
    let at_first: Vec<_> = frames
        .iter()
        .map(|f| differences(f, &shot_first))
        .filter(|d| !d.is_empty() && all_near(d, first))
        .collect();
    assert!(
        !at_first.is_empty(),
        "no frame with the pointer drawn at {first:?} alone: differences {:?}",
        frames
            .iter()
            .map(|f| differences(f, &shot_first).len())
            .collect::<Vec<_>>()
    );
    // The last frame: the pointer at the second place only (the first place clean again).
    let last = differences(frames.last().unwrap(), &shot_second);
    assert!(!last.is_empty(), "the pointer is drawn in the last frame");
    assert!(
        all_near(&last, second),
        "the last frame differs away from the pointer at {second:?}: {:?}",
        &last[..last.len().min(20)]
    );
    assert!(
        last.len() >= 20,
        "a cursor's worth of pixels drawn: {}",
        last.len()
    );
    env.stop().await;
}
