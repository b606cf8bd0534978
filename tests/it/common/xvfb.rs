//! X displays for tests: Xvfb with a cookie of its own (as xrdp and X2Go run them), X clients
//! (xterm, xdotool, `import`) run on it, and the agent's X11 source recording it in-process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealstream::agent::{self, AgentReport, Source};
use sealstream::config::{AgentConfig, CaptureConfig, CaptureSource};
use sealstream::protocol::screen::decode_png;

/// An Xvfb display with a cookie of its own (no `-ac`): the agent must find the cookie
/// through the server's `-auth` argument, as a root service does.
pub struct Xvfb {
    pub number: u32,
    pub auth: PathBuf,
    pub cookie: [u8; 16],
    pub proc: std::process::Child,
    /// Killed with SIGKILL: its socket and lock file are left behind (removed on drop).
    pub killed: bool,
    pub _dir: tempfile::TempDir,
}

/// A display number no server uses now.
pub fn free_number() -> u32 {
    loop {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).unwrap();
        let n = 200 + u16::from_be_bytes(b) as u32 % 5000;
        if !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            return n;
        }
    }
}

/// `cookie` for `display` added to the authority file `auth` (`xauth -f`).
pub fn xauth_add(auth: &Path, display: &str, cookie: [u8; 16]) {
    let ok = Command::new("xauth")
        .args(["-q", "-f"])
        .arg(auth)
        .args(["add", display, ".", &hex::encode(cookie)])
        .status()
        .unwrap();
    assert!(ok.success(), "xauth add");
}

impl Xvfb {
    pub fn start(width: u32, height: u32) -> Xvfb {
        Xvfb::launch(width, height, false)
    }

    /// Xvfb started as xrdp's sesman starts Xorg: in a directory of its own (the user's home)
    /// with `-auth` naming a file there relatively (`.Xauthority`).
    pub fn start_with_relative_auth(width: u32, height: u32) -> Xvfb {
        Xvfb::launch(width, height, true)
    }

    fn launch(width: u32, height: u32, relative_auth: bool) -> Xvfb {
        let dir = tempfile::tempdir().unwrap();
        let auth_name = if relative_auth {
            ".Xauthority"
        } else {
            "Xauthority"
        };
        let auth = dir.path().join(auth_name);
        let number = free_number();
        let mut cookie = [0u8; 16];
        getrandom::fill(&mut cookie).unwrap();
        xauth_add(&auth, &format!(":{number}"), cookie);
        let mut cmd = Command::new("Xvfb");
        if relative_auth {
            cmd.current_dir(dir.path());
        }
        let proc = cmd
            .arg(format!(":{number}"))
            .args(["-screen", "0", &format!("{width}x{height}x24")])
            // No reset when the last client leaves (as terminal servers run X): a reset would
            // drop RandR modes made by `xrandr` and refuse connections while it happens.
            .args(["-nolisten", "tcp", "-noreset", "-auth"])
            .arg(if relative_auth {
                Path::new(auth_name)
            } else {
                auth.as_path()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed (.ci/run installs xvfb)");
        let x = Xvfb {
            number,
            auth,
            cookie,
            proc,
            killed: false,
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

    pub fn display(&self) -> String {
        format!(":{}", self.number)
    }

    /// Run an X client on this display (with its cookie).
    pub fn run(&self, cmd: &str, args: &[&str]) -> std::process::Output {
        Command::new(cmd)
            .args(args)
            .env("DISPLAY", self.display())
            .env("XAUTHORITY", &self.auth)
            .output()
            .unwrap()
    }

    pub fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&self, cmd: &str, args: &[&str]) -> std::process::Child {
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
    pub fn xterm(&self, title: &str, geometry: &str) -> (std::process::Child, String) {
        let (child, id) = self.xterm_unfocused(title, geometry, &[]);
        self.focus(&id);
        (child, id)
    }

    /// An xterm titled `title` at `geometry`, not focused (`args` added); its window id.
    pub fn xterm_unfocused(
        &self,
        title: &str,
        geometry: &str,
        args: &[&str],
    ) -> (std::process::Child, String) {
        let mut all = vec!["-T", title, "-geometry", geometry, "+sb"];
        all.extend_from_slice(args);
        let child = self.spawn("xterm", &all);
        (child, self.find_window("--name", title))
    }

    /// The first visible window `xdotool search` finds by `by` (`--name`, `--class`)
    /// `pattern`, once there is one: its id.
    pub fn find_window(&self, by: &str, pattern: &str) -> String {
        // Visible: focusing a window not mapped yet is an error (BadMatch).
        self.ok(
            "xdotool",
            &["search", "--sync", "--onlyvisible", by, pattern],
        )
        .lines()
        .next()
        .unwrap()
        .to_owned()
    }

    pub fn focus(&self, window: &str) {
        self.ok("xdotool", &["windowfocus", "--sync", window]);
    }

    pub fn type_text(&self, text: &str) {
        self.ok("xdotool", &["type", "--delay", "30", text]);
        self.ok("xdotool", &["key", "Return"]);
    }

    /// The screen as `import` (ImageMagick) reads it, 8-bit RGB.
    pub fn screenshot(&self, out: &Path) -> (usize, usize, Vec<u8>) {
        let arg = format!("PNG24:{}", out.display());
        self.ok("import", &["-window", "root", "-depth", "8", &arg]);
        let data = std::fs::read(out).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&data));
        let reader = decoder.read_info().unwrap();
        let (w, h) = (reader.info().width, reader.info().height);
        (
            w as usize,
            h as usize,
            decode_png(&data, w as u16, h as u16).unwrap(),
        )
    }

    /// The screen as `import` reads it (as `screenshot`), the file in a directory of its own.
    pub fn shot(&self) -> (usize, usize, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        self.screenshot(&dir.path().join("x.png"))
    }

    /// An X connection of the test's own to this display, with its cookie.
    pub fn connect(&self) -> x11rb::rust_connection::RustConnection {
        let stream =
            std::os::unix::net::UnixStream::connect(format!("/tmp/.X11-unix/X{}", self.number))
                .unwrap();
        let (stream, _) = x11rb::rust_connection::DefaultStream::from_unix_stream(stream).unwrap();
        x11rb::rust_connection::RustConnection::connect_to_stream_with_auth_info(
            stream,
            0,
            b"MIT-MAGIC-COOKIE-1".to_vec(),
            self.cookie.to_vec(),
        )
        .unwrap()
    }

    /// x, y, width, height of a window on the screen, its border included (as `xwininfo`
    /// tells: the corner is the border's, the size the inside's).
    pub fn geometry(&self, window: &str) -> (usize, usize, usize, usize) {
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

    /// The X server crashes (SIGKILL): its clients' connections drop; its socket stays.
    pub fn kill9(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
        self.killed = true;
    }

    /// The screen's size as `xdpyinfo` tells it.
    pub fn size(&self) -> (usize, usize) {
        let text = self.ok("xdpyinfo", &[]);
        let dims = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("dimensions:"))
            .unwrap_or_else(|| panic!("dimensions in {text}"));
        let (w, h) = dims
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('x')
            .unwrap();
        (w.parse().unwrap(), h.parse().unwrap())
    }

    /// Resize the screen as a remote desktop client does, through RandR: a mode of this size
    /// on Xvfb's one output (`screen`), then that mode set (the screen follows it). Xvfb
    /// allows sizes up to the one it started with.
    pub fn resize(&self, width: u32, height: u32) {
        let name = format!("{width}x{height}");
        let (w, h) = (width.to_string(), height.to_string());
        self.ok(
            "xrandr",
            &[
                "--newmode",
                &name,
                "0",
                &w,
                "0",
                "0",
                "0",
                &h,
                "0",
                "0",
                "0",
            ],
        );
        self.ok("xrandr", &["--addmode", "screen", &name]);
        self.ok("xrandr", &["--output", "screen", "--mode", &name]);
        assert_eq!(
            self.size(),
            (width as usize, height as usize),
            "xrandr resized"
        );
    }

    /// Resize the screen back and forth between `sizes` (modes the output has, the first
    /// the current size) as fast as RandR takes it, for `time`, as a client of its own does
    /// (not a process per resize, as `xrandr` is); returns how many resizes.
    pub fn resize_storm(&self, sizes: [(u16, u16); 2], time: Duration) -> usize {
        use x11rb::connection::Connection;
        use x11rb::protocol::randr::{ConnectionExt as _, Rotation};
        let conn = self.connect();
        let root = conn.setup().roots[0].root;
        let res = conn
            .randr_get_screen_resources(root)
            .unwrap()
            .reply()
            .unwrap();
        let mode = |(w, h): (u16, u16)| {
            res.modes
                .iter()
                .find(|m| (m.width, m.height) == (w, h))
                .unwrap_or_else(|| panic!("no {w}x{h} mode"))
                .id
        };
        let crtc = |size| {
            let r = conn
                .randr_set_crtc_config(
                    res.crtcs[0],
                    x11rb::CURRENT_TIME,
                    res.config_timestamp,
                    0,
                    0,
                    mode(size),
                    Rotation::ROTATE0,
                    &res.outputs[..1],
                )
                .unwrap()
                .reply()
                .unwrap();
            assert_eq!(r.status, x11rb::protocol::randr::SetConfig::SUCCESS);
        };
        let screen = |(w, h): (u16, u16)| {
            conn.randr_set_screen_size(root, w, h, w as u32 / 4, h as u32 / 4)
                .unwrap()
                .check()
                .unwrap();
        };
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < time {
            let (from, to) = (sizes[n % 2], sizes[(n + 1) % 2]);
            // The screen holds the output's mode: it grows before the mode does and shrinks
            // after.
            if to.0 >= from.0 {
                screen(to);
                crtc(to);
            } else {
                crtc(to);
                screen(to);
            }
            n += 1;
        }
        n
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM: Xvfb removes its socket and lock file; SIGKILL if it does not go.
        if matches!(self.proc.try_wait(), Ok(None)) {
            // SAFETY: a signal to our own child, which has not been waited for.
            unsafe { libc::kill(self.proc.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.proc.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.proc.kill();
        }
        let _ = self.proc.wait();
        if self.killed {
            // What the crashed server left (no other server can have this number while
            // they are there).
            let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{}", self.number));
            let _ = std::fs::remove_file(format!("/tmp/.X{}-lock", self.number));
        }
    }
}

/// Recording `displays` as the capture tests do: 5 screens a second at most, no pointer drawn
/// (so a frame can equal `import`'s screenshot), windows titled `secret*` excluded, events
/// sealed every 200 ms, displays looked for every 200 ms.
pub fn capture_config(displays: &[&Xvfb]) -> CaptureConfig {
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

/// The agent recording X displays in-process (`Source::X11`): stop it by sending `true`, then
/// await its report.
pub fn start_agent(
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
