//! Capture sources: user sessions fed by the synthetic generator or by replayed files, each
//! with a frames stream and a keystrokes stream.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::synthetic::{self, Rng, SyntheticSpec};
use super::{Agent, AgentError, Queue, SessionReport};
use crate::crypto::now_us;
use crate::protocol::payload::Frame;
use crate::protocol::{Kind, SessionId};
use crate::recorder::{self, FRAMES_STREAM, KEYSTROKES_STREAM, KeystrokeBatcher};

/// One user session being recorded.
struct User {
    report: SessionReport,
    frames: Arc<Queue>,
    keys: Arc<Queue>,
    keys_hash: Sha256,
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
        }
    }

    async fn frame(&mut self, agent: &Agent, name: &str, image: &[u8], captured: i64) {
        let plain = Frame { name, image }.encode();
        agent.push(&self.frames, &plain, captured, false).await;
        self.report
            .frames
            .push((name.to_owned(), Sha256::digest(image).into()));
        self.report.plaintext_bytes += image.len() as u64;
    }

    async fn keystrokes(&mut self, agent: &Agent, batch: &[u8]) {
        agent.push(&self.keys, batch, now_us(), false).await;
        self.keys_hash.update(batch);
        self.report.plaintext_bytes += batch.len() as u64;
    }

    /// End both streams with an empty final chunk.
    async fn finish(mut self, agent: &Agent) -> SessionReport {
        agent.push(&self.frames, &[], now_us(), true).await;
        agent.push(&self.keys, &[], now_us(), true).await;
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
