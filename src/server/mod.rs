//! `sealstream serve`: the QUIC ingest service. Wiring only: the endpoint and its accept loop,
//! the actors (one key actor, store actors, a connection actor per agent connection on the
//! ingest arbiters, round robin), and the ops listener.

pub mod access;
mod audit_checkpoints;
mod budget;
mod connection;
mod key_actor;
pub mod metrics;
pub mod ops;
mod registry;
pub mod sink;
pub mod store_actor;
mod store_verify;
pub mod verify;
pub mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use crate::config::ServeConfig;
use crate::metadata::{MetaError, Metadata};
use crate::pki::{Pki, PkiError};
use crate::protocol::KekId;
use crate::protocol::uplink::CloseCode;
use crate::storage::{self, StoreError};
use crate::transport::{self, TransportError};

pub use key_actor::{KeyActor, ReloadKeks};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("metadata database: {0}")]
    Metadata(#[from] MetaError),
    #[error("audit signing key: {0}")]
    AuditKey(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(
        "{0}: another `sealstream serve` is running on this state directory (pid {1}). The embedded SQLite file serves one ingest node; for several nodes give each its own data_dir, one shared `database_url = \"postgres://...\"` and one shared `store_url`"
    )]
    SecondNode(String, String),
    #[error("{0}: {1}")]
    Lock(String, std::io::Error),
    #[error("ops listener {addr}: {source}")]
    Ops {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The QUIC endpoint on `cfg.listen` with the server's TLS settings (shared with the sink).
pub(crate) fn bind_endpoint(
    cfg: &ServeConfig,
    pki: &Pki,
) -> Result<(quinn::Endpoint, SocketAddr), ServeError> {
    let socket = transport::udp_socket(cfg.listen, cfg.limits.udp_buffer_bytes)?;
    endpoint_on(socket, cfg, pki)
}

/// The QUIC endpoint on an already bound `socket`.
pub(crate) fn endpoint_on(
    socket: std::net::UdpSocket,
    cfg: &ServeConfig,
    pki: &Pki,
) -> Result<(quinn::Endpoint, SocketAddr), ServeError> {
    let server_cfg = transport::server_config(
        pki.ca_cert.clone(),
        pki.server_cert.clone(),
        pki.server_key(),
        &cfg.limits,
    )?;
    let endpoint = transport::endpoint(socket, Some(server_cfg))?;
    let quic_addr = endpoint
        .local_addr()
        .map_err(|source| TransportError::Socket {
            addr: cfg.listen,
            source,
        })?;
    Ok((endpoint, quic_addr))
}

/// A running server. Dropping it does not stop it: call `shutdown`.
pub struct Server {
    pub quic_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub pin: KekId,
    pub metadata: Metadata,
    pub progress: Arc<watchdog::Progress>,
    key: Addr<KeyActor>,
    shared: Arc<connection::Shared>,
    endpoint: quinn::Endpoint,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
    arbiters: Vec<Arbiter>,
    stores: Vec<Addr<store_actor::StoreActor>>,
    /// This node's name (lease rows, the `node` metric label).
    pub node: String,
    /// Where segments go.
    pub store: storage::Location,
    _single: Option<SingleNode>,
}

impl Server {
    /// Start on the configured addresses. Call inside an actix `System`.
    pub async fn start(cfg: &ServeConfig) -> Result<Server, ServeError> {
        Self::start_with(cfg, None).await
    }

    /// `start`, writing segments through `segments` instead of the configured directory
    /// (fault-injection tests wrap the real writer).
    pub async fn start_with(
        cfg: &ServeConfig,
        segments: Option<store_actor::SegmentStore>,
    ) -> Result<Server, ServeError> {
        // What can fail for want of a port or a database comes first, so that a failed start
        // leaves no CA, server key, store or SQLite file behind.
        let socket = transport::udp_socket(cfg.listen, cfg.limits.udp_buffer_bytes)?;
        let ops_listener = tokio::net::TcpListener::bind(cfg.ops_listen)
            .await
            .map_err(|source| ServeError::Ops {
                addr: cfg.ops_listen,
                source,
            })?;
        let postgres = if cfg.database_url.is_empty() {
            None
        } else {
            Some(
                Metadata::open_with(
                    &cfg.database_url,
                    &cfg.sqlite_path(),
                    &(&cfg.database).into(),
                )
                .await?,
            )
        };
        // SQLite serves one node: a second `serve` on the same state directory stops here.
        let single = if postgres.is_none() {
            Some(SingleNode::lock(&cfg.data_dir)?)
        } else {
            None
        };
        let pki = Pki::open_or_create(&cfg.data_dir)?;
        let opened = storage::open(&cfg.store_location(), &cfg.store)?;
        let store = opened.objects.clone();
        let metadata = match postgres {
            Some(pg) => pg,
            None => Metadata::open(&cfg.database_url, &cfg.sqlite_path()).await?,
        };
        let node = cfg.node_on(socket.local_addr().map_or(cfg.listen.port(), |a| a.port()));
        crate::telemetry::prometheus_for(Some(&node));
        metrics::describe();
        let progress = Arc::new(watchdog::Progress::new(Duration::from_millis(
            cfg.watchdog.stall_after_ms,
        )));

        // Segments bypass object_store locally: direct I/O, fsync, hard link (storage::durable);
        // elsewhere a conditional PUT or a multipart upload (storage::remote).
        let segments: store_actor::SegmentStore = segments.unwrap_or(opened.segments);
        let recent_deks = metadata
            .deks_in_last_minute()
            .await?
            .into_iter()
            .filter_map(|(agent, n)| Some((crate::protocol::AgentId::new(agent).ok()?, n)))
            .collect();
        let key = KeyActor::new(
            metadata.clone(),
            store.clone(),
            Duration::from_millis(cfg.kek_poll_ms),
            progress.clone(),
            cfg.limits.dek_records_per_minute,
            recent_deks,
        )
        .start();
        // The KEK registry is read before the first handshake: an agent reconnecting the
        // moment a restarted server is back must not be told `unknown_kek` (it would back off
        // as for a missing key, up to a minute). The actor's own first read runs beside this.
        let _ = key.send(ReloadKeks).await;
        let mut arbiters = Vec::new();
        let mut stores = Vec::new();
        for _ in 0..cfg.segments.store_actors {
            let arb = Arbiter::new();
            let (store, md, progress) = (segments.clone(), metadata.clone(), progress.clone());
            let (max_bytes, max_age) = (
                cfg.segments.max_bytes,
                Duration::from_millis(cfg.segments.max_age_ms),
            );
            stores.push(store_actor::StoreActor::start_in_arbiter(
                &arb.handle(),
                move |_| store_actor::StoreActor::new(store, md, max_bytes, max_age, progress),
            ));
            arbiters.push(arb);
        }
        // Chunks accepted but not durable, server-wide: a few segments' worth per store actor.
        let memory = (cfg.segments.max_bytes * 4 * cfg.segments.store_actors).max(64 * 1024 * 1024);
        let shared = Arc::new(connection::Shared::new(
            key.clone(),
            stores.clone(),
            metadata.clone(),
            cfg.limits.clone(),
            memory,
            node.clone(),
        ));
        // Which certificates may connect: read before the first handshake, then kept fresh.
        shared
            .access
            .set(access::Rules::from_rows(metadata.access_rows().await?));
        let shared_for_server = shared.clone();
        let ingest: Vec<Arbiter> = (0..cfg.ingest_threads()).map(|_| Arbiter::new()).collect();

        let (endpoint, quic_addr) = endpoint_on(socket, cfg, &pki)?;
        let ops_addr = ops_listener
            .local_addr()
            .map_err(|source| ServeError::Ops {
                addr: cfg.ops_listen,
                source,
            })?;
        let ready = Arc::new(AtomicBool::new(false));
        let ops_state = ops::OpsState {
            metadata: Some(metadata.clone()),
            ready: ready.clone(),
            progress: Some(progress.clone()),
        };
        let mut tasks = vec![
            actix_rt::spawn(crate::telemetry::serve(ops_listener, ops_state.clone())),
            actix_rt::spawn(ops::export_readiness(ops_state, Duration::from_secs(5))),
        ];
        tasks.push(actix_rt::spawn(progress.clone().watch()));
        let audit_key =
            crate::audit::AuditKey::load_or_create(&cfg.data_dir).map_err(ServeError::AuditKey)?;
        tasks.push(actix_rt::spawn(audit_checkpoints::run_checkpoints(
            audit_key,
            metadata.clone(),
            store.clone(),
            cfg.data_dir.join("audit"),
            Duration::from_millis(cfg.audit_checkpoint_ms),
        )));
        if cfg.verify_interval_ms > 0 {
            let ca = crate::crypto::AgentCa::from_der(pki.ca_cert.clone())
                .map_err(|e| ServeError::AuditKey(format!("agent CA: {e}")))?;
            tasks.push(actix_rt::spawn(store_verify::verify_in_background(
                store.clone(),
                ca,
                Duration::from_millis(cfg.verify_interval_ms),
            )));
        }
        tasks.push(actix_rt::spawn(refresh_access(
            shared.clone(),
            Duration::from_millis(cfg.access_poll_ms),
        )));
        if metadata.kind() == "postgresql" {
            tasks.push(actix_rt::spawn(watch_database(shared.clone())));
        }

        let (max, max_handshakes) = (cfg.limits.max_connections, cfg.limits.max_handshakes);
        let ep = endpoint.clone();
        let handles: Vec<_> = ingest.iter().map(Arbiter::handle).collect();
        tasks.push(actix_rt::spawn(async move {
            let mut next = 0usize;
            while let Some(incoming) = ep.accept().await {
                if shared.open.load(Ordering::Relaxed) >= max {
                    ::metrics::counter!(metrics::CONNECTIONS_REFUSED, "reason" => "connection_cap").increment(1);
                    tracing::warn!(remote = %incoming.remote_address(), max, "connection refused: limits.max_connections reached");
                    incoming.refuse();
                    continue;
                }
                if shared.handshaking.load(Ordering::Relaxed) >= max_handshakes
                    && !incoming.remote_address_validated()
                {
                    // Over the handshake budget: a stateless Retry. A real client answers it
                    // and comes back validated; a spoofed or stalled one costs nothing more.
                    ::metrics::counter!(metrics::CONNECTIONS_REFUSED, "reason" => "handshake_budget").increment(1);
                    if incoming.may_retry() {
                        let _ = incoming.retry();
                    } else {
                        incoming.refuse();
                    }
                    continue;
                }
                shared.handshaking.fetch_add(1, Ordering::Relaxed);
                let arb = &handles[next % handles.len()];
                next += 1;
                arb.spawn(connection::serve_connection(incoming, shared.clone()));
            }
        }));
        arbiters.extend(ingest);
        ready.store(true, Ordering::Relaxed);
        let pin = pki.server_pin();
        // Whether this node can mint agent identities: an offline CA leaves only ca.crt here.
        let agent_ca = if crate::pki::ca_is_offline(&cfg.data_dir) {
            "offline (ca.crt only)"
        } else {
            "on this node (ca.key here)"
        };
        tracing::info!(%quic_addr, %ops_addr, %node, store = %opened.location, metadata = metadata.kind(), agent_ca, server_pin = %pin, "sealstream serving");
        Ok(Server {
            quic_addr,
            ops_addr,
            pin,
            metadata,
            progress,
            key,
            shared: shared_for_server,
            endpoint,
            tasks,
            arbiters,
            stores,
            node,
            store: opened.location,
            _single: single,
        })
    }

    /// Agents the server keeps per-agent connection state for (those connected, or whose
    /// connection is still ending); a departed agent leaves nothing behind.
    pub fn agents_tracked(&self) -> usize {
        self.shared.agents.len()
    }

    /// Re-read `encryption_kek` now instead of at the next poll.
    pub async fn reload_keks(&self) {
        let _ = self.key.send(ReloadKeks).await;
    }

    /// Stop accepting, close connections, write what is batched, stop the actors.
    pub async fn shutdown(self) {
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::Shutdown.code()),
            b"server shutting down",
        );
        for s in &self.stores {
            let _ = s.send(store_actor::Flush).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        // In-flight segment writes finish (written, indexed, answered) before their arbiters
        // stop: each store actor answers `Drain` once none of its writes is left in flight.
        let drained = async {
            for s in &self.stores {
                let _ = s.send(store_actor::Drain).await;
            }
        };
        let limit = Duration::from_secs(10);
        if tokio::time::timeout(limit, drained).await.is_err() {
            tracing::warn!(
                ?limit,
                "segment writes still in flight at shutdown; stopping without them (their chunks are not acked and agents will resend)"
            );
        }
        for t in self.tasks {
            t.abort();
        }
        for a in self.arbiters {
            a.stop();
        }
    }
}

/// An exclusive lock on `<data_dir>/serve.lock` held while `serve` runs on SQLite.
struct SingleNode(#[allow(dead_code)] std::fs::File);

impl SingleNode {
    fn lock(data_dir: &std::path::Path) -> Result<SingleNode, ServeError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let path = data_dir.join("serve.lock");
        let err = |e| ServeError::Lock(path.display().to_string(), e);
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(ServeError::SecondNode(
                path.display().to_string(),
                pid.trim().to_owned(),
            ));
        }
        f.set_len(0).map_err(err)?;
        f.rewind().map_err(err)?;
        write!(f, "{}", std::process::id()).map_err(err)?;
        Ok(SingleNode(f))
    }
}

/// Every second, check that the database answers. After three failures in a row the node
/// closes its agents' connections and turns new ones away (they fail over to a node that can
/// index their chunks), until it answers again.
async fn watch_database(shared: Arc<connection::Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    ::metrics::gauge!(metrics::DATABASE_UP).set(1.0);
    loop {
        tick.tick().await;
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(2), shared.metadata.ping()).await,
            Ok(Ok(()))
        );
        failures = if ok { 0 } else { failures + 1 };
        let down = failures >= 3;
        if shared.database_down.swap(down, Ordering::Relaxed) != down {
            if down {
                let closed = shared
                    .agents
                    .close_all("this node cannot reach its database; try another node");
                tracing::error!(
                    closed,
                    "database unreachable: agents sent to other nodes until it answers"
                );
            } else {
                tracing::info!("database reachable again: accepting agents");
            }
            ::metrics::gauge!(metrics::DATABASE_UP).set(if down { 0.0 } else { 1.0 });
        }
    }
}

/// Re-read the access rules every `every`, and close open connections they now refuse. A
/// failed read keeps the last rules (and counts `sealstream_access_refresh_errors_total`).
async fn refresh_access(shared: Arc<connection::Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match shared.metadata.access_rows().await {
            Ok(rows) => {
                let rules = access::Rules::from_rows(rows);
                shared.agents.enforce(&rules);
                const FORTNIGHT_US: i64 = 14 * 24 * 3600 * 1_000_000;
                let soon = crate::metadata::now_us() + FORTNIGHT_US;
                ::metrics::gauge!(metrics::CERTS_EXPIRING).set(rules.expiring_before(soon) as f64);
                shared.access.set(rules);
            }
            Err(e) => {
                ::metrics::counter!(metrics::ACCESS_REFRESH_ERRORS).increment(1);
                tracing::warn!(error = %e, "cannot read agent access rules; the last ones stay in force");
            }
        }
    }
}
