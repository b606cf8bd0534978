//! One live connection per agent, and who a connection's certificate says it is. A new
//! connection of an agent closes the old one and waits until its streams end, so a stream's
//! state has a single owner; a connection whose certificate the access rules now refuse is
//! closed.

use std::collections::HashMap;
use std::sync::Arc;

use super::metrics as m;
use crate::protocol::AgentId;
use crate::protocol::uplink::CloseCode;

/// An agent's writer lock and its current connection.
type AgentSlot = (Arc<tokio::sync::Mutex<()>>, Option<quinn::Connection>);

/// One live connection per agent: a new one closes the old and waits until its streams end,
/// so a stream's state has a single owner.
#[derive(Default)]
pub struct AgentRegistry {
    inner: std::sync::Mutex<HashMap<AgentId, AgentSlot>>,
}

impl AgentRegistry {
    pub(super) async fn take_over(
        &self,
        agent: &AgentId,
        conn: quinn::Connection,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        let (lock, old) = {
            let mut map = self.inner.lock().expect("agent registry lock");
            let entry = map.entry(agent.clone()).or_default();
            (entry.0.clone(), entry.1.replace(conn))
        };
        if let Some(old) = old {
            tracing::info!(
                old_remote = %old.remote_address(),
                "an older connection of this agent is closed: replaced by this one"
            );
            crate::transport::close(
                &old,
                CloseCode::Replaced,
                "replaced by a newer connection of this agent",
            );
        }
        lock.lock_owned().await
    }

    /// Forget `conn` once it has ended, unless a newer connection of the agent replaced it: a
    /// closed connection's handle keeps its state alive, and an agent that never comes back
    /// must not hold memory (the soak saw RSS grow by ~230 KiB per departed agent).
    pub(super) fn release(&self, agent: &AgentId, conn: &quinn::Connection) {
        let mut map = self.inner.lock().expect("agent registry lock");
        if let Some(entry) = map.get_mut(agent)
            && entry
                .1
                .as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            entry.1 = None;
            // The map's Arc and the ending connection's guard: nobody waits for this agent.
            if Arc::strong_count(&entry.0) <= 2 {
                map.remove(agent);
            }
        }
    }

    /// Agents with a registry entry (tests: departed agents leave none).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("agent registry lock").len()
    }

    /// Close every open connection with `reason` (code 6); returns how many.
    pub fn close_all(&self, reason: &str) -> usize {
        let map = self.inner.lock().expect("agent registry lock");
        let mut closed = 0;
        for conn in map.values().filter_map(|(_, c)| c.as_ref()) {
            crate::transport::close(conn, CloseCode::TryAnotherNode, reason);
            closed += 1;
        }
        closed
    }

    /// Close every open connection whose certificate `rules` now refuse; returns how many.
    pub fn enforce(&self, rules: &super::access::Rules) -> usize {
        let map = self.inner.lock().expect("agent registry lock");
        let mut closed = 0;
        for (agent, (_, conn)) in map.iter() {
            let Some(conn) = conn else { continue };
            let Ok((_, fingerprint)) = peer_agent(conn) else {
                continue;
            };
            if let Err(refusal) = rules.check(agent, &fingerprint) {
                tracing::warn!(%agent, remote = %conn.remote_address(), %fingerprint, reason = %refusal, "open connection closed: its certificate is no longer accepted");
                metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => refusal.label()).increment(1);
                crate::transport::close(conn, CloseCode::AccessRefused, &refusal.to_string());
                closed += 1;
            }
        }
        closed
    }
}

/// A connection's hold on its agent's lease: the epoch it was accepted under. Chunks carry
/// it into segment commits; a commit that finds a newer epoch supersedes this connection.
pub struct Lease {
    pub epoch: i64,
    conn: quinn::Connection,
    superseded: std::sync::atomic::AtomicBool,
}

impl Lease {
    pub(super) fn new(epoch: i64, conn: quinn::Connection) -> Self {
        Lease {
            epoch,
            conn,
            superseded: Default::default(),
        }
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A newer connection of the agent (on another node) holds the lease: stop acking and
    /// close, so the agent carries on with the newer one.
    pub fn supersede(&self) {
        if !self
            .superseded
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(epoch = self.epoch, remote = %self.conn.remote_address(), "connection superseded: a newer connection of this agent holds its lease; its chunks in flight are answered retry_later");
            metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "superseded").increment(1);
            // Closed a moment later: the answers in flight (retry_later) reach the agent first.
            let conn = self.conn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                crate::transport::close(
                    &conn,
                    CloseCode::LeaseSuperseded,
                    "superseded: a newer connection of this agent holds its lease",
                );
            });
        }
    }
}

/// The agent a connection's client certificate names, and that certificate's fingerprint.
pub(super) fn peer_agent(conn: &quinn::Connection) -> Result<(AgentId, String), String> {
    let certs = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or("no client certificate")?;
    let first = certs.first().ok_or("empty certificate chain")?;
    Ok((
        crate::crypto::cert::agent_identity(first)?,
        crate::crypto::cert::fingerprint(first),
    ))
}
