//! The `ConnectionActor`: one per agent connection, it holds the agent's stream states and
//! registered DEKs, and answers its messages (register a DEK, admit a chunk, settle a stored one).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;

use super::Shared;
use crate::protocol::uplink::Reject;
use crate::protocol::{AgentId, ChunkHeader, DekId, DekRecord, Kind, SessionId, StreamId};
use crate::server::key_actor::RegisterDek;
use crate::server::verify::{StreamState, Verdict};

pub(super) type StreamKey = (SessionId, StreamId);

pub struct ConnectionActor {
    pub(super) agent: AgentId,
    pub(super) shared: Arc<Shared>,
    pub(super) streams: HashMap<StreamKey, StreamState>,
    pub(super) deks: HashSet<DekId>,
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), (Reject, String)>")]
pub(super) struct Register(pub(super) DekRecord);

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
pub(super) struct Admit {
    pub(super) header: ChunkHeader,
    pub(super) digest: [u8; 32],
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
pub(super) struct Settle {
    pub(super) key: StreamKey,
    pub(super) seq: u64,
    pub(super) stored: bool,
}

impl Handler<Settle> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _: &mut Context<Self>) {
        if let Some(s) = self.streams.get_mut(&msg.key) {
            s.settle(msg.seq, msg.stored);
        }
    }
}
