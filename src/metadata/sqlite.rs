//! The embedded SQLite file: one connection behind a mutex, used from the blocking pool.
//! WAL with `synchronous = FULL`, so a committed index row survives a crash.

mod access;
mod backend;
mod review;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::{KekRow, MIGRATIONS, MetaError, SegmentCommit, StreamRow, now_us, rows, sql};
use crate::protocol::{AgentId, DekRecord, SessionId, StreamId};

/// What a segment's newly indexed chunks add to one `recording_session` row.
struct SessionAdd {
    first_us: i64,
    last_us: i64,
    chunks: i64,
    bytes: i64,
    gaps: i64,
    last_dek: [u8; 16],
}

impl SessionAdd {
    fn new(dek: [u8; 16]) -> Self {
        SessionAdd {
            first_us: i64::MAX,
            last_us: i64::MIN,
            chunks: 0,
            bytes: 0,
            gaps: 0,
            last_dek: dek,
        }
    }

    fn add(&mut self, ch: &super::ChunkRow) {
        self.first_us = self.first_us.min(ch.capture_us);
        if ch.capture_us >= self.last_us {
            self.last_us = ch.capture_us;
            self.last_dek = ch.dek_id;
        }
        self.chunks += 1;
        self.bytes += i64::from(ch.len);
        self.gaps += i64::from(ch.flags & 2 != 0);
    }
}

#[derive(Clone)]
pub struct Lite {
    conn: Arc<Mutex<Connection>>,
}

/// Hash the numbered rows at the end of the audit chain that have no hash yet (written before
/// migration 4, or inserted since by anyone: the trigger only numbers them), in chain order.
/// Only rows after the last hashed one: a row in the middle whose hash was removed stays
/// unhashed, and `audit verify` reports it.
fn chain_pending_audit_rows(c: &mut Connection) -> Result<(), MetaError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    hash_pending_audit_rows(&tx)?;
    Ok(tx.commit()?)
}

/// [`chain_pending_audit_rows`] inside the caller's transaction, for writes whose trigger adds
/// audit rows (the KEK calls): they are hashed in the same transaction as the change.
fn hash_pending_audit_rows(tx: &Connection) -> Result<(), MetaError> {
    let pending: Vec<crate::audit::ChainRow> = {
        let mut st = tx.prepare(
            "SELECT id, chain_seq, at_us, actor, action, detail, address, prev_hash, row_hash FROM audit_log WHERE row_hash IS NULL AND chain_seq > coalesce((SELECT max(chain_seq) FROM audit_log WHERE row_hash IS NOT NULL), 0) ORDER BY chain_seq",
        )?;
        st.query_and_then([], |r| rows::chain_row(r))?
            .collect::<Result<_, MetaError>>()?
    };
    for r in pending {
        let (id, seq, at) = (r.id, r.chain_seq.unwrap_or(0), r.at_us.unwrap_or(0));
        let prev: Vec<u8> = tx
            .query_row(
                "SELECT row_hash FROM audit_log WHERE chain_seq = ?1",
                [seq - 1],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_else(|| vec![0; 32]);
        let h = crate::audit::row_hash(
            &prev,
            seq,
            at,
            &r.actor,
            &r.action,
            &r.detail,
            r.address.as_deref(),
        );
        tx.execute(
            "UPDATE audit_log SET prev_hash = ?1, row_hash = ?2 WHERE id = ?3",
            params![prev, &h[..], id],
        )?;
    }
    Ok(())
}

impl Lite {
    pub async fn open(path: &Path) -> Result<Self, MetaError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, MetaError> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| MetaError::Worker(format!("{}: {e}", dir.display())))?;
            }
            let c = Connection::open(&path)?;
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            c.pragma_update(None, "foreign_keys", "ON")?;
            // Agent patterns are case-sensitive, as in PostgreSQL and `agent_matches`: a
            // reviewer of `ts-*` must not be listed `TS-01` (SQLite's LIKE ignores ASCII case).
            c.pragma_update(None, "case_sensitive_like", "ON")?;
            Ok(c)
        })
        .await
        .map_err(|e| MetaError::Worker(e.to_string()))??;
        Ok(Lite {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| MetaError::Worker("SQLite lock poisoned".into()))?;
            f(&mut c)
        })
        .await
        .map_err(|e| MetaError::Worker(e.to_string()))?
    }

    pub async fn migrate(&self) -> Result<(), MetaError> {
        self.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            )?;
            for (version, _, lite) in MIGRATIONS {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let done = tx
                    .query_row(sql::MIGRATION_DONE.lite, [version], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !done {
                    tx.execute_batch(lite)?;
                    tx.execute(sql::MIGRATION_APPLIED.lite, [version])?;
                }
                tx.commit()?;
            }
            chain_pending_audit_rows(c)?;
            Ok(())
        })
        .await
    }

    pub async fn audit_chain_rows(&self) -> Result<Vec<crate::audit::ChainRow>, MetaError> {
        self.with(|c| {
            let mut st = c.prepare(sql::AUDIT_CHAIN_ROWS.lite)?;
            st.query_and_then([], |r| rows::chain_row(r))?.collect()
        })
        .await
    }

    pub async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, MetaError> {
        self.with(|c| {
            // Rows inserted by other programs (the trigger numbered them) are hashed first.
            chain_pending_audit_rows(c)?;
            Ok(c.query_row(
                "SELECT chain_seq, row_hash FROM audit_log WHERE chain_seq IS NOT NULL AND row_hash IS NOT NULL ORDER BY chain_seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), MetaError> {
        self.with(|c| Ok(c.query_row(sql::PING.lite, [], |_| Ok(()))?))
            .await
    }

    pub async fn keks(&self) -> Result<Vec<KekRow>, MetaError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, active, priv_encrypted, pub_datafile, priv_datafile, fingerprint, agent_id, CAST(unixepoch(retired_at, 'subsec') * 1000000 AS INTEGER) FROM encryption_kek ORDER BY id",
            )?;
            st.query_and_then([], |r| rows::kek(r))?.collect()
        })
        .await
    }

    pub async fn set_kek_fingerprint(&self, id: i64, fp: &str) -> Result<(), MetaError> {
        let fp = fp.to_owned();
        self.with(move |c| {
            // The KEK trigger writes an audit row: hash it before the change commits.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE encryption_kek SET fingerprint = ?2 WHERE id = ?1 AND fingerprint IS NOT ?2",
                params![id, fp],
            )?;
            hash_pending_audit_rows(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn mark_kek_retired(&self, id: i64) -> Result<(), MetaError> {
        self.with(move |c| {
            // The KEK trigger writes an audit row: hash it before the change commits.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE encryption_kek SET retired_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = ?1 AND NOT active AND retired_at IS NULL",
                params![id],
            )?;
            hash_pending_audit_rows(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn insert_kek(
        &self,
        active: bool,
        enc: bool,
        pubf: &str,
        privf: &str,
    ) -> Result<(), MetaError> {
        let (pubf, privf) = (pubf.to_owned(), privf.to_owned());
        self.with(move |c| {
            // The KEK trigger writes an audit row: hash it before the change commits.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(sql::INSERT_KEK.lite, params![active, enc, pubf, privf])?;
            hash_pending_audit_rows(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn insert_deks(&self, records: Vec<(DekRecord, String)>) -> Result<(), MetaError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO encryption_dek (dek_id, kek_fingerprint, agent_id, agent_session, wrapped_dek, record, object_key) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (dek_id) DO NOTHING",
                )?;
                for (r, key) in &records {
                    st.execute(params![&r.dek_id.0[..], r.kek_id.to_string(), r.agent.as_str(), &r.agent_session.0[..], r.wrapped, r.encode(), key])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn dek_owners(
        &self,
        dek_ids: Vec<[u8; 16]>,
    ) -> Result<HashMap<[u8; 16], String>, MetaError> {
        self.with(move |c| {
            let mut st =
                c.prepare_cached("SELECT agent_id FROM encryption_dek WHERE dek_id = ?1")?;
            let mut out = HashMap::new();
            for id in dek_ids {
                if let Some(agent) = st
                    .query_row([&id[..]], |r| r.get::<_, String>(0))
                    .optional()?
                {
                    out.insert(id, agent);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn deks_in_last_minute(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT agent_id, count(*) FROM encryption_dek \
                 WHERE creation_time > datetime('now', '-60 seconds') GROUP BY agent_id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn stream(
        &self,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
    ) -> Result<Option<StreamRow>, MetaError> {
        let agent = agent.as_str().to_owned();
        self.with(move |c| {
            let Some(mut row) = c
                .query_row(
                    sql::STREAM.lite,
                    params![agent, &session.0[..], stream.0],
                    |r| {
                        Ok(StreamRow {
                            kind: r.get::<_, i64>(0)? as u8,
                            next_seq: r.get::<_, i64>(1)? as u64,
                            final_seq: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                            dropped: Vec::new(),
                        })
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(sql::GAP_RANGES.lite)?;
            let ranges = st.query_map(
                params![agent, &session.0[..], stream.0, super::DROPPED_RANGES],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?;
            for range in ranges {
                let (first, gap) = range?;
                row.dropped.push((first, gap.saturating_sub(1)));
            }
            row.dropped.reverse();
            Ok(Some(row))
        })
        .await
    }

    pub async fn chunk_digest(
        &self,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
        seq: u64,
    ) -> Result<Option<[u8; 32]>, MetaError> {
        let agent = agent.as_str().to_owned();
        self.with(move |c| {
            let d: Option<Vec<u8>> = c
                .query_row(
                    sql::CHUNK_DIGEST.lite,
                    params![agent, &session.0[..], stream.0, seq as i64],
                    |r| r.get(0),
                )
                .optional()?;
            d.map(|d| {
                d.try_into()
                    .map_err(|_| MetaError::Row("chunk digest is not 32 bytes".into()))
            })
            .transpose()
        })
        .await
    }

    pub async fn commit_segment(&self, s: SegmentCommit) -> Result<(), MetaError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![&s.segment_id[..], s.object_key, s.size as i64, &s.sha256[..], s.chunks.len() as i64],
            )?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest, chunk_offset, chunk_len, capture_us, flags, dek_id, gap_first_seq) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT DO NOTHING",
                )?;
                // Per recorded session, what the newly indexed chunks add to its summary row.
                let mut sessions: std::collections::BTreeMap<(&str, [u8; 16]), SessionAdd> =
                    Default::default();
                for ch in &s.chunks {
                    let added = st.execute(params![
                        ch.agent.as_str(), &ch.session.0[..], ch.stream.0, ch.seq as i64, &s.segment_id[..], &ch.digest[..],
                        ch.offset as i64, ch.len, ch.capture_us, ch.flags, &ch.dek_id[..],
                        ch.gap_first.map(|v| v as i64)
                    ])?;
                    if added > 0 {
                        sessions
                            .entry((ch.agent.as_str(), ch.session.0))
                            .or_insert_with(|| SessionAdd::new(ch.dek_id))
                            .add(ch);
                    }
                }
                let mut st = tx.prepare_cached(
                    "INSERT INTO recording_session (agent_id, session_id, first_capture_us, last_capture_us, chunks, bytes, gaps, last_dek_id, updated_us) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (agent_id, session_id) DO UPDATE SET \
                     first_capture_us = MIN(recording_session.first_capture_us, excluded.first_capture_us), \
                     last_capture_us = MAX(recording_session.last_capture_us, excluded.last_capture_us), \
                     chunks = recording_session.chunks + excluded.chunks, bytes = recording_session.bytes + excluded.bytes, \
                     gaps = recording_session.gaps + excluded.gaps, last_dek_id = excluded.last_dek_id, updated_us = excluded.updated_us",
                )?;
                let now = now_us();
                for ((agent, session), a) in &sessions {
                    st.execute(params![
                        agent, &session[..], a.first_us, a.last_us, a.chunks, a.bytes, a.gaps, &a.last_dek[..], now
                    ])?;
                }
                let mut st = tx.prepare_cached(
                    "INSERT INTO streams (agent_id, session_id, stream_id, kind, next_seq, final_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (agent_id, session_id, stream_id) DO UPDATE SET \
                     next_seq = CASE WHEN (streams.next_seq < 0) <> (excluded.next_seq < 0) \
                     THEN MIN(streams.next_seq, excluded.next_seq) ELSE MAX(streams.next_seq, excluded.next_seq) END, final_seq = COALESCE(streams.final_seq, excluded.final_seq)",
                )?;
                for u in &s.streams {
                    st.execute(params![u.agent.as_str(), &u.session.0[..], u.stream.0, u.kind, u.next_seq as i64, u.final_seq.map(|v| v as i64)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), MetaError> {
        let (a, b, d) = (actor.to_owned(), action.to_owned(), detail.to_owned());
        self.with(move |c| {
            c.execute(sql::INSERT_AUDIT.lite, params![a, b, d])?;
            chain_pending_audit_rows(c)?;
            Ok(())
        })
        .await
    }

    pub async fn count(&self, table: &'static str) -> Result<i64, MetaError> {
        self.with(move |c| {
            Ok(c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
        })
        .await
    }
}
