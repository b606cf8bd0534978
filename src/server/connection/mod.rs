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
