//! The task per QUIC stream: it reads messages, admits each chunk itself (the connection's
//! `state`), hands accepted ones to its store actor's bounded mailbox and writes the answers
//! back in order once each is durable. Reading and answering are two halves of one task, joined
//! by a bounded queue of pending answers (`max_in_flight_per_stream`): when it is full, or the
//! store's mailbox is, the stream is not read and QUIC flow control holds the agent back.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::state::{Connection, SharedStream, StreamKey};
use crate::protocol::uplink::{self, MSG_CHUNK, MSG_DEK, Reject, Response};
use crate::protocol::{DecodeError, DekRecord, SealedChunk};
use crate::server::budget::Budget;
use crate::server::metrics as m;
use crate::server::registry::Lease;
use crate::server::store_actor::{StoreActor, StoreAnswer, StoreChunk};
use crate::server::verify::Verdict;

enum Pending {
    Ready(Response, Instant),
    Stored {
        seq: u64,
        state: SharedStream,
        started: Instant,
        answer: StoreAnswer,
        /// The chunk's bytes in the server-wide budget, given back with its answer.
        _memory: OwnedSemaphorePermit,
    },
}

/// What the reading half knows of its QUIC stream.
struct Bound {
    /// The (session, stream) this QUIC stream carries: set by its first chunk.
    key: Option<StreamKey>,
    /// Its sequence state, looked up once.
    state: Option<SharedStream>,
}

pub(super) async fn serve_stream(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    conn: Arc<Connection>,
    store: StoreActor,
    budget: Budget,
    // The agent's writer lock on this node (held until the stream ends) and its lease.
    (_guard, lease): (Arc<tokio::sync::OwnedMutexGuard<()>>, Arc<Lease>),
) {
    metrics::gauge!(m::STREAMS_OPEN).increment(1.0);
    let (tx, rx) = mpsc::channel(conn.shared.limits.max_in_flight_per_stream);
    tokio::join!(
        read_messages(recv, tx, &conn, (&store, &lease), budget),
        write_responses(send, rx)
    );
    metrics::gauge!(m::STREAMS_OPEN).decrement(1.0);
}

/// The reading half: messages in, pending answers out (in order), until the stream ends.
async fn read_messages(
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<Pending>,
    conn: &Connection,
    (store, lease): (&StoreActor, &Arc<Lease>),
    mut budget: Budget,
) {
    // Grown while a message arrives, released when the stream is idle: 20,000 quiet streams
    // must not each pin a buffer.
    let mut buf = BytesMut::new();
    let mut bound = Bound {
        key: None,
        state: None,
    };
    loop {
        loop {
            match uplink::decode_message(&mut buf) {
                Ok(Some(msg)) => {
                    let started = Instant::now();
                    let pending = match msg.kind {
                        MSG_DEK => on_dek(conn, &msg.body, started).await,
                        MSG_CHUNK => {
                            on_chunk(conn, (store, lease), msg.body, &mut bound, started).await
                        }
                        _ => unreachable!("decode_message accepts only known types"),
                    };
                    if tx.send(pending).await.is_err() {
                        return;
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
                    return;
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
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "stream read ended");
                return;
            }
        }
    }
}

async fn on_dek(conn: &Connection, body: &[u8], started: Instant) -> Pending {
    let resp = match DekRecord::decode(body) {
        Err(e) => {
            tracing::warn!(error = %e, "malformed DEK record");
            reject(MSG_DEK, 0, Reject::Malformed, e.to_string())
        }
        Ok(record) => match conn.register(record).await {
            Ok(()) => ack(MSG_DEK, 0),
            Err((r, why)) => {
                tracing::warn!(outcome = r.name(), reason = %why, "DEK record refused");
                if r == Reject::AgentMismatch {
                    metrics::counter!(m::SECURITY_EVENTS, "kind" => "agent_mismatch").increment(1);
                }
                reject(MSG_DEK, 0, r, why)
            }
        },
    };
    Pending::Ready(resp, started)
}

async fn on_chunk(
    conn: &Connection,
    (store, lease): (&StoreActor, &Arc<Lease>),
    body: bytes::Bytes,
    bound: &mut Bound,
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
    let h = &chunk.header;
    let (seq, key) = (h.seq, (h.session, h.stream));
    if *bound.key.get_or_insert(key) != key {
        outcome(
            Reject::StreamMismatch,
            "chunk of another session or stream on this QUIC stream",
        );
        return Pending::Ready(
            reject(
                MSG_CHUNK,
                seq,
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
                seq,
                Reject::RetryLater,
                "a newer connection of this agent holds its lease".into(),
            ),
            started,
        );
    }
    let digest = crate::protocol::segment::chunk_digest(&chunk);
    match conn.admit(&mut bound.state, h, digest).await {
        Ok((Verdict::Accept, gap_first)) => {
            let shared = &conn.shared;
            let want = (chunk.len() as u32).min(shared.memory_bytes as u32).max(1);
            let memory = shared
                .memory
                .clone()
                .acquire_many_owned(want)
                .await
                .expect("the memory semaphore is never closed");
            let state = bound.state.clone().expect("set by admit");
            let answer = store
                .store(StoreChunk {
                    chunk,
                    digest,
                    gap_first,
                    lease: lease.clone(),
                })
                .await;
            Pending::Stored {
                seq,
                state,
                started,
                answer,
                _memory: memory,
            }
        }
        Ok((_duplicate, _)) => {
            metrics::counter!(m::CHUNKS, "outcome" => "duplicate").increment(1);
            Pending::Ready(ack(MSG_CHUNK, seq), started)
        }
        Err((r, why)) => {
            outcome(r, &why);
            if r == Reject::ConflictingDuplicate {
                tracing::error!(session = %h.session, stream = %h.stream, seq, "SECURITY: different bytes resent under a stored sequence number");
            }
            Pending::Ready(reject(MSG_CHUNK, seq, r, why), started)
        }
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

/// The answering half: each answer in order, a stored chunk's once its store actor answered.
async fn write_responses(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Pending>) {
    let mut out = BytesMut::new();
    let mut open = true;
    while let Some(p) = rx.recv().await {
        let (resp, started) = match p {
            Pending::Ready(r, t) => (r, t),
            Pending::Stored {
                seq,
                state,
                started,
                answer,
                _memory,
            } => {
                let r = answer.wait().await;
                drop(_memory);
                state.lock().expect("stream lock").settle(seq, r.is_ok());
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
