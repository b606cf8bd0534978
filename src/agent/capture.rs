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

/// How long a live session's capture may take to stop once the agent stops: longer, and its
/// source does not answer (an X server stopped or frozen holds its reply): the session's
/// streams are ended without it and its thread is left behind.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Record a live session: its events sealed on three streams, keystroke and activity events
/// batched for at most `batch`, every stream ended with a final chunk when it ends. `stop`
/// tells its capture thread to stop; `halted` (the same, for the session) starts its
/// `STOP_GRACE`.
async fn live_session(
    agent: Arc<Agent>,
    capture: Box<dyn SessionCapture>,
    batch: Duration,
    stop: Arc<AtomicBool>,
    mut halted: watch::Receiver<bool>,
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
    let mut give_up: Option<tokio::time::Instant> = None;
    let mut abandoned = false;
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
            _ = async { drop(halted.wait_for(|h| *h).await) }, if give_up.is_none() => {
                give_up = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            _ = tokio::time::sleep_until(give_up.unwrap_or_else(tokio::time::Instant::now)),
                if give_up.is_some() => {
                abandoned = true;
                break;
            }
        }
    }
    let reason = if abandoned {
        // Its thread waits for a reply that does not come: it is left to the process's end
        // (an event it hands over later is refused, `rx` being gone).
        drop(rx);
        drop(thread);
        tracing::warn!(%label, "the display did not answer within {} s of the stop: its session is ended without it", STOP_GRACE.as_secs());
        format!(
            "agent stopping (the display did not answer within {} s)",
            STOP_GRACE.as_secs()
        )
    } else {
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| "capture thread failed".into())
    };
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
    // rectangle buffers would stay resident in every one of them. A screen read over the
    // socket (a still session's first keyframe) is a screen-sized buffer: at a fixed mmap
    // threshold it is mapped and given back when freed, where glibc's sliding threshold would
    // keep the next ones in an arena.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator limits, for arenas and allocations from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let halt = Arc::new(AtomicBool::new(false));
    let (halted, halted_rx) = watch::channel(false);
    let mut running: HashMap<u32, tokio::task::JoinHandle<SessionReport>> = HashMap::new();
    // Displays that could not be opened, and why: told once per reason, retried.
    let mut refused: HashMap<u32, (String, Instant)> = HashMap::new();
    // Each display is opened on a thread of its own (not the runtime's blocking pool, whose
    // shutdown would wait for a server that never answers), all at once: one that does not
    // answer holds up neither the others nor the agent's stop. Its attempt is given up after
    // `OPEN_TIMEOUT` (told as a refusal) and left to finish; no other is made until it has.
    let mut attempts: HashMap<u32, std::thread::JoinHandle<()>> = HashMap::new();
    // Attempts whose outcome has not been handled yet.
    let mut pending: std::collections::HashSet<u32> = Default::default();
    type Opened = (u32, String, Result<super::x11::X11Session, String>);
    let mut outcomes: tokio::task::JoinSet<Opened> = tokio::task::JoinSet::new();
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
        // An opening thread that has returned is let go (dropping its handle detaches it, and
        // its stack is freed); one still waiting for its server stays, so it is not tried again.
        attempts.retain(|_, h| !h.is_finished());
        for spec in super::x11::discover(&config.socket_dir, &only) {
            let number = spec.number;
            if running.contains_key(&number)
                || pending.contains(&number)
                || refused
                    .get(&number)
                    .is_some_and(|(_, at)| at.elapsed() < Duration::from_secs(30))
                || attempts.get(&number).is_some_and(|h| !h.is_finished())
            {
                continue;
            }
            let name = spec.name();
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let config = config.clone();
            let thread = std::thread::Builder::new()
                .name(format!("open {name}"))
                .spawn(move || {
                    let _ = sender.send(super::x11::X11Session::open(spec, config));
                });
            match thread {
                Ok(t) => attempts.insert(number, t),
                Err(e) => {
                    tracing::error!(display = %name, error = %e, "cannot start a thread to open a display");
                    // Tried again with the refused ones, not at every search.
                    refused.insert(
                        number,
                        (format!("no thread to open it: {e}"), Instant::now()),
                    );
                    continue;
                }
            };
            pending.insert(number);
            outcomes.spawn(async move {
                let opened = match tokio::time::timeout(OPEN_TIMEOUT, receiver).await {
                    Ok(done) => done.unwrap_or_else(|_| Err("its opening thread failed".into())),
                    Err(_) => Err(format!(
                        "the X server did not answer within {} s",
                        OPEN_TIMEOUT.as_secs()
                    )),
                };
                (number, name, opened)
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
            Some(Ok((number, name, opened))) = outcomes.join_next() => {
                pending.remove(&number);
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
                                halted_rx.clone(),
                            )),
                        );
                    }
                    Err(why) => {
                        // One line: a server's words may end with a newline.
                        let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                        if refused.get(&number).is_none_or(|(w, _)| *w != why) {
                            tracing::warn!(display = %name, reason = %why, "cannot record this display; the others go on");
                        }
                        refused.insert(number, (why, Instant::now()));
                    }
                }
            }
        }
    }
    // Attempts still opening are dropped with `outcomes`: a display they open is closed.
    halt.store(true, Ordering::Relaxed);
    let _ = halted.send(true);
    for (_, h) in running {
        if let Ok(r) = h.await {
            reports.push(r);
        }
    }
    reports
}
