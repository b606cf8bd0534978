//! What one agent connection knows, shared by its stream tasks: the DEKs registered on it and
//! the state of each (session, stream) it carries. No actor: a stream task checks its chunks
//! itself, under locks held only for the sans-IO check (never across an await).
//!
//! A QUIC stream carries one (session, stream), so its task is the only one that admits that
//! stream's chunks; the state is kept here rather than in the task because the agent opens a
//! new QUIC stream for the same queue after a refusal while the old one's answers may still
//! be on their way, and both must see one sequence state (`InProgress`, duplicates).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::Shared;
use crate::protocol::uplink::Reject;
use crate::protocol::{AgentId, ChunkHeader, DekId, DekRecord, Kind, SessionId, StreamId};
use crate::server::key_actor::RegisterDek;
use crate::server::verify::{StreamState, Verdict};

pub(super) type StreamKey = (SessionId, StreamId);

/// One (session, stream)'s sequence state, held by the stream task that carries it.
pub(super) type SharedStream = Arc<Mutex<StreamState>>;

pub(super) struct Connection {
    pub(super) agent: AgentId,
    pub(super) shared: Arc<Shared>,
    streams: Mutex<HashMap<StreamKey, SharedStream>>,
    deks: Mutex<HashSet<DekId>>,
}

impl Connection {
    pub(super) fn new(agent: AgentId, shared: Arc<Shared>) -> Self {
        Connection {
            agent,
            shared,
            streams: Mutex::new(HashMap::new()),
            deks: Mutex::new(HashSet::new()),
        }
    }

    /// Register a DEK record with the key actor; once it is there, chunks under it are taken
    /// on every stream of this connection.
    pub(super) async fn register(&self, record: DekRecord) -> Result<(), (Reject, String)> {
        let dek = record.dek_id;
        let res = self
            .shared
            .key
            .send(RegisterDek {
                agent: self.agent.clone(),
                record,
            })
            .await
            .unwrap_or_else(|_| Err((Reject::RetryLater, "key actor unavailable".into())));
        if res.is_ok() {
            self.deks.lock().expect("deks lock").insert(dek);
        }
        res
    }

    /// The state of `h`'s stream: the one this connection holds, or the one the database
    /// knows (a stream this agent sent on before), or a new one.
    async fn stream(&self, h: &ChunkHeader) -> Result<SharedStream, (Reject, String)> {
        let key = (h.session, h.stream);
        if let Some(s) = self.streams.lock().expect("streams lock").get(&key) {
            return Ok(s.clone());
        }
        let loaded = self
            .shared
            .metadata
            .stream(&self.agent, h.session, h.stream)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read stream state");
                (Reject::RetryLater, "metadata unavailable".to_string())
            })?;
        // Another task may have loaded it meanwhile: the first one in stays.
        let mut streams = self.streams.lock().expect("streams lock");
        let s = streams.entry(key).or_insert_with(|| {
            Arc::new(Mutex::new(match loaded {
                Some(row) => StreamState::resume(
                    Kind::from_code(row.kind).unwrap_or(h.kind),
                    row.next_seq,
                    row.final_seq,
                    row.dropped,
                ),
                None => StreamState::new(h.kind),
            }))
        });
        Ok(s.clone())
    }

    /// Verify a chunk's envelope against the connection and its stream: the verdict, and for
    /// an accepted gap record the first number it dropped. `slot` caches the stream's state
    /// in the task that carries it (one lookup per QUIC stream, not per chunk).
    ///
    /// Chunks of one stream are admitted one after another (its QUIC stream is read in
    /// order), and the state is checked again when a database lookup returns, so an answer
    /// that arrives late cannot undo what a settle did meanwhile.
    pub(super) async fn admit(
        &self,
        slot: &mut Option<SharedStream>,
        h: &ChunkHeader,
        digest: [u8; 32],
    ) -> Result<(Verdict, Option<u64>), (Reject, String)> {
        if h.agent != self.agent {
            return Err((
                Reject::AgentMismatch,
                format!("chunk names agent {:?}", h.agent.as_str()),
            ));
        }
        if !self.deks.lock().expect("deks lock").contains(&h.dek_id) {
            return Err((
                Reject::UnknownDek,
                format!(
                    "DEK {} not registered on this connection; send its record first",
                    h.dek_id
                ),
            ));
        }
        let state = match slot {
            Some(s) => s.clone(),
            None => slot.insert(self.stream(h).await?).clone(),
        };
        // A verdict, and for an accepted gap record the first number it dropped (read under
        // the same lock as the check).
        let checked = |s: &mut StreamState, v: Verdict| {
            verdict(v).map(|v| (v, h.gap.then(|| s.dropped_before(h.seq)).flatten()))
        };
        {
            let mut s = state.lock().expect("stream lock");
            match s.check_chunk(h.kind, h.seq, h.last, h.gap, digest) {
                Verdict::AskStored => {}
                v => return checked(&mut s, v),
            }
        }
        let stored = self
            .shared
            .metadata
            .chunk_digest(&self.agent, h.session, h.stream, h.seq)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read chunk index");
                (Reject::RetryLater, "metadata unavailable".to_string())
            })?;
        let mut s = state.lock().expect("stream lock");
        // Checked again: the stream may have moved meanwhile.
        match s.check_chunk(h.kind, h.seq, h.last, h.gap, digest) {
            Verdict::AskStored => {
                verdict(s.resolve(h.seq, h.last, digest, stored)).map(|v| (v, None))
            }
            v => checked(&mut s, v),
        }
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
