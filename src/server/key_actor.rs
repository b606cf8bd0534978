//! The key actor: the single writer of key records. It keeps the KEK registry (re-read from
//! `encryption_kek` on a timer, so rows are picked up without a restart) and registers DEKs:
//! the record goes to the object store and to `encryption_dek`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use object_store::ObjectStore;

use super::metrics as m;
use crate::metadata::{KekRow, Metadata};
use crate::protocol::uplink::Reject;
use crate::protocol::{AgentId, DekId, DekRecord, KekId};
use crate::storage::{self, paths};

#[derive(Clone, Debug)]
struct Kek {
    row: i64,
    active: bool,
    agent: Option<String>,
}

pub struct KeyActor {
    metadata: Metadata,
    store: Arc<dyn ObjectStore>,
    poll: Duration,
    keks: HashMap<KekId, Kek>,
    /// Rows whose public key file could not be read, with the error (logged once per change).
    broken: HashMap<i64, String>,
    deks: HashMap<DekId, AgentId>,
    queue: Arc<std::sync::atomic::AtomicI64>,
}

impl KeyActor {
    pub fn new(metadata: Metadata, store: Arc<dyn ObjectStore>, poll: Duration) -> Self {
        KeyActor {
            metadata,
            store,
            poll,
            keks: HashMap::new(),
            broken: HashMap::new(),
            deks: HashMap::new(),
            queue: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        }
    }

    fn apply(&mut self, rows: Vec<KekRow>) -> Vec<(i64, String)> {
        let mut keks = HashMap::new();
        let mut fingerprints = Vec::new();
        for row in rows {
            match crate::keys::load_public_key(Path::new(&row.pub_datafile)) {
                Ok(key) => {
                    if self.broken.remove(&row.id).is_some() || !self.keks.contains_key(&key.kek_id)
                    {
                        tracing::info!(kek = %key.kek_id, row = row.id, active = row.active, e2ee = row.priv_encrypted, "KEK loaded");
                    } else if self
                        .keks
                        .get(&key.kek_id)
                        .is_some_and(|k| k.active != row.active)
                    {
                        tracing::info!(kek = %key.kek_id, row = row.id, active = row.active, "KEK activation changed");
                    }
                    let fp = key.kek_id.to_string();
                    if row.fingerprint.as_deref() != Some(fp.as_str()) {
                        fingerprints.push((row.id, fp));
                    }
                    // If one public key appears in several rows, any active row makes it active.
                    let entry = keks.entry(key.kek_id).or_insert(Kek {
                        row: row.id,
                        active: false,
                        agent: row.agent_id.clone(),
                    });
                    if row.active {
                        entry.active = true;
                        entry.row = row.id;
                        entry.agent = row.agent_id.clone();
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.broken.get(&row.id) != Some(&msg) {
                        tracing::error!(row = row.id, error = %msg, "encryption_kek row unusable: cannot read pub_datafile");
                        self.broken.insert(row.id, msg);
                    }
                }
            }
        }
        self.keks = keks;
        metrics::gauge!(m::KEKS_ACTIVE).set(self.keks.values().filter(|k| k.active).count() as f64);
        fingerprints
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let md = self.metadata.clone();
        ctx.wait(
            async move { md.keks().await }
                .into_actor(self)
                .map(|res, act, _| match res {
                    Ok(rows) => {
                        let fps = act.apply(rows);
                        let md = act.metadata.clone();
                        actix::spawn(async move {
                            for (id, fp) in fps {
                                if let Err(e) = md.set_kek_fingerprint(id, &fp).await {
                                    tracing::warn!(error = %e, "cannot record KEK fingerprint");
                                }
                            }
                        });
                    }
                    Err(e) => tracing::error!(error = %e, "cannot read encryption_kek; keeping the KEKs already loaded"),
                }),
        );
    }

    /// A counter of requests waiting for this actor (for the queue depth metric).
    pub fn queue(&self) -> Arc<std::sync::atomic::AtomicI64> {
        self.queue.clone()
    }
}

impl Actor for KeyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        self.reload(ctx);
        ctx.run_interval(self.poll, |act, ctx| act.reload(ctx));
    }
}

/// Load the KEK registry now (start-up, and tests that just inserted a row).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadKeks;

impl Handler<ReloadKeks> for KeyActor {
    type Result = ();

    fn handle(&mut self, _: ReloadKeks, ctx: &mut Context<Self>) {
        self.reload(ctx);
    }
}

/// Register a DEK for `agent` (the connection's certificate identity).
#[derive(Message)]
#[rtype(result = "Result<(), (Reject, String)>")]
pub struct RegisterDek {
    pub agent: AgentId,
    pub record: DekRecord,
}

impl Handler<RegisterDek> for KeyActor {
    type Result = ResponseActFuture<Self, Result<(), (Reject, String)>>;

    fn handle(&mut self, msg: RegisterDek, _: &mut Context<Self>) -> Self::Result {
        let queue = self.queue.clone();
        queue.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(m::KEY_QUEUE_DEPTH).increment(1.0);
        let done = move |r: Result<(), (Reject, String)>| {
            queue.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!(m::KEY_QUEUE_DEPTH).decrement(1.0);
            let outcome = match &r {
                Ok(()) => "registered",
                Err((r, _)) => r.name(),
            };
            metrics::counter!(m::DEK_REGISTRATIONS, "outcome" => outcome).increment(1);
            r
        };
        let RegisterDek { agent, record } = msg;
        if record.agent != agent {
            return Box::pin(fut::ready(done(Err((
                Reject::AgentMismatch,
                format!("DEK record names agent {:?}", record.agent.as_str()),
            )))));
        }
        match self.deks.get(&record.dek_id) {
            Some(owner) if *owner == agent => return Box::pin(fut::ready(done(Ok(())))),
            Some(_) => {
                return Box::pin(fut::ready(done(Err((
                    Reject::AgentMismatch,
                    "DEK id already registered by another agent".into(),
                )))));
            }
            None => {}
        }
        match self.keks.get(&record.kek_id) {
            None => {
                return Box::pin(fut::ready(done(Err((
                    Reject::UnknownKek,
                    format!(
                        "KEK {} is not in encryption_kek; keep the data and resend",
                        record.kek_id
                    ),
                )))));
            }
            Some(k) if !k.active => {
                return Box::pin(fut::ready(done(Err((
                    Reject::InactiveKek,
                    format!("KEK {} is deactivated", record.kek_id),
                )))));
            }
            Some(k) if k.agent.as_deref().is_some_and(|a| a != agent.as_str()) => {
                return Box::pin(fut::ready(done(Err((
                    Reject::UnknownKek,
                    format!("KEK {} is bound to another agent", record.kek_id),
                )))));
            }
            Some(_) => {}
        }
        let (md, store) = (self.metadata.clone(), self.store.clone());
        let path = paths::dek_record(&record.agent, record.dek_id);
        let rec = record.clone();
        Box::pin(
            async move {
                // A DEK id already taken by another agent is refused, whoever asks.
                let owner = md.dek_agent(&rec.dek_id.0).await.map_err(|e| {
                    tracing::error!(error = %e, "cannot read encryption_dek");
                    (Reject::RetryLater, "metadata unavailable".to_string())
                })?;
                if owner.is_some_and(|o| o != rec.agent.as_str()) {
                    return Err((
                        Reject::AgentMismatch,
                        "DEK id registered by another agent".to_string(),
                    ));
                }
                storage::put_new(store.as_ref(), &path, Bytes::from(rec.encode()))
                    .await
                    .map_err(|e| match e {
                        storage::StoreError::Conflict { path } => {
                            // Another record already sits under this DEK's name.
                            metrics::counter!(m::SECURITY_EVENTS, "kind" => "conflicting_duplicate").increment(1);
                            tracing::error!(%path, "SECURITY: a different DEK record is stored under this DEK id");
                            (Reject::ConflictingDuplicate, "a different DEK record exists under this id".to_string())
                        }
                        e => {
                            metrics::counter!(m::PUT_ERRORS).increment(1);
                            tracing::error!(error = %e, "cannot store DEK record");
                            (Reject::RetryLater, "object store unavailable".to_string())
                        }
                    })?;
                md.insert_dek(&rec, path.as_ref()).await.map_err(|e| {
                    tracing::error!(error = %e, "cannot insert into encryption_dek");
                    (Reject::RetryLater, "metadata unavailable".to_string())
                })?;
                Ok(())
            }
            .into_actor(self)
            .map(move |res, act, _| {
                if res.is_ok() {
                    let (dek, kek) = (record.dek_id, record.kek_id);
                    if act
                        .deks
                        .insert(record.dek_id, record.agent.clone())
                        .is_none()
                    {
                        tracing::info!(agent = %record.agent, %dek, %kek, "DEK registered");
                    }
                }
                done(res)
            }),
        )
    }
}
