//! Per-stream queues: every chunk sealed stays queued (and, with `spool_dir`, is spooled
//! before it can be sent) until acked; the memory and spool budgets capture waits on, and
//! `drop_oldest`, which replaces a stream's unsent backlog by a gap record.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::Agent;
use crate::config::SpoolFull;
use crate::crypto::StreamSealer;
use crate::protocol::SealedChunk;

pub(super) struct Queue {
    /// Order of creation: a connection serves each queue made after the ones it has.
    pub(super) serial: u64,
    pub(super) state: Mutex<QueueState>,
    pub(super) changed: Notify,
    /// Seals this stream's chunks (None for a stream recovered from the spool: its DEK is gone).
    pub(super) sealer: Mutex<Option<StreamSealer>>,
    /// The DEK record this stream's chunks are sealed under, as a message.
    pub(super) dek_message: Bytes,
}

/// A chunk waiting for its ack.
pub(super) struct Entry {
    pub(super) chunk: SealedChunk,
    /// The stream's chain head before this chunk (signing streams): a gap record replacing
    /// this chunk and the ones after it links here.
    pub(super) chain_before: Option<[u8; 32]>,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    pub(super) sent_at: Option<Instant>,
}

impl QueueState {
    /// The first chunk never written to the server: chunks are written in order, so those
    /// with a `sent_at` are a prefix.
    fn unsent_from(&self) -> usize {
        self.unacked
            .iter()
            .position(|e| e.sent_at.is_none())
            .unwrap_or(self.unacked.len())
            .max(self.sent)
    }
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) unacked: VecDeque<Entry>,
    /// How many of `unacked` were written on the current QUIC stream.
    pub(super) sent: usize,
    /// No more chunks will be added: the final one was sealed, or the stream was recovered
    /// from the spool (its DEK is gone; what is there is all there will be).
    pub(super) finished: bool,
}

impl Queue {
    pub(super) fn done(&self) -> bool {
        let s = self.state.lock().expect("queue lock");
        s.finished && s.unacked.is_empty()
    }
}

/// Wait until `ready()` is true, re-checking it each time `notify` is signalled (with
/// `notify_waiters`). The notification is created (and enabled) before each check, so a
/// signal sent between the check and the wait is not lost.
pub(super) async fn wait_until(notify: &Notify, mut ready: impl FnMut() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if ready() {
            return;
        }
        notified.await;
    }
}

impl Agent {
    pub(super) fn add_stream(&self, sealer: StreamSealer) -> Arc<Queue> {
        self.add_queue_with(self.dek_message.clone(), Some(sealer))
    }

    pub(super) fn add_queue_with(
        &self,
        dek_message: Bytes,
        sealer: Option<StreamSealer>,
    ) -> Arc<Queue> {
        let mut queues = self.queues.lock().expect("queues lock");
        let q = Arc::new(Queue {
            serial: self.queue_serial.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
            sealer: Mutex::new(sealer),
            dek_message,
        });
        // Sessions come and go for months on a terminal server: streams that are done (final
        // chunk sealed and acked) are let go.
        queues.retain(|q| !q.done());
        queues.push(q.clone());
        drop(queues);
        self.new_queue.notify_one();
        q
    }

    /// Seal `plaintext` on `sealer` and queue it; waits while the memory budget is full.
    pub(super) async fn push(&self, q: &Queue, plaintext: &[u8], captured: i64, last: bool) {
        // Room first (the spool, then memory), so that sealing, spooling and queueing happen
        // together: a chunk's sequence number is taken only when it can be kept.
        if let Some(sp) = &self.spool {
            let mut warned = false;
            // Woken by `spool_room` whenever an ack (or `drop_oldest`) releases spool bytes.
            wait_until(&self.spool_room, || {
                loop {
                    if sp.lock().expect("spool lock").bytes() < self.config.spool_max_bytes {
                        return true;
                    }
                    if self.config.spool_full == SpoolFull::DropOldest && self.drop_oldest() {
                        continue;
                    }
                    if !warned {
                        tracing::warn!(
                            max = self.config.spool_max_bytes,
                            "spool full: capture paused until the server acks"
                        );
                        warned = true;
                    }
                    return false;
                }
            })
            .await;
        }
        let estimate = plaintext.len() + crate::protocol::chunk::FIXED_HEADER_LEN + 256 + 16;
        let want = (estimate as u32)
            .min(self.config.max_unacked_bytes as u32)
            .max(1);
        let permit = self
            .memory
            .clone()
            .acquire_many_owned(want)
            .await
            .expect("semaphore never closed");
        // The sealer stays locked until the chunk is queued: `drop_oldest` (which takes it
        // first) must never see a sequence number sealed but not yet in the queue.
        let mut sealer_guard = q.sealer.lock().expect("sealer lock");
        let sealer = sealer_guard.as_mut().expect("live streams have a sealer");
        let chain_before = sealer.chain_head();
        let chunk = sealer
            .seal(plaintext, captured, last)
            .expect("captures stay within the chunk limit");
        self.sealed.fetch_add(1, Ordering::Relaxed);
        self.sealed_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.sealed(chunk.len());
        }
        if let Some(sp) = &self.spool {
            // Spooled before it can be sent.
            if let Err(e) = sp.lock().expect("spool lock").append(&chunk) {
                tracing::error!(error = %e, "cannot write the spool; this chunk is kept in memory only");
            }
        }
        {
            let mut s = q.state.lock().expect("queue lock");
            s.unacked.push_back(Entry {
                chunk,
                chain_before,
                _permit: Some(permit),
                sent_at: None,
            });
            s.finished |= last;
        }
        drop(sealer_guard);
        q.changed.notify_one();
    }

    /// Spool full under `drop_oldest`: drop the unsent backlog of the stream whose next unsent
    /// chunk is oldest, and seal a gap record in its place. False if nothing can be dropped
    /// (everything is in flight).
    fn drop_oldest(&self) -> bool {
        let queues: Vec<Arc<Queue>> = self.queues.lock().expect("queues lock").clone();
        let victim = queues
            .iter()
            .filter_map(|q| {
                if q.sealer.lock().expect("sealer lock").is_none() {
                    return None;
                }
                let s = q.state.lock().expect("queue lock");
                let e = s.unacked.get(s.unsent_from())?;
                (!s.finished && !e.chunk.header.gap)
                    .then_some((e.chunk.header.capture_time_us, q.clone()))
            })
            .min_by_key(|(t, _)| *t)
            .map(|(_, q)| q);
        let Some(q) = victim else {
            return false;
        };
        let mut sealer = q.sealer.lock().expect("sealer lock");
        let Some(sealer) = sealer.as_mut() else {
            return false;
        };
        let mut s = q.state.lock().expect("queue lock");
        // Never a chunk written to the server before (its ack may only be late: after a
        // reconnect `sent` starts again at 0, but `sent_at` remembers).
        let from = s.unsent_from();
        let dropped: Vec<Entry> = s.unacked.drain(from..).collect();
        let (Some(first), Some(last)) = (dropped.first(), dropped.last()) else {
            return false;
        };
        let gap = crate::protocol::payload::Gap {
            first_seq: first.chunk.header.seq,
            last_seq: last.chunk.header.seq,
            first_capture_us: first.chunk.header.capture_time_us,
            last_capture_us: last.chunk.header.capture_time_us,
            count: dropped.len() as u64,
        };
        if let Some(head) = first.chain_before {
            sealer.rewind_chain(head);
        }
        let chain_before = sealer.chain_head();
        let record = sealer
            .seal_gap(&gap)
            .expect("a live stream takes a gap record");
        if let Some(sp) = &self.spool {
            let mut sp = sp.lock().expect("spool lock");
            for e in &dropped {
                let h = &e.chunk.header;
                if let Err(err) = sp.ack(h.session, h.stream, h.seq) {
                    tracing::error!(error = %err, "cannot drop a chunk from the spool");
                }
            }
            if let Err(err) = sp.append(&record) {
                tracing::error!(error = %err, "cannot spool a gap record");
            }
        }
        // Other pushers waiting for room see what the dropped chunks released.
        self.spool_room.notify_waiters();
        tracing::warn!(
            session = %record.header.session,
            stream = %record.header.stream,
            chunks = gap.count,
            "spool full: dropped the oldest unsent chunks of a stream and recorded the gap"
        );
        self.dropped.fetch_add(gap.count, Ordering::Relaxed);
        self.gaps.fetch_add(1, Ordering::Relaxed);
        s.unacked.push_back(Entry {
            chunk: record,
            chain_before,
            _permit: None,
            sent_at: None,
        });
        drop(s);
        q.changed.notify_one();
        true
    }

    /// Seal an empty checkpoint chunk on `q` when its stream has chunks after its last
    /// checkpoint and the checkpoint interval has passed (an idle stream's tail is proven).
    pub(super) async fn checkpoint_if_due(&self, q: &Queue) {
        let due = q
            .sealer
            .lock()
            .expect("sealer lock")
            .as_ref()
            .is_some_and(|s| s.checkpoint_due());
        if due && !q.state.lock().expect("queue lock").finished {
            self.push(q, &[], crate::crypto::now_us(), false).await;
        }
    }

    pub(super) fn all_done(&self) -> bool {
        self.queues
            .lock()
            .expect("queues lock")
            .iter()
            .all(|q| q.done())
    }

    pub(super) fn unacked(&self) -> u64 {
        self.queues
            .lock()
            .expect("queues lock")
            .iter()
            .map(|q| q.state.lock().expect("queue lock").unacked.len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::FutureExt;
    use tokio::sync::Notify;

    use super::wait_until;

    /// A runtime without a time driver: a wait that polled on a timer would panic here.
    fn no_timers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    /// A waiter (spool full) returns once room is released and signalled, with no timer.
    #[test]
    fn wakes_on_the_notification_without_a_timer() {
        no_timers().block_on(async {
            let notify = Arc::new(Notify::new());
            let room = Arc::new(AtomicBool::new(false));
            let checks = Arc::new(AtomicUsize::new(0));
            let waiter = tokio::spawn({
                let (notify, room, checks) = (notify.clone(), room.clone(), checks.clone());
                async move {
                    wait_until(&notify, || {
                        checks.fetch_add(1, Ordering::SeqCst);
                        room.load(Ordering::SeqCst)
                    })
                    .await
                }
            });
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert!(!waiter.is_finished(), "no room yet: still waiting");
            assert_eq!(checks.load(Ordering::SeqCst), 1, "checked once, then waits");
            // An ack releases spool bytes and signals.
            room.store(true, Ordering::SeqCst);
            notify.notify_waiters();
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert!(waiter.is_finished(), "woken by the notification");
            waiter.await.expect("no panic");
            assert_eq!(checks.load(Ordering::SeqCst), 2);
        });
    }

    /// The signal comes between the check and the wait (an ack on another task right after
    /// the spool was seen full): it must not be lost.
    #[test]
    fn a_signal_between_check_and_wait_is_not_lost() {
        let notify = Notify::new();
        let room = AtomicBool::new(false);
        let first = AtomicBool::new(true);
        let done = wait_until(&notify, || {
            let ready = room.load(Ordering::SeqCst);
            if first.swap(false, Ordering::SeqCst) {
                room.store(true, Ordering::SeqCst);
                notify.notify_waiters();
            }
            ready
        })
        .now_or_never();
        assert!(done.is_some(), "the signal sent after the check was lost");
    }
}
