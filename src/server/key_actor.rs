//! The key actor: the single writer of key records. It keeps the KEK registry (re-read from
//! `encryption_kek` on a timer, so rows are picked up without a restart) and registers DEKs:
//! the record goes to the object store and to `encryption_dek`, in batches.
//!
//! The actor only keeps state: every database query and object write runs as a task of its
//! own, and the actor's futures just wait for their answers. So nothing the actor suspends
//! (a reload, a batch) can hold a connection another of its futures waits for.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStore;
use tokio::sync::oneshot;

use super::watchdog::{Progress, Stage};

use super::metrics as m;
use crate::metadata::{KekRow, Metadata};
use crate::protocol::uplink::Reject;
use crate::protocol::{AgentId, DekId, DekRecord, KekId};
use crate::storage::{self, paths};

#[derive(Clone, Debug)]
struct Kek {
    row: i64,
    active: bool,
    agent: Option<String>,
    /// For an inactive KEK: when it was retired. DEK records made before then are still
    /// taken (they wrap data already recorded, which the KEK's holder can read); later ones
    /// are refused `inactive_kek`.
    retired_us: Option<i64>,
}

pub struct KeyActor {
    metadata: Metadata,
    store: Arc<dyn ObjectStore>,
    poll: Duration,
    keks: HashMap<KekId, Kek>,
    /// Rows whose public key file could not be read, with the error (logged once per change).
    broken: HashMap<i64, String>,
    deks: HashMap<DekId, AgentId>,
    /// When an inactive KEK without `retired_at` was first seen inactive here.
    retired_seen: HashMap<KekId, i64>,
    /// New DEK records each agent may register: a token bucket per agent.
    /// (tokens, last refill, refusal already logged since the last success).
    dek_budget: HashMap<AgentId, (f64, std::time::Instant, bool)>,
    dek_per_minute: f64,
    /// (agent, KEK) pairs already warned about: still recording under a retired KEK.
    warned_retired: std::collections::HashSet<(AgentId, KekId)>,
    queue: Arc<std::sync::atomic::AtomicI64>,
    /// Records accepted by the checks in memory, waiting to be written (oldest first), each
    /// once however many streams sent it: the waiters of one DEK id share one write.
    waiting: VecDeque<DekId>,
    pending: HashMap<DekId, Waiting>,
    writing: bool,
    reloading: bool,
    progress: Arc<Progress>,
}

/// DEK records written per batch.
const DEK_BATCH: usize = 256;

type DekResult = Result<(), (Reject, String)>;

struct Waiting {
    record: DekRecord,
    replies: Vec<oneshot::Sender<DekResult>>,
}

impl KeyActor {
    pub fn new(
        metadata: Metadata,
        store: Arc<dyn ObjectStore>,
        poll: Duration,
        progress: Arc<Progress>,
        dek_records_per_minute: u32,
        recent_deks: Vec<(AgentId, i64)>,
    ) -> Self {
        // Each agent's budget as the last minute left it (a restart does not refill it).
        let cap = f64::from(dek_records_per_minute);
        let now = std::time::Instant::now();
        let dek_budget = recent_deks
            .into_iter()
            .map(|(agent, n)| (agent, ((cap - n as f64).max(0.0), now, false)))
            .collect();
        KeyActor {
            waiting: VecDeque::new(),
            pending: HashMap::new(),
            writing: false,
            reloading: false,
            progress,
            metadata,
            store,
            poll,
            keks: HashMap::new(),
            broken: HashMap::new(),
            deks: HashMap::new(),
            retired_seen: HashMap::new(),
            dek_budget,
            dek_per_minute: cap,
            warned_retired: Default::default(),
            queue: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        }
    }

    /// Take the table's rows; returns (rows whose fingerprint to record, inactive rows whose
    /// retirement time to record).
    fn apply(&mut self, rows: Vec<KekRow>) -> (Vec<(i64, String)>, Vec<i64>) {
        let mut keks = HashMap::new();
        let mut fingerprints = Vec::new();
        let mut to_retire = Vec::new();
        for row in rows {
            match crate::keys::load_public_key(Path::new(&row.pub_datafile)) {
                Ok(key) => {
                    if self.broken.remove(&row.id).is_some() || !self.keks.contains_key(&key.kek_id)
                    {
                        tracing::info!(kek = %key.kek_id, row = row.id, active = row.active, e2ee = row.priv_encrypted, "KEK loaded");
                    } else if self
                        .keks
                        .get(&key.kek_id)
                        .is_some_and(|k| k.active != row.active)
                    {
                        tracing::info!(kek = %key.kek_id, row = row.id, active = row.active, "KEK activation changed");
                    }
                    let fp = key.kek_id.to_string();
                    if row.fingerprint.as_deref() != Some(fp.as_str()) {
                        fingerprints.push((row.id, fp));
                    }
                    if !row.active && row.retired_us.is_none() {
                        to_retire.push(row.id);
                    }
                    // The earlier of the recorded time and when this server first saw the
                    // row inactive (it records the latter when the row has none).
                    let seen = self.retired_seen.get(&key.kek_id).copied();
                    let retired = match (row.active, row.retired_us, seen) {
                        (true, ..) => None,
                        (false, Some(db), Some(seen)) => Some(db.min(seen)),
                        (false, Some(db), None) => Some(db),
                        (false, None, _) => Some(
                            *self
                                .retired_seen
                                .entry(key.kek_id)
                                .or_insert_with(crate::crypto::now_us),
                        ),
                    };
                    // If one public key appears in several rows, any active row makes it active.
                    let entry = keks.entry(key.kek_id).or_insert(Kek {
                        row: row.id,
                        active: false,
                        agent: row.agent_id.clone(),
                        retired_us: None,
                    });
                    if row.active {
                        entry.active = true;
                        entry.row = row.id;
                        entry.agent = row.agent_id.clone();
                    } else {
                        entry.retired_us = entry.retired_us.max(retired);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.broken.get(&row.id) != Some(&msg) {
                        tracing::error!(row = row.id, error = %msg, "encryption_kek row unusable: cannot read pub_datafile");
                        self.broken.insert(row.id, msg);
                    }
                }
            }
        }
        self.keks = keks;
        metrics::gauge!(m::KEKS_ACTIVE).set(self.keks.values().filter(|k| k.active).count() as f64);
        (fingerprints, to_retire)
    }

    /// Re-read `encryption_kek` unless a read is under way. The query runs as a task of its
    /// own; the actor only waits for its answer, holding nothing another message needs.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        if self.reloading {
            return;
        }
        self.reloading = true;
        ctx.spawn(
            read_keks(&self.metadata)
                .into_actor(self)
                .map(|res, act, _| {
                    act.reloading = false;
                    act.take_rows(res);
                }),
        );
    }

    /// Take a read of `encryption_kek`: the registry, then (in the background) the
    /// fingerprints and retirement times the table lacks.
    fn take_rows(&mut self, res: KekRead) {
        let rows = match res {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                return tracing::error!(error = %e, "cannot read encryption_kek; keeping the KEKs already loaded");
            }
            Err(e) => {
                return tracing::error!(error = %e, "KEK reload task failed; keeping the KEKs already loaded");
            }
        };
        let (fps, retire) = self.apply(rows);
        if fps.is_empty() && retire.is_empty() {
            return;
        }
        let md = self.metadata.clone();
        actix_rt::spawn(async move {
            for (id, fp) in fps {
                if let Err(e) = md.set_kek_fingerprint(id, &fp).await {
                    tracing::warn!(error = %e, "cannot record KEK fingerprint");
                }
            }
            for id in retire {
                if let Err(e) = md.mark_kek_retired(id).await {
                    tracing::warn!(error = %e, "cannot record when a KEK was retired");
                }
            }
        });
    }

    /// Write the waiting DEK records (up to `DEK_BATCH`) as one batch: one owner lookup, the
    /// objects, one insert. The writing is a task of its own; the actor takes the results.
    fn write_batch(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.waiting.is_empty() {
            return;
        }
        self.writing = true;
        let n = self.waiting.len().min(DEK_BATCH);
        let batch: Vec<Waiting> = self
            .waiting
            .drain(..n)
            .filter_map(|id| self.pending.remove(&id))
            .collect();
        let records: Vec<DekRecord> = batch.iter().map(|w| w.record.clone()).collect();
        let (md, store) = (self.metadata.clone(), self.store.clone());
        let task = actix_rt::spawn(write_deks(md, store, records));
        ctx.spawn(
            task
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.writing = false;
                    let results = res.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "DEK write task failed");
                        vec![Err((Reject::RetryLater, "key actor unavailable".into())); batch.len()]
                    });
                    let ok = results.iter().filter(|r| r.is_ok()).count();
                    act.progress.finish(Stage::Keys, ok, batch.len() - ok);
                    for (w, r) in batch.into_iter().zip(results) {
                        let Waiting { record, replies } = w;
                        if r.is_ok() && act.remember(&record) {
                            tracing::info!(agent = %record.agent, dek = %record.dek_id, kek = %record.kek_id, "DEK registered");
                        }
                        for reply in replies {
                            let _ = reply.send(r.clone());
                        }
                    }
                    act.write_batch(ctx);
                }),
        );
    }

    /// A counter of requests waiting for this actor (for the queue depth metric).
    pub fn queue(&self) -> Arc<std::sync::atomic::AtomicI64> {
        self.queue.clone()
    }
}

impl Actor for KeyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        self.reload(ctx);
        ctx.run_interval(self.poll, |act, ctx| {
            act.reload(ctx);
        });
    }
}

type KekRead = Result<Result<Vec<KekRow>, crate::metadata::MetaError>, actix_rt::task::JoinError>;

/// `encryption_kek`, read by a task of its own.
fn read_keks(
    md: &Metadata,
) -> actix_rt::task::JoinHandle<Result<Vec<KekRow>, crate::metadata::MetaError>> {
    let md = md.clone();
    actix_rt::spawn(async move { md.keks().await })
}

/// Load the KEK registry now (start-up, and tests that just inserted a row).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadKeks;

impl Handler<ReloadKeks> for KeyActor {
    type Result = ResponseActFuture<Self, ()>;

    /// Answered once the registry holds what `encryption_kek` held when the message arrived
    /// (a timer reload under way may have read it earlier, so this one reads again).
    fn handle(&mut self, _: ReloadKeks, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            read_keks(&self.metadata)
                .into_actor(self)
                .map(|res, act, _| act.take_rows(res)),
        )
    }
}

/// Register a DEK for `agent` (the connection's certificate identity).
#[derive(Message)]
#[rtype(result = "Result<(), (Reject, String)>")]
pub struct RegisterDek {
    pub agent: AgentId,
    pub record: DekRecord,
}

impl Handler<RegisterDek> for KeyActor {
    type Result = ResponseFuture<DekResult>;

    fn handle(&mut self, msg: RegisterDek, ctx: &mut Context<Self>) -> Self::Result {
        let RegisterDek { agent, record } = msg;
        let checked = self.check(&agent, &record);
        if checked.as_ref().is_none_or(|r| r.is_ok())
            && self.keks.get(&record.kek_id).is_some_and(|k| !k.active)
            && self.warned_retired.insert((agent.clone(), record.kek_id))
        {
            tracing::warn!(%agent, kek = %record.kek_id, "agent still records under a retired KEK (its DEK was made before the retirement, so its data is taken): give it the new KEK's public key as kek.pem and restart it");
        }
        let outcome = |r: &DekResult| match r {
            Ok(()) => "registered",
            Err((r, _)) => r.name(),
        };
        match checked {
            Some(r) => {
                metrics::counter!(m::DEK_REGISTRATIONS, "outcome" => outcome(&r)).increment(1);
                Box::pin(std::future::ready(r))
            }
            None => {
                let (tx, rx) = oneshot::channel();
                self.queue.fetch_add(1, Ordering::Relaxed);
                metrics::gauge!(m::KEY_QUEUE_DEPTH).increment(1.0);
                let same = self.pending.get(&record.dek_id).map(|w| w.record == record);
                match same {
                    Some(true) => self
                        .pending
                        .get_mut(&record.dek_id)
                        .expect("checked")
                        .replies
                        .push(tx),
                    Some(false) => {
                        let _ = tx.send(Err((
                            Reject::RetryLater,
                            "another record under this DEK id is being registered".into(),
                        )));
                    }
                    None if !self.take_dek_token(&agent) => {
                        metrics::counter!(m::DEK_RATE_LIMITED).increment(1);
                        let _ = tx.send(Err((
                            Reject::RetryLater,
                            format!(
                                "more than {} new DEK records a minute from this agent; keep the data and resend later",
                                self.dek_per_minute
                            ),
                        )));
                    }
                    None => {
                        self.progress.begin(Stage::Keys, 1);
                        self.waiting.push_back(record.dek_id);
                        self.pending.insert(
                            record.dek_id,
                            Waiting {
                                record,
                                replies: vec![tx],
                            },
                        );
                        self.write_batch(ctx);
                    }
                }
                let queue = self.queue.clone();
                Box::pin(async move {
                    let r = rx
                        .await
                        .unwrap_or_else(|_| Err((Reject::RetryLater, "key actor stopped".into())));
                    queue.fetch_sub(1, Ordering::Relaxed);
                    metrics::gauge!(m::KEY_QUEUE_DEPTH).decrement(1.0);
                    metrics::counter!(m::DEK_REGISTRATIONS, "outcome" => outcome(&r)).increment(1);
                    r
                })
            }
        }
    }
}

/// DEK ids the key actor remembers (about 80 bytes each): beyond this, one is forgotten per
/// new one. A forgotten DEK sent again is written again (create-if-absent: the same row and
/// object) and counts against its agent's DEK rate like a new one.
const DEK_CACHE: usize = 100_000;

impl KeyActor {
    /// Remember a registered DEK's owner; true if it was new. Bounded by `DEK_CACHE`, so a
    /// server up for months does not grow with every agent start it ever saw.
    fn remember(&mut self, record: &DekRecord) -> bool {
        if self.deks.len() >= DEK_CACHE && !self.deks.contains_key(&record.dek_id) {
            let evict = self.deks.keys().next().copied();
            if let Some(k) = evict {
                self.deks.remove(&k);
            }
        }
        self.deks
            .insert(record.dek_id, record.agent.clone())
            .is_none()
    }

    /// Take one of `agent`'s new-DEK tokens (refilled at `dek_per_minute`); false if none.
    fn take_dek_token(&mut self, agent: &AgentId) -> bool {
        let now = std::time::Instant::now();
        let cap = self.dek_per_minute;
        let (tokens, last, warned) = self
            .dek_budget
            .entry(agent.clone())
            .or_insert((cap, now, false));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * cap / 60.0).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            *warned = false;
            true
        } else {
            if !*warned {
                *warned = true;
                tracing::warn!(%agent, per_minute = cap, "DEK records refused (retry_later): this agent registers new DEKs faster than the limit");
            }
            false
        }
    }

    /// The answer the registry in memory gives at once, or `None` when the record must be
    /// written.
    fn check(&self, agent: &AgentId, record: &DekRecord) -> Option<DekResult> {
        if record.agent != *agent {
            return Some(Err((
                Reject::AgentMismatch,
                format!("DEK record names agent {:?}", record.agent.as_str()),
            )));
        }
        match self.deks.get(&record.dek_id) {
            Some(owner) if owner == agent => return Some(Ok(())),
            Some(_) => {
                return Some(Err((
                    Reject::AgentMismatch,
                    "DEK id already registered by another agent".into(),
                )));
            }
            None => {}
        }
        match self.keks.get(&record.kek_id) {
            None => Some(Err((
                Reject::UnknownKek,
                format!(
                    "KEK {} is not in encryption_kek; keep the data and resend",
                    record.kek_id
                ),
            ))),
            Some(k) if !k.active => {
                let retired = k.retired_us.unwrap_or(i64::MAX);
                if record.created_us > retired {
                    return Some(Err((
                        Reject::InactiveKek,
                        format!(
                            "KEK {} is retired and this DEK record was made after that: give the agent the new KEK's public key as kek.pem",
                            record.kek_id
                        ),
                    )));
                }
                if let Some(a) = k.agent.as_deref()
                    && a != agent.as_str()
                {
                    return Some(Err((
                        Reject::UnknownKek,
                        format!("KEK {} is bound to another agent", record.kek_id),
                    )));
                }
                // Made before the retirement: data already recorded, taken.
                None
            }
            Some(k) if k.agent.as_deref().is_some_and(|a| a != agent.as_str()) => Some(Err((
                Reject::UnknownKek,
                format!("KEK {} is bound to another agent", record.kek_id),
            ))),
            Some(_) => None,
        }
    }
}

/// Write a batch of DEK records: refuse ids another agent owns, put each record's object
/// (create-if-absent), then insert the rows in one statement. One answer per record, in order.
async fn write_deks(
    md: Metadata,
    store: Arc<dyn ObjectStore>,
    records: Vec<DekRecord>,
) -> Vec<DekResult> {
    let unavailable = |what: &str| Err((Reject::RetryLater, format!("{what} unavailable")));
    let ids: Vec<[u8; 16]> = records.iter().map(|r| r.dek_id.0).collect();
    let owners = match md.dek_owners(ids).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "cannot read encryption_dek");
            return records.iter().map(|_| unavailable("metadata")).collect();
        }
    };
    let puts = records.iter().map(|rec| {
        let owner = owners.get(&rec.dek_id.0);
        let store = store.clone();
        async move {
            // A DEK id already taken by another agent is refused, whoever asks.
            if owner.is_some_and(|o| o != rec.agent.as_str()) {
                return Err((
                    Reject::AgentMismatch,
                    "DEK id registered by another agent".to_string(),
                ));
            }
            let path = paths::dek_record(&rec.agent, rec.dek_id);
            match storage::put_new(store.as_ref(), &path, Bytes::from(rec.encode())).await {
                Ok(_) => Ok(path.to_string()),
                Err(storage::StoreError::Conflict { path }) => {
                    // Another record already sits under this DEK's name.
                    metrics::counter!(m::SECURITY_EVENTS, "kind" => "conflicting_duplicate")
                        .increment(1);
                    tracing::error!(%path, "SECURITY: a different DEK record is stored under this DEK id");
                    Err((
                        Reject::ConflictingDuplicate,
                        "a different DEK record exists under this id".to_string(),
                    ))
                }
                Err(e) => {
                    metrics::counter!(m::PUT_ERRORS).increment(1);
                    tracing::error!(error = %e, "cannot store DEK record");
                    Err((Reject::RetryLater, "object store unavailable".to_string()))
                }
            }
        }
    });
    let puts: Vec<Result<String, (Reject, String)>> =
        futures::stream::iter(puts).buffered(16).collect().await;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (rec, put) in records.iter().zip(&puts) {
        if let Ok(key) = put
            && seen.insert(rec.dek_id)
        {
            rows.push((rec.clone(), key.clone()));
        }
    }
    let inserted = md.insert_deks(rows).await;
    if let Err(e) = &inserted {
        tracing::error!(error = %e, "cannot insert into encryption_dek");
    }
    puts.into_iter()
        .map(|p| match (p, &inserted) {
            (Ok(_), Ok(())) => Ok(()),
            (Ok(_), Err(_)) => unavailable("metadata"),
            (Err(e), _) => Err(e),
        })
        .collect()
}
