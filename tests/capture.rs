//! Real capture: X displays under Xvfb (with a cookie, as xrdp and X2Go run them), drawn and
//! typed into with xterm and xdotool, recorded by the agent's X11 source through a real
//! server, exported, and compared with what an independent screenshot (`import`) shows.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::child::ChildEnv;
use common::server::Backend;
use sealstream::agent::{self, AgentReport, Source};
use sealstream::config::{AgentConfig, CaptureConfig, CaptureSource};
use sealstream::export;
use sealstream::protocol::screen::decode_png;

/// An Xvfb display with a cookie of its own (no `-ac`): the agent must find the cookie
/// through the server's `-auth` argument, as a root service does.
struct Xvfb {
    number: u32,
    auth: PathBuf,
    proc: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Xvfb {
    fn start(width: u32, height: u32) -> Xvfb {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("Xauthority");
        let number = loop {
            let mut b = [0u8; 2];
            getrandom::fill(&mut b).unwrap();
            let n = 200 + u16::from_be_bytes(b) as u32 % 5000;
            if !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            {
                break n;
            }
        };
        let mut cookie = [0u8; 16];
        getrandom::fill(&mut cookie).unwrap();
        let ok = Command::new("xauth")
            .args(["-q", "-f"])
            .arg(&auth)
            .args(["add", &format!(":{number}"), ".", &hex::encode(cookie)])
            .status()
            .unwrap();
        assert!(ok.success(), "xauth add");
        let proc = Command::new("Xvfb")
            .arg(format!(":{number}"))
            .args(["-screen", "0", &format!("{width}x{height}x24")])
            .args(["-nolisten", "tcp", "-auth"])
            .arg(&auth)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed (.ci/run installs xvfb)");
        let x = Xvfb {
            number,
            auth,
            proc,
            _dir: dir,
        };
        for _ in 0..200 {
            if x.run("xdpyinfo", &[]).status.success() {
                return x;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Xvfb :{number} did not start");
    }

    fn display(&self) -> String {
        format!(":{}", self.number)
    }

    /// Run an X client on this display (with its cookie).
    fn run(&self, cmd: &str, args: &[&str]) -> std::process::Output {
        Command::new(cmd)
            .args(args)
            .env("DISPLAY", self.display())
            .env("XAUTHORITY", &self.auth)
            .output()
            .unwrap()
    }

    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&self, cmd: &str, args: &[&str]) -> std::process::Child {
        Command::new(cmd)
            .args(args)
            .env("DISPLAY", self.display())
            .env("XAUTHORITY", &self.auth)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// An xterm titled `title` at `geometry` (columns x rows + x + y), focused.
    fn xterm(&self, title: &str, geometry: &str) -> (std::process::Child, String) {
        let child = self.spawn("xterm", &["-T", title, "-geometry", geometry, "+sb"]);
        let id = self
            .ok("xdotool", &["search", "--sync", "--name", title])
            .lines()
            .next()
            .unwrap()
            .to_owned();
        self.focus(&id);
        (child, id)
    }

    fn focus(&self, window: &str) {
        self.ok("xdotool", &["windowfocus", "--sync", window]);
    }

    fn type_text(&self, text: &str) {
        self.ok("xdotool", &["type", "--delay", "30", text]);
        self.ok("xdotool", &["key", "Return"]);
    }

    /// The screen as `import` (ImageMagick) reads it, 8-bit RGB.
    fn screenshot(&self, out: &Path) -> (usize, usize, Vec<u8>) {
        let arg = format!("PNG24:{}", out.display());
        self.ok("import", &["-window", "root", "-depth", "8", &arg]);
        let data = std::fs::read(out).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&data));
        let reader = decoder.read_info().unwrap();
        let (w, h) = (reader.info().width, reader.info().height);
        (w as usize, h as usize, decode_png(&data, w as u16, h as u16).unwrap())
    }

    /// x, y, width, height of a window on the screen, its border included (as `xwininfo`
    /// tells: the corner is the border's, the size the inside's).
    fn geometry(&self, window: &str) -> (usize, usize, usize, usize) {
        let text = self.ok("xwininfo", &["-id", window]);
        let v = |k: &str| -> usize {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{k}:")))
                .unwrap_or_else(|| panic!("{k} in {text}"))
                .trim()
                .parse()
                .unwrap()
        };
        let b = v("Border width");
        (
            v("Absolute upper-left X") - b,
            v("Absolute upper-left Y") - b,
            v("Width") + 2 * b,
            v("Height") + 2 * b,
        )
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn capture_config(displays: &[&Xvfb]) -> CaptureConfig {
    CaptureConfig {
        source: CaptureSource::X11,
        displays: displays.iter().map(|x| x.display()).collect(),
        fps: 5.0,
        cursor: false,
        exclude_titles: vec!["secret*".into()],
        batch_ms: 200,
        discover_ms: 200,
        ..CaptureConfig::default()
    }
}

fn start_agent(
    cfg: AgentConfig,
    capture: CaptureConfig,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<AgentReport>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        agent::run(cfg, Source::X11(capture), rx, Duration::from_secs(20))
            .await
            .unwrap()
    });
    (tx, task)
}

/// Every exported session directory of `agent`, with its files read.
struct Session {
    frames: Vec<PathBuf>,
    keystrokes: String,
    activity: Vec<serde_json::Value>,
}

fn sessions(out: &Path, agent: &str) -> Vec<Session> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(out.join(agent)).unwrap().flatten() {
        let d = entry.path();
        let mut frames: Vec<PathBuf> = std::fs::read_dir(d.join("frames"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        frames.sort();
        all.push(Session {
            frames,
            keystrokes: std::fs::read_to_string(d.join("keystrokes.jsonl")).unwrap_or_default(),
            activity: std::fs::read_to_string(d.join("activity.jsonl"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        });
    }
    all
}

fn typed(keystrokes: &str) -> String {
    keystrokes
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["key"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn tree_has(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = tree_has(&p, needle) {
                return Some(f);
            }
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            return Some(p);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_x_displays_are_recorded_as_their_screenshots_show_with_keys_and_activity() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let a = Xvfb::start(800, 600);
    let b = Xvfb::start(640, 480);
    let (stop, agent) = start_agent(env.enroll("ts-01"), capture_config(&[&a, &b]));
    // Let the agent find both displays and send their first keyframes.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let public = "sealstream-x11-canary";
    let secret = "secret-x11-canary";
    let (_term, term) = a.xterm("public-term", "60x10+10+10");
    a.type_text(public);
    let (_vault, vault) = a.xterm("secret-vault", "40x6+420+380");
    a.type_text(secret);
    a.focus(&term);
    a.ok("xdotool", &["key", "ctrl+l"]);
    a.type_text("done");
    // Settle, then the independent screenshot; the screen does not change after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot_dir = tempfile::tempdir().unwrap();
    let (sw, sh, shot) = a.screenshot(&shot_dir.path().join("a.png"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let report = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("the agent stops after SIGTERM's equivalent")
        .unwrap();
    assert_eq!(report.unacked, 0, "everything acked");
    assert_eq!(report.sessions.len(), 2, "one session per display");

    let out = tempfile::tempdir().unwrap();
    let store = sealstream::storage::open_local(&env.store_dir()).unwrap();
    let exported = export::export(store.as_ref(), &[env.private_key()], None, out.path())
        .await
        .unwrap();
    for s in &exported.streams {
        assert_eq!(s.verdict, sealstream::inspect::Verdict::Ok, "{s:?}");
    }
    let all = sessions(out.path(), "ts-01");
    assert_eq!(all.len(), 2);
    let start = |s: &Session| {
        s.activity
            .iter()
            .find(|e| e["event"] == "session_start")
            .cloned()
            .expect("a session_start event")
    };
    let sa = all
        .iter()
        .find(|s| start(s)["display"] == a.display())
        .expect("display A's session");
    let sb = all
        .iter()
        .find(|s| start(s)["display"] == b.display())
        .expect("display B's session");
    assert_eq!(start(sa)["width"], 800);
    assert_eq!(start(sb)["height"], 480);
    for s in [sa, sb] {
        assert_eq!(
            s.activity.last().unwrap()["event"],
            "session_end",
            "{:?}",
            s.activity
        );
    }

    // Display B never changed: its keyframe is its only frame (idle sends nothing).
    assert_eq!(sb.frames.len(), 1, "{:?}", sb.frames);

    // The keys typed into the public terminal, with its title; none of the excluded one's.
    let keys = typed(&sa.keystrokes);
    assert!(
        keys.contains(&format!("{public}[Enter]")),
        "typed keys: {keys}"
    );
    assert!(keys.contains("Ctrl+L"), "typed keys: {keys}");
    assert!(sa.keystrokes.contains("\"title\":\"public-term\""));
    assert!(!keys.contains(secret), "an excluded window's keys: {keys}");
    assert!(
        sa.activity
            .iter()
            .any(|e| e["event"] == "focus" && e["title"] == "public-term"),
        "{:?}",
        sa.activity
    );
    assert!(
        sa.activity
            .iter()
            .any(|e| e["event"] == "focus" && e["excluded"] == true && e["title"] == ""),
        "{:?}",
        sa.activity
    );
    // No plaintext byte of the export (frames are pixels, not text: they are checked below)
    // holds the secret canary.
    assert_eq!(tree_has(out.path(), secret.as_bytes()), None);

    // The last frame is the screenshot, pixel for pixel, except the excluded window: black.
    let last = sa.frames.last().unwrap();
    let frame = decode_png(&std::fs::read(last).unwrap(), sw as u16, sh as u16)
        .unwrap_or_else(|e| panic!("{}: {e}", last.display()));
    let (vx, vy, vw, vh) = a.geometry(&vault);
    let inside = |x: usize, y: usize| x >= vx && x < vx + vw && y >= vy && y < vy + vh;
    let mut differ = 0;
    let mut vault_lit = 0;
    for y in 0..sh {
        for x in 0..sw {
            let i = (y * sw + x) * 3;
            if inside(x, y) {
                assert_eq!(&frame[i..i + 3], &[0, 0, 0], "excluded pixel {x},{y}");
                vault_lit += (shot[i..i + 3] != [0, 0, 0]) as usize;
            } else if frame[i..i + 3] != shot[i..i + 3] {
                differ += 1;
            }
        }
    }
    assert_eq!(differ, 0, "pixels differing from the screenshot");
    assert!(vault_lit > 100, "the screenshot shows the excluded window");
    env.stop().await;
}
