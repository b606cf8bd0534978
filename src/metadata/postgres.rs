//! PostgreSQL through tokio-postgres and deadpool-postgres.
//!
//! Every connection lives on a runtime of its own (one thread, `sealstream-pg`), and every
//! operation runs there as a task that owns its pooled connection from checkout to return.
//! Callers (actors, stream tasks) only await the task's result: whatever they do meanwhile (an
//! actor suspended by `ctx.wait`, a dropped future), the operation runs to its end and gives the
//! connection back, so no connection is ever held by code that can wait on another one.
//!
//! Two pools: `index` for segment commits and stream lookups, `keys` for the key actor, the KEK
//! registry and the audit log, so key work never queues behind segment commits. Statements are
//! prepared once per connection (`prepare_cached`); a segment's rows go in one statement (its
//! segment row, every chunk row and every stream position, through `unnest` arrays).

mod review;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{
    AccessChange, AccessOutcome, AccessRows, AgentAccount, Credential, DbSettings, KekRow,
    MIGRATIONS, MetaError, SegmentCommit, StreamRow, access_detail, now_us,
};
use crate::protocol::{AgentId, DekRecord, SessionId, StreamId};

type Op<T> = Pin<Box<dyn Future<Output = Result<T, MetaError>> + Send>>;
type Param = Box<dyn ToSql + Send + Sync>;

#[derive(Clone)]
pub struct Pg {
    inner: Arc<Inner>,
}

struct Inner {
    rt: tokio::runtime::Handle,
    index: Pool,
    keys: Pool,
    /// `host:port/database`, for error messages.
    target: Arc<str>,
    acquire_timeout: Duration,
    /// Dropped with the last `Pg`: ends the runtime's thread (and its connections).
    _stop: std::sync::mpsc::Sender<()>,
}

#[derive(Clone, Copy)]
enum Which {
    Index,
    Keys,
}

/// `host:port/database` of a connection string, without user or password.
fn describe(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", cfg.get_dbname().unwrap_or("postgres"))
}

/// The text of a tokio-postgres error with its causes, each said once ("error connecting to
/// server: Connection refused (os error 111)"), or the server's own words for a database error.
fn pg_err(target: &str, e: tokio_postgres::Error) -> MetaError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                let t = c.to_string();
                if !text.contains(&t) {
                    text.push_str(": ");
                    text.push_str(&t);
                }
                cause = c.source();
            }
            text
        }
    };
    MetaError::Postgres {
        target: target.to_owned(),
        detail,
    }
}

impl Pg {
    pub async fn connect(url: &str, settings: &DbSettings) -> Result<Self, MetaError> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| MetaError::Postgres {
            target: "database_url".into(),
            detail: format!("cannot parse the connection string: {e}"),
        })?;
        let target: Arc<str> = describe(&pg).into();
        pg.connect_timeout(settings.connect_timeout);
        pg.application_name("sealstream");
        if !settings.statement_timeout.is_zero() {
            pg.options(format!(
                "-c statement_timeout={}",
                settings.statement_timeout.as_millis()
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sealstream-pg")
            .enable_all()
            .build()
            .map_err(|e| MetaError::Worker(format!("starting the PostgreSQL runtime: {e}")))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sealstream-pg-owner".into())
            .spawn(move || {
                // Runs until every `Pg` is dropped; the runtime is dropped here, off any
                // async context.
                let _ = stopped.recv();
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| MetaError::Worker(format!("starting the PostgreSQL thread: {e}")))?;
        let pool = |size: usize| {
            let mgr = Manager::from_config(
                pg.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(mgr)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(settings.acquire_timeout))
                .create_timeout(Some(settings.connect_timeout))
                .recycle_timeout(Some(settings.connect_timeout))
                .build()
                .map_err(|e| MetaError::Worker(format!("PostgreSQL pool: {e}")))
        };
        let p = Pg {
            inner: Arc::new(Inner {
                rt: handle,
                index: pool(settings.index_connections)?,
                keys: pool(settings.key_connections)?,
                target,
                acquire_timeout: settings.acquire_timeout,
                _stop: stop,
            }),
        };
        // Fail now, naming the server, if it cannot be reached.
        p.ping().await?;
        Ok(p)
    }

    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Run `f` with a pooled connection, on the PostgreSQL runtime, to its end.
    async fn run<T: Send + 'static>(
        &self,
        which: Which,
        f: impl FnOnce(Object, Arc<str>) -> Op<T> + Send + 'static,
    ) -> Result<T, MetaError> {
        let pool = match which {
            Which::Index => self.inner.index.clone(),
            Which::Keys => self.inner.keys.clone(),
        };
        let target = self.inner.target.clone();
        let wait = self.inner.acquire_timeout;
        let task = self.inner.rt.spawn(async move {
            let client = pool.get().await.map_err(|e| {
                use deadpool_postgres::PoolError;
                let detail = match e {
                    PoolError::Timeout(_) => format!(
                        "no connection free or made within {} ms (database.acquire_timeout_ms)",
                        wait.as_millis()
                    ),
                    PoolError::Backend(e) => return pg_err(&target, e),
                    e => e.to_string(),
                };
                MetaError::Postgres {
                    target: target.to_string(),
                    detail,
                }
            })?;
            f(client, target).await
        });
        task.await
            .map_err(|e| MetaError::Worker(format!("PostgreSQL task: {e}")))?
    }

    pub async fn migrate(&self) -> Result<(), MetaError> {
        self.run(Which::Keys, |mut c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await
                .map_err(e)?;
                for (version, pg, _) in MIGRATIONS {
                    let tx = c.transaction().await.map_err(e)?;
                    // Serialise concurrent starters on the same database.
                    tx.batch_execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                        .await
                        .map_err(e)?;
                    let done = tx
                        .query_opt(
                            "SELECT 1 FROM schema_migrations WHERE version = $1",
                            &[version],
                        )
                        .await
                        .map_err(e)?
                        .is_some();
                    if !done {
                        tx.batch_execute(pg).await.map_err(e)?;
                        tx.execute(
                            "INSERT INTO schema_migrations (version) VALUES ($1)",
                            &[version],
                        )
                        .await
                        .map_err(e)?;
                    }
                    tx.commit().await.map_err(e)?;
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), MetaError> {
        self.run(Which::Keys, |c, t| {
            Box::pin(async move {
                c.simple_query("SELECT 1")
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    pub async fn keks(&self) -> Result<Vec<KekRow>, MetaError> {
        self.run(Which::Keys, |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let st = c
                    .prepare_cached(
                        "SELECT id, active, priv_encrypted, pub_datafile, priv_datafile, fingerprint, agent_id, (extract(epoch FROM retired_at) * 1000000)::bigint FROM encryption_kek ORDER BY id",
                    )
                    .await
                    .map_err(e)?;
                let rows = c.query(&st, &[]).await.map_err(e)?;
                Ok(rows
                    .iter()
                    .map(|r| KekRow {
                        id: r.get(0),
                        active: r.get(1),
                        priv_encrypted: r.get(2),
                        pub_datafile: r.get(3),
                        priv_datafile: r.get(4),
                        fingerprint: r.get(5),
                        agent_id: r.get(6),
                        retired_us: r.get(7),
                    })
                    .collect())
            })
        })
        .await
    }

    pub async fn set_kek_fingerprint(&self, id: i64, fp: &str) -> Result<(), MetaError> {
        let fp = fp.to_owned();
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(
                    "UPDATE encryption_kek SET fingerprint = $2 WHERE id = $1 AND fingerprint IS DISTINCT FROM $2",
                    &[&id, &fp],
                )
                .await
                .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    pub async fn access_rows(&self) -> Result<AccessRows, MetaError> {
        self.run(Which::Keys, |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let credentials = c
                    .query(
                        "SELECT fingerprint, agent_id, issued_us, not_after_us, revoked_us, revoked_reason FROM agent_credential",
                        &[],
                    )
                    .await
                    .map_err(e)?
                    .iter()
                    .map(|r| Credential {
                        fingerprint: r.get(0),
                        agent: r.get(1),
                        issued_us: r.get(2),
                        not_after_us: r.get(3),
                        revoked_us: r.get(4),
                        revoked_reason: r.get(5),
                    })
                    .collect();
                let accounts = c
                    .query(
                        "SELECT agent_id, disabled_us, registered_only FROM agent_account",
                        &[],
                    )
                    .await
                    .map_err(e)?
                    .iter()
                    .map(|r| AgentAccount {
                        agent: r.get(0),
                        disabled_us: r.get(1),
                        registered_only: r.get(2),
                    })
                    .collect();
                Ok(AccessRows {
                    credentials,
                    accounts,
                })
            })
        })
        .await
    }

    pub async fn change_access(
        &self,
        change: AccessChange,
        actor: String,
    ) -> Result<AccessOutcome, MetaError> {
        self.run(Which::Keys, move |mut c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let tx = c.transaction().await.map_err(e)?;
                let now = now_us();
                let agent = change.agent().to_owned();
                let mut out = AccessOutcome::default();
                const REVOKE: &str = "UPDATE agent_credential SET revoked_us = $1, revoked_reason = $2 WHERE agent_id = $3 AND revoked_us IS NULL AND fingerprint IS DISTINCT FROM $4 RETURNING fingerprint";
                const REGISTERED_ONLY: &str = "INSERT INTO agent_account (agent_id, registered_only) VALUES ($1, TRUE) ON CONFLICT (agent_id) DO UPDATE SET registered_only = TRUE";
                match &change {
                    AccessChange::Issue(cred) => {
                        tx.execute(
                            "INSERT INTO agent_credential (fingerprint, agent_id, issued_us, not_after_us) VALUES ($1, $2, $3, $4)",
                            &[&cred.fingerprint, &cred.agent, &cred.issued_us, &cred.not_after_us],
                        )
                        .await
                        .map_err(e)?;
                        let reason = "superseded by a later certificate";
                        let keep = Some(cred.fingerprint.clone());
                        out.revoked = tx
                            .query(REVOKE, &[&now, &reason, &agent, &keep])
                            .await
                            .map_err(e)?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        tx.execute(REGISTERED_ONLY, &[&agent]).await.map_err(e)?;
                        out.changed = true;
                    }
                    AccessChange::Revoke { reason, .. } => {
                        let keep: Option<String> = None;
                        out.revoked = tx
                            .query(REVOKE, &[&now, reason, &agent, &keep])
                            .await
                            .map_err(e)?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        tx.execute(REGISTERED_ONLY, &[&agent]).await.map_err(e)?;
                        out.changed = true;
                    }
                    AccessChange::Disable { disabled, .. } => {
                        let at = disabled.then_some(now);
                        let before: Option<i64> = tx
                            .query_opt(
                                "SELECT disabled_us FROM agent_account WHERE agent_id = $1 FOR UPDATE",
                                &[&agent],
                            )
                            .await
                            .map_err(e)?
                            .and_then(|r| r.get(0));
                        out.changed = before.is_some() != *disabled;
                        tx.execute(
                            "INSERT INTO agent_account (agent_id, disabled_us) VALUES ($1, $2) ON CONFLICT (agent_id) DO UPDATE SET disabled_us = CASE WHEN $2::BIGINT IS NULL THEN NULL ELSE coalesce(agent_account.disabled_us, $2) END",
                            &[&agent, &at],
                        )
                        .await
                        .map_err(e)?;
                    }
                }
                tx.execute(
                    "INSERT INTO audit_log (actor, action, detail) VALUES ($1, $2, $3)",
                    &[&actor, &change.action(), &access_detail(&change, &out)],
                )
                .await
                .map_err(e)?;
                tx.commit().await.map_err(e)?;
                Ok(out)
            })
        })
        .await
    }

    pub async fn mark_kek_retired(&self, id: i64) -> Result<(), MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(
                    "UPDATE encryption_kek SET retired_at = now() WHERE id = $1 AND NOT active AND retired_at IS NULL",
                    &[&id],
                )
                .await
                .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
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
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(
                    "insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile) values ($1, $2, $3, $4)",
                    &[&active, &enc, &pubf, &privf],
                )
                .await
                .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    /// Record wrapped DEKs, one statement for the whole batch (idempotent per DEK id).
    pub async fn insert_deks(&self, records: Vec<(DekRecord, String)>) -> Result<(), MetaError> {
        if records.is_empty() {
            return Ok(());
        }
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let ids: Vec<&[u8]> = records.iter().map(|(r, _)| &r.dek_id.0[..]).collect();
                let keks: Vec<String> = records.iter().map(|(r, _)| r.kek_id.to_string()).collect();
                let agents: Vec<&str> = records.iter().map(|(r, _)| r.agent.as_str()).collect();
                let sessions: Vec<&[u8]> =
                    records.iter().map(|(r, _)| &r.agent_session.0[..]).collect();
                let wrapped: Vec<&[u8]> = records.iter().map(|(r, _)| &r.wrapped[..]).collect();
                let encoded: Vec<Vec<u8>> = records.iter().map(|(r, _)| r.encode()).collect();
                let keys: Vec<&str> = records.iter().map(|(_, k)| k.as_str()).collect();
                let st = c
                    .prepare_cached(
                        "INSERT INTO encryption_dek (dek_id, kek_fingerprint, agent_id, agent_session, wrapped_dek, record, object_key) \
                         SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::bytea[], $7::text[]) \
                         ON CONFLICT (dek_id) DO NOTHING",
                    )
                    .await
                    .map_err(e)?;
                c.execute(
                    &st,
                    &[&ids, &keks, &agents, &sessions, &wrapped, &encoded, &keys],
                )
                .await
                .map_err(e)?;
                Ok(())
            })
        })
        .await
    }

    /// The agents that registered these DEK ids (those registered at all).
    pub async fn dek_owners(
        &self,
        dek_ids: Vec<[u8; 16]>,
    ) -> Result<HashMap<[u8; 16], String>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let ids: Vec<&[u8]> = dek_ids.iter().map(|d| &d[..]).collect();
                let st = c
                    .prepare_cached(
                        "SELECT dek_id, agent_id FROM encryption_dek WHERE dek_id = ANY($1::bytea[])",
                    )
                    .await
                    .map_err(e)?;
                let mut out = HashMap::new();
                for r in c.query(&st, &[&ids]).await.map_err(e)? {
                    let id: Vec<u8> = r.get(0);
                    let id: [u8; 16] = id
                        .try_into()
                        .map_err(|_| MetaError::Row("dek_id is not 16 bytes".into()))?;
                    out.insert(id, r.get(1));
                }
                Ok(out)
            })
        })
        .await
    }

    /// At most one row of `sql` (prepared once per connection) on `which`'s pool.
    async fn row(
        &self,
        which: Which,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<Row>, MetaError> {
        self.run(which, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let st = c.prepare_cached(sql).await.map_err(e)?;
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                c.query_opt(&st, &refs).await.map_err(e)
            })
        })
        .await
    }

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

    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), MetaError> {
        let (a, b, d) = (actor.to_owned(), action.to_owned(), detail.to_owned());
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO audit_log (actor, action, detail) VALUES ($1, $2, $3)",
                    &[&a, &b, &d],
                )
                .await
                .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    pub async fn count(&self, table: &'static str) -> Result<i64, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let row = c
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(row.get(0))
            })
        })
        .await
    }
}
