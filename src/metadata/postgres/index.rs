//! The segment index on PostgreSQL: stream positions, chunk digests, and the one-statement
//! commit of a durable segment.

use super::{Pg, Which, pg_err};
use crate::metadata::sql;
use crate::metadata::{LeaseRow, MetaError, SegmentCommit, StreamRow, StreamUpdate, now_us};
use crate::protocol::{AgentId, SessionId, StreamId};

impl Pg {
    pub async fn stream(
        &self,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
    ) -> Result<Option<StreamRow>, MetaError> {
        let row = self
            .row(
                Which::Index,
                sql::STREAM.pg,
                vec![
                    Box::new(agent.as_str().to_owned()),
                    Box::new(session.0.to_vec()),
                    Box::new(i64::from(stream.0)),
                ],
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let mut out = StreamRow {
            kind: r.get::<_, i16>(0) as u8,
            next_seq: r.get::<_, i64>(1) as u64,
            final_seq: r.get::<_, Option<i64>>(2).map(|v| v as u64),
            dropped: Vec::new(),
        };
        let ranges = self
            .rows(
                Which::Index,
                sql::GAP_RANGES.pg,
                vec![
                    Box::new(agent.as_str().to_owned()),
                    Box::new(session.0.to_vec()),
                    Box::new(i64::from(stream.0)),
                    Box::new(i64::from(crate::metadata::DROPPED_RANGES)),
                ],
            )
            .await?;
        for r in ranges.iter().rev() {
            let (first, gap) = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64);
            out.dropped.push((first, gap.saturating_sub(1)));
        }
        Ok(Some(out))
    }

    pub async fn deks_in_last_minute(&self) -> Result<Vec<(String, i64)>, MetaError> {
        let rows = self
            .rows(
                Which::Keys,
                "SELECT agent_id, count(*) FROM encryption_dek \
                 WHERE creation_time > now() - interval '60 seconds' GROUP BY agent_id",
                Vec::new(),
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn chunk_digest(
        &self,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
        seq: u64,
    ) -> Result<Option<[u8; 32]>, MetaError> {
        let row = self
            .row(
                Which::Index,
                sql::CHUNK_DIGEST.pg,
                vec![
                    Box::new(agent.as_str().to_owned()),
                    Box::new(session.0.to_vec()),
                    Box::new(i64::from(stream.0)),
                    Box::new(seq as i64),
                ],
            )
            .await?;
        row.map(|r| {
            let d: Vec<u8> = r.get(0);
            d.try_into()
                .map_err(|_| MetaError::Row("chunk digest is not 32 bytes".into()))
        })
        .transpose()
    }

    /// The segment row, its chunk rows and its streams' positions in one statement (so one
    /// round trip and one implicit transaction), fenced: the lease rows of the segment's agents
    /// are locked (shared) and an agent whose epoch moved on gets nothing indexed; the
    /// statement returns those agents. Stream rows are updated in key order, so two
    /// segments of the same streams committing at once cannot deadlock.
    pub async fn commit_segment(&self, s: SegmentCommit) -> Result<Vec<AgentId>, MetaError> {
        self.run(Which::Index, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let st = c
                    .prepare_cached(
                        "WITH fence AS ( \
                           SELECT l.agent_id, l.epoch <> f.e AS stale \
                           FROM agent_lease l JOIN unnest($23::text[], $24::int8[]) AS f(a, e) ON l.agent_id = f.a \
                           ORDER BY l.agent_id FOR SHARE OF l \
                         ), stale AS ( \
                           SELECT agent_id FROM fence WHERE stale \
                         ), seg AS ( \
                           INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count) \
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (segment_id) DO NOTHING \
                         ), ch AS ( \
                           INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest, \
                                               chunk_offset, chunk_len, capture_us, flags, dek_id, gap_first_seq) \
                           SELECT a, s, st, q, $1, d, o, l, cu, f, k, g \
                           FROM unnest($6::text[], $7::bytea[], $8::int8[], $9::int8[], $10::bytea[], \
                                       $17::int8[], $18::int4[], $19::int8[], $20::int2[], $21::bytea[], $25::int8[]) \
                                AS u(a, s, st, q, d, o, l, cu, f, k, g) \
                           WHERE u.a NOT IN (SELECT agent_id FROM stale) \
                           ON CONFLICT DO NOTHING \
                           RETURNING agent_id, session_id, chunk_len, capture_us, flags, dek_id \
                         ), rs AS ( \
                           INSERT INTO recording_session (agent_id, session_id, first_capture_us, last_capture_us, \
                                                          chunks, bytes, gaps, last_dek_id, updated_us) \
                           SELECT agent_id, session_id, min(capture_us), max(capture_us), count(*), sum(chunk_len), \
                                  count(*) FILTER (WHERE flags & 2 <> 0), \
                                  (array_agg(dek_id ORDER BY capture_us DESC))[1], $22 \
                           FROM ch GROUP BY agent_id, session_id ORDER BY agent_id, session_id \
                           ON CONFLICT (agent_id, session_id) DO UPDATE SET \
                           first_capture_us = LEAST(recording_session.first_capture_us, EXCLUDED.first_capture_us), \
                           last_capture_us = GREATEST(recording_session.last_capture_us, EXCLUDED.last_capture_us), \
                           chunks = recording_session.chunks + EXCLUDED.chunks, \
                           bytes = recording_session.bytes + EXCLUDED.bytes, \
                           gaps = recording_session.gaps + EXCLUDED.gaps, \
                           last_dek_id = EXCLUDED.last_dek_id, \
                           updated_us = EXCLUDED.updated_us \
                         ), sr AS ( \
                           INSERT INTO streams (agent_id, session_id, stream_id, kind, next_seq, final_seq) \
                           SELECT v.* FROM unnest($11::text[], $12::bytea[], $13::int8[], $14::int2[], $15::int8[], $16::int8[]) \
                                AS v(a, s, st, k, n, f) \
                           WHERE v.a NOT IN (SELECT agent_id FROM stale) \
                           ON CONFLICT (agent_id, session_id, stream_id) DO UPDATE SET \
                           next_seq = CASE WHEN (streams.next_seq < 0) <> (EXCLUDED.next_seq < 0) \
                                      THEN LEAST(streams.next_seq, EXCLUDED.next_seq) \
                                      ELSE GREATEST(streams.next_seq, EXCLUDED.next_seq) END, \
                           final_seq = COALESCE(streams.final_seq, EXCLUDED.final_seq) \
                         ) \
                         SELECT agent_id FROM stale",
                    )
                    .await
                    .map_err(e)?;
                let ch = &s.chunks;
                let c_agent: Vec<&str> = ch.iter().map(|r| r.agent.as_str()).collect();
                let c_session: Vec<&[u8]> = ch.iter().map(|r| &r.session.0[..]).collect();
                let c_stream: Vec<i64> = ch.iter().map(|r| i64::from(r.stream.0)).collect();
                let c_seq: Vec<i64> = ch.iter().map(|r| r.seq as i64).collect();
                let c_digest: Vec<&[u8]> = ch.iter().map(|r| &r.digest[..]).collect();
                let c_offset: Vec<i64> = ch.iter().map(|r| r.offset as i64).collect();
                let c_len: Vec<i32> = ch.iter().map(|r| r.len as i32).collect();
                let c_capture: Vec<i64> = ch.iter().map(|r| r.capture_us).collect();
                let c_flags: Vec<i16> = ch.iter().map(|r| i16::from(r.flags)).collect();
                let c_dek: Vec<&[u8]> = ch.iter().map(|r| &r.dek_id[..]).collect();
                let c_gap: Vec<Option<i64>> =
                    ch.iter().map(|r| r.gap_first.map(|v| v as i64)).collect();
                let now = now_us();
                let f_agent: Vec<&str> = s.fences.iter().map(|(a, _)| a.as_str()).collect();
                let f_epoch: Vec<i64> = s.fences.iter().map(|(_, e)| *e).collect();
                let streams = merged_stream_updates(&s.streams);
                let s_agent: Vec<&str> = streams.iter().map(|u| u.agent.as_str()).collect();
                let s_session: Vec<&[u8]> = streams.iter().map(|u| &u.session.0[..]).collect();
                let s_stream: Vec<i64> = streams.iter().map(|u| i64::from(u.stream.0)).collect();
                let s_kind: Vec<i16> = streams.iter().map(|u| i16::from(u.kind)).collect();
                let s_next: Vec<i64> = streams.iter().map(|u| u.next_seq).collect();
                let s_final: Vec<Option<i64>> = streams.iter().map(|u| u.final_seq).collect();
                let stale = c
                    .query(
                    &st,
                    &[
                        &&s.segment_id[..],
                        &s.object_key,
                        &(s.size as i64),
                        &&s.sha256[..],
                        &(s.chunks.len() as i32),
                        &c_agent,
                        &c_session,
                        &c_stream,
                        &c_seq,
                        &c_digest,
                        &s_agent,
                        &s_session,
                        &s_stream,
                        &s_kind,
                        &s_next,
                        &s_final,
                        &c_offset,
                        &c_len,
                        &c_capture,
                        &c_flags,
                        &c_dek,
                        &now,
                        &f_agent,
                        &f_epoch,
                        &c_gap,
                    ],
                )
                .await
                .map_err(e)?;
                stale
                    .iter()
                    .map(|r| {
                        AgentId::new(r.get::<_, String>(0))
                            .map_err(|e| MetaError::Row(format!("agent_lease: {e}")))
                    })
                    .collect()
            })
        })
        .await
    }
}

impl Pg {
    /// Raise `agent`'s lease epoch (or create it at 1) for a connection on `node`. The update
    /// waits for segment commits that hold the row (shared), so every chunk committed under
    /// the old epoch is visible to the new connection's first read of a stream.
    pub async fn take_lease(&self, agent: &AgentId, node: &str) -> Result<i64, MetaError> {
        let row = self
            .row(
                Which::Index,
                "INSERT INTO agent_lease (agent_id, epoch, node, since_us) VALUES ($1, 1, $2, $3) \
                 ON CONFLICT (agent_id) DO UPDATE SET epoch = agent_lease.epoch + 1, \
                 node = EXCLUDED.node, since_us = EXCLUDED.since_us RETURNING epoch",
                vec![
                    Box::new(agent.as_str().to_owned()),
                    Box::new(node.to_owned()),
                    Box::new(now_us()),
                ],
            )
            .await?;
        row.map(|r| r.get::<_, i64>(0))
            .ok_or_else(|| MetaError::Row("agent_lease: no epoch returned".into()))
    }

    pub async fn leases(&self) -> Result<Vec<LeaseRow>, MetaError> {
        self.run(Which::Index, |c, t| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT agent_id, epoch, node, since_us FROM agent_lease ORDER BY agent_id",
                        &[],
                    )
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(rows
                    .iter()
                    .map(|r| LeaseRow {
                        agent: r.get(0),
                        epoch: r.get(1),
                        node: r.get(2),
                        since_us: r.get(3),
                    })
                    .collect())
            })
        })
        .await
    }
}

/// One stream's update as written by `commit_segment`, positions as stored (`int8`).
struct MergedUpdate<'a> {
    agent: &'a AgentId,
    session: &'a SessionId,
    stream: &'a StreamId,
    kind: u8,
    next_seq: i64,
    final_seq: Option<i64>,
}

/// The commit's stream updates in key order (so concurrent commits lock stream rows alike),
/// one per stream: `ON CONFLICT DO UPDATE` may not touch a row twice in one statement, so
/// updates of one stream are merged first as SQLite applies them one after another: the first
/// one's kind, the position the upsert keeps (the furthest, or the negative one when the signs
/// differ), the first final position given.
fn merged_stream_updates(updates: &[StreamUpdate]) -> Vec<MergedUpdate<'_>> {
    let mut sorted: Vec<&StreamUpdate> = updates.iter().collect();
    // Stable: updates of one stream stay in commit order.
    sorted.sort_by(|a, b| {
        (a.agent.as_str(), a.session.0, a.stream.0).cmp(&(
            b.agent.as_str(),
            b.session.0,
            b.stream.0,
        ))
    });
    let mut out: Vec<MergedUpdate<'_>> = Vec::with_capacity(sorted.len());
    for u in sorted {
        let (next, fin) = (u.next_seq as i64, u.final_seq.map(|v| v as i64));
        match out.last_mut() {
            Some(m) if m.agent == &u.agent && m.session == &u.session && m.stream == &u.stream => {
                m.next_seq = if (m.next_seq < 0) != (next < 0) {
                    m.next_seq.min(next)
                } else {
                    m.next_seq.max(next)
                };
                m.final_seq = m.final_seq.or(fin);
            }
            _ => out.push(MergedUpdate {
                agent: &u.agent,
                session: &u.session,
                stream: &u.stream,
                kind: u.kind,
                next_seq: next,
                final_seq: fin,
            }),
        }
    }
    out
}
