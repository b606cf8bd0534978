//! The segment index on PostgreSQL: stream positions, chunk digests, and the one-statement
//! commit of a durable segment.

use super::{Pg, Which, pg_err};
use crate::metadata::{MetaError, SegmentCommit, StreamRow, now_us};
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
                "SELECT kind, next_seq, final_seq FROM streams WHERE agent_id = $1 AND session_id = $2 AND stream_id = $3",
                vec![
                    Box::new(agent.as_str().to_owned()),
                    Box::new(session.0.to_vec()),
                    Box::new(i64::from(stream.0)),
                ],
            )
            .await?;
        Ok(row.map(|r| StreamRow {
            kind: r.get::<_, i16>(0) as u8,
            next_seq: r.get::<_, i64>(1) as u64,
            final_seq: r.get::<_, Option<i64>>(2).map(|v| v as u64),
        }))
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
                "SELECT digest FROM chunks WHERE agent_id = $1 AND session_id = $2 AND stream_id = $3 AND seq = $4",
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
    /// round trip and one implicit transaction). Stream rows are updated in key order, so two
    /// segments of the same streams committing at once cannot deadlock.
    pub async fn commit_segment(&self, s: SegmentCommit) -> Result<(), MetaError> {
        self.run(Which::Index, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let st = c
                    .prepare_cached(
                        "WITH seg AS ( \
                           INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count) \
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (segment_id) DO NOTHING \
                         ), ch AS ( \
                           INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest, \
                                               chunk_offset, chunk_len, capture_us, flags, dek_id) \
                           SELECT a, s, st, q, $1, d, o, l, cu, f, k \
                           FROM unnest($6::text[], $7::bytea[], $8::int8[], $9::int8[], $10::bytea[], \
                                       $17::int8[], $18::int4[], $19::int8[], $20::int2[], $21::bytea[]) \
                                AS u(a, s, st, q, d, o, l, cu, f, k) \
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
                         ) \
                         INSERT INTO streams (agent_id, session_id, stream_id, kind, next_seq, final_seq) \
                         SELECT * FROM unnest($11::text[], $12::bytea[], $13::int8[], $14::int2[], $15::int8[], $16::int8[]) \
                         ON CONFLICT (agent_id, session_id, stream_id) DO UPDATE SET \
                         next_seq = GREATEST(streams.next_seq, EXCLUDED.next_seq), \
                         final_seq = COALESCE(streams.final_seq, EXCLUDED.final_seq)",
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
                let now = now_us();
                let mut streams: Vec<_> = s.streams.iter().collect();
                streams.sort_by(|a, b| {
                    (a.agent.as_str(), a.session.0, a.stream.0).cmp(&(
                        b.agent.as_str(),
                        b.session.0,
                        b.stream.0,
                    ))
                });
                let s_agent: Vec<&str> = streams.iter().map(|u| u.agent.as_str()).collect();
                let s_session: Vec<&[u8]> = streams.iter().map(|u| &u.session.0[..]).collect();
                let s_stream: Vec<i64> = streams.iter().map(|u| i64::from(u.stream.0)).collect();
                let s_kind: Vec<i16> = streams.iter().map(|u| i16::from(u.kind)).collect();
                let s_next: Vec<i64> = streams.iter().map(|u| u.next_seq as i64).collect();
                let s_final: Vec<Option<i64>> =
                    streams.iter().map(|u| u.final_seq.map(|v| v as i64)).collect();
                c.execute(
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
                    ],
                )
                .await
                .map_err(e)?;
                Ok(())
            })
        })
        .await
    }
}
