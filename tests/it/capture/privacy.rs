//! Privacy exclusions (docs/capture.md "Privacy exclusions") where they are easy to get wrong:
//! the focus at PointerRoot (no window manager: keys go to the window under the pointer), a
//! client window nested under frame windows (as a reparenting window manager puts it), windows
//! excluded by class, and keys typed just before the focus moves. Each shows a canary typed
//! into an excluded window reached it (a file its shell wrote) and is in no byte of the export,
//! the store or the spool, and the excluded window's area black in every exported frame.

use super::*;
use sealstream::config::CaptureConfig;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Letters only the canaries use: no key typed into a public window has them.
const CANARY_LETTERS: [char; 2] = ['z', 'q'];

/// The keyboard focus back at PointerRoot (as a display without a window manager starts):
/// keys go to the window under the pointer.
fn focus_pointer_root(conn: &RustConnection) {
    let pointer_root = 1u32;
    conn.set_input_focus(
        xproto::InputFocus::POINTER_ROOT,
        pointer_root,
        x11rb::CURRENT_TIME,
    )
    .unwrap()
    .check()
    .unwrap();
    let focus = conn.get_input_focus().unwrap().reply().unwrap().focus;
    assert_eq!(focus, pointer_root, "the focus is PointerRoot");
}

/// `xdotool mousemove` arguments: the middle of window `id`.
fn middle(x: &Xvfb, id: &str) -> [String; 2] {
    let (wx, wy, ww, wh) = x.geometry(id);
    [(wx + ww / 2).to_string(), (wy + wh / 2).to_string()]
}

fn mousemove(x: &Xvfb, to: &[String; 2]) {
    x.ok("xdotool", &["mousemove", "--sync", &to[0], &to[1]]);
}

/// Have the shell in the window that has the keyboard write `canary` to `file`, and wait until
/// it has: the canary reached that window.
fn type_canary_into_shell(x: &Xvfb, canary: &str, file: &Path) {
    x.type_text(&format!("echo {canary} > {}", file.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(file).map_or(true, |t| t.trim() != canary) {
        assert!(
            Instant::now() < deadline,
            "the excluded window's shell did not get the canary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Area = (usize, usize, usize, usize);

fn inside((ax, ay, aw, ah): Area, x: usize, y: usize) -> bool {
    x >= ax && x < ax + aw && y >= ay && y < ay + ah
}

/// Every exported frame of `s` is black throughout `area` (the screen is `w`×`h`).
fn black_in_every_frame(s: &Session, area: Area, (w, h): (usize, usize)) {
    assert!(!s.frames.is_empty());
    for f in &s.frames {
        let rgb = decode_png(&std::fs::read(f).unwrap(), w as u16, h as u16).unwrap();
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) * 3;
                if inside(area, x, y) {
                    assert_eq!(
                        &rgb[i..i + 3],
                        &[0, 0, 0],
                        "{}: excluded pixel {x},{y} shows",
                        f.display()
                    );
                }
            }
        }
    }
}

/// How many pixels of `area` a screenshot shows not black (the window is there to hide).
fn lit((w, _, rgb): &Shot, area: Area) -> usize {
    rgb.chunks_exact(3)
        .enumerate()
        .filter(|(i, p)| inside(area, i % w, i / w) && *p != [0, 0, 0])
        .count()
}

/// A screenshot: width, height, RGB.
type Shot = (usize, usize, Vec<u8>);

/// An excluded window: its id, its area on the screen, how many of the area's pixels a
/// screenshot shows (not black) at the least, and the canary typed into it.
struct Secret<'a> {
    window: &'a str,
    area: Area,
    shown: usize,
    canary: &'a str,
}

/// With the agent (`name`, recording as `capture` says) started on `x`: the canary typed into
/// the shell of the excluded window `secret`, then public words into `public`; a screenshot,
/// the agent stopped, the store exported. Its one session holds all the agent recorded and the
/// public words, passes `check`, and shows nothing of the secret window (`hidden`).
async fn canary_then_public_words(
    env: &ChildEnv,
    name: &str,
    x: &Xvfb,
    capture: CaptureConfig,
    secret: Secret<'_>,
    public: &str,
    check: impl FnOnce(&Session),
) {
    let (stop, agent) = start_agent(env.enroll(name), capture);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let written = tempfile::tempdir().unwrap();
    x.focus(secret.window);
    type_canary_into_shell(x, secret.canary, &written.path().join("canary"));
    x.focus(public);
    x.type_text("echo public-words");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shot = x.shot();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = stop_acked(stop, agent, "the agent stops").await;

    let (_, out, all) = export_complete(&env.store_dir(), env.private_key(), name).await;
    assert_eq!(all.len(), 1);
    let s = &all[0];
    holds_all_recorded(s, &report.sessions[0]);
    assert!(typed(&s.keystrokes).contains("echo public-words[Enter]"));
    check(s);
    let dirs: [&Path; 2] = [out.path(), &env.store_dir()];
    hidden(s, secret.canary, &dirs, &shot, secret.area, secret.shown);
}

/// The excluded window's `canary` nowhere (`nowhere`: not in the keys, not in `dirs`), and its
/// `area`, which the screenshot `shot` shows (more than `shown` pixels not black), black in
/// every exported frame of `s`.
fn hidden(s: &Session, canary: &str, dirs: &[&Path], shot: &Shot, area: Area, shown: usize) {
    nowhere(s, canary, dirs);
    assert!(lit(shot, area) > shown, "the screenshot shows it");
    black_in_every_frame(s, area, (shot.0, shot.1));
}

/// Nothing of `canary` anywhere: not in the keys recorded (not even one of its letters), not
/// in any byte of the export, the store or the other directories given (a spool).
fn nowhere(s: &Session, canary: &str, dirs: &[&Path]) {
    let keys = typed(&s.keystrokes);
    assert!(
        !keys.contains(CANARY_LETTERS),
        "keys typed into an excluded window were recorded: {keys}"
    );
    for d in dirs {
        assert_eq!(tree_has(d, canary.as_bytes()), None, "{}", d.display());
    }
}

#[actix_rt::test]
async fn keys_typed_under_the_pointer_at_pointer_root_focus_are_not_sent_nor_spooled() {
    let mut env = Env::start(Backend::Sqlite, true).await;
    let cfg = env.enroll("tp-pointer");
    let dir = env.dir.path().join("tp-pointer-agent");
    let config = write_agent_toml(&dir, &cfg, "exclude_titles = [\"secret*\"]\n");
    let x = Xvfb::start(800, 600);
    let (_secret, secret) = x.xterm_unfocused("secret-pointer", "60x10+10+10", &[]);
    let (_public, public) = x.xterm_unfocused("public-pointer", "60x10+10+300", &[]);
    let conn = x.connect();
    focus_pointer_root(&conn);
    let (on_secret, on_public) = (middle(&x, &secret), middle(&x, &public));
    let secret_area = x.geometry(&secret);
    let agent = AgentProc::recording(&config, &x, dir.join("agent.log")).await;
    mousemove(&x, &on_public);
    x.type_text("echo public-before");

    // The server goes away: what is recorded now is spooled until it is back.
    let addr = env.server().quic_addr;
    env.server.take().unwrap().shutdown().await;
    let canary = "zq-pointer-canary-5qz";
    let written = tempfile::tempdir().unwrap();
    mousemove(&x, &on_secret);
    type_canary_into_shell(&x, canary, &written.path().join("canary"));
    mousemove(&x, &on_public);
    x.type_text("echo public-during-the-outage");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spool_dir = dir.join("spool");
    let spooled = std::fs::read_dir(&spool_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
        .map(|e| e.metadata().unwrap().len())
        .sum::<u64>();
    assert!(spooled > 0, "the outage's chunks are spooled");
    assert_eq!(tree_has(&spool_dir, canary.as_bytes()), None);

    env.cfg.listen = addr;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    x.type_text("echo public-after-the-outage");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shot = x.shot();
    let (status, stdout, _) = agent.term().await;
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains(" 0 not acked yet"), "{stdout}");

    // Every chunk is exported, the spooled ones with the rest, complete.
    let (_, out, all) = export_complete(&env.store_dir(), env.private_key(), "tp-pointer").await;
    assert_eq!(all.len(), 1);
    let s = &all[0];
    let keys = typed(&s.keystrokes);
    for public in [
        "echo public-before[Enter]",
        "echo public-during-the-outage[Enter]",
        "echo public-after-the-outage[Enter]",
    ] {
        assert!(keys.contains(public), "{public} in {keys}");
    }
    assert!(s.keystrokes.contains("\"title\":\"public-pointer\""));
    assert!(
        s.activity
            .iter()
            .any(|e| e["event"] == "focus" && e["excluded"] == true),
        "{:?}",
        s.activity
    );
    let dirs: [&Path; 3] = [out.path(), &env.store_dir(), &spool_dir];
    hidden(s, canary, &dirs, &shot, secret_area, 100);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_nested_under_frame_windows_is_black_in_every_frame() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(800, 600);
    // A reparenting window manager's nesting, without one: a frame (a top-level window with
    // no properties), a wrapper in it (with a WM_CLASS of its own, as some frames have), and
    // the client in that, an xterm with WM_STATE (as a window manager sets on its clients).
    let conn = x.connect();
    let root = conn.setup().roots[0].root;
    let frame_area = (400, 300, 380, 260);
    let window = |parent, (x, y, w, h): Area, colour: u32| {
        let id = conn.generate_id().unwrap();
        let aux = xproto::CreateWindowAux::new().background_pixel(colour);
        conn.create_window(
            0,
            id,
            parent,
            x as i16,
            y as i16,
            w as u16,
            h as u16,
            0,
            xproto::WindowClass::INPUT_OUTPUT,
            0,
            &aux,
        )
        .unwrap();
        conn.map_window(id).unwrap();
        id
    };
    let frame = window(root, frame_area, 0x3366aa);
    let wrapper = window(frame, (6, 24, 368, 230), 0xaa3366);
    conn.change_property8(
        xproto::PropMode::REPLACE,
        wrapper,
        xproto::AtomEnum::WM_CLASS,
        xproto::AtomEnum::STRING,
        b"wrapper\0Wrapper\0",
    )
    .unwrap();
    conn.flush().unwrap();
    let (_nested, nested) = x.xterm_unfocused(
        "secret-nested",
        "40x8+4+4",
        &["-into", &wrapper.to_string()],
    );
    let wm_state = conn
        .intern_atom(false, b"WM_STATE")
        .unwrap()
        .reply()
        .unwrap()
        .atom;
    let client: u32 = nested.parse().unwrap();
    conn.change_property32(
        xproto::PropMode::REPLACE,
        client,
        wm_state,
        wm_state,
        &[1, 0],
    )
    .unwrap()
    .check()
    .unwrap();
    let (_public, public) = x.xterm_unfocused("public-next-door", "40x8+10+10", &[]);
    let secret = Secret {
        window: &nested,
        area: frame_area,
        shown: 1000,
        canary: "zq-nested-canary-7zq",
    };
    canary_then_public_words(
        &env,
        "tp-nested",
        &x,
        capture_config(&[&x]),
        secret,
        &public,
        |_| {},
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_excluded_by_class_are_black_in_every_frame_and_their_keys_not_recorded() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(800, 600);
    // Its title is like any other; its class (not its instance name, `xterm`) is excluded.
    let (_vault, vault) = (
        x.spawn(
            "xterm",
            &[
                "-class",
                "SecretClass",
                "-T",
                "plain-title",
                "-geometry",
                "50x8+380+300",
                "+sb",
            ],
        ),
        x.find_window("--class", "SecretClass"),
    );
    let (_public, public) = x.xterm("public-classes", "50x8+10+10");
    let mut capture = capture_config(&[&x]);
    capture.exclude_titles.clear();
    capture.exclude_classes = vec!["secretclass".into()];
    let vault_area = x.geometry(&vault);
    let secret = Secret {
        window: &vault,
        area: vault_area,
        shown: 100,
        canary: "zq-class-canary-3zq",
    };
    canary_then_public_words(&env, "tp-class", &x, capture, secret, &public, |s| {
        assert!(
            s.activity.iter().any(|e| e["event"] == "focus"
                && e["excluded"] == true
                && e["class"] == "SecretClass"
                && e["title"] == ""),
            "{:?}",
            s.activity
        );
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_typed_just_before_the_focus_moves_away_are_judged_by_the_focus_they_had() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(800, 600);
    let (_vault, vault) = x.xterm_unfocused("secret-race", "60x10+10+10", &[]);
    let (_public, public) = x.xterm_unfocused("public-race", "60x10+10+300", &[]);
    let (on_vault, on_public) = (middle(&x, &vault), middle(&x, &public));
    let (stop, agent) = start_agent(env.enroll("tp-race"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The focus set: keys typed into the excluded window and the focus moved to the public
    // one at once, one xdotool command (`--args 1`: the text is one argument, then the next
    // command), before the agent can have read the keys.
    let burst = "zqzqzqzqzqzqzqzqzqzq";
    for _ in 0..5 {
        x.ok(
            "xdotool",
            &[
                "windowfocus",
                "--sync",
                &vault,
                "type",
                "--delay",
                "0",
                "--args",
                "1",
                burst,
                "windowfocus",
                &public,
            ],
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    x.type_text("echo public-focused");
    // The focus at PointerRoot: the same with the pointer moved.
    let conn = x.connect();
    focus_pointer_root(&conn);
    for _ in 0..5 {
        x.ok(
            "xdotool",
            &[
                "mousemove",
                "--sync",
                &on_vault[0],
                &on_vault[1],
                "type",
                "--delay",
                "0",
                "--args",
                "1",
                burst,
                "mousemove",
                &on_public[0],
                &on_public[1],
            ],
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    mousemove(&x, &on_public);
    x.type_text("echo public-pointed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_acked(stop, agent, "the agent stops").await;

    let (_, out) = export_all(&env.store_dir(), env.private_key()).await;
    let all = sessions(&out.path().join("tp-race"));
    assert_eq!(all.len(), 1);
    let s = &all[0];
    let keys = typed(&s.keystrokes);
    assert!(keys.contains("echo public-focused[Enter]"), "{keys}");
    assert!(keys.contains("echo public-pointed[Enter]"), "{keys}");
    assert!(
        !keys.contains(CANARY_LETTERS),
        "keys typed into the excluded window were recorded: {keys}"
    );
    env.stop().await;
}
