//! The review console's SQL on the embedded SQLite file.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, params, params_from_iter};

use super::Lite;
use crate::metadata::MetaError;
use crate::metadata::review::{
    AuditQuery, AuditRow, ChunkLocation, ConsoleUser, Login, RecordedAgent, SessionQuery,
    SessionSummary, StreamState, like_pattern,
};
use crate::metadata::rows;
use crate::metadata::sql::{self, SESSION_COLUMNS};

fn bytes16(v: Vec<u8>) -> Result<[u8; 16], MetaError> {
    v.try_into()
        .map_err(|_| MetaError::Row("id is not 16 bytes".into()))
}

fn summary(r: &Row) -> rusqlite::Result<(SessionSummary, Vec<u8>)> {
    Ok((
        SessionSummary {
            agent: r.get(0)?,
            session: [0; 16],
            first_capture_us: r.get(2)?,
            last_capture_us: r.get(3)?,
            chunks: r.get(4)?,
            bytes: r.get(5)?,
            gaps: r.get(6)?,
            updated_us: r.get(7)?,
            encrypted: r.get(8)?,
            streams: Vec::new(),
        },
        r.get(1)?,
    ))
}

impl Lite {
    pub async fn sessions(&self, q: SessionQuery) -> Result<Vec<SessionSummary>, MetaError> {
        self.session_rows(q, None).await
    }

    pub async fn session(
        &self,
        q: SessionQuery,
        session: [u8; 16],
    ) -> Result<Option<SessionSummary>, MetaError> {
        Ok(self.session_rows(q, Some(session)).await?.pop())
    }

    async fn session_rows(
        &self,
        q: SessionQuery,
        one: Option<[u8; 16]>,
    ) -> Result<Vec<SessionSummary>, MetaError> {
        self.with(move |c| {
            let mut sql = format!("SELECT {SESSION_COLUMNS} FROM recording_session r WHERE 1 = 1");
            let mut args: Vec<Value> = Vec::new();
            if let Some(a) = &q.agent {
                sql.push_str(" AND r.agent_id = ?");
                args.push(Value::Text(a.clone()));
            }
            if let Some(s) = q.since_us {
                sql.push_str(" AND r.last_capture_us >= ?");
                args.push(Value::Integer(s));
            }
            if let Some(u) = q.until_us {
                sql.push_str(" AND r.first_capture_us <= ?");
                args.push(Value::Integer(u));
            }
            if let Some(allowed) = &q.allowed {
                if allowed.is_empty() {
                    return Ok(Vec::new());
                }
                let ors: Vec<&str> = allowed.iter().map(|_| "r.agent_id LIKE ? ESCAPE '\\'").collect();
                sql.push_str(&format!(" AND ({})", ors.join(" OR ")));
                args.extend(allowed.iter().map(|p| Value::Text(like_pattern(p))));
            }
            if let Some((at, agent, session)) = &q.before {
                sql.push_str(" AND (r.last_capture_us, r.agent_id, r.session_id) < (?, ?, ?)");
                args.extend([Value::Integer(*at), Value::Text(agent.clone()), Value::Blob(session.to_vec())]);
            }
            if let Some(s) = one {
                sql.push_str(" AND r.session_id = ?");
                args.push(Value::Blob(s.to_vec()));
            }
            sql.push_str(" ORDER BY r.last_capture_us DESC, r.agent_id DESC, r.session_id DESC LIMIT ?");
            args.push(Value::Integer(i64::from(if one.is_some() { 1 } else { q.limit.max(1) })));
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params_from_iter(args), summary)?;
            let mut out = Vec::new();
            for r in rows {
                let (mut s, session) = r?;
                s.session = bytes16(session)?;
                out.push(s);
            }
            let mut st = c.prepare_cached(
                "SELECT stream_id, kind, next_seq, final_seq FROM streams WHERE agent_id = ?1 AND session_id = ?2 ORDER BY stream_id",
            )?;
            for s in &mut out {
                s.streams = st
                    .query_map(params![s.agent, &s.session[..]], |r| {
                        Ok(StreamState {
                            stream: r.get::<_, i64>(0)? as u32,
                            kind: r.get::<_, i64>(1)? as u8,
                            next_seq: r.get::<_, i64>(2)? as u64,
                            final_seq: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        })
                    })?
                    .collect::<Result<_, _>>()?;
            }
            Ok(out)
        })
        .await
    }

    pub async fn recorded_agents(
        &self,
        allowed: Option<Vec<String>>,
    ) -> Result<Vec<RecordedAgent>, MetaError> {
        self.with(move |c| {
            let mut sql =
                "SELECT agent_id, count(*), max(last_capture_us) FROM recording_session".to_owned();
            let mut args: Vec<Value> = Vec::new();
            if let Some(allowed) = &allowed {
                if allowed.is_empty() {
                    return Ok(Vec::new());
                }
                let ors: Vec<&str> = allowed
                    .iter()
                    .map(|_| "agent_id LIKE ? ESCAPE '\\'")
                    .collect();
                sql.push_str(&format!(" WHERE {}", ors.join(" OR ")));
                args.extend(allowed.iter().map(|p| Value::Text(like_pattern(p))));
            }
            sql.push_str(" GROUP BY agent_id ORDER BY agent_id");
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params_from_iter(args), |r| {
                Ok(RecordedAgent {
                    agent: r.get(0)?,
                    sessions: r.get(1)?,
                    last_capture_us: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn chunk_locations(
        &self,
        agent: String,
        session: [u8; 16],
        stream: Option<u32>,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<ChunkLocation>, MetaError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT c.stream_id, c.seq, s.object_key, c.chunk_offset, c.chunk_len, c.capture_us, c.flags, c.dek_id \
                 FROM chunks c JOIN segments s ON s.segment_id = c.segment_id \
                 WHERE c.agent_id = ?1 AND c.session_id = ?2 AND (?3 IS NULL OR c.stream_id = ?3) AND c.seq >= ?4 \
                 ORDER BY c.stream_id, c.seq LIMIT ?5",
            )?;
            let rows = st.query_map(
                params![agent, &session[..], stream.map(i64::from), from_seq as i64, i64::from(limit)],
                |r| {
                    let offset: Option<i64> = r.get(3)?;
                    let len: Option<i64> = r.get(4)?;
                    Ok((
                        ChunkLocation {
                            stream: r.get::<_, i64>(0)? as u32,
                            seq: r.get::<_, i64>(1)? as u64,
                            object_key: r.get(2)?,
                            range: offset.zip(len).map(|(o, l)| (o as u64, l as u32)),
                            capture_us: r.get(5)?,
                            flags: r.get::<_, Option<i64>>(6)?.map(|f| f as u8),
                            dek_id: None,
                        },
                        r.get::<_, Option<Vec<u8>>>(7)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for r in rows {
                let (mut loc, dek) = r?;
                loc.dek_id = dek.map(bytes16).transpose()?;
                out.push(loc);
            }
            Ok(out)
        })
        .await
    }

    /// `Metadata::frame_picks` on SQLite.
    pub async fn frame_picks(
        &self,
        agent: String,
        session: [u8; 16],
        stream: u32,
        since_us: Option<i64>,
        until_us: Option<i64>,
        slots: u32,
    ) -> Result<Vec<ChunkLocation>, MetaError> {
        self.with(move |c| {
            let newest = "SELECT c.stream_id, c.seq, s.object_key, c.chunk_offset, c.chunk_len, c.capture_us, c.flags, c.dek_id \
                 FROM chunks c JOIN segments s ON s.segment_id = c.segment_id \
                 WHERE c.agent_id = ?1 AND c.session_id = ?2 AND c.stream_id = ?3 AND (coalesce(c.flags, 0) & 130) = 0 \
                   AND (?4 IS NULL OR c.capture_us >= ?4) AND (?5 IS NULL OR c.capture_us <= ?5)";
            let sql = if slots <= 1 {
                format!("{newest} ORDER BY c.seq DESC LIMIT 1")
            } else {
                // The newest frame of each of `slots` equal parts of [since, until].
                format!(
                    "SELECT * FROM (SELECT p.*, row_number() OVER (PARTITION BY (p.capture_us - ?4) * ?6 / (?5 - ?4 + 1) ORDER BY p.seq DESC) AS rn \
                     FROM ({newest}) p) WHERE rn = 1 ORDER BY seq"
                )
            };
            let mut st = c.prepare_cached(&sql)?;
            let mut args = vec![
                Value::Text(agent),
                Value::Blob(session.to_vec()),
                Value::Integer(i64::from(stream)),
                since_us.map_or(Value::Null, Value::Integer),
                until_us.map_or(Value::Null, Value::Integer),
            ];
            if slots > 1 {
                args.push(Value::Integer(i64::from(slots)));
            }
            let rows = st.query_map(params_from_iter(args), |r| {
                let offset: Option<i64> = r.get(3)?;
                let len: Option<i64> = r.get(4)?;
                Ok((
                    ChunkLocation {
                        stream: r.get::<_, i64>(0)? as u32,
                        seq: r.get::<_, i64>(1)? as u64,
                        object_key: r.get(2)?,
                        range: offset.zip(len).map(|(o, l)| (o as u64, l as u32)),
                        capture_us: r.get(5)?,
                        flags: r.get::<_, Option<i64>>(6)?.map(|f| f as u8),
                        dek_id: None,
                    },
                    r.get::<_, Option<Vec<u8>>>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (mut loc, dek) = r?;
                loc.dek_id = dek.map(bytes16).transpose()?;
                out.push(loc);
            }
            Ok(out)
        })
        .await
    }

    pub async fn dek_record(
        &self,
        dek_id: [u8; 16],
    ) -> Result<Option<(String, Vec<u8>)>, MetaError> {
        self.with(move |c| {
            Ok(c.query_row(sql::DEK_RECORD.lite, [&dek_id[..]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
        })
        .await
    }

    pub async fn session_agents(&self, session: [u8; 16]) -> Result<Vec<String>, MetaError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(sql::SESSION_AGENTS.lite)?;
            let rows = st.query_map([&session[..]], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn kek_agents(&self, kek: String) -> Result<Vec<String>, MetaError> {
        self.with(move |c| {
            let mut st = c.prepare(sql::KEK_AGENTS.lite)?;
            let rows = st.query_map([kek], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn console_user(&self, name: String) -> Result<Option<ConsoleUser>, MetaError> {
        self.with(move |c| {
            c.prepare(sql::CONSOLE_USER.lite)?
                .query_and_then([name], |r| rows::console_user(r))?
                .next()
                .transpose()
        })
        .await
    }

    pub async fn console_users(&self) -> Result<Vec<ConsoleUser>, MetaError> {
        self.with(move |c| {
            let mut st = c.prepare(sql::CONSOLE_USERS.lite)?;
            st.query_and_then([], |r| rows::console_user(r))?.collect()
        })
        .await
    }

    pub async fn put_console_user(
        &self,
        u: ConsoleUser,
        new_only: bool,
        actor: String,
        action: String,
    ) -> Result<bool, MetaError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let sql = if new_only {
                sql::INSERT_CONSOLE_USER.lite
            } else {
                "INSERT INTO console_user (name, role, password_hash, agents, created_us, disabled_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO UPDATE SET role = excluded.role, \
                 password_hash = excluded.password_hash, agents = excluded.agents, disabled_us = excluded.disabled_us"
            };
            let n = tx.execute(
                sql,
                params![u.name, u.role.as_str(), u.password_hash, u.agents.join("\n"), u.created_us, u.disabled_us],
            )?;
            if n == 0 {
                return Ok(false);
            }
            let detail = format!(
                "user={} role={} agents=[{}] disabled={}",
                u.name,
                u.role.as_str(),
                u.agents.join(","),
                u.disabled_us.is_some()
            );
            tx.execute(
                sql::INSERT_AUDIT.lite,
                params![actor, action, detail],
            )?;
            if u.disabled_us.is_some() {
                tx.execute(sql::DELETE_USER_LOGINS.lite, [&u.name])?;
            }
            tx.commit()?;
            super::chain_pending_audit_rows(c)?;
            Ok(true)
        })
        .await
    }

    pub async fn insert_login(&self, l: Login) -> Result<(), MetaError> {
        self.with(move |c| {
            c.execute(
                sql::INSERT_LOGIN.lite,
                params![
                    &l.token_sha256[..],
                    l.user,
                    l.csrf,
                    l.address,
                    l.created_us,
                    l.last_seen_us
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn touch_login(
        &self,
        token: [u8; 32],
        now: i64,
        idle: i64,
    ) -> Result<Option<Login>, MetaError> {
        self.with(move |c| {
            let login = c
                .query_row(
                    sql::TOUCH_LOGIN.lite,
                    params![&token[..], now, now - idle],
                    |r| {
                        Ok(Login {
                            token_sha256: token,
                            user: r.get(0)?,
                            csrf: r.get(1)?,
                            address: r.get(2)?,
                            created_us: r.get(3)?,
                            last_seen_us: r.get(4)?,
                        })
                    },
                )
                .optional()?;
            if login.is_none() {
                // Unknown or idle too long: clear every expired login now (not on every
                // request, which would be a second write on each).
                c.execute(sql::DELETE_IDLE_LOGINS.lite, [now - idle])?;
            }
            Ok(login)
        })
        .await
    }

    pub async fn delete_login(&self, token: [u8; 32]) -> Result<(), MetaError> {
        self.with(move |c| {
            c.execute(sql::DELETE_LOGIN.lite, [&token[..]])?;
            Ok(())
        })
        .await
    }

    pub async fn audit_from(&self, v: [String; 4]) -> Result<(), MetaError> {
        self.with(move |c| {
            c.execute(sql::INSERT_AUDIT_FROM.lite, params![v[0], v[1], v[2], v[3]])?;
            super::chain_pending_audit_rows(c)?;
            Ok(())
        })
        .await
    }

    pub async fn audit_page(&self, q: AuditQuery) -> Result<Vec<AuditRow>, MetaError> {
        self.with(move |c| {
            // A newer page is read upwards from `after`, then shown newest first like the rest.
            let newer = q.before.is_none() && q.after.is_some();
            // The chained time to the microsecond, as PostgreSQL shows it (strftime's %f stops
            // at the millisecond): whole seconds (rounded down) and six digits of the rest.
            let mut st = c.prepare_cached(&format!(
                "SELECT id, coalesce(strftime('%Y-%m-%dT%H:%M:%S', (at_us - (at_us % 1000000 + 1000000) % 1000000) / 1000000, 'unixepoch') \
                   || printf('.%06dZ', (at_us % 1000000 + 1000000) % 1000000), at), actor, action, detail, address FROM audit_log \
                 WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR id > ?2) AND (?3 IS NULL OR actor = ?3) \
                   AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR at_us >= ?5) AND (?6 IS NULL OR at_us <= ?6) \
                 ORDER BY id {} LIMIT ?7",
                if newer { "ASC" } else { "DESC" }
            ))?;
            let args = params![q.before, q.after, q.actor, q.action, q.since_us, q.until_us, i64::from(q.limit)];
            let rows = st.query_map(args, |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    detail: r.get(4)?,
                    address: r.get(5)?,
                })
            })?;
            let mut out: Vec<AuditRow> = rows.collect::<Result<_, _>>()?;
            if newer {
                out.reverse();
            }
            Ok(out)
        })
        .await
    }
}
