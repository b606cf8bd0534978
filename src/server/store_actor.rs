//! A store actor: batches accepted chunks into segment objects (closed by size or age), writes
//! each create-if-absent (durably: fsync of file and directory on local disk), commits its
//! index rows, and only then answers the chunks' waiters. Any failure answers `RetryLater`:
//! nothing is acked that is not durable and indexed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::durable::SegmentWriter;
use actix::prelude::*;
use tokio::sync::oneshot;

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

struct Waiting {
    chunk: SealedChunk,
    digest: [u8; 32],
    gap_first: Option<u64>,
    lease: Arc<Lease>,
    reply: oneshot::Sender<Result<(), Reject>>,
}

pub struct StoreActor {
    store: SegmentStore,
    metadata: Metadata,
    max_bytes: usize,
    max_age: Duration,
    batch: Vec<Waiting>,
    batch_bytes: usize,
    oldest: Option<Instant>,
    /// Counts batches, so a batch's age timer does not flush a later one.
    generation: u64,
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

impl StoreActor {
    pub fn new(
        store: SegmentStore,
        metadata: Metadata,
        max_bytes: usize,
        max_age: Duration,
        progress: Arc<Progress>,
    ) -> Self {
        StoreActor {
            progress,
            store,
            metadata,
            max_bytes,
            max_age,
            batch: Vec::new(),
            batch_bytes: 0,
            oldest: None,
            generation: 0,
            in_flight: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.oldest = None;
        self.generation += 1;
        let (store, md) = (self.store.clone(), self.metadata.clone());
        let in_flight = InFlight::start(&self.in_flight);
        let write = write_segment(store, md, batch, self.progress.clone());
        actix::spawn(async move {
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

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.flush();
        Running::Stop
    }
}

/// Store one verified chunk; the answer comes once it is durable and indexed.
#[derive(Message)]
#[rtype(result = "Result<(), Reject>")]
pub struct StoreChunk {
    pub chunk: SealedChunk,
    pub digest: [u8; 32],
    /// A gap record's first dropped number (kept in its index row).
    pub gap_first: Option<u64>,
    pub lease: Arc<Lease>,
}

impl Handler<StoreChunk> for StoreActor {
    type Result = ResponseFuture<Result<(), Reject>>;

    fn handle(&mut self, msg: StoreChunk, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.batch_bytes += msg.chunk.len();
        metrics::gauge!(m::STORE_PENDING_BYTES).increment(msg.chunk.len() as f64);
        self.progress.begin(Stage::Store, 1);
        if self.oldest.is_none() {
            // The batch's first chunk: it is written `max_age` from now at the latest (a timer
            // of its own, not a periodic check that adds up to a tick to the wait).
            self.oldest = Some(Instant::now());
            let generation = self.generation;
            ctx.run_later(self.max_age, move |act, _| {
                if act.generation == generation {
                    act.flush();
                }
            });
        }
        self.batch.push(Waiting {
            chunk: msg.chunk,
            digest: msg.digest,
            gap_first: msg.gap_first,
            lease: msg.lease,
            reply: tx,
        });
        if self.batch_bytes >= self.max_bytes {
            self.flush();
        }
        Box::pin(async move { rx.await.unwrap_or(Err(Reject::RetryLater)) })
    }
}

/// Write whatever is batched now (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

/// Write whatever is batched now, and answer once every segment write this actor started
/// (that one and any earlier) has finished and answered its chunks (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for StoreActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let mut count = self.in_flight.subscribe();
        Box::pin(async move {
            // The sender lives in this actor and in every write in flight: it is not dropped
            // while one is pending.
            let _ = count.wait_for(|n| *n == 0).await;
        })
    }
}
