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

mod discovery;
mod keymap;
mod lifecycle;
mod options;
mod privacy;
mod screens;

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

/// Export the whole store (as `export_all`), every stream complete: the export's report, its
/// directory and the sessions it holds for `agent`.
async fn export_complete(
    store_dir: &Path,
    key: sealstream::keys::PrivateKeyFile,
    agent: &str,
) -> (export::Report, tempfile::TempDir, Vec<Session>) {
    let (exported, out) = export_all(store_dir, key).await;
    for s in &exported.streams {
        assert_eq!(s.verdict, Verdict::Ok, "every stream complete: {s:?}");
    }
    let all = sessions(&out.path().join(agent));
    (exported, out, all)
}

/// The agent's report of session `s`, and that `s` holds all it recorded (`holds_all_recorded`).
fn holds_all_reported(s: &Session, report: &sealstream::agent::AgentReport) {
    let r = report
        .sessions
        .iter()
        .find(|r| r.session.to_string() == s.id)
        .expect("the agent reports the session");
    holds_all_recorded(s, r);
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
    decoded_updates(store_dir, key, session, |u| (u.keyframe, u.width, u.height)).await
}

/// What `seen` makes of each of a session's screen updates, decoded, in order.
async fn decoded_updates<T>(
    store_dir: &Path,
    key: &sealstream::keys::PrivateKeyFile,
    session: &str,
    seen: impl Fn(&sealstream::protocol::screen::Update<'_>) -> T,
) -> Vec<T> {
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
            out.push(seen(&update));
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

/// The keys of a session's `keystrokes.jsonl`, each as recorded, in order.
fn typed_keys(keystrokes: &str) -> Vec<String> {
    keystrokes
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["key"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The keys of a session's `keystrokes.jsonl` as one text.
fn typed(keystrokes: &str) -> String {
    typed_keys(keystrokes).concat()
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
        AgentProc::spawn_with(config, args, log, |c| {
            // Blocks from 128 KiB up (screens) mapped and given back when freed, so resident
            // memory tells what the agent holds: glibc otherwise raises this threshold as it
            // goes and keeps freed screens in its heaps, in steps of a screen at no set time.
            c.env("MALLOC_MMAP_THRESHOLD_", "131072");
        })
    }

    /// `spawn` recording display `x` alone (`--capture x11 --display`), once its log says it
    /// started recording.
    async fn recording(config: &Path, x: &Xvfb, log: PathBuf) -> AgentProc {
        let display = x.display();
        let agent = AgentProc::spawn(config, &["--capture", "x11", "--display", &display], log);
        agent.wait_count("recording started", 1).await;
        agent
    }

    /// As `spawn`, the command set up further by `setup` (its environment, directory).
    fn spawn_with(
        config: &Path,
        args: &[&str],
        log: PathBuf,
        setup: impl FnOnce(&mut Command),
    ) -> AgentProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealstream"));
        cmd.args(["agent", "--config"])
            .arg(config)
            .args(args)
            .env("SEALSTREAM_LOG", "info")
            .env("SEALSTREAM_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        setup(&mut cmd);
        AgentProc {
            proc: Some(cmd.spawn().unwrap()),
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
