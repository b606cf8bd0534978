//! The task per QUIC stream: it reads messages, has the connection actor admit them, hands
//! accepted chunks to a store actor and writes the answers back in order once each is durable.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::BytesMut;
use tokio::sync::mpsc;

use super::Shared;
use super::actor::{Admit, ConnectionActor, Register, Settle, StreamKey};
use crate::protocol::uplink::{self, MSG_CHUNK, MSG_DEK, Reject, Response};
use crate::protocol::{DecodeError, DekRecord, SealedChunk};
use crate::server::budget::Budget;
use crate::server::metrics as m;
use crate::server::registry::Lease;
use crate::server::store_actor::{StoreActor, StoreChunk};
use crate::server::verify::Verdict;

enum Pending {
    Ready(Response, Instant),
    Stored {
        seq: u64,
        key: StreamKey,
        started: Instant,
        result: actix_rt::task::JoinHandle<Result<(), Reject>>,
    },
}

pub(super) async fn serve_stream(
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
