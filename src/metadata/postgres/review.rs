//! The review console's SQL on PostgreSQL.

use tokio_postgres::Row;

use super::{Pg, Which, pg_err};
use crate::metadata::MetaError;
use crate::metadata::review::{
    AuditQuery, AuditRow, ChunkLocation, ConsoleUser, Login, RecordedAgent, SessionQuery,
    SessionSummary, StreamState, like_pattern,
};
use crate::metadata::rows;
use crate::metadata::sql::{self, SESSION_COLUMNS};

fn summary(r: &Row) -> Result<SessionSummary, MetaError> {
    let session: Vec<u8> = r.get(1);
    Ok(SessionSummary {
        agent: r.get(0),
        session: session
            .try_into()
            .map_err(|_| MetaError::Row("session id is not 16 bytes".into()))?,
        first_capture_us: r.get(2),
        last_capture_us: r.get(3),
        chunks: r.get(4),
        bytes: r.get(5),
        gaps: r.get(6),
        updated_us: r.get(7),
        encrypted: r.get(8),
        streams: Vec::new(),
    })
}

fn bytes16(v: Vec<u8>) -> Result<[u8; 16], MetaError> {
    v.try_into()
        .map_err(|_| MetaError::Row("id is not 16 bytes".into()))
}

impl Pg {
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
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let allowed: Option<Vec<String>> = q
                    .allowed
                    .as_ref()
                    .map(|p| p.iter().map(|p| like_pattern(p)).collect());
                let (b_at, b_agent, b_session) = match &q.before {
                    Some((at, a, s)) => (Some(*at), Some(a.clone()), Some(s.to_vec())),
                    None => (None, None, None),
                };
                let one = one.map(|s| s.to_vec());
                let limit = i64::from(if one.is_some() { 1 } else { q.limit.max(1) });
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM recording_session r \
                     WHERE ($1::text IS NULL OR r.agent_id = $1) \
                       AND ($2::int8 IS NULL OR r.last_capture_us >= $2) \
                       AND ($3::int8 IS NULL OR r.first_capture_us <= $3) \
                       AND ($4::text[] IS NULL OR r.agent_id LIKE ANY ($4)) \
                       AND ($5::int8 IS NULL OR (r.last_capture_us, r.agent_id, r.session_id) < ($5, $6::text, $7::bytea)) \
                       AND ($8::bytea IS NULL OR r.session_id = $8) \
                     ORDER BY r.last_capture_us DESC, r.agent_id DESC, r.session_id DESC LIMIT $9"
                );
                let rows = c
                    .query(
                        &sql,
                        &[&q.agent, &q.since_us, &q.until_us, &allowed, &b_at, &b_agent, &b_session, &one, &limit],
                    )
                    .await
                    .map_err(e)?;
                let mut out = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
                if out.is_empty() {
                    return Ok(out);
                }
                let agents: Vec<&str> = out.iter().map(|s| s.agent.as_str()).collect();
                let sessions: Vec<&[u8]> = out.iter().map(|s| &s.session[..]).collect();
                let streams = c
                    .query(
                        "SELECT s.agent_id, s.session_id, s.stream_id, s.kind, s.next_seq, s.final_seq \
                         FROM streams s JOIN unnest($1::text[], $2::bytea[]) AS u(a, x) \
                         ON s.agent_id = u.a AND s.session_id = u.x ORDER BY s.stream_id",
                        &[&agents, &sessions],
                    )
                    .await
                    .map_err(e)?;
                for r in &streams {
                    let (agent, session): (String, Vec<u8>) = (r.get(0), r.get(1));
                    if let Some(s) = out
                        .iter_mut()
                        .find(|s| s.agent == agent && s.session[..] == session[..])
                    {
                        s.streams.push(StreamState {
                            stream: r.get::<_, i64>(2) as u32,
                            kind: r.get::<_, i16>(3) as u8,
                            next_seq: r.get::<_, i64>(4) as u64,
                            final_seq: r.get::<_, Option<i64>>(5).map(|v| v as u64),
                        });
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    pub async fn recorded_agents(
        &self,
        allowed: Option<Vec<String>>,
    ) -> Result<Vec<RecordedAgent>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let allowed: Option<Vec<String>> =
                    allowed.map(|p| p.iter().map(|p| like_pattern(p)).collect());
                let rows = c
                    .query(
                        "SELECT agent_id, count(*), max(last_capture_us) FROM recording_session \
                         WHERE ($1::text[] IS NULL OR agent_id LIKE ANY ($1)) GROUP BY agent_id ORDER BY agent_id",
                        &[&allowed],
                    )
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(rows
                    .iter()
                    .map(|r| RecordedAgent {
                        agent: r.get(0),
                        sessions: r.get(1),
                        last_capture_us: r.get(2),
                    })
                    .collect())
            })
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
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let stream = stream.map(i64::from);
                let rows = c
                    .query(
                        "SELECT c.stream_id, c.seq, s.object_key, c.chunk_offset, c.chunk_len, c.capture_us, c.flags, c.dek_id \
                         FROM chunks c JOIN segments s ON s.segment_id = c.segment_id \
                         WHERE c.agent_id = $1 AND c.session_id = $2 AND ($3::int8 IS NULL OR c.stream_id = $3) AND c.seq >= $4 \
                         ORDER BY c.stream_id, c.seq LIMIT $5",
                        &[&agent, &&session[..], &stream, &(from_seq as i64), &i64::from(limit)],
                    )
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                rows.iter()
                    .map(|r| {
                        let offset: Option<i64> = r.get(3);
                        let len: Option<i32> = r.get(4);
                        Ok(ChunkLocation {
                            stream: r.get::<_, i64>(0) as u32,
                            seq: r.get::<_, i64>(1) as u64,
                            object_key: r.get(2),
                            range: offset.zip(len).map(|(o, l)| (o as u64, l as u32)),
                            capture_us: r.get(5),
                            flags: r.get::<_, Option<i16>>(6).map(|f| f as u8),
                            dek_id: r.get::<_, Option<Vec<u8>>>(7).map(bytes16).transpose()?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    /// `Metadata::frame_picks` on PostgreSQL.
    pub async fn frame_picks(
        &self,
        agent: String,
        session: [u8; 16],
        stream: u32,
        since_us: Option<i64>,
        until_us: Option<i64>,
        slots: u32,
    ) -> Result<Vec<ChunkLocation>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let newest = "SELECT c.stream_id, c.seq, s.object_key, c.chunk_offset, c.chunk_len, c.capture_us, c.flags, c.dek_id \
                     FROM chunks c JOIN segments s ON s.segment_id = c.segment_id \
                     WHERE c.agent_id = $1 AND c.session_id = $2 AND c.stream_id = $3 AND (coalesce(c.flags, 0) & 130) = 0 \
                       AND ($4::int8 IS NULL OR c.capture_us >= $4) AND ($5::int8 IS NULL OR c.capture_us <= $5)";
                let stream = i64::from(stream);
                let slots = i64::from(slots);
                let rows = if slots <= 1 {
                    c.query(
                        &format!("{newest} ORDER BY c.seq DESC LIMIT 1"),
                        &[&agent, &&session[..], &stream, &since_us, &until_us],
                    )
                    .await
                } else {
                    // The newest frame of each of `slots` equal parts of [since, until].
                    c.query(
                        &format!(
                            "SELECT stream_id, seq, object_key, chunk_offset, chunk_len, capture_us, flags, dek_id FROM \
                             (SELECT p.*, row_number() OVER (PARTITION BY (p.capture_us - $4) * $6::int8 / ($5 - $4 + 1) ORDER BY p.seq DESC) AS rn \
                              FROM ({newest}) p) q WHERE rn = 1 ORDER BY seq"
                        ),
                        &[&agent, &&session[..], &stream, &since_us, &until_us, &slots],
                    )
                    .await
                }
                .map_err(|e| pg_err(&t, e))?;
                rows.iter()
                    .map(|r| {
                        let offset: Option<i64> = r.get(3);
                        let len: Option<i32> = r.get(4);
                        Ok(ChunkLocation {
                            stream: r.get::<_, i64>(0) as u32,
                            seq: r.get::<_, i64>(1) as u64,
                            object_key: r.get(2),
                            range: offset.zip(len).map(|(o, l)| (o as u64, l as u32)),
                            capture_us: r.get(5),
                            flags: r.get::<_, Option<i16>>(6).map(|f| f as u8),
                            dek_id: r.get::<_, Option<Vec<u8>>>(7).map(bytes16).transpose()?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    pub async fn dek_record(
        &self,
        dek_id: [u8; 16],
    ) -> Result<Option<(String, Vec<u8>)>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let row = c
                    .query_opt(sql::DEK_RECORD.pg, &[&&dek_id[..]])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            })
        })
        .await
    }

    pub async fn session_agents(&self, session: [u8; 16]) -> Result<Vec<String>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let rows = c
                    .query(sql::SESSION_AGENTS.pg, &[&&session[..]])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })
        .await
    }

    pub async fn kek_agents(&self, kek: String) -> Result<Vec<String>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let rows = c
                    .query(sql::KEK_AGENTS.pg, &[&kek])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })
        .await
    }

    pub async fn console_user(&self, name: String) -> Result<Option<ConsoleUser>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let row = c
                    .query_opt(sql::CONSOLE_USER.pg, &[&name])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                row.as_ref().map(rows::console_user).transpose()
            })
        })
        .await
    }

    pub async fn console_users(&self) -> Result<Vec<ConsoleUser>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.query(sql::CONSOLE_USERS.pg, &[])
                    .await
                    .map_err(|e| pg_err(&t, e))?
                    .iter()
                    .map(rows::console_user)
                    .collect()
            })
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
        self.run(Which::Keys, move |mut c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let tx = c.transaction().await.map_err(e)?;
                let agents = u.agents.join("\n");
                let sql = if new_only {
                    sql::INSERT_CONSOLE_USER.pg
                } else {
                    "INSERT INTO console_user (name, role, password_hash, agents, created_us, disabled_us) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, \
                     password_hash = EXCLUDED.password_hash, agents = EXCLUDED.agents, disabled_us = EXCLUDED.disabled_us"
                };
                let n = tx
                    .execute(
                        sql,
                        &[&u.name, &u.role.as_str(), &u.password_hash, &agents, &u.created_us, &u.disabled_us],
                    )
                    .await
                    .map_err(e)?;
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
                    sql::INSERT_AUDIT.pg,
                    &[&actor, &action, &detail],
                )
                .await
                .map_err(e)?;
                if u.disabled_us.is_some() {
                    tx.execute(sql::DELETE_USER_LOGINS.pg, &[&u.name])
                        .await
                        .map_err(e)?;
                }
                tx.commit().await.map_err(e)?;
                Ok(true)
            })
        })
        .await
    }

    pub async fn insert_login(&self, l: Login) -> Result<(), MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(
                    sql::INSERT_LOGIN.pg,
                    &[
                        &&l.token_sha256[..],
                        &l.user,
                        &l.csrf,
                        &l.address,
                        &l.created_us,
                        &l.last_seen_us,
                    ],
                )
                .await
                .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    pub async fn touch_login(
        &self,
        token: [u8; 32],
        now: i64,
        idle: i64,
    ) -> Result<Option<Login>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let row = c
                    .query_opt(sql::TOUCH_LOGIN.pg, &[&&token[..], &now, &(now - idle)])
                    .await
                    .map_err(e)?;
                if row.is_none() {
                    // Unknown or idle too long: clear every expired login now (not on every
                    // request, which would be a second write on each).
                    c.execute(sql::DELETE_IDLE_LOGINS.pg, &[&(now - idle)])
                        .await
                        .map_err(e)?;
                }
                Ok(row.map(|r| Login {
                    token_sha256: token,
                    user: r.get(0),
                    csrf: r.get(1),
                    address: r.get(2),
                    created_us: r.get(3),
                    last_seen_us: r.get(4),
                }))
            })
        })
        .await
    }

    pub async fn delete_login(&self, token: [u8; 32]) -> Result<(), MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(sql::DELETE_LOGIN.pg, &[&&token[..]])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    pub async fn audit_from(&self, v: [String; 4]) -> Result<(), MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(sql::INSERT_AUDIT_FROM.pg, &[&v[0], &v[1], &v[2], &v[3]])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    pub async fn audit_page(&self, q: AuditQuery) -> Result<Vec<AuditRow>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                // A newer page is read upwards from `after`, then shown newest first.
                let newer = q.before.is_none() && q.after.is_some();
                let sql = format!(
                    "SELECT id, to_char(coalesce(to_timestamp(at_us / 1000000.0), at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor, action, detail, address \
                     FROM audit_log WHERE ($1::int8 IS NULL OR id < $1) AND ($2::int8 IS NULL OR id > $2) \
                       AND ($3::text IS NULL OR actor = $3) AND ($4::text IS NULL OR action = $4) \
                       AND ($5::int8 IS NULL OR at_us >= $5) AND ($6::int8 IS NULL OR at_us <= $6) \
                     ORDER BY id {} LIMIT $7",
                    if newer { "ASC" } else { "DESC" }
                );
                let rows = c
                    .query(
                        &sql,
                        &[&q.before, &q.after, &q.actor, &q.action, &q.since_us, &q.until_us, &i64::from(q.limit)],
                    )
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                let mut out: Vec<AuditRow> = rows
                    .iter()
                    .map(|r| AuditRow {
                        id: r.get(0),
                        at: r.get(1),
                        actor: r.get(2),
                        action: r.get(3),
                        detail: r.get(4),
                        address: r.get(5),
                    })
                    .collect();
                if newer {
                    out.reverse();
                }
                Ok(out)
            })
        })
        .await
    }
}
