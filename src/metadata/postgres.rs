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
//!
//! This file holds the pools, migrations and the key records; `index` the segment index,
//! `access` agent certificates and accounts, `review` the console's queries.

mod access;
mod backend;
mod index;
mod review;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{DbSettings, KekRow, MIGRATIONS, MetaError, rows, sql};
use crate::protocol::DekRecord;

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

/// Connections made as deadpool's default makes them (no TLS, the connection driven by a task
/// of its own), but with the server's notices at debug: tokio-postgres logs them at info, so
/// every start said `NOTICE: relation "schema_migrations" already exists, skipping` (and a new
/// database the migrations' `DROP TRIGGER IF EXISTS` notices), which asks nothing of anyone.
struct QuietNotices;

impl deadpool_postgres::Connect for QuietNotices {
    fn connect(
        &self,
        pg: &tokio_postgres::Config,
    ) -> Pin<
        Box<
            dyn Future<
                    Output = Result<
                        (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                        tokio_postgres::Error,
                    >,
                > + Send
                + '_,
        >,
    > {
        let pg = pg.clone();
        Box::pin(async move {
            let (client, mut connection) = pg.connect(NoTls).await?;
            let driver = tokio::spawn(async move {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notice(n)) => {
                            tracing::debug!("PostgreSQL {}: {}", n.severity(), n.message());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("PostgreSQL connection error: {e}");
                            break;
                        }
                    }
                }
            });
            Ok((client, driver))
        })
    }
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
            let mgr = Manager::from_connect(
                pg.clone(),
                QuietNotices,
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
                // Nodes starting together on an empty database: one creates the table at a
                // time (a transaction-scoped advisory lock), then each migration is serialised
                // by the table lock below.
                c.batch_execute(
                    "BEGIN; SELECT pg_advisory_xact_lock(7460551842); \
                     CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
                     COMMIT",
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
                            sql::MIGRATION_DONE.pg,
                            &[version],
                        )
                        .await
                        .map_err(e)?
                        .is_some();
                    if !done {
                        tx.batch_execute(pg).await.map_err(e)?;
                        tx.execute(
                            sql::MIGRATION_APPLIED.pg,
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
                c.simple_query(sql::PING.pg)
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
                rows.iter().map(rows::kek).collect()
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
                c.execute(sql::INSERT_KEK.pg, &[&active, &enc, &pubf, &privf])
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

    /// Every row of `sql` (prepared once per connection) on `which`'s pool.
    async fn rows(
        &self,
        which: Which,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<Row>, MetaError> {
        self.run(which, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let st = c.prepare_cached(sql).await.map_err(e)?;
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                c.query(&st, &refs).await.map_err(e)
            })
        })
        .await
    }

    pub async fn audit_chain_rows(&self) -> Result<Vec<crate::audit::ChainRow>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let rows = c
                    .query(sql::AUDIT_CHAIN_ROWS.pg, &[])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                rows.iter().map(rows::chain_row).collect()
            })
        })
        .await
    }

    pub async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT chain_seq, row_hash FROM audit_log WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1",
                        &[],
                    )
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            })
        })
        .await
    }

    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), MetaError> {
        let (a, b, d) = (actor.to_owned(), action.to_owned(), detail.to_owned());
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(sql::INSERT_AUDIT.pg, &[&a, &b, &d])
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
