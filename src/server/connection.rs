//! One agent connection: the `ConnectionActor` owns what the server knows of the agent's
//! streams (sequence state, registered DEKs) and verifies each envelope without keys; a task
//! per QUIC stream reads messages, hands accepted chunks to a store actor and writes the
//! answers back in order once each chunk is durable. A full in-flight queue stops the reading,
//! so QUIC flow control pushes back on the agent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use actix::prelude::*;
use bytes::BytesMut;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use super::budget::Budget;
use super::key_actor::{KeyActor, RegisterDek};
use super::metrics as m;
use super::registry::{AgentRegistry, Lease, peer_agent};
use super::store_actor::{StoreActor, StoreChunk};
use super::verify::{StreamState, Verdict};
use crate::config::Limits;
use crate::metadata::Metadata;
use crate::protocol::uplink::CloseCode;
use crate::protocol::uplink::{self, MSG_CHUNK, MSG_DEK, Reject, Response};
use crate::protocol::{
    AgentId, ChunkHeader, DecodeError, DekId, DekRecord, Kind, SealedChunk, SessionId, StreamId,
};

/// What every connection shares.
pub struct Shared {
    pub key: Addr<KeyActor>,
    pub stores: Vec<Addr<StoreActor>>,
    pub metadata: Metadata,
    pub limits: Limits,
    /// Bytes of chunks accepted and not yet durable, server-wide.
    pub memory: Arc<Semaphore>,
    pub memory_bytes: usize,
    pub agents: AgentRegistry,
    /// Which agent certificates may connect (refreshed every `access_poll_ms`).
    pub access: super::access::Access,
    /// Connections with an identified agent.
    pub open: AtomicUsize,
    /// Handshakes under way (no certificate seen yet).
    pub handshaking: AtomicUsize,
    /// Bytes of half-received messages buffered, server-wide (`limits.partial_bytes_total`).
    pub partial: Arc<Semaphore>,
    /// This node's name (lease rows).
    pub node: String,
    /// Set while this node cannot reach its database: agents are turned away (and the open
    /// connections closed) so that they fail over to a node that can.
    pub database_down: std::sync::atomic::AtomicBool,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(
        key: Addr<KeyActor>,
        stores: Vec<Addr<StoreActor>>,
        metadata: Metadata,
        limits: Limits,
        memory_bytes: usize,
        node: String,
    ) -> Self {
        let partial_total = limits.partial_bytes_total;
        Shared {
            key,
            stores,
            metadata,
            limits,
            memory: Arc::new(Semaphore::new(memory_bytes)),
            memory_bytes,
            agents: AgentRegistry::default(),
            access: super::access::Access::default(),
            open: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            partial: Arc::new(Semaphore::new(partial_total)),
            node,
            database_down: Default::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

type StreamKey = (SessionId, StreamId);

pub struct ConnectionActor {
    agent: AgentId,
    shared: Arc<Shared>,
    streams: HashMap<StreamKey, StreamState>,
    deks: HashSet<DekId>,
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), (Reject, String)>")]
struct Register(DekRecord);

impl Handler<Register> for ConnectionActor {
    type Result = ResponseActFuture<Self, Result<(), (Reject, String)>>;

    fn handle(&mut self, Register(record): Register, _: &mut Context<Self>) -> Self::Result {
        let dek = record.dek_id;
        let req = self.shared.key.send(RegisterDek {
            agent: self.agent.clone(),
            record,
        });
        Box::pin(
            async move {
                req.await
                    .unwrap_or_else(|_| Err((Reject::RetryLater, "key actor unavailable".into())))
            }
            .into_actor(self)
            .map(move |res, act, _| {
                if res.is_ok() {
                    act.deks.insert(dek);
                }
                res
            }),
        )
    }
}

/// Verify a chunk's envelope against the connection and its stream: the verdict, and for an
/// accepted gap record the first number it dropped.
#[derive(Message)]
#[rtype(result = "Result<(Verdict, Option<u64>), (Reject, String)>")]
struct Admit {
    header: ChunkHeader,
    digest: [u8; 32],
}

/// Admission never suspends the actor (no `ctx.wait`): a database lookup for one stream must
/// not hold up the chunks of the agent's other streams. Chunks of one stream arrive one after
/// another (its QUIC stream is read in order), and the state is checked again when a lookup
/// returns, so an answer that arrives late cannot undo what happened meanwhile.
impl Handler<Admit> for ConnectionActor {
    type Result = ResponseActFuture<Self, Result<(Verdict, Option<u64>), (Reject, String)>>;

    fn handle(&mut self, msg: Admit, _: &mut Context<Self>) -> Self::Result {
        let h = msg.header;
        if h.agent != self.agent {
            return Box::pin(fut::ready(Err((
                Reject::AgentMismatch,
                format!("chunk names agent {:?}", h.agent.as_str()),
            ))));
        }
        if !self.deks.contains(&h.dek_id) {
            return Box::pin(fut::ready(Err((
                Reject::UnknownDek,
                format!(
                    "DEK {} not registered on this connection; send its record first",
                    h.dek_id
                ),
            ))));
        }
        let key = (h.session, h.stream);
        let md = self.shared.metadata.clone();
        let agent = self.agent.clone();
        let known = self.streams.contains_key(&key);
        Box::pin(
            async move {
                if known {
                    return Ok(None);
                }
                md.stream(&agent, h.session, h.stream).await.map(Some)
            }
            .into_actor(self)
            .then(move |loaded, act, _| {
                let state = match loaded {
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read stream state");
                        return fut::ready(Err((
                            Reject::RetryLater,
                            "metadata unavailable".into(),
                        )))
                        .boxed_local();
                    }
                    Ok(loaded) => {
                        act.streams
                            .entry(key)
                            .or_insert_with(|| match loaded.flatten() {
                                Some(row) => StreamState::resume(
                                    Kind::from_code(row.kind).unwrap_or(h.kind),
                                    row.next_seq,
                                    row.final_seq,
                                    row.dropped,
                                ),
                                None => StreamState::new(h.kind),
                            })
                    }
                };
                match state.check_chunk(h.kind, h.seq, h.last, h.gap, msg.digest) {
                    Verdict::AskStored => {
                        let md = act.shared.metadata.clone();
                        let agent = act.agent.clone();
                        async move { md.chunk_digest(&agent, h.session, h.stream, h.seq).await }
                            .into_actor(act)
                            .map(move |stored, act, _| match stored {
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot read chunk index");
                                    Err((Reject::RetryLater, "metadata unavailable".into()))
                                }
                                Ok(stored) => {
                                    let state = act.streams.get_mut(&key).expect("inserted above");
                                    // Checked again: the stream may have moved meanwhile.
                                    match state
                                        .check_chunk(h.kind, h.seq, h.last, h.gap, msg.digest)
                                    {
                                        Verdict::AskStored => verdict(
                                            state.resolve(h.seq, h.last, msg.digest, stored),
                                        )
                                        .map(|v| (v, None)),
                                        v => verdict(v).map(|v| {
                                            (
                                                v,
                                                h.gap
                                                    .then(|| state.dropped_before(h.seq))
                                                    .flatten(),
                                            )
                                        }),
                                    }
                                }
                            })
                            .boxed_local()
                    }
                    v => fut::ready(
                        verdict(v)
                            .map(|v| (v, h.gap.then(|| state.dropped_before(h.seq)).flatten())),
                    )
                    .boxed_local(),
                }
            }),
        )
    }
}

fn verdict(v: Verdict) -> Result<Verdict, (Reject, String)> {
    match v {
        Verdict::Reject(r) => Err((r, reason(r).into())),
        v => Ok(v),
    }
}

fn reason(r: Reject) -> &'static str {
    match r {
        Reject::SequenceGap => "sequence number skipped; resend from the first unacked chunk",
        Reject::ConflictingDuplicate => "different bytes under a sequence number already stored",
        Reject::AfterFinal => "the stream already ended with a final chunk",
        Reject::StreamMismatch => "chunk kind differs from the stream's",
        Reject::InProgress => {
            "the same chunk is still being stored from an earlier send; its answer goes there"
        }
        Reject::SequenceExhausted => {
            "sequence number 2^64-1: nothing can follow it; start a new stream"
        }
        Reject::DeclaredDropped => "this number lies in a range the stream's gap record dropped",
        _ => "refused",
    }
}

/// The store's answer for an accepted chunk.
#[derive(Message)]
#[rtype(result = "()")]
struct Settle {
    key: StreamKey,
    seq: u64,
    stored: bool,
}

impl Handler<Settle> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) {
        if let Some(s) = self.streams.get_mut(&msg.key) {
            s.settle(msg.seq, msg.stored);
        }
    }
}

/// Serve one incoming connection until it closes.
pub async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let remote = incoming.remote_address();
    let limit = std::time::Duration::from_millis(shared.limits.handshake_timeout_ms);
    let handshake = tokio::time::timeout(limit, incoming).await;
    shared.handshaking.fetch_sub(1, Ordering::Relaxed);
    let conn = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::info!(conn = id, %remote, error = %e, "connection refused: handshake failed");
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "handshake").increment(1);
            return;
        }
        Err(_) => {
            // Dropping the handshake closes it: its state is freed now, not at idle timeout.
            tracing::info!(conn = id, %remote, timeout_ms = limit.as_millis() as u64, "connection refused: handshake not finished in time");
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "handshake_timeout").increment(1);
            return;
        }
    };
    let (agent, fingerprint) = match peer_agent(&conn) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(conn = id, %remote, error = %e, "client certificate without a usable agent name");
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "identity").increment(1);
            crate::transport::close(
                &conn,
                CloseCode::NoIdentity,
                "client certificate has no usable agent name",
            );
            return;
        }
    };
    if let Err(refusal) = shared.access.rules().check(&agent, &fingerprint) {
        tracing::warn!(conn = id, %remote, %agent, %fingerprint, reason = %refusal, "connection refused: agent certificate not accepted");
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => refusal.label()).increment(1);
        crate::transport::close(&conn, CloseCode::AccessRefused, &refusal.to_string());
        return;
    }
    if shared.open.fetch_add(1, Ordering::Relaxed) >= shared.limits.max_connections {
        shared.open.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "connection_cap").increment(1);
        tracing::warn!(conn = id, %remote, agent = %agent, "connection refused: limits.max_connections reached");
        crate::transport::close(
            &conn,
            CloseCode::ConnectionCap,
            "server at its connection limit",
        );
        return;
    }
    if shared.database_down.load(Ordering::Relaxed) {
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "database_unreachable").increment(1);
        crate::transport::close(
            &conn,
            CloseCode::TryAnotherNode,
            "this node cannot reach its database; try another node",
        );
        shared.open.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let span = tracing::info_span!("connection", conn = id, agent = %agent, %remote);
    async move {
        let guard = Arc::new(shared.agents.take_over(&agent, conn.clone()).await);
        // The lease after the registry: an older connection of this agent on this node has
        // finished its chunks by now, so one node never holds two epochs of an agent.
        let lease = match shared.metadata.take_lease(&agent, &shared.node).await {
            Ok(epoch) => Arc::new(Lease::new(epoch, conn.clone())),
            Err(e) => {
                tracing::error!(error = %e, "cannot take the agent's lease; connection closed");
                metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "lease").increment(1);
                crate::transport::close(
                    &conn,
                    CloseCode::TryAnotherNode,
                    "this node cannot reach its database; try another node",
                );
                shared.agents.release(&agent, &conn);
                shared.open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        if conn.close_reason().is_some() {
            // Gone while it waited for an older connection: it serves nothing, and the epoch it
            // took is simply older than the agent's next one.
            shared.agents.release(&agent, &conn);
            shared.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        tracing::info!(epoch = lease.epoch, "agent connected");
        metrics::gauge!(m::CONNECTIONS_OPEN).increment(1.0);
        let actor = ConnectionActor {
            agent: agent.clone(),
            shared: shared.clone(),
            streams: HashMap::new(),
            deks: HashSet::new(),
        }
        .start();
        let mut tasks = Vec::new();
        let mut next = 0usize;
        let partial = Arc::new(Semaphore::new(shared.limits.partial_bytes_per_connection));
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let store = shared.stores[next % shared.stores.len()].clone();
                    next += 1;
                    let span = tracing::Span::current();
                    tasks.push(actix_rt::spawn(
                        serve_stream(
                            send,
                            recv,
                            actor.clone(),
                            store,
                            shared.clone(),
                            Budget::new(partial.clone(), shared.partial.clone()),
                            (guard.clone(), lease.clone()),
                        )
                        .instrument(span),
                    ));
                }
                Err(e) => {
                    tracing::info!(reason = %e, "agent disconnected");
                    break;
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        shared.agents.release(&agent, &conn);
        drop(guard);
        metrics::gauge!(m::CONNECTIONS_OPEN).decrement(1.0);
        shared.open.fetch_sub(1, Ordering::Relaxed);
    }
    .instrument(span)
    .await
}

enum Pending {
    Ready(Response, Instant),
    Stored {
        seq: u64,
        key: StreamKey,
        started: Instant,
        result: actix_rt::task::JoinHandle<Result<(), Reject>>,
    },
}

async fn serve_stream(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    actor: Addr<ConnectionActor>,
    store: Addr<StoreActor>,
    shared: Arc<Shared>,
    mut budget: Budget,
    // The agent's writer lock on this node (held until the stream ends) and its lease.
    (_guard, lease): (Arc<tokio::sync::OwnedMutexGuard<()>>, Arc<Lease>),
) {
    metrics::gauge!(m::STREAMS_OPEN).increment(1.0);
    let (tx, rx) = mpsc::channel(shared.limits.max_in_flight_per_stream);
    let writer = actix_rt::spawn(write_responses(send, rx, actor.clone()));
    // Grown while a message arrives, released when the stream is idle: 20,000 quiet streams
    // must not each pin a buffer.
    let mut buf = BytesMut::new();
    let mut bound: Option<StreamKey> = None;
    'read: loop {
        loop {
            match uplink::decode_message(&mut buf) {
                Ok(Some(msg)) => {
                    let started = Instant::now();
                    let pending = match msg.kind {
                        MSG_DEK => on_dek(&actor, &msg.body, started).await,
                        MSG_CHUNK => {
                            let to = (&store, &lease);
                            on_chunk(&actor, to, &shared, msg.body, &mut bound, started).await
                        }
                        _ => unreachable!("decode_message accepts only known types"),
                    };
                    if tx.send(pending).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => {
                    if buf.is_empty() {
                        buf = BytesMut::new();
                    }
                    break;
                }
                Err(e) => {
                    // The framing is lost: answer once and stop reading this stream.
                    let r = if matches!(e, DecodeError::OutOfRange { .. }) {
                        Reject::TooLarge
                    } else {
                        Reject::Malformed
                    };
                    outcome(r, &e.to_string());
                    let _ = tx
                        .send(Pending::Ready(
                            reject(MSG_CHUNK, 0, r, e.to_string()),
                            Instant::now(),
                        ))
                        .await;
                    break 'read;
                }
            }
        }
        // What stays buffered is a message not yet whole: it is held against the connection's
        // and the server's budgets before reading on. With no room, this stream is not read
        // and QUIC flow control holds the sender back. An idle stream holds nothing.
        budget.hold(buf.len()).await;
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => {
                metrics::counter!(m::RECEIVED_BYTES).increment(c.bytes.len() as u64);
                buf.extend_from_slice(&c.bytes);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "stream read ended");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    metrics::gauge!(m::STREAMS_OPEN).decrement(1.0);
}

async fn on_dek(actor: &Addr<ConnectionActor>, body: &[u8], started: Instant) -> Pending {
    let resp = match DekRecord::decode(body) {
        Err(e) => {
            tracing::warn!(error = %e, "malformed DEK record");
            reject(MSG_DEK, 0, Reject::Malformed, e.to_string())
        }
        Ok(record) => match actor.send(Register(record)).await {
            Ok(Ok(())) => ack(MSG_DEK, 0),
            Ok(Err((r, why))) => {
                tracing::warn!(outcome = r.name(), reason = %why, "DEK record refused");
                if r == Reject::AgentMismatch {
                    metrics::counter!(m::SECURITY_EVENTS, "kind" => "agent_mismatch").increment(1);
                }
                reject(MSG_DEK, 0, r, why)
            }
            Err(_) => reject(MSG_DEK, 0, Reject::RetryLater, "connection closing".into()),
        },
    };
    Pending::Ready(resp, started)
}

async fn on_chunk(
    actor: &Addr<ConnectionActor>,
    (store, lease): (&Addr<StoreActor>, &Arc<Lease>),
    shared: &Arc<Shared>,
    body: bytes::Bytes,
    bound: &mut Option<StreamKey>,
    started: Instant,
) -> Pending {
    let chunk = match SealedChunk::decode(body) {
        Ok(c) => c,
        Err(e) => {
            let r = if matches!(e, DecodeError::OutOfRange { .. }) {
                Reject::TooLarge
            } else {
                Reject::Malformed
            };
            outcome(r, &e.to_string());
            return Pending::Ready(reject(MSG_CHUNK, 0, r, e.to_string()), started);
        }
    };
    let h = chunk.header.clone();
    let key = (h.session, h.stream);
    if *bound.get_or_insert(key) != key {
        outcome(
            Reject::StreamMismatch,
            "chunk of another session or stream on this QUIC stream",
        );
        return Pending::Ready(
            reject(
                MSG_CHUNK,
                h.seq,
                Reject::StreamMismatch,
                "one QUIC stream carries one (session, stream)".into(),
            ),
            started,
        );
    }
    if lease.is_superseded() {
        outcome(Reject::RetryLater, "connection superseded");
        return Pending::Ready(
            reject(
                MSG_CHUNK,
                h.seq,
                Reject::RetryLater,
                "a newer connection of this agent holds its lease".into(),
            ),
            started,
        );
    }
    let digest = crate::protocol::segment::chunk_digest(&chunk);
    match actor
        .send(Admit {
            header: h.clone(),
            digest,
        })
        .await
    {
        Ok(Ok((Verdict::Accept, gap_first))) => {
            let want = (chunk.len() as u32).min(shared.memory_bytes as u32).max(1);
            let permit = shared.memory.clone().acquire_many_owned(want).await;
            let req = store.send(StoreChunk {
                chunk,
                digest,
                gap_first,
                lease: lease.clone(),
            });
            let result = actix_rt::spawn(async move {
                let r = req.await.unwrap_or(Err(Reject::RetryLater));
                drop(permit);
                r
            });
            Pending::Stored {
                seq: h.seq,
                key,
                started,
                result,
            }
        }
        Ok(Ok((_duplicate, _))) => {
            metrics::counter!(m::CHUNKS, "outcome" => "duplicate").increment(1);
            Pending::Ready(ack(MSG_CHUNK, h.seq), started)
        }
        Ok(Err((r, why))) => {
            outcome(r, &why);
            if r == Reject::ConflictingDuplicate {
                tracing::error!(session = %h.session, stream = %h.stream, seq = h.seq, "SECURITY: different bytes resent under a stored sequence number");
            }
            Pending::Ready(reject(MSG_CHUNK, h.seq, r, why), started)
        }
        Err(_) => Pending::Ready(
            reject(
                MSG_CHUNK,
                h.seq,
                Reject::RetryLater,
                "connection closing".into(),
            ),
            started,
        ),
    }
}

/// Count a rejection (one log line and one metric per bad input; other peers do not notice).
fn outcome(r: Reject, why: &str) {
    metrics::counter!(m::CHUNKS, "outcome" => r.name()).increment(1);
    match r {
        Reject::ConflictingDuplicate | Reject::AgentMismatch => {
            metrics::counter!(m::SECURITY_EVENTS, "kind" => r.name()).increment(1);
            tracing::warn!(outcome = r.name(), reason = why, "chunk refused");
        }
        Reject::RetryLater | Reject::UnknownDek | Reject::InProgress => {
            tracing::debug!(outcome = r.name(), reason = why, "chunk deferred")
        }
        _ => tracing::warn!(outcome = r.name(), reason = why, "chunk refused"),
    }
}

fn ack(kind: u8, seq: u64) -> Response {
    Response {
        kind,
        seq,
        outcome: Ok(()),
        reason: String::new(),
    }
}

fn reject(kind: u8, seq: u64, r: Reject, reason: String) -> Response {
    Response {
        kind,
        seq,
        outcome: Err(r),
        reason,
    }
}

async fn write_responses(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Pending>,
    actor: Addr<ConnectionActor>,
) {
    let mut out = BytesMut::new();
    let mut open = true;
    while let Some(p) = rx.recv().await {
        let (resp, started) = match p {
            Pending::Ready(r, t) => (r, t),
            Pending::Stored {
                seq,
                key,
                started,
                result,
            } => {
                let r = result.await.unwrap_or(Err(Reject::RetryLater));
                let _ = actor
                    .send(Settle {
                        key,
                        seq,
                        stored: r.is_ok(),
                    })
                    .await;
                let name = match r {
                    Ok(()) => "stored",
                    Err(e) => e.name(),
                };
                metrics::counter!(m::CHUNKS, "outcome" => name).increment(1);
                let reason = if r.is_err() {
                    "storage unavailable; resend later".into()
                } else {
                    String::new()
                };
                (
                    Response {
                        kind: MSG_CHUNK,
                        seq,
                        outcome: r,
                        reason,
                    },
                    started,
                )
            }
        };
        if !open {
            continue;
        }
        out.clear();
        resp.encode(&mut out);
        if send.write_all(&out).await.is_err() {
            open = false;
        }
        metrics::histogram!(m::ACK_LATENCY).record(started.elapsed().as_secs_f64());
    }
    if open {
        let _ = send.finish();
    }
}
