//! Real capture: X displays under Xvfb (with a cookie, as xrdp and X2Go run them), drawn and
//! typed into with xterm and xdotool, recorded by the agent's X11 source through a real
//! server, exported, and compared with what an independent screenshot (`import`) shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::child::ChildEnv;
use crate::common::server::{Backend, Env};
use crate::common::xvfb::{Xvfb, capture_config, start_agent};
use sealstream::agent::{SessionReport, spool};
use sealstream::config::AgentConfig;
use sealstream::export;
use sealstream::inspect::Verdict;
use sealstream::protocol::screen::{decode_png, png_name};
use sealstream::protocol::{SessionId, StreamId};
use sha2::{Digest, Sha256};

/// One exported session directory, with its files read.
struct Session {
    /// The session id (the directory's name).
    id: String,
    frames: Vec<PathBuf>,
    keystrokes: String,
    activity: Vec<serde_json::Value>,
}

impl Session {
    fn event(&self, name: &str) -> Option<&serde_json::Value> {
        self.activity.iter().find(|e| e["event"] == name)
    }

    fn display(&self) -> serde_json::Value {
        self.event("session_start").expect("a session_start event")["display"].clone()
    }
}

/// Every session directory under `dir` (an agent's directory in an export).
fn sessions(dir: &Path) -> Vec<Session> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let d = entry.path();
        let mut frames: Vec<PathBuf> = std::fs::read_dir(d.join("frames"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        frames.sort();
        all.push(Session {
            id: entry.file_name().to_string_lossy().into_owned(),
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

/// Export the whole store into a new directory.
/// Stop an in-process agent (as SIGTERM would) and wait for it: it must stop within 60 s
/// (`why` says what that proves) with every chunk acked.
async fn stop_acked(
    stop: tokio::sync::watch::Sender<bool>,
    agent: tokio::task::JoinHandle<sealstream::agent::AgentReport>,
    why: &str,
) -> sealstream::agent::AgentReport {
    let _ = stop.send(true);
    let report = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect(why)
        .unwrap();
    assert_eq!(report.unacked, 0, "everything acked");
    report
}

async fn export_all(
    store_dir: &Path,
    key: sealstream::keys::PrivateKeyFile,
) -> (export::Report, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let store = sealstream::storage::open_local(store_dir).unwrap();
    let report = export::export(store.as_ref(), &[key], None, out.path())
        .await
        .unwrap();
    (report, out)
}

/// Nothing the agent recorded for a session is missing from its export: every screen update
/// it reports, as the screen it makes, in order, and every keystroke line.
fn holds_all_recorded(s: &Session, r: &SessionReport) {
    let names: Vec<String> = s
        .frames
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let recorded: Vec<String> = r.frames.iter().map(|(n, _)| png_name(n)).collect();
    assert_eq!(names, recorded, "session {}: the frames recorded", s.id);
    assert_eq!(
        Sha256::digest(s.keystrokes.as_bytes()).as_slice(),
        r.keystrokes_sha256,
        "session {}: the keystrokes recorded",
        s.id
    );
}

/// A PNG file's width and height.
fn png_size(path: &Path) -> (usize, usize) {
    let data = std::fs::read(path).unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(&data))
        .read_info()
        .unwrap();
    (reader.info().width as usize, reader.info().height as usize)
}

/// A session's screen updates as the store holds them, decrypted here (export composites
/// them into screens, which hides which were keyframes): (keyframe, width, height) in order.
async fn screen_updates(
    store_dir: &Path,
    key: &sealstream::keys::PrivateKeyFile,
    session: &str,
) -> Vec<(bool, u16, u16)> {
    use sealstream::crypto::{Dek, StreamKey};
    use sealstream::inspect::{self, Filter};
    use sealstream::protocol::payload::Frame;
    use sealstream::protocol::screen::Update;
    let store = sealstream::storage::open_local(store_dir).unwrap();
    let scan = inspect::scan(store.as_ref(), &Filter::default(), |_| {})
        .await
        .unwrap();
    let mut out = Vec::new();
    for ((agent, s, _), chunks) in &scan.streams {
        if s.to_string() != session {
            continue;
        }
        for copies in chunks.values() {
            let c = &copies[0];
            if c.kind != sealstream::protocol::Kind::Frame {
                break;
            }
            let bytes = inspect::read_chunk_bytes(store.as_ref(), &scan, c)
                .await
                .unwrap();
            let chunk = inspect::chunk_from_bytes(bytes, &c.digest, c.seq).unwrap();
            let dek = Dek::unwrap(
                &scan.records[&(agent.clone(), c.dek_id)],
                &key.key,
                key.kek_id,
            )
            .unwrap();
            let plain = StreamKey::for_chunk(&dek, &chunk.header)
                .open(&chunk)
                .unwrap();
            if plain.is_empty() {
                continue;
            }
            let update = Update::decode(Frame::decode(&plain).unwrap().image).unwrap();
            out.push((update.keyframe, update.width, update.height));
        }
    }
    out
}

/// Pixels of the exported frame at `path` that differ from the screenshot `shot`.
fn differing_pixels(path: &Path, (w, h, shot): &(usize, usize, Vec<u8>)) -> usize {
    assert_eq!(png_size(path), (*w, *h), "{}", path.display());
    let frame = decode_png(&std::fs::read(path).unwrap(), *w as u16, *h as u16)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    frame
        .chunks_exact(3)
        .zip(shot.chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count()
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
    let report = stop_acked(stop, agent, "the agent stops after SIGTERM's equivalent").await;
    assert_eq!(report.sessions.len(), 2, "one session per display");

    let out = tempfile::tempdir().unwrap();
    let store = sealstream::storage::open_local(&env.store_dir()).unwrap();
    let exported = export::export(store.as_ref(), &[env.private_key()], None, out.path())
        .await
        .unwrap();
    for s in &exported.streams {
        assert_eq!(s.verdict, sealstream::inspect::Verdict::Ok, "{s:?}");
    }
    let all = sessions(&out.path().join("ts-01"));
    assert_eq!(all.len(), 2);
    let start = |s: &Session| {
        s.event("session_start")
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

/// `agent.toml` in `dir` for the enrolled `cfg`: a spool in `dir/spool` and `[capture]`
/// recording X displays as the tests above do, with `extra` added to `[capture]`.
fn write_agent_toml(dir: &Path, cfg: &AgentConfig, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "server = \"{}\"\nserver_pins = [\"{}\"]\ncert = \"{}\"\nkey = \"{}\"\nkek = \"{}\"\n\
             spool_dir = \"spool\"\nspool_sync_ms = 0\nreconnect_ms = 100\n\n\
             [capture]\nsource = \"x11\"\nfps = 5.0\ncursor = false\nbatch_ms = 200\n\
             discover_ms = 200\n{extra}",
            cfg.server,
            cfg.server_pins[0],
            cfg.cert.display(),
            cfg.key.display(),
            cfg.kek.display()
        ),
    )
    .unwrap();
    path
}

/// `sealstream agent` as a child process, its log (standard error) in a file.
struct AgentProc {
    /// None once waited for.
    proc: Option<std::process::Child>,
    log: PathBuf,
}

impl AgentProc {
    fn spawn(config: &Path, args: &[&str], log: PathBuf) -> AgentProc {
        let proc = Command::new(env!("CARGO_BIN_EXE_sealstream"))
            .args(["agent", "--config"])
            .arg(config)
            .args(args)
            .env("SEALSTREAM_LOG", "info")
            .env("SEALSTREAM_LOG_FORMAT", "text")
            // Blocks from 128 KiB up (screens) mapped and given back when freed, so resident
            // memory tells what the agent holds: glibc otherwise raises this threshold as it
            // goes and keeps freed screens in its heaps, in steps of a screen at no set time.
            .env("MALLOC_MMAP_THRESHOLD_", "131072")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        AgentProc {
            proc: Some(proc),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines saying `message`.
    fn count(&self, message: &str) -> usize {
        self.log().lines().filter(|l| l.contains(message)).count()
    }

    /// Wait (up to 30 s) until the log has `n` lines saying `message`.
    async fn wait_count(&self, message: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(message) < n {
            assert!(
                Instant::now() < deadline,
                "no {n} lines {message:?} in the agent's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").id()
    }

    fn kill9(&mut self) {
        let mut proc = self.proc.take().expect("running");
        proc.kill().unwrap();
        proc.wait().unwrap();
    }

    /// SIGTERM, as systemd stops it; its exit status and standard output, and how long it
    /// took to exit (killed, and the test failed, if it takes a minute).
    async fn term(mut self) -> (std::process::ExitStatus, String, Duration) {
        use std::io::Read;
        let mut proc = self.proc.take().expect("running");
        // SAFETY: a signal to our own child, which has not been waited for.
        unsafe { libc::kill(proc.id() as i32, libc::SIGTERM) };
        let asked = Instant::now();
        let status = loop {
            if let Some(status) = proc.try_wait().unwrap() {
                break status;
            }
            if asked.elapsed() > Duration::from_secs(60) {
                let _ = proc.kill();
                let _ = proc.wait();
                panic!(
                    "the agent did not exit within 60 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = asked.elapsed();
        let mut stdout = String::new();
        proc.stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        (status, stdout, took)
    }

    /// (resident memory KiB, open file descriptors, threads).
    fn resources(&self) -> (u64, usize, u64) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        (field("VmRSS:"), fds, field("Threads:"))
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            let _ = proc.kill();
            let _ = proc.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_server_killed_mid_session_ends_its_session_complete_and_the_agent_goes_on() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let mut a = Xvfb::start(640, 480);
    let b = Xvfb::start(640, 480);
    let (stop, agent) = start_agent(env.enroll("ts-crash"), capture_config(&[&a, &b]));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (_doomed, _) = a.xterm("doomed-term", "40x8+10+10");
    a.type_text("typed-before-the-crash");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let crashed_ms = sealstream::crypto::now_us() / 1000;
    a.kill9();
    // Display B is still recorded after A's server is gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_survivor, _) = b.xterm("survivor-term", "40x8+10+10");
    b.type_text("typed-after-the-crash");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop_ms = sealstream::crypto::now_us() / 1000;
    let asked = Instant::now();
    let _ = stop.send(true);
    let report = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("the agent stops (no capture thread hangs on the dead display)")
        .unwrap();
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the agent took {took:?} to stop"
    );
    assert_eq!(report.unacked, 0, "everything acked");
    assert_eq!(report.sessions.len(), 2, "one session per display");

    let (exported, out) = export_all(&env.store_dir(), env.private_key()).await;
    assert_eq!(exported.streams.len(), 6, "three streams per session");
    for s in &exported.streams {
        assert_eq!(s.verdict, Verdict::Ok, "every stream complete: {s:?}");
    }
    let all = sessions(&out.path().join("ts-crash"));
    let sa = all
        .iter()
        .find(|s| s.display() == a.display())
        .expect("display A's session");
    let sb = all
        .iter()
        .find(|s| s.display() == b.display())
        .expect("display B's session");
    // A's session ended when its server died, and said why; B's when the agent stopped.
    let end = sa.activity.last().unwrap();
    assert_eq!(end["event"], "session_end", "{:?}", sa.activity);
    let why = end["reason"].as_str().unwrap();
    assert!(why.starts_with("display closed"), "{why}");
    let ended = end["ts"].as_i64().unwrap();
    assert!(
        ended >= crashed_ms && ended < stop_ms,
        "A's session ended at {ended}, between the crash ({crashed_ms}) and the stop ({stop_ms})"
    );
    let end = sb.activity.last().unwrap();
    assert_eq!(end["event"], "session_end", "{:?}", sb.activity);
    assert_eq!(end["reason"], "agent stopping");
    assert!(typed(&sa.keystrokes).contains("typed-before-the-crash"));
    assert!(typed(&sb.keystrokes).contains("typed-after-the-crash"));
    // Nothing recorded is missing, on either display.
    for s in [sa, sb] {
        let r = report
            .sessions
            .iter()
            .find(|r| r.session.to_string() == s.id)
            .expect("the agent reports the session");
        holds_all_recorded(s, r);
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_resized_mid_session_is_recorded_from_a_keyframe_at_its_new_size() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(1024, 768);
    let (_term, _) = x.xterm("resize-term", "60x10+10+10");
    let (stop, agent) = start_agent(env.enroll("ts-resize"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    x.type_text("typed-before-the-resize");
    tokio::time::sleep(Duration::from_secs(1)).await;
    x.resize(800, 600);
    tokio::time::sleep(Duration::from_secs(1)).await;
    x.type_text("typed-after-the-resize");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot_dir = tempfile::tempdir().unwrap();
    let shot = x.screenshot(&shot_dir.path().join("x.png"));
    assert_eq!((shot.0, shot.1), (800, 600));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = stop_acked(stop, agent, "the agent stops").await;

    let (exported, out) = export_all(&env.store_dir(), env.private_key()).await;
    for s in &exported.streams {
        assert_eq!(s.verdict, Verdict::Ok, "{s:?}");
    }
    let all = sessions(&out.path().join("ts-resize"));
    assert_eq!(all.len(), 1, "a resize does not end the session");
    let s = &all[0];
    assert_eq!(s.activity.last().unwrap()["reason"], "agent stopping");
    let resize = s.event("resize").expect("a resize event");
    assert_eq!(
        (&resize["width"], &resize["height"]),
        (&800.into(), &600.into())
    );
    assert!(typed(&s.keystrokes).contains("typed-after-the-resize"));
    // The screens before the resize are 1024x768, every one after it 800x600 (the first of
    // them a keyframe of the new screen: compositing would fail otherwise), and the last is
    // the screenshot.
    let sizes: Vec<(usize, usize)> = s.frames.iter().map(|f| png_size(f)).collect();
    let at = sizes
        .iter()
        .position(|&d| d == (800, 600))
        .unwrap_or_else(|| panic!("no frame at the new size: {sizes:?}"));
    assert!(at > 0, "{sizes:?}");
    assert!(sizes[..at].iter().all(|&d| d == (1024, 768)), "{sizes:?}");
    assert!(sizes[at..].iter().all(|&d| d == (800, 600)), "{sizes:?}");
    assert!(
        sizes.len() > at + 1,
        "screens after the resize's: {sizes:?}"
    );
    assert_eq!(differing_pixels(s.frames.last().unwrap(), &shot), 0);
    holds_all_recorded(s, &report.sessions[0]);
    // As sent: the first update at the new size is a keyframe (a reader seeking there
    // decodes it alone, not the updates since the session's first keyframe).
    let updates = screen_updates(&env.store_dir(), &env.private_key(), &s.id).await;
    assert_eq!(updates.len(), sizes.len(), "{updates:?}");
    assert_eq!(updates[0], (true, 1024, 768), "{updates:?}");
    assert_eq!(updates[at], (true, 800, 600), "{updates:?}");
    env.stop().await;
}

/// What a killed agent's spool holds, read from its files: per stream, the highest sequence
/// number spooled and the chunks the ack ledger does not name (with their SHA-256).
#[derive(Default)]
struct Spooled {
    last_seq: BTreeMap<(SessionId, StreamId), u64>,
    unacked: BTreeMap<(SessionId, StreamId), BTreeMap<u64, [u8; 32]>>,
}

fn read_spool(dir: &Path) -> Spooled {
    let acked = std::fs::read(dir.join("ledger"))
        .map(|b| spool::scan_ledger(&b).acked)
        .unwrap_or_default();
    let mut out = Spooled::default();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "spool") {
            continue;
        }
        for c in spool::scan_file(&std::fs::read(&path).unwrap()).chunks {
            let h = &c.header;
            let last = out.last_seq.entry((h.session, h.stream)).or_default();
            *last = (*last).max(h.seq);
            if !acked.contains(&(h.session, h.stream, h.seq)) {
                out.unacked
                    .entry((h.session, h.stream))
                    .or_default()
                    .insert(h.seq, Sha256::digest(c.bytes()).into());
            }
        }
    }
    out
}

#[actix_rt::test]
async fn an_agent_killed_mid_session_resends_its_spool_and_records_a_new_session_on_restart() {
    let mut env = Env::start(Backend::Sqlite, true).await;
    let cfg = env.enroll("ts-restart");
    let dir = env.dir.path().join("ts-restart-agent");
    let config = write_agent_toml(&dir, &cfg, "");
    let x = Xvfb::start(640, 480);
    let (_term, _) = x.xterm("restart-term", "60x10+10+10");
    let display = x.display();
    let args = ["--capture", "x11", "--display", &display];

    let mut first = AgentProc::spawn(&config, &args, dir.join("first.log"));
    first.wait_count("recording started", 1).await;
    x.type_text("sent-before-the-outage");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The server goes away: what the agent records now is sealed and spooled, not acked;
    // then the agent is killed mid-session.
    let addr = env.server().quic_addr;
    env.server.take().unwrap().shutdown().await;
    x.type_text("spooled-during-the-outage");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill9();
    let spooled = read_spool(&dir.join("spool"));
    let unacked: usize = spooled.unacked.values().map(|c| c.len()).sum();
    assert!(
        unacked > 0,
        "the killed agent left unacked chunks in its spool"
    );

    env.cfg.listen = addr;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    let second = AgentProc::spawn(&config, &args, dir.join("second.log"));
    second.wait_count("recording started", 1).await;
    x.type_text("typed-after-the-restart");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = dir.join("second.log");
    let (status, stdout, _) = second.term().await;
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {stdout}\n{log}");
    assert!(stdout.contains(" 0 not acked yet"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "spool: {unacked} chunks recovered from the last run"
        )),
        "the {unacked} unacked chunks of the killed run were resent: {stdout}"
    );

    // Every chunk the killed agent sealed is stored, each once, the spooled ones with the
    // bytes it spooled.
    let store = sealstream::storage::open_local(&env.store_dir()).unwrap();
    let scan = sealstream::inspect::scan(
        store.as_ref(),
        &sealstream::inspect::Filter::default(),
        |_| {},
    )
    .await
    .unwrap();
    let me = sealstream::protocol::AgentId::new("ts-restart").unwrap();
    for (&(session, stream), &last) in &spooled.last_seq {
        let held = &scan.streams[&(me.clone(), session, stream)];
        assert_eq!(
            held.keys().copied().collect::<Vec<_>>(),
            (0..=last).collect::<Vec<_>>(),
            "{session}/{}: every chunk sealed is stored",
            stream.0
        );
        assert!(held.values().all(|copies| copies.len() == 1));
        for (seq, digest) in spooled
            .unacked
            .get(&(session, stream))
            .into_iter()
            .flatten()
        {
            assert_eq!(&held[seq][0].digest, digest, "{session}/{}/{seq}", stream.0);
        }
    }

    // Two sessions of the one display: the killed agent's, cut short (no final chunks, so
    // export sets it apart as incomplete) with what it typed during the outage, and the new
    // agent's, complete.
    let (exported, out) = export_all(&env.store_dir(), env.private_key()).await;
    let cut = sessions(&out.path().join(export::QUARANTINE_DIR).join("ts-restart"));
    let whole = sessions(&out.path().join("ts-restart"));
    assert_eq!((cut.len(), whole.len()), (1, 1));
    let (cut, whole) = (&cut[0], &whole[0]);
    assert_ne!(cut.id, whole.id);
    for s in &exported.streams {
        let want = if s.session == cut.id {
            Verdict::Incomplete
        } else {
            Verdict::Ok
        };
        assert_eq!(s.verdict, want, "{s:?}");
    }
    assert_eq!(exported.streams.len(), 6, "{:?}", exported.streams);
    assert_eq!(cut.display(), display);
    assert_eq!(whole.display(), display);
    let keys = typed(&cut.keystrokes);
    assert!(keys.contains("sent-before-the-outage"), "{keys}");
    assert!(keys.contains("spooled-during-the-outage"), "{keys}");
    assert!(cut.event("session_end").is_none());
    assert!(!cut.frames.is_empty());
    assert!(typed(&whole.keystrokes).contains("typed-after-the-restart"));
    assert_eq!(whole.activity.last().unwrap()["event"], "session_end");
    assert_eq!(whole.activity.last().unwrap()["reason"], "agent stopping");
    assert!(!whole.frames.is_empty());
    env.stop().await;
}

/// How much the agent's resident memory may grow from the third round to the tenth (14
/// displays later). Measured on this machine with 1024x768 screens: 30 to 110 KiB, the
/// allocator settling and the 1 to 5 KiB of bookkeeping the agent keeps per ended session
/// (its streams' queues, its session report with an entry per frame: too little to tell from
/// the noise here). What a display holds while recorded is far more than 512 KiB / 14 =
/// 36 KiB: its screen read buffer (3 MiB, shared with the X server), the captured screen
/// (2.25 MiB), the encoder's tile digests, its thread's stack; keeping any one of them after
/// the display goes fails this.
const RSS_SLACK_KIB: u64 = 512;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_displays_coming_and_going_leak_no_memory_or_descriptors() {
    const ROUNDS: usize = 10;
    const AT_ONCE: usize = 2;
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let cfg = env.enroll("ts-churn");
    let dir = env.dir.path().join("ts-churn-agent");
    // The agent looks for displays in a directory of its own, where each of this test's
    // servers' sockets is linked while it runs (other tests' servers are not its business).
    let sockets = dir.join("x11-unix");
    std::fs::create_dir_all(&sockets).unwrap();
    let config = write_agent_toml(
        &dir,
        &cfg,
        &format!("socket_dir = \"{}\"\n", sockets.display()),
    );
    let agent = AgentProc::spawn(&config, &["--capture", "x11"], dir.join("agent.log"));
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let mut xs: Vec<Xvfb> = (0..AT_ONCE).map(|_| Xvfb::start(1024, 768)).collect();
        for x in &xs {
            std::os::unix::fs::symlink(
                format!("/tmp/.X11-unix/X{}", x.number),
                sockets.join(format!("X{}", x.number)),
            )
            .unwrap();
        }
        agent
            .wait_count("recording started", AT_ONCE * (round + 1))
            .await;
        for (i, x) in xs.iter().enumerate() {
            let colour = ["red", "green", "blue", "yellow"][(round + i) % 4];
            x.ok("xsetroot", &["-solid", colour]);
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Half the servers crash, half exit.
        for (i, x) in xs.iter_mut().enumerate() {
            std::fs::remove_file(sockets.join(format!("X{}", x.number))).unwrap();
            if i % 2 == 0 {
                x.kill9();
            }
        }
        drop(xs);
        agent
            .wait_count("recording ended", AT_ONCE * (round + 1))
            .await;
        // Let the final chunks be acked and the capture threads' memory go back.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        samples.push(agent.resources());
    }
    let log = agent.log.clone();
    let (status, stdout, _) = agent.term().await;
    eprintln!("(RSS KiB, fds, threads) after each round: {samples:?}");
    assert!(
        status.success(),
        "{stdout}\n{}",
        std::fs::read_to_string(log).unwrap()
    );
    assert!(stdout.contains(" 0 not acked yet"), "{stdout}");

    // After the first rounds (the allocator's arenas and the runtime's threads made), nothing
    // grows with each display that comes and goes.
    let (base, last) = (samples[2], samples[ROUNDS - 1]);
    assert!(
        last.1 <= base.1,
        "open descriptors grew from {} to {}: {samples:?}",
        base.1,
        last.1
    );
    assert!(
        last.0 <= base.0 + RSS_SLACK_KIB,
        "resident memory grew from {} to {} KiB: {samples:?}",
        base.0,
        last.0
    );
    // Threads: the runtime's blocking pool keeps a few idle ones for a while; a capture
    // thread left behind per display would be 14 more.
    assert!(
        last.2 <= base.2 + 4,
        "threads grew from {} to {}: {samples:?}",
        base.2,
        last.2
    );
    let (exported, out) = export_all(&env.store_dir(), env.private_key()).await;
    for s in &exported.streams {
        assert_eq!(s.verdict, Verdict::Ok, "{s:?}");
    }
    assert_eq!(
        sessions(&out.path().join("ts-churn")).len(),
        ROUNDS * AT_ONCE,
        "each display recorded as one session"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_resized_over_and_over_stays_one_session() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(1024, 768);
    let (_term, _) = x.xterm("storm-term", "60x10+10+10");
    x.resize(800, 600);
    let mut capture = capture_config(&[&x]);
    capture.fps = 30.0;
    let (stop, agent) = start_agent(env.enroll("ts-storm"), capture);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A remote desktop client's window dragged to and fro: the screen resized continually.
    let resizes = tokio::task::block_in_place(|| {
        x.resize_storm([(800, 600), (1024, 768)], Duration::from_secs(3))
    });
    eprintln!("{resizes} resizes");
    x.type_text("typed-after-the-storm");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot_dir = tempfile::tempdir().unwrap();
    let shot = x.screenshot(&shot_dir.path().join("x.png"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_acked(stop, agent, "the agent stops").await;

    let (exported, out) = export_all(&env.store_dir(), env.private_key()).await;
    for s in &exported.streams {
        assert_eq!(s.verdict, Verdict::Ok, "{s:?}");
    }
    let all = sessions(&out.path().join("ts-storm"));
    let ends: Vec<String> = all
        .iter()
        .filter_map(|s| s.event("session_end")?["reason"].as_str())
        .map(|r| r.chars().take(160).collect())
        .collect();
    assert_eq!(all.len(), 1, "resizes do not end the session: {ends:#?}");
    let s = &all[0];
    assert_eq!(s.activity.last().unwrap()["reason"], "agent stopping");
    assert!(
        s.activity.iter().filter(|e| e["event"] == "resize").count() >= 2,
        "{:?}",
        s.activity
    );
    assert_eq!(differing_pixels(s.frames.last().unwrap(), &shot), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_pause_file_exists_nothing_is_recorded_and_activity_says_so() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let pause = env.dir.path().join("pause");
    let mut capture = capture_config(&[&x]);
    capture.pause_file = Some(pause.clone());
    let (stop, agent) = start_agent(env.enroll("ts-pause"), capture);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_term, _) = x.xterm("paused-term", "60x10+10+10");
    x.type_text("before-the-pause");
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&pause, b"").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused_canary = "typed-while-paused-7c1e";
    x.type_text(paused_canary);
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::remove_file(&pause).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    x.type_text("after-the-pause");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_acked(stop, agent, "the agent stops").await;
    let (_, out) = export_all(&env.store_dir(), env.private_key()).await;
    let all = sessions(&out.path().join("ts-pause"));
    assert_eq!(all.len(), 1);
    let s = &all[0];
    let keys = typed(&s.keystrokes);
    assert!(
        keys.contains("before-the-pause") && keys.contains("after-the-pause"),
        "{keys}"
    );
    assert!(
        !keys.contains(paused_canary),
        "keys typed while paused: {keys}"
    );
    let events: Vec<&str> = s
        .activity
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|e| *e == "paused" || *e == "resumed")
        .collect();
    assert_eq!(events, ["paused", "resumed"], "{:?}", s.activity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_that_cannot_be_opened_does_not_stop_the_others() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    // The agent's socket directory: the real display, a socket nobody listens on, and one
    // whose "server" accepts and never answers.
    let sockets = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        format!("/tmp/.X11-unix/X{}", x.number),
        sockets.path().join(format!("X{}", x.number)),
    )
    .unwrap();
    drop(std::os::unix::net::UnixListener::bind(sockets.path().join("X1")).unwrap());
    let _silent = std::os::unix::net::UnixListener::bind(sockets.path().join("X2")).unwrap();
    let mut capture = capture_config(&[]);
    capture.socket_dir = sockets.path().to_owned();
    let (stop, agent) = start_agent(env.enroll("ts-others"), capture);
    // The silent server holds the search up to its 10 s timeout at most.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (_term, _) = x.xterm("others-term", "60x10+10+10");
    x.type_text("recorded-beside-a-dead-display");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_acked(
        stop,
        agent,
        "a display that never answers does not keep the agent from stopping",
    )
    .await;
    let (_, out) = export_all(&env.store_dir(), env.private_key()).await;
    let all = sessions(&out.path().join("ts-others"));
    assert_eq!(all.len(), 1, "one session: the display that opened");
    assert_eq!(all[0].display(), x.display());
    let keys = typed(&all[0].keystrokes);
    assert!(keys.contains("recorded-beside-a-dead-display"), "{keys}");
}
