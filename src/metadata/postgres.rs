//! PostgreSQL through tokio-postgres. One client; writes that must be atomic take the
//! transaction lock.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{KekRow, MIGRATIONS, MetaError, SegmentCommit, StreamRow};
use crate::protocol::{AgentId, DekRecord, SessionId, StreamId};

/// Rows per multi-row INSERT.
const BATCH: usize = 500;

#[derive(Clone)]
pub struct Pg {
    url: Arc<str>,
    client: Arc<Mutex<Client>>,
}

impl Pg {
    pub async fn connect(url: &str) -> Result<Self, MetaError> {
        Ok(Pg {
            url: url.into(),
            client: Arc::new(Mutex::new(Self::open(url).await?)),
        })
    }

    async fn open(url: &str) -> Result<Client, MetaError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// The client, reconnected first if the database went away (a restart, a failover):
    /// callers get an error while it is down and a working client once it is back.
    async fn conn(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, MetaError> {
        let mut guard = self.client.lock().await;
        if guard.is_closed() {
            *guard = Self::open(&self.url).await?;
            tracing::info!("reconnected to PostgreSQL");
        }
        Ok(guard)
    }

    pub async fn migrate(&self) -> Result<(), MetaError> {
        let mut c = self.conn().await?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        for (version, pg, _) in MIGRATIONS {
            let tx = c.transaction().await?;
            // Serialise concurrent starters on the same database.
            tx.batch_execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                .await?;
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await?
                .is_some();
            if !done {
                tx.batch_execute(pg).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), MetaError> {
        self.conn().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub async fn keks(&self) -> Result<Vec<KekRow>, MetaError> {
        let rows = self.conn().await?
            .query(
                "SELECT id, active, priv_encrypted, pub_datafile, priv_datafile, fingerprint, agent_id FROM encryption_kek ORDER BY id",
                &[],
            )
            .await?;
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
            })
            .collect())
    }

    pub async fn set_kek_fingerprint(&self, id: i64, fp: &str) -> Result<(), MetaError> {
        self.conn().await?
            .execute(
                "UPDATE encryption_kek SET fingerprint = $2 WHERE id = $1 AND fingerprint IS DISTINCT FROM $2",
                &[&id, &fp],
            )
            .await?;
        Ok(())
    }

    pub async fn insert_kek(
        &self,
        active: bool,
        enc: bool,
        pubf: &str,
        privf: &str,
    ) -> Result<(), MetaError> {
        self.conn().await?
            .execute(
                "insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile) values ($1, $2, $3, $4)",
                &[&active, &enc, &pubf, &privf],
            )
            .await?;
        Ok(())
    }

    pub async fn insert_dek(&self, r: &DekRecord, object_key: &str) -> Result<(), MetaError> {
        self.conn().await?
            .execute(
                "INSERT INTO encryption_dek (dek_id, kek_fingerprint, agent_id, agent_session, wrapped_dek, record, object_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dek_id) DO NOTHING",
                &[
                    &&r.dek_id.0[..],
                    &r.kek_id.to_string(),
                    &r.agent.as_str(),
                    &&r.agent_session.0[..],
                    &r.wrapped,
                    &r.encode(),
                    &object_key,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn dek_agent(&self, dek_id: &[u8; 16]) -> Result<Option<String>, MetaError> {
        let row = self
            .conn()
            .await?
            .query_opt(
                "SELECT agent_id FROM encryption_dek WHERE dek_id = $1",
                &[&&dek_id[..]],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn stream(
        &self,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
    ) -> Result<Option<StreamRow>, MetaError> {
        let row = self.conn().await?
            .query_opt(
                "SELECT kind, next_seq, final_seq FROM streams WHERE agent_id = $1 AND session_id = $2 AND stream_id = $3",
                &[&agent.as_str(), &&session.0[..], &i64::from(stream.0)],
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
        let row = self.conn().await?
            .query_opt(
                "SELECT digest FROM chunks WHERE agent_id = $1 AND session_id = $2 AND stream_id = $3 AND seq = $4",
                &[&agent.as_str(), &&session.0[..], &i64::from(stream.0), &(seq as i64)],
            )
            .await?;
        row.map(|r| {
            let d: Vec<u8> = r.get(0);
            d.try_into()
                .map_err(|_| MetaError::Row("chunk digest is not 32 bytes".into()))
        })
        .transpose()
    }

    pub async fn commit_segment(&self, c: SegmentCommit) -> Result<(), MetaError> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (segment_id) DO NOTHING",
            &[&&c.segment_id[..], &c.object_key, &(c.size as i64), &&c.sha256[..], &(c.chunks.len() as i32)],
        )
        .await?;
        for batch in c.chunks.chunks(BATCH) {
            let mut sql = String::from(
                "INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest) VALUES ",
            );
            let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
                Vec::with_capacity(batch.len() * 6);
            for (i, ch) in batch.iter().enumerate() {
                let b = i * 6;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${},${},${},${},${},${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
                params.push(Box::new(ch.agent.as_str().to_owned()));
                params.push(Box::new(ch.session.0.to_vec()));
                params.push(Box::new(i64::from(ch.stream.0)));
                params.push(Box::new(ch.seq as i64));
                params.push(Box::new(c.segment_id.to_vec()));
                params.push(Box::new(ch.digest.to_vec()));
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            tx.execute(sql.as_str(), &refs).await?;
        }
        for s in &c.streams {
            tx.execute(
                "INSERT INTO streams (agent_id, session_id, stream_id, kind, next_seq, final_seq) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (agent_id, session_id, stream_id) DO UPDATE SET \
                 next_seq = GREATEST(streams.next_seq, EXCLUDED.next_seq), final_seq = COALESCE(streams.final_seq, EXCLUDED.final_seq)",
                &[
                    &s.agent.as_str(),
                    &&s.session.0[..],
                    &i64::from(s.stream.0),
                    &i16::from(s.kind),
                    &(s.next_seq as i64),
                    &s.final_seq.map(|v| v as i64),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), MetaError> {
        self.conn()
            .await?
            .execute(
                "INSERT INTO audit_log (actor, action, detail) VALUES ($1, $2, $3)",
                &[&actor, &action, &detail],
            )
            .await?;
        Ok(())
    }

    pub async fn count(&self, table: &str) -> Result<i64, MetaError> {
        let row = self
            .conn()
            .await?
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?;
        Ok(row.get(0))
    }
}
