//! One agent connection: the `ConnectionActor` owns what the server knows of the agent's
//! streams (sequence state, registered DEKs) and verifies each envelope without keys; a task
//! per QUIC stream reads messages, hands accepted chunks to a store actor and writes the
//! answers back in order once each chunk is durable. A full in-flight queue stops the reading,
//! so QUIC flow control pushes back on the agent.
//!
//! Here: what every connection shares; `accept` admits or refuses a connection, `actor` is the
//! per-connection actor and its messages, `stream` the task per QUIC stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use actix::prelude::*;
use tokio::sync::Semaphore;

use super::key_actor::KeyActor;
use super::registry::AgentRegistry;
use super::store_actor::StoreActor;
use crate::config::Limits;
use crate::metadata::Metadata;

mod accept;
mod actor;
mod stream;

pub use accept::serve_connection;

/// What every connection shares.
pub struct Shared {
    pub key: Addr<KeyActor>,
    pub stores: Vec<Addr<StoreActor>>,
    pub metadata: Metadata,
    pub limits: Limits,
    /// Bytes of chunks accepted and not yet durable, server-wide.
    pub memory: Arc<Semaphore>,
    pub memory_bytes: usize,
    pub agents: AgentRegistry,
    /// Which agent certificates may connect (refreshed every `access_poll_ms`).
    pub access: super::access::Access,
    /// Connections with an identified agent.
    pub open: AtomicUsize,
    /// Handshakes under way (no certificate seen yet).
    pub handshaking: AtomicUsize,
    /// Bytes of half-received messages buffered, server-wide (`limits.partial_bytes_total`).
    pub partial: Arc<Semaphore>,
    /// This node's name (lease rows).
    pub node: String,
    /// Set while this node cannot reach its database: agents are turned away (and the open
    /// connections closed) so that they fail over to a node that can.
    pub database_down: std::sync::atomic::AtomicBool,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(
        key: Addr<KeyActor>,
        stores: Vec<Addr<StoreActor>>,
        metadata: Metadata,
        limits: Limits,
        memory_bytes: usize,
        node: String,
    ) -> Self {
        let partial_total = limits.partial_bytes_total;
        Shared {
            key,
            stores,
            metadata,
            limits,
            memory: Arc::new(Semaphore::new(memory_bytes)),
            memory_bytes,
            agents: AgentRegistry::default(),
            access: super::access::Access::default(),
            open: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            partial: Arc::new(Semaphore::new(partial_total)),
            node,
            database_down: Default::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

/// How an agent's connection ended, for the `agent disconnected` line: a close the agent sent
/// (it stopped, or moved to another node) is said as a close, with its reason; silence (quinn's
/// "timed out") is said with what it may mean, so an operator does not read a clean exit as a
/// lost agent or the other way round. The peer's reason text is quoted and escaped.
pub(crate) fn disconnect_reason(e: &quinn::ConnectionError) -> String {
    use crate::protocol::uplink::CloseCode;
    use quinn::ConnectionError as E;
    match e {
        E::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            match crate::transport::peer_close_code(e) {
                Some(CloseCode::Shutdown) => format!("closed by the agent: {reason:?}"),
                Some(code) => format!("closed by the agent ({code:?}): {reason:?}"),
                None => format!("closed by the agent with code {}: {reason:?}", c.error_code),
            }
        }
        E::TimedOut => "timed out: nothing heard from the agent within the idle timeout (it \
                        stopped without closing its connection, crashed, or the network to it \
                        is cut)"
            .into(),
        E::LocallyClosed => "closed by this node".into(),
        E::Reset => "reset by the agent (it restarted)".into(),
        E::ConnectionClosed(c) => format!("closed by the agent's QUIC stack: {c}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::disconnect_reason;
    use crate::protocol::uplink::CloseCode;
    use quinn::{ApplicationClose, ConnectionError, VarInt};

    fn closed(code: u32, reason: &str) -> ConnectionError {
        ConnectionError::ApplicationClosed(ApplicationClose {
            error_code: VarInt::from_u32(code),
            reason: bytes::Bytes::copy_from_slice(reason.as_bytes()),
        })
    }

    #[test]
    fn an_agent_that_closed_is_told_from_one_that_went_silent() {
        assert_eq!(
            disconnect_reason(&closed(CloseCode::Shutdown.code(), "agent stopping")),
            "closed by the agent: \"agent stopping\""
        );
        assert_eq!(
            disconnect_reason(&closed(77, "odd\nline")),
            "closed by the agent with code 77: \"odd\\nline\""
        );
        let silent = disconnect_reason(&ConnectionError::TimedOut);
        assert!(silent.starts_with("timed out: nothing heard"), "{silent}");
        assert!(!silent.contains("closed by the agent"), "{silent}");
        assert_eq!(
            disconnect_reason(&ConnectionError::LocallyClosed),
            "closed by this node"
        );
    }
}
