//! `sealstream agent`: captures (synthetic or replayed), seals each chunk under a DEK made in
//! memory at start-up and wrapped under the KEK, and streams over one QUIC connection (server
//! key pinned, client certificate) with one stream per (user session, kind). Every chunk stays
//! queued (and, with `spool_dir`, on disk) until the server acks it; after a reconnect or a
//! crash, unacked chunks are resent oldest first with the same bytes. When the memory budget or
//! the spool is full, capture waits (or, under `drop_oldest`, the oldest backlog is dropped and
//! a gap record sealed).
//!
//! This file: the public surface (`Source`, the reports, `Observer`, `AgentError`) and the
//! `Agent` every part shares, made from the configuration at start-up.

pub mod capture;
mod credentials;
pub mod link;
mod metrics;
mod nodes;
mod queue;
mod run;
pub mod screen;
pub mod spool;
mod stream;
pub mod synthetic;
pub mod x11;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, Semaphore};

use crate::config::{AgentConfig, Limits};
use crate::keys::{self, KeyError};
use crate::protocol::uplink::{self, MSG_DEK, Reject};
use crate::protocol::{AgentId, KekId, SessionId};
use crate::recorder::{self, Recorder};
use crate::transport::{self, TransportError};
use credentials::{Client, check_expiry, not_after, read_credentials, stamp};
use nodes::resolve_nodes;
use queue::{Entry, Queue};
pub use run::{run, run_observed};
use synthetic::SyntheticSpec;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{path}: {detail}")]
    Credentials { path: PathBuf, detail: String },
    #[error("server address {0:?} does not resolve")]
    Address(String),
    #[error(transparent)]
    Input(#[from] recorder::InputError),
}

/// Where captures come from.
pub enum Source {
    Synthetic(SyntheticSpec),
    /// Image files as frames and `.jsonl` keystroke files, as one user session.
    Replay(Vec<PathBuf>),
    /// Nothing new: send what the spool holds from earlier runs, then stop (`agent --drain`).
    SpoolOnly,
    /// Every X display on the host, live, until stopped (`--capture x11`).
    X11(crate::config::CaptureConfig),
}

/// What one user session sent, for checking an export against it.
#[derive(Clone, Debug)]
pub struct SessionReport {
    pub session: SessionId,
    pub user: String,
    /// (file name, SHA-256 of the image bytes) in order.
    pub frames: Vec<(String, [u8; 32])>,
    /// SHA-256 of all keystroke lines as export writes them.
    pub keystrokes_sha256: [u8; 32],
    pub plaintext_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct AgentReport {
    pub agent: AgentId,
    pub kek: KekId,
    pub sessions: Vec<SessionReport>,
    pub chunks_sealed: u64,
    pub chunks_acked: u64,
    pub sealed_bytes: u64,
    pub unacked: u64,
    pub rejected: BTreeMap<String, u64>,
    pub connects: u64,
    /// Moves to a node earlier in the agent's order (back to balance), each made between
    /// chunks with nothing in flight.
    pub node_moves: u64,
    /// Chunks written to a server again (after a connection was lost before their ack).
    pub resent_chunks: u64,
    /// Acks for chunks already acked (should be 0).
    pub duplicate_acks: u64,
    /// The disk spool at the end of the run (None without `spool_dir`).
    pub spool: Option<spool::SpoolStats>,
    /// Chunks dropped because the spool was full (`spool_full = "drop_oldest"`), and the gap
    /// records sealed for them.
    pub dropped_chunks: u64,
    pub gap_records: u64,
}

/// Told about acks as they arrive (the load-test harness measures with it).
pub trait Observer: Send + Sync {
    /// A chunk of `bytes` was acked `latency` after it was (last) written to the server.
    fn acked(&self, bytes: usize, latency: Duration);
    /// The server refused something with `code`.
    fn rejected(&self, _code: Reject) {}
    /// A chunk of `bytes` was sealed and queued.
    fn sealed(&self, _bytes: usize) {}
    /// A chunk of `bytes` was written to a server again (its connection was lost before its
    /// ack came).
    fn resent(&self, _bytes: usize) {}
}

struct Agent {
    config: AgentConfig,
    identity: AgentId,
    recorder: Recorder,
    kek: KekId,
    dek_message: Bytes,
    spool: Option<Mutex<spool::Spool>>,
    endpoint: quinn::Endpoint,
    client: Mutex<Client>,
    /// Every configured node (`server`, then `servers`), resolved again before each round.
    nodes: Vec<String>,
    /// Which address the next connection attempt goes to: its place in the agent's order of
    /// the addresses (`nodes::home_order`; counts up, modulo the addresses).
    next_node: AtomicU64,
    /// Set while the agent leaves its node for a better one: streams send no more chunks, so
    /// that the move waits only for the acks of those already sent.
    moving: AtomicBool,
    node_moves: AtomicU64,
    resent: AtomicU64,
    /// The address of the current (or last) connection, for logs and metrics.
    server: Mutex<SocketAddr>,
    /// The last resolution of `nodes` (kept when a lookup fails or hangs).
    addrs: Mutex<Vec<SocketAddr>>,
    /// Streams not yet done (a done one is dropped when the next is added).
    queues: Mutex<Vec<Arc<Queue>>>,
    queue_serial: AtomicU64,
    new_queue: Notify,
    /// Signalled (to every waiter) whenever spool bytes are released: acks recorded in the
    /// spool, and `drop_oldest`. `push` waits on it while the spool is full.
    spool_room: Notify,
    /// Signalled (to every waiter) whenever chunks leave a queue (acked, or refused for
    /// good): a queue may have become done. `run` waits on it for `all_done`.
    settled: Notify,
    memory: Arc<Semaphore>,
    sealed: AtomicU64,
    sealed_bytes: AtomicU64,
    acked: AtomicU64,
    connects: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    duplicate_acks: AtomicU64,
    dropped: AtomicU64,
    gaps: AtomicU64,
    observer: Option<Arc<dyn Observer>>,
    uplink: link::Uplink,
}

impl Agent {
    pub(super) fn new(
        config: AgentConfig,
        observer: Option<Arc<dyn Observer>>,
    ) -> Result<Self, AgentError> {
        let (certs, key) = read_credentials(&config)?;
        let identity = crate::crypto::cert::agent_identity(&certs[0]).map_err(|detail| {
            AgentError::Credentials {
                path: config.cert.clone(),
                detail,
            }
        })?;
        let kek = keys::load_public_key(config.wrapping_kek())?;
        let signer = crate::crypto::AgentSigner::new(&certs[0], &key).map_err(|detail| {
            AgentError::Credentials {
                path: config.key.clone(),
                detail,
            }
        })?;
        let policy = crate::crypto::Checkpoints {
            every_chunks: config.checkpoint_every_chunks.max(1),
            every: Duration::from_millis(config.checkpoint_every_ms.max(1)),
        };
        let recorder = Recorder::new(identity.clone(), &kek)
            .signed_by(Arc::new(signer), policy)
            .map_err(|detail| AgentError::Credentials {
                path: config.key.clone(),
                detail,
            })?;
        let mut msg = BytesMut::new();
        uplink::encode_message(MSG_DEK, &recorder.dek_record().encode(), &mut msg);
        let mut recovered = Vec::new();
        let spool = match &config.spool_dir {
            Some(dir) => {
                let (mut sp, rec) =
                    spool::Spool::open(dir, Duration::from_millis(config.spool_sync_ms))?;
                sp.set_dek(recorder.dek_record());
                let st = sp.stats();
                if st.recovered_chunks > 0 {
                    tracing::info!(
                        chunks = st.recovered_chunks,
                        corrupt = st.corrupt_records,
                        torn = st.torn_tails,
                        "resending what the spool kept from the last run"
                    );
                }
                recovered = rec;
                Some(Mutex::new(sp))
            }
            None => None,
        };
        let pins = config
            .server_pins
            .iter()
            .map(|p| {
                KekId::parse(p).map_err(|detail| AgentError::Credentials {
                    path: "server_pins".into(),
                    detail,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limits = Limits {
            idle_timeout_ms: config.idle_timeout_ms,
            ..Limits::default()
        };
        let client_stamp = stamp(&config);
        let cert_not_after = not_after(&certs[0]);
        check_expiry(&config.cert, cert_not_after);
        let client = Client {
            config: transport::client_config(pins.clone(), certs, key, &limits)?,
            pins,
            limits: limits.clone(),
            stamp: client_stamp,
            not_after: cert_not_after,
        };
        let nodes = config.addresses();
        let addrs = resolve_nodes(&nodes);
        let server = *addrs
            .first()
            .ok_or_else(|| AgentError::Address(nodes.join(", ")))?;
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("valid");
        let endpoint = transport::endpoint(transport::udp_socket(bind, 4 * 1024 * 1024)?, None)?;
        Ok(Agent {
            uplink: link::Uplink::new(Duration::from_millis(config.reconnect_ms)),
            memory: Arc::new(Semaphore::new(config.max_unacked_bytes)),
            config,
            identity,
            kek: kek.kek_id,
            recorder,
            dek_message: msg.freeze(),
            spool,
            endpoint,
            client: Mutex::new(client),
            nodes,
            next_node: AtomicU64::new(0),
            moving: AtomicBool::new(false),
            node_moves: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            server: Mutex::new(server),
            addrs: Mutex::new(
                addrs
                    .into_iter()
                    .filter(|a| a.is_ipv4() == server.is_ipv4())
                    .collect(),
            ),
            queues: Mutex::new(Vec::new()),
            queue_serial: AtomicU64::new(0),
            new_queue: Notify::new(),
            spool_room: Notify::new(),
            settled: Notify::new(),
            sealed: AtomicU64::new(0),
            sealed_bytes: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            duplicate_acks: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            observer,
        })
        .inspect(|agent| {
            // Streams left unacked by an earlier run: resent first, with their own DEK record.
            for r in recovered {
                let mut msg = BytesMut::new();
                uplink::encode_message(MSG_DEK, &r.dek_record.encode(), &mut msg);
                let q = agent.add_queue_with(msg.freeze(), None);
                let mut s = q.state.lock().expect("queue lock");
                s.unacked.extend(r.chunks.into_iter().map(|chunk| Entry {
                    chunk,
                    chain_before: None,
                    _permit: None,
                    sent_at: None,
                }));
                s.finished = true;
            }
        })
    }
}
