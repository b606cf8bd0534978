//! A store actor: a task on its own arbiter that batches accepted chunks into segment objects
//! (closed by size or age), writes each create-if-absent (durably: fsync of file and directory
//! on local disk), commits its index rows, and only then answers the chunks' waiters. Any
//! failure answers `RetryLater`: nothing is acked that is not durable and indexed.
//!
//! Its mailbox is a bounded tokio channel (`MAILBOX`); a stream task hands it a chunk with a
//! oneshot for the answer and waits only for room in the mailbox, so a full mailbox stops the
//! stream's reading. No task is spawned per chunk: one per segment write.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::durable::SegmentWriter;
use tokio::sync::{mpsc, oneshot};

use super::metrics as m;
use super::registry::Lease;
use super::watchdog::{Progress, Stage};
use crate::crypto::now_us;
use crate::metadata::{ChunkRow, Metadata, SegmentCommit, StreamUpdate};
use crate::protocol::uplink::Reject;
use crate::protocol::{SealedChunk, Segment};
use crate::storage::paths;

/// Where segments go: a local directory (direct I/O, fsync), or a test's wrapper of one.
pub type SegmentStore = Arc<dyn SegmentWriter>;

/// Chunks (and commands) a store actor's mailbox holds before senders wait.
pub const MAILBOX: usize = 4096;

/// Chunks taken from the mailbox at a time.
const TAKE: usize = 256;

struct Waiting {
    chunk: SealedChunk,
    digest: [u8; 32],
    gap_first: Option<u64>,
    lease: Arc<Lease>,
    reply: oneshot::Sender<Result<(), Reject>>,
}

/// Store one verified chunk; the answer comes once it is durable and indexed.
pub struct StoreChunk {
    pub chunk: SealedChunk,
    pub digest: [u8; 32],
    /// A gap record's first dropped number (kept in its index row).
    pub gap_first: Option<u64>,
    pub lease: Arc<Lease>,
}

enum Command {
    Store(Waiting),
    /// Write whatever is batched now.
    Flush,
    /// Write whatever is batched now, and answer once every segment write started (that one
    /// and any earlier) has finished and answered its chunks.
    Drain(oneshot::Sender<()>),
}

/// The answer to a stored chunk, once its segment is durable and indexed (or failed).
pub struct StoreAnswer(oneshot::Receiver<Result<(), Reject>>);

impl StoreAnswer {
    pub async fn wait(self) -> Result<(), Reject> {
        self.0.await.unwrap_or(Err(Reject::RetryLater))
    }
}

/// A store actor's address: its mailbox.
#[derive(Clone)]
pub struct StoreActor {
    mailbox: mpsc::Sender<Command>,
}

impl StoreActor {
    /// Start a store actor on `arbiter`.
    pub fn start(
        arbiter: &actix::ArbiterHandle,
        store: SegmentStore,
        metadata: Metadata,
        max_bytes: usize,
        max_age: Duration,
        progress: Arc<Progress>,
    ) -> StoreActor {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let batcher = Batcher {
            progress,
            store,
            metadata,
            max_bytes,
            batch: Vec::new(),
            batch_bytes: 0,
            in_flight: Arc::new(tokio::sync::watch::channel(0).0),
        };
        arbiter.spawn(batcher.run(rx, max_age));
        StoreActor { mailbox: tx }
    }

    /// Hand a chunk over, waiting while the mailbox is full; the answer comes later.
    pub async fn store(&self, msg: StoreChunk) -> StoreAnswer {
        let (reply, rx) = oneshot::channel();
        let w = Waiting {
            chunk: msg.chunk,
            digest: msg.digest,
            gap_first: msg.gap_first,
            lease: msg.lease,
            reply,
        };
        // A send that fails (the actor stopped) drops the reply: the answer is `RetryLater`.
        let _ = self.mailbox.send(Command::Store(w)).await;
        StoreAnswer(rx)
    }

    /// Write whatever is batched now (shutdown).
    pub async fn flush(&self) {
        let _ = self.mailbox.send(Command::Flush).await;
    }

    /// Write whatever is batched now, and return once every segment write this actor started
    /// has finished and answered its chunks (shutdown).
    pub async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.mailbox.send(Command::Drain(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The store actor's state: the batch being filled.
struct Batcher {
    store: SegmentStore,
    metadata: Metadata,
    max_bytes: usize,
    batch: Vec<Waiting>,
    batch_bytes: usize,
    progress: Arc<Progress>,
    /// Segment writes started by `flush` and not yet answered (`Drain` waits for 0).
    in_flight: Arc<tokio::sync::watch::Sender<usize>>,
}

/// Counts one segment write as in flight until dropped (also when the write panics).
struct InFlight(Arc<tokio::sync::watch::Sender<usize>>);

impl InFlight {
    fn start(count: &Arc<tokio::sync::watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Batcher {
    async fn run(mut self, mut mailbox: mpsc::Receiver<Command>, max_age: Duration) {
        // A batch is written `max_age` after its first chunk at the latest: one timer, armed
        // when a batch starts (not a periodic check that adds up to a tick to the wait).
        let mut age = pin!(tokio::time::sleep(max_age));
        let mut armed = false;
        let mut taken = Vec::with_capacity(TAKE);
        loop {
            tokio::select! {
                n = mailbox.recv_many(&mut taken, TAKE) => {
                    if n == 0 {
                        // Every address is gone: write what is batched and stop.
                        self.flush();
                        return;
                    }
                    for cmd in taken.drain(..) {
                        match cmd {
                            Command::Store(w) => {
                                if self.batch.is_empty() {
                                    age.as_mut().reset(tokio::time::Instant::now() + max_age);
                                    armed = true;
                                }
                                self.push(w);
                                if self.batch_bytes >= self.max_bytes {
                                    self.flush();
                                    armed = false;
                                }
                            }
                            Command::Flush => {
                                self.flush();
                                armed = false;
                            }
                            Command::Drain(done) => {
                                self.flush();
                                armed = false;
                                let mut count = self.in_flight.subscribe();
                                actix_rt::spawn(async move {
                                    // The sender lives in this actor and in every write in
                                    // flight: it is not dropped while one is pending.
                                    let _ = count.wait_for(|n| *n == 0).await;
                                    let _ = done.send(());
                                });
                            }
                        }
                    }
                }
                () = age.as_mut(), if armed => {
                    self.flush();
                    armed = false;
                }
            }
        }
    }

    fn push(&mut self, w: Waiting) {
        self.batch_bytes += w.chunk.len();
        metrics::gauge!(m::STORE_PENDING_BYTES).increment(w.chunk.len() as f64);
        self.progress.begin(Stage::Store, 1);
        self.batch.push(w);
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let (store, md) = (self.store.clone(), self.metadata.clone());
        let in_flight = InFlight::start(&self.in_flight);
        let write = write_segment(store, md, batch, self.progress.clone());
        actix_rt::spawn(async move {
            write.await;
            drop(in_flight);
        });
    }
}

/// Write one segment and index it, then answer every chunk in it.
async fn write_segment(
    store: SegmentStore,
    md: Metadata,
    batch: Vec<Waiting>,
    progress: Arc<Progress>,
) {
    let n = batch.len();
    let started = Instant::now();
    // Each agent's fence: the epoch its chunks were accepted under. One node holds one epoch
    // of an agent at a time (the registry ends an older connection before the lease is
    // taken); should two meet here anyway, the older one's chunks are not indexed.
    let mut fences: BTreeMap<crate::protocol::AgentId, i64> = BTreeMap::new();
    for w in &batch {
        let e = fences
            .entry(w.chunk.header.agent.clone())
            .or_insert(w.lease.epoch);
        *e = (*e).max(w.lease.epoch);
    }
    let behind = |w: &Waiting| w.lease.epoch < fences[&w.chunk.header.agent];
    let created = now_us();
    let id = Segment::new_id(created);
    let digests: Vec<[u8; 32]> = batch.iter().map(|w| w.digest).collect();
    let (parts, sha256, size) =
        Segment::encode_parts(id, created, batch.iter().map(|w| &w.chunk), &digests);
    let path = paths::segment(created, &id);
    let size = size as u64;
    let mut streams: BTreeMap<_, StreamUpdate> = BTreeMap::new();
    let mut offset = crate::protocol::segment::HEADER_LEN as u64;
    let rows: Vec<ChunkRow> = batch
        .iter()
        .filter_map(|w| {
            let len = w.chunk.len();
            let at = offset;
            offset += len as u64;
            if behind(w) {
                return None;
            }
            let h = &w.chunk.header;
            let u = streams
                .entry((h.agent.clone(), h.session, h.stream))
                .or_insert_with(|| StreamUpdate {
                    agent: h.agent.clone(),
                    session: h.session,
                    stream: h.stream,
                    kind: h.kind.code(),
                    next_seq: 0,
                    final_seq: None,
                });
            u.next_seq = u.next_seq.max(h.seq.saturating_add(1));
            if h.last {
                u.final_seq = Some(h.seq);
            }
            Some(ChunkRow::of(&w.chunk, w.digest, at, w.gap_first))
        })
        .collect();
    let stale_here: Vec<bool> = batch.iter().map(behind).collect();
    let fences: Vec<_> = fences.into_iter().filter(|(_, e)| *e > 0).collect();
    let put = store.put(path.clone(), parts).await;
    progress.finish(
        Stage::Store,
        put.is_ok() as usize * n,
        put.is_err() as usize * n,
    );
    let result = match put {
        Err(crate::storage::StoreError::Conflict { path }) => {
            // Segment ids are random: an object already there with other bytes was not
            // written by us. Refuse it loudly; the chunks go into a new segment on resend.
            metrics::counter!(m::SECURITY_EVENTS, "kind" => "conflicting_duplicate").increment(1);
            tracing::error!(segment = %path, "SECURITY: a different object exists under a new segment's name");
            Err(Reject::RetryLater)
        }
        Err(e) => {
            metrics::counter!(m::PUT_ERRORS).increment(1);
            tracing::error!(error = %e, segment = %path, "segment write failed; agents will resend");
            Err(Reject::RetryLater)
        }
        Ok(_) => {
            let commit = SegmentCommit {
                segment_id: id,
                object_key: path.to_string(),
                size,
                sha256,
                chunks: rows,
                streams: streams.into_values().collect(),
                fences,
            };
            progress.begin(Stage::Index, n);
            let committed = md.commit_segment(commit).await;
            progress.finish(
                Stage::Index,
                committed.is_ok() as usize * n,
                committed.is_err() as usize * n,
            );
            match committed {
                Ok(stale) => Ok(stale),
                Err(e) => {
                    metrics::counter!(m::COMMIT_ERRORS).increment(1);
                    tracing::error!(error = %e, segment = %path, "segment index commit failed; agents will resend");
                    Err(Reject::RetryLater)
                }
            }
        }
    };
    metrics::histogram!(m::SEGMENT_BYTES).record(size as f64);
    metrics::histogram!(m::FLUSH_DURATION).record(started.elapsed().as_secs_f64());
    metrics::gauge!(m::STORE_PENDING_BYTES)
        .decrement(batch.iter().map(|w| w.chunk.len() as f64).sum::<f64>());
    for (w, behind) in batch.into_iter().zip(stale_here) {
        let answer = match &result {
            Err(r) => Err(*r),
            Ok(stale) if behind || stale.contains(&w.chunk.header.agent) => {
                w.lease.supersede();
                Err(Reject::RetryLater)
            }
            Ok(_) => Ok(()),
        };
        let _ = w.reply.send(answer);
    }
}
