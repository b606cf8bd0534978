//! Accepting a connection: the handshake, the agent's identity and access, the connection cap,
//! the agent's lease; then the connection actor and a task per QUIC stream until it closes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::Shared;
use super::actor::ConnectionActor;
use super::stream::serve_stream;
use crate::protocol::uplink::CloseCode;
use crate::server::budget::Budget;
use crate::server::metrics as m;
use crate::server::registry::{Lease, peer_agent};

/// Serve one incoming connection until it closes.
pub async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let remote = incoming.remote_address();
    let limit = std::time::Duration::from_millis(shared.limits.handshake_timeout_ms);
    let handshake = tokio::time::timeout(limit, incoming).await;
    shared.handshaking.fetch_sub(1, Ordering::Relaxed);
    let conn = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::info!(conn = id, %remote, error = %e, "connection refused: handshake failed");
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "handshake").increment(1);
            return;
        }
        Err(_) => {
            // Dropping the handshake closes it: its state is freed now, not at idle timeout.
            tracing::info!(conn = id, %remote, timeout_ms = limit.as_millis() as u64, "connection refused: handshake not finished in time");
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "handshake_timeout").increment(1);
            return;
        }
    };
    let (agent, fingerprint) = match peer_agent(&conn) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(conn = id, %remote, error = %e, "client certificate without a usable agent name");
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "identity").increment(1);
            crate::transport::close(
                &conn,
                CloseCode::NoIdentity,
                "client certificate has no usable agent name",
            );
            return;
        }
    };
    if let Err(refusal) = shared.access.rules().check(&agent, &fingerprint) {
        tracing::warn!(conn = id, %remote, %agent, %fingerprint, reason = %refusal, "connection refused: agent certificate not accepted");
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => refusal.label()).increment(1);
        crate::transport::close(&conn, CloseCode::AccessRefused, &refusal.to_string());
        return;
    }
    if shared.open.fetch_add(1, Ordering::Relaxed) >= shared.limits.max_connections {
        shared.open.fetch_sub(1, Ordering::Relaxed);
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "connection_cap").increment(1);
        tracing::warn!(conn = id, %remote, agent = %agent, "connection refused: limits.max_connections reached");
        crate::transport::close(
            &conn,
            CloseCode::ConnectionCap,
            "server at its connection limit",
        );
        return;
    }
    if shared.database_down.load(Ordering::Relaxed) {
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "database_unreachable").increment(1);
        crate::transport::close(
            &conn,
            CloseCode::TryAnotherNode,
            "this node cannot reach its database; try another node",
        );
        shared.open.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let span = tracing::info_span!("connection", conn = id, agent = %agent, %remote);
    async move {
        let guard = Arc::new(shared.agents.take_over(&agent, conn.clone()).await);
        // The lease after the registry: an older connection of this agent on this node has
        // finished its chunks by now, so one node never holds two epochs of an agent.
        let lease = match shared.metadata.take_lease(&agent, &shared.node).await {
            Ok(epoch) => Arc::new(Lease::new(epoch, conn.clone())),
            Err(e) => {
                tracing::error!(error = %e, "cannot take the agent's lease; connection closed");
                metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "lease").increment(1);
                crate::transport::close(
                    &conn,
                    CloseCode::TryAnotherNode,
                    "this node cannot reach its database; try another node",
                );
                shared.agents.release(&agent, &conn);
                shared.open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        if conn.close_reason().is_some() {
            // Gone while it waited for an older connection: it serves nothing, and the epoch it
            // took is simply older than the agent's next one.
            shared.agents.release(&agent, &conn);
            shared.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        tracing::info!(epoch = lease.epoch, "agent connected");
        crate::server::access::record_admission(&shared, &conn, &agent, &fingerprint);
        metrics::gauge!(m::CONNECTIONS_OPEN).increment(1.0);
        let actor = ConnectionActor {
            agent: agent.clone(),
            shared: shared.clone(),
            streams: HashMap::new(),
            deks: HashSet::new(),
        }
        .start();
        let mut tasks = Vec::new();
        let mut next = 0usize;
        let partial = Arc::new(Semaphore::new(shared.limits.partial_bytes_per_connection));
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let store = shared.stores[next % shared.stores.len()].clone();
                    next += 1;
                    let span = tracing::Span::current();
                    tasks.push(actix_rt::spawn(
                        serve_stream(
                            send,
                            recv,
                            actor.clone(),
                            store,
                            shared.clone(),
                            Budget::new(partial.clone(), shared.partial.clone()),
                            (guard.clone(), lease.clone()),
                        )
                        .instrument(span),
                    ));
                }
                Err(e) => {
                    tracing::info!(reason = %super::disconnect_reason(&e), "agent disconnected");
                    break;
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        shared.agents.release(&agent, &conn);
        drop(guard);
        metrics::gauge!(m::CONNECTIONS_OPEN).decrement(1.0);
        shared.open.fetch_sub(1, Ordering::Relaxed);
    }
    .instrument(span)
    .await
}
