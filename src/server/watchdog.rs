//! The progress watchdog. Each pipeline stage counts the work waiting in it and notes when it
//! last completed some; a stage that has had work waiting (or failing) for longer than
//! `stall_after` without completing any is stuck. Being stuck turns `/readyz` unready, sets
//! `sealstream_pipeline_stalled{stage}` to 1 and writes one log line naming the stage; coming
//! back writes one more. The stages are counted by the actors; this module only observes.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::metrics as m;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// DEK records waiting for the key actor (object store put, `encryption_dek` insert).
    Keys,
    /// Chunks accepted and waiting for their segment object to be durable.
    Store,
    /// Chunks in durable segments waiting for their index commit.
    Index,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Keys, Stage::Store, Stage::Index];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Keys => "keys",
            Stage::Store => "store",
            Stage::Index => "index",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Stage::Keys => "DEK records waiting for the object store or encryption_dek",
            Stage::Store => "chunks waiting for their segment to be written",
            Stage::Index => "chunks waiting for their index commit in the metadata database",
        }
    }
}

#[derive(Default)]
struct StageState {
    pending: AtomicI64,
    /// Milliseconds since `epoch` when the stage got work while idle, or last completed some;
    /// 0 while idle.
    busy_since: AtomicU64,
    last_failure: AtomicU64,
    stalled: AtomicBool,
}

/// Shared by the actors (which count) and the watchdog task (which judges).
pub struct Progress {
    epoch: Instant,
    stall_after: Duration,
    stages: [StageState; 3],
}

impl Progress {
    pub fn new(stall_after: Duration) -> Self {
        Progress {
            epoch: Instant::now(),
            stall_after,
            stages: Default::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means idle.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn state(&self, stage: Stage) -> &StageState {
        &self.stages[stage as usize]
    }

    /// `n` items entered `stage`.
    pub fn begin(&self, stage: Stage, n: usize) {
        let s = self.state(stage);
        s.pending.fetch_add(n as i64, Ordering::Relaxed);
        let _ =
            s.busy_since
                .compare_exchange(0, self.now_ms(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Of the items in `stage`, `ok` completed and `failed` failed (they will come again).
    pub fn finish(&self, stage: Stage, ok: usize, failed: usize) {
        let s = self.state(stage);
        let left =
            s.pending.fetch_sub((ok + failed) as i64, Ordering::Relaxed) - (ok + failed) as i64;
        let now = self.now_ms();
        if failed > 0 {
            s.last_failure.store(now, Ordering::Relaxed);
        }
        if ok > 0 {
            s.busy_since
                .store(if left > 0 { now } else { 0 }, Ordering::Relaxed);
        }
    }

    pub fn pending(&self, stage: Stage) -> i64 {
        self.state(stage).pending.load(Ordering::Relaxed)
    }

    pub fn stalled(&self, stage: Stage) -> bool {
        self.state(stage).stalled.load(Ordering::Relaxed)
    }

    /// The stuck stages, if any.
    pub fn stalled_stages(&self) -> Vec<Stage> {
        Stage::ALL
            .into_iter()
            .filter(|s| self.stalled(*s))
            .collect()
    }

    /// Judge every stage once (the watchdog task calls this periodically).
    pub fn check(&self) {
        let now = self.now_ms();
        let limit = self.stall_after.as_millis() as u64;
        for stage in Stage::ALL {
            let s = self.state(stage);
            let pending = s.pending.load(Ordering::Relaxed);
            let since = s.busy_since.load(Ordering::Relaxed);
            let failed_recently = now.saturating_sub(s.last_failure.load(Ordering::Relaxed))
                < limit
                && s.last_failure.load(Ordering::Relaxed) != 0;
            if pending <= 0 && !failed_recently && since != 0 {
                // Nothing waits and nothing failed lately: idle, not stuck.
                let _ =
                    s.busy_since
                        .compare_exchange(since, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
            let since = s.busy_since.load(Ordering::Relaxed);
            let stuck = since != 0 && now.saturating_sub(since) > limit;
            metrics::gauge!(m::PIPELINE_PENDING, "stage" => stage.name()).set(pending as f64);
            if stuck != s.stalled.swap(stuck, Ordering::Relaxed) {
                metrics::gauge!(m::PIPELINE_STALLED, "stage" => stage.name()).set(if stuck {
                    1.0
                } else {
                    0.0
                });
                if stuck {
                    tracing::error!(
                        stage = stage.name(),
                        pending,
                        stalled_for_ms = now.saturating_sub(since),
                        "pipeline stalled: {} and none completed for {} ms; /readyz reports unready until it moves",
                        stage.what(),
                        now.saturating_sub(since)
                    );
                } else {
                    tracing::warn!(
                        stage = stage.name(),
                        pending,
                        "pipeline moving again: {} are being completed",
                        stage.what()
                    );
                }
            }
        }
    }

    /// Check every `stall_after / 10` (at least every second) until the task is dropped.
    pub async fn watch(self: std::sync::Arc<Self>) {
        let tick = (self.stall_after / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        for stage in Stage::ALL {
            metrics::gauge!(m::PIPELINE_STALLED, "stage" => stage.name()).set(0.0);
        }
        loop {
            tokio::time::sleep(tick).await;
            self.check();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64) -> Progress {
        Progress::new(Duration::from_millis(ms))
    }

    #[test]
    fn work_waiting_without_completion_is_a_stall_and_completion_clears_it() {
        let w = p(30);
        w.begin(Stage::Index, 3);
        w.check();
        assert!(w.stalled_stages().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        w.check();
        assert_eq!(w.stalled_stages(), vec![Stage::Index]);
        w.finish(Stage::Index, 3, 0);
        w.check();
        assert!(w.stalled_stages().is_empty());
    }

    #[test]
    fn an_idle_stage_is_never_stalled() {
        let w = p(20);
        w.begin(Stage::Store, 1);
        w.finish(Stage::Store, 1, 0);
        std::thread::sleep(Duration::from_millis(50));
        w.check();
        assert!(w.stalled_stages().is_empty());
    }

    #[test]
    fn failures_that_empty_the_queue_still_count_as_stuck_until_something_completes() {
        let w = p(30);
        // Work comes and fails again and again (a database that is down): the queue is empty
        // between attempts, yet nothing was stored.
        for _ in 0..4 {
            w.begin(Stage::Index, 2);
            w.finish(Stage::Index, 0, 2);
            std::thread::sleep(Duration::from_millis(20));
            w.check();
        }
        assert_eq!(w.stalled_stages(), vec![Stage::Index]);
        w.begin(Stage::Index, 1);
        w.finish(Stage::Index, 1, 0);
        w.check();
        assert!(w.stalled_stages().is_empty());
    }

    #[test]
    fn the_stalled_gauge_names_the_stage() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let gauge = |stage: &str| {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .find(|(k, ..)| {
                    k.key().name() == m::PIPELINE_STALLED
                        && k.key().labels().any(|l| l.value() == stage)
                })
                .map(|(.., v)| v)
        };
        metrics::with_local_recorder(&recorder, || {
            let w = p(20);
            w.begin(Stage::Store, 1);
            std::thread::sleep(Duration::from_millis(40));
            w.check();
            assert_eq!(gauge("store"), Some(DebugValue::Gauge(1.0.into())));
            w.finish(Stage::Store, 1, 0);
            w.check();
            assert_eq!(gauge("store"), Some(DebugValue::Gauge(0.0.into())));
        });
    }

    #[test]
    fn steady_progress_under_load_is_not_a_stall() {
        let w = p(30);
        w.begin(Stage::Keys, 100);
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(10));
            w.finish(Stage::Keys, 5, 0);
            w.begin(Stage::Keys, 5);
            w.check();
            assert!(w.stalled_stages().is_empty());
        }
    }
}
