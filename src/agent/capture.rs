//! Capture sources: user sessions fed by the synthetic generator, by replayed files, or live
//! by a platform source (`x11`), each with a frames stream and a keystrokes stream (and, live,
//! an activity stream).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::synthetic::{self, Rng, SyntheticSpec};
use super::{Agent, AgentError, Queue, SessionReport};
use crate::crypto::now_us;
use crate::protocol::payload::Frame;
use crate::protocol::{Kind, SessionId};
use crate::recorder::{self, ACTIVITY_STREAM, FRAMES_STREAM, KEYSTROKES_STREAM, KeystrokeBatcher};

/// One user session being recorded.
struct User {
    report: SessionReport,
    frames: Arc<Queue>,
    keys: Arc<Queue>,
    keys_hash: Sha256,
    /// Live sources only.
    activity: Option<Arc<Queue>>,
}

impl User {
    fn new(agent: &Agent, label: String) -> Self {
        let session = SessionId::random();
        User {
            report: SessionReport {
                session,
                user: label,
                frames: Vec::new(),
                keystrokes_sha256: [0; 32],
                plaintext_bytes: 0,
            },
            frames: agent.add_stream(agent.recorder.open_stream(
                session,
                FRAMES_STREAM,
                Kind::Frame,
            )),
            keys: agent.add_stream(agent.recorder.open_stream(
                session,
                KEYSTROKES_STREAM,
                Kind::Keystrokes,
            )),
            keys_hash: Sha256::new(),
            activity: None,
        }
    }

    fn with_activity(mut self, agent: &Agent) -> Self {
        self.activity = Some(agent.add_stream(agent.recorder.open_stream(
            self.report.session,
            ACTIVITY_STREAM,
            Kind::Activity,
        )));
        self
    }

    async fn frame(&mut self, agent: &Agent, name: &str, image: &[u8], captured: i64) {
        let plain = Frame { name, image }.encode();
        agent.push(&self.frames, &plain, captured, false).await;
        // A live session runs for hours: the report keeps its first frames only.
        if self.activity.is_none() || self.report.frames.len() < LIVE_REPORT_FRAMES {
            self.report
                .frames
                .push((name.to_owned(), Sha256::digest(image).into()));
        }
        self.report.plaintext_bytes += image.len() as u64;
    }

    async fn keystrokes(&mut self, agent: &Agent, batch: &[u8]) {
        agent.push(&self.keys, batch, now_us(), false).await;
        self.keys_hash.update(batch);
        self.report.plaintext_bytes += batch.len() as u64;
    }

    /// End every stream with an empty final chunk.
    async fn finish(mut self, agent: &Agent) -> SessionReport {
        agent.push(&self.frames, &[], now_us(), true).await;
        agent.push(&self.keys, &[], now_us(), true).await;
        if let Some(a) = &self.activity {
            agent.push(a, &[], now_us(), true).await;
        }
        self.report.keystrokes_sha256 = self.keys_hash.finalize().into();
        self.report
    }
}

pub(super) async fn synthetic(
    agent: &Agent,
    spec: &SyntheticSpec,
    mut stop: watch::Receiver<bool>,
) -> Vec<SessionReport> {
    let mut rng = Rng::new(spec.seed);
    let start = Instant::now();
    let mut users: Vec<(User, Instant, Instant, u64)> = (0..spec.users)
        .map(|i| {
            let jitter =
                Duration::from_millis(rng.below(spec.frame_interval.as_millis().max(1) as u64));
            (
                User::new(agent, format!("user{i:03}")),
                start + jitter,
                start + jitter / 2,
                0,
            )
        })
        .collect();
    while start.elapsed() < spec.duration && !*stop.borrow() {
        let now = Instant::now();
        for (user, next_frame, next_keys, n) in users.iter_mut() {
            if now >= *next_frame {
                let make = if spec.images {
                    synthetic::image_frame
                } else {
                    synthetic::frame
                };
                let (name, image) = make(&mut rng, spec.frame_size, spec.frame_size_spread, *n);
                user.frame(agent, &name, &image, now_us()).await;
                *n += 1;
                let half = spec.frame_interval / 2;
                *next_frame = now
                    + half
                    + Duration::from_millis(rng.below(spec.frame_interval.as_millis() as u64 + 1));
            }
            if now >= *next_keys {
                let idx: usize = user.report.user[4..].parse().unwrap_or(0);
                let lines =
                    synthetic::keystrokes(&mut rng, idx, spec.keystroke_events, now_us() / 1000);
                let mut batch = Vec::new();
                for l in lines {
                    batch.extend_from_slice(&l);
                    batch.push(b'\n');
                }
                user.keystrokes(agent, &batch).await;
                *next_keys = now + spec.keystroke_interval;
            }
            agent.checkpoint_if_due(&user.frames).await;
            agent.checkpoint_if_due(&user.keys).await;
        }
        let next = users
            .iter()
            .map(|(_, f, k, _)| (*f).min(*k))
            .min()
            .unwrap_or(now)
            .min(start + spec.duration);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => {}
        }
    }
    let mut out = Vec::new();
    for (u, ..) in users {
        out.push(u.finish(agent).await);
    }
    out
}

pub(super) async fn replay(
    agent: &Agent,
    paths: &[PathBuf],
) -> Result<Vec<SessionReport>, AgentError> {
    let inputs = recorder::scan_inputs(paths)?;
    let mut user = User::new(agent, "replay".into());
    let mut batcher = KeystrokeBatcher::default();
    for input in &inputs {
        match input {
            recorder::Input::Frame(path) => {
                let image = std::fs::read(path).map_err(|source| recorder::InputError::Read {
                    path: path.clone(),
                    source,
                })?;
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("frame.png")
                    .to_owned();
                user.frame(agent, &name, &image, recorder::capture_time(path))
                    .await;
            }
            recorder::Input::Keystrokes(path) => {
                let text = std::fs::read(path).map_err(|source| recorder::InputError::Read {
                    path: path.clone(),
                    source,
                })?;
                for (n, line) in text.split(|b| *b == b'\n').enumerate() {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let full =
                        batcher
                            .push(line)
                            .map_err(|reason| recorder::InputError::Invalid {
                                path: path.clone(),
                                reason: format!("line {}: {reason}", n + 1),
                            })?;
                    if let Some(b) = full {
                        user.keystrokes(agent, &b).await;
                    }
                }
            }
        }
    }
    if let Some(b) = batcher.take() {
        user.keystrokes(agent, &b).await;
    }
    Ok(vec![user.finish(agent).await])
}

/// What a live session capture hands the agent.
pub enum Event {
    /// A frame (for live sources, a screen update) and when it was captured.
    Frame {
        name: String,
        image: Vec<u8>,
        captured_us: i64,
    },
    /// One keystroke event's JSON line.
    Key(Vec<u8>),
    /// One activity event's JSON line.
    Activity(Vec<u8>),
}

/// One user session of a live source (an X display; later a Windows or macOS session), run on
/// a thread of its own. `run` hands events to `out` until the session ends or `stop` is set,
/// and returns why it ended; `out` returning false means the agent is stopping.
pub trait SessionCapture: Send {
    /// Who and where, for logs and the report (`alice@:10`).
    fn label(&self) -> String;
    fn run(self: Box<Self>, out: &mut dyn FnMut(Event) -> bool, stop: &AtomicBool) -> String;
}

/// Record a live session: its events sealed on three streams, keystroke and activity events
/// batched for at most `batch`, every stream ended with a final chunk when it ends.
async fn live_session(
    agent: Arc<Agent>,
    capture: Box<dyn SessionCapture>,
    batch: Duration,
    stop: Arc<AtomicBool>,
) -> SessionReport {
    let label = capture.label();
    let mut user = User::new(&agent, label.clone()).with_activity(&agent);
    tracing::info!(session = %user.report.session, %label, "recording started");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(8);
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("capture {label}"))
        .spawn(move || {
            let mut out = |e| tx.blocking_send(e).is_ok();
            capture.run(&mut out, &thread_stop)
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(%label, error = %e, "cannot start a capture thread");
            return user.finish(&agent).await;
        }
    };
    let mut keys = KeystrokeBatcher::default();
    let mut activity = KeystrokeBatcher::default();
    let mut flush = tokio::time::interval(batch);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let activity_q = user
        .activity
        .clone()
        .expect("live sessions have an activity stream");
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Frame { name, image, captured_us }) => {
                    user.frame(&agent, &name, &image, captured_us).await;
                }
                Some(Event::Key(line)) => match keys.push(&line) {
                    Ok(Some(b)) => user.keystrokes(&agent, &b).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%label, error = %e, "keystroke event not recorded"),
                },
                Some(Event::Activity(line)) => match activity.push(&line) {
                    Ok(Some(b)) => agent.push(&activity_q, &b, now_us(), false).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%label, error = %e, "activity event not recorded"),
                },
                None => break,
            },
            _ = flush.tick() => {
                if let Some(b) = keys.take() {
                    user.keystrokes(&agent, &b).await;
                }
                if let Some(b) = activity.take() {
                    agent.push(&activity_q, &b, now_us(), false).await;
                }
                agent.checkpoint_if_due(&user.frames).await;
                agent.checkpoint_if_due(&user.keys).await;
                agent.checkpoint_if_due(&activity_q).await;
            }
        }
    }
    let reason = tokio::task::spawn_blocking(move || thread.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| "capture thread failed".into());
    let end = serde_json::json!({"ts": now_us() / 1000, "event": "session_end", "reason": reason});
    let end = serde_json::to_vec(&end).expect("JSON");
    if let Ok(Some(b)) = activity.push(&end) {
        agent.push(&activity_q, &b, now_us(), false).await;
    }
    if let Some(b) = keys.take() {
        user.keystrokes(&agent, &b).await;
    }
    if let Some(b) = activity.take() {
        agent.push(&activity_q, &b, now_us(), false).await;
    }
    tracing::info!(session = %user.report.session, %label, %reason, "recording ended");
    user.finish(&agent).await
}

/// Frames a live session's report lists (name and digest, for checking an export).
const LIVE_REPORT_FRAMES: usize = 1_000;
/// Ended live sessions whose reports keep their frame lists; older ones keep their totals.
const LIVE_REPORTS_WITH_FRAMES: usize = 64;

/// How long opening a display may take before it is given up (and retried later).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Record every X display on the host (or those of `[capture] displays`) until `stop`: a
/// session per display, started when its socket appears and ended when it goes away.
pub(super) async fn x11(
    agent: &Arc<Agent>,
    config: &crate::config::CaptureConfig,
    mut stop: watch::Receiver<bool>,
) -> Vec<SessionReport> {
    use std::collections::HashMap;
    let only: Vec<u32> = config
        .displays
        .iter()
        .filter_map(|d| crate::config::parse_display(d))
        .collect();
    // One capture thread per display: glibc would give each its own malloc arena, and freed
    // rectangle buffers would stay resident in every one of them.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator limit for arenas made from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
    let halt = Arc::new(AtomicBool::new(false));
    let mut running: HashMap<u32, tokio::task::JoinHandle<SessionReport>> = HashMap::new();
    // Displays that could not be opened, and why: told once per reason, retried.
    let mut refused: HashMap<u32, (String, Instant)> = HashMap::new();
    // Attempts to open a display that timed out and have not returned yet.
    let mut hung: HashMap<u32, tokio::task::JoinHandle<Result<super::x11::X11Session, String>>> =
        HashMap::new();
    let mut reports = Vec::new();
    let every = Duration::from_millis(config.discover_ms.max(100));
    tracing::info!(dir = %config.socket_dir.display(), displays = ?config.displays, "recording X displays");
    loop {
        // Sessions that ended (their display went away) free their display for a new one.
        let ended: Vec<u32> = running
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(n, _)| *n)
            .collect();
        for n in ended {
            if let Ok(r) = running.remove(&n).expect("listed").await {
                reports.push(r);
                if let Some(old) = reports.len().checked_sub(LIVE_REPORTS_WITH_FRAMES + 1) {
                    reports[old].frames = Vec::new();
                }
            }
        }
        if *stop.borrow() {
            break;
        }
        for spec in super::x11::discover(&config.socket_dir, &only) {
            if running.contains_key(&spec.number)
                || refused
                    .get(&spec.number)
                    .is_some_and(|(_, at)| at.elapsed() < Duration::from_secs(30))
            {
                continue;
            }
            let number = spec.number;
            let name = spec.name();
            if hung.get(&number).is_some_and(|h| !h.is_finished()) {
                continue; // its last attempt is still waiting for the server
            }
            hung.remove(&number);
            let mut opening = {
                let config = config.clone();
                tokio::task::spawn_blocking(move || super::x11::X11Session::open(spec, config))
            };
            // A server that accepts the connection but never answers must not hold up the
            // other displays: give up on it after a while (its attempt is left to finish).
            let opened = match tokio::time::timeout(OPEN_TIMEOUT, &mut opening).await {
                Ok(done) => done.map_err(|e| e.to_string()).and_then(|r| r),
                Err(_) => {
                    hung.insert(number, opening);
                    Err(format!(
                        "the X server did not answer within {} s",
                        OPEN_TIMEOUT.as_secs()
                    ))
                }
            };
            match opened {
                Ok(session) => {
                    refused.remove(&number);
                    running.insert(
                        number,
                        tokio::spawn(live_session(
                            agent.clone(),
                            Box::new(session),
                            Duration::from_millis(config.batch_ms.max(10)),
                            halt.clone(),
                        )),
                    );
                }
                Err(why) => {
                    if refused.get(&number).is_none_or(|(w, _)| *w != why) {
                        tracing::warn!(display = %name, reason = %why, "cannot record this display; the others go on");
                    }
                    refused.insert(number, (why, Instant::now()));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
    halt.store(true, Ordering::Relaxed);
    for (_, h) in running {
        if let Ok(r) = h.await {
            reports.push(r);
        }
    }
    reports
}
