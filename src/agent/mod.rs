//! `sealstream agent`: captures (synthetic or replayed), seals each chunk under a DEK made in
//! memory at start-up and wrapped under the KEK, and streams over one QUIC connection (server
//! key pinned, client certificate) with one stream per (user session, kind). Every chunk stays
//! queued (and, with `spool_dir`, on disk) until the server acks it; after a reconnect or a
//! crash, unacked chunks are resent oldest first with the same bytes. When the memory budget or
//! the spool is full, capture waits (or, under `drop_oldest`, the oldest backlog is dropped and
//! a gap record sealed).

pub mod capture;
pub mod link;
mod metrics;
pub mod screen;
pub mod spool;
mod stream;
pub mod synthetic;
pub mod x11;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::config::{AgentConfig, Limits, SpoolFull};
use crate::crypto::StreamSealer;
use crate::keys::{self, KeyError};
use crate::protocol::uplink::CloseCode;
use crate::protocol::uplink::{self, MSG_DEK, Reject};
use crate::protocol::{AgentId, KekId, SealedChunk, SessionId};
use crate::recorder::{self, Recorder};
use crate::transport::{self, TransportError};
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
    /// Acks for chunks already acked (should be 0).
    pub duplicate_acks: u64,
    /// The disk spool at the end of the run (None without `spool_dir`).
    pub spool: Option<spool::SpoolStats>,
    /// Chunks dropped because the spool was full (`spool_full = "drop_oldest"`), and the gap
    /// records sealed for them.
    pub dropped_chunks: u64,
    pub gap_records: u64,
}

struct Queue {
    /// Order of creation: a connection serves each queue made after the ones it has.
    serial: u64,
    state: Mutex<QueueState>,
    changed: Notify,
    /// Seals this stream's chunks (None for a stream recovered from the spool: its DEK is gone).
    sealer: Mutex<Option<StreamSealer>>,
    /// The DEK record this stream's chunks are sealed under, as a message.
    dek_message: Bytes,
}

/// A chunk waiting for its ack.
struct Entry {
    chunk: SealedChunk,
    /// The stream's chain head before this chunk (signing streams): a gap record replacing
    /// this chunk and the ones after it links here.
    chain_before: Option<[u8; 32]>,
    _permit: Option<OwnedSemaphorePermit>,
    sent_at: Option<Instant>,
}

/// Told about acks as they arrive (the load-test harness measures with it).
pub trait Observer: Send + Sync {
    /// A chunk of `bytes` was acked `latency` after it was (last) written to the server.
    fn acked(&self, bytes: usize, latency: Duration);
    /// The server refused something with `code`.
    fn rejected(&self, _code: Reject) {}
    /// A chunk of `bytes` was sealed and queued.
    fn sealed(&self, _bytes: usize) {}
}

impl QueueState {
    /// The first chunk never written to the server: chunks are written in order, so those
    /// with a `sent_at` are a prefix.
    fn unsent_from(&self) -> usize {
        self.unacked
            .iter()
            .position(|e| e.sent_at.is_none())
            .unwrap_or(self.unacked.len())
            .max(self.sent)
    }
}

#[derive(Default)]
struct QueueState {
    unacked: VecDeque<Entry>,
    /// How many of `unacked` were written on the current QUIC stream.
    sent: usize,
    /// No more chunks will be added: the final one was sealed, or the stream was recovered
    /// from the spool (its DEK is gone; what is there is all there will be).
    finished: bool,
}

impl Queue {
    fn done(&self) -> bool {
        let s = self.state.lock().expect("queue lock");
        s.finished && s.unacked.is_empty()
    }
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
    /// Which address the next connection attempt goes to (counts up; modulo the addresses).
    next_node: AtomicU64,
    /// The address of the current (or last) connection, for logs and metrics.
    server: Mutex<SocketAddr>,
    /// The last resolution of `nodes` (kept when a lookup fails or hangs).
    addrs: Mutex<Vec<SocketAddr>>,
    /// Streams not yet done (a done one is dropped when the next is added).
    queues: Mutex<Vec<Arc<Queue>>>,
    queue_serial: AtomicU64,
    new_queue: Notify,
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

/// The QUIC client config and which credential files it was made from, so that a renewed
/// certificate (`sealstream agents renew`) is picked up at the next connection.
struct Client {
    config: quinn::ClientConfig,
    pins: Vec<KekId>,
    limits: Limits,
    /// Modification times of (cert, key) when they were read.
    stamp: Option<(std::time::SystemTime, std::time::SystemTime)>,
    /// The certificate's notAfter, seconds since the epoch.
    not_after: i64,
}

fn stamp(config: &AgentConfig) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&config.cert)?, m(&config.key)?))
}

/// A certificate's notAfter in seconds since the epoch (0 if it cannot be read).
fn not_after(cert: &[u8]) -> i64 {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(cert)
        .map(|c| {
            c.tbs_certificate()
                .validity()
                .not_after
                .to_unix_duration()
                .as_secs() as i64
        })
        .unwrap_or(0)
}

/// Warn when the certificate has less than this left.
const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

fn check_expiry(path: &std::path::Path, not_after: i64) {
    let left = not_after - crate::crypto::now_us() / 1_000_000;
    if left < EXPIRY_WARNING_SECS {
        tracing::warn!(
            cert = %path.display(),
            days_left = left / 86_400,
            "the agent certificate expires soon (or has): renew it with `sealstream agents renew NAME --dir DIR --config serve.toml`"
        );
    }
}

fn read_credentials(
    config: &AgentConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AgentError> {
    let cert_err = |detail: String| AgentError::Credentials {
        path: config.cert.clone(),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| cert_err(format!("cannot read the agent certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err(
            "no certificate in the file (run `sealstream agents enroll`)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| AgentError::Credentials {
        path: config.key.clone(),
        detail: format!("cannot read the agent key: {e}"),
    })?;
    Ok((certs, key))
}

impl Agent {
    /// The client config for the next connection: made again from the credential files when
    /// they changed since they were read (a renewal), else the one in use. A renewal that
    /// cannot be read, or names another agent, is logged and the old files' config kept.
    fn client_config(&self) -> quinn::ClientConfig {
        let mut client = self.client.lock().expect("client lock");
        let now = stamp(&self.config);
        if now.is_some() && now != client.stamp {
            let reloaded = read_credentials(&self.config).and_then(|(certs, key)| {
                let who = crate::crypto::cert::agent_identity(&certs[0]).map_err(|detail| {
                    AgentError::Credentials {
                        path: self.config.cert.clone(),
                        detail,
                    }
                })?;
                if who != self.identity {
                    return Err(AgentError::Credentials {
                        path: self.config.cert.clone(),
                        detail: format!(
                            "now names agent {:?}, not {:?}; restart the agent to change its identity",
                            who.as_str(),
                            self.identity.as_str()
                        ),
                    });
                }
                let after = not_after(&certs[0]);
                let config =
                    transport::client_config(client.pins.clone(), certs, key, &client.limits)?;
                Ok((config, after))
            });
            client.stamp = now;
            match reloaded {
                Ok((config, after)) => {
                    tracing::info!(cert = %self.config.cert.display(), "agent certificate changed on disk: using the new one");
                    check_expiry(&self.config.cert, after);
                    client.config = config;
                    client.not_after = after;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent certificate changed on disk but cannot be used; keeping the old one")
                }
            }
        }
        client.config.clone()
    }

    /// The current certificate's notAfter, seconds since the epoch.
    fn certificate_not_after(&self) -> i64 {
        self.client.lock().expect("client lock").not_after
    }

    fn new(config: AgentConfig, observer: Option<Arc<dyn Observer>>) -> Result<Self, AgentError> {
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

    fn add_stream(&self, sealer: StreamSealer) -> Arc<Queue> {
        self.add_queue_with(self.dek_message.clone(), Some(sealer))
    }

    fn add_queue_with(&self, dek_message: Bytes, sealer: Option<StreamSealer>) -> Arc<Queue> {
        let mut queues = self.queues.lock().expect("queues lock");
        let q = Arc::new(Queue {
            serial: self.queue_serial.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
            sealer: Mutex::new(sealer),
            dek_message,
        });
        // Sessions come and go for months on a terminal server: streams that are done (final
        // chunk sealed and acked) are let go.
        queues.retain(|q| !q.done());
        queues.push(q.clone());
        drop(queues);
        self.new_queue.notify_one();
        q
    }

    /// Seal `plaintext` on `sealer` and queue it; waits while the memory budget is full.
    async fn push(&self, q: &Queue, plaintext: &[u8], captured: i64, last: bool) {
        // Room first (the spool, then memory), so that sealing, spooling and queueing happen
        // together: a chunk's sequence number is taken only when it can be kept.
        if let Some(sp) = &self.spool {
            let mut warned = false;
            while sp.lock().expect("spool lock").bytes() >= self.config.spool_max_bytes {
                if self.config.spool_full == SpoolFull::DropOldest && self.drop_oldest() {
                    continue;
                }
                if !warned {
                    tracing::warn!(
                        max = self.config.spool_max_bytes,
                        "spool full: capture paused until the server acks"
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let estimate = plaintext.len() + crate::protocol::chunk::FIXED_HEADER_LEN + 256 + 16;
        let want = (estimate as u32)
            .min(self.config.max_unacked_bytes as u32)
            .max(1);
        let permit = self
            .memory
            .clone()
            .acquire_many_owned(want)
            .await
            .expect("semaphore never closed");
        // The sealer stays locked until the chunk is queued: `drop_oldest` (which takes it
        // first) must never see a sequence number sealed but not yet in the queue.
        let mut sealer_guard = q.sealer.lock().expect("sealer lock");
        let sealer = sealer_guard.as_mut().expect("live streams have a sealer");
        let chain_before = sealer.chain_head();
        let chunk = sealer
            .seal(plaintext, captured, last)
            .expect("captures stay within the chunk limit");
        self.sealed.fetch_add(1, Ordering::Relaxed);
        self.sealed_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.sealed(chunk.len());
        }
        if let Some(sp) = &self.spool {
            // Spooled before it can be sent.
            if let Err(e) = sp.lock().expect("spool lock").append(&chunk) {
                tracing::error!(error = %e, "cannot write the spool; this chunk is kept in memory only");
            }
        }
        {
            let mut s = q.state.lock().expect("queue lock");
            s.unacked.push_back(Entry {
                chunk,
                chain_before,
                _permit: Some(permit),
                sent_at: None,
            });
            s.finished |= last;
        }
        drop(sealer_guard);
        q.changed.notify_one();
    }

    /// Spool full under `drop_oldest`: drop the unsent backlog of the stream whose next unsent
    /// chunk is oldest, and seal a gap record in its place. False if nothing can be dropped
    /// (everything is in flight).
    fn drop_oldest(&self) -> bool {
        let queues: Vec<Arc<Queue>> = self.queues.lock().expect("queues lock").clone();
        let victim = queues
            .iter()
            .filter_map(|q| {
                if q.sealer.lock().expect("sealer lock").is_none() {
                    return None;
                }
                let s = q.state.lock().expect("queue lock");
                let e = s.unacked.get(s.unsent_from())?;
                (!s.finished && !e.chunk.header.gap)
                    .then_some((e.chunk.header.capture_time_us, q.clone()))
            })
            .min_by_key(|(t, _)| *t)
            .map(|(_, q)| q);
        let Some(q) = victim else {
            return false;
        };
        let mut sealer = q.sealer.lock().expect("sealer lock");
        let Some(sealer) = sealer.as_mut() else {
            return false;
        };
        let mut s = q.state.lock().expect("queue lock");
        // Never a chunk written to the server before (its ack may only be late: after a
        // reconnect `sent` starts again at 0, but `sent_at` remembers).
        let from = s.unsent_from();
        let dropped: Vec<Entry> = s.unacked.drain(from..).collect();
        let (Some(first), Some(last)) = (dropped.first(), dropped.last()) else {
            return false;
        };
        let gap = crate::protocol::payload::Gap {
            first_seq: first.chunk.header.seq,
            last_seq: last.chunk.header.seq,
            first_capture_us: first.chunk.header.capture_time_us,
            last_capture_us: last.chunk.header.capture_time_us,
            count: dropped.len() as u64,
        };
        if let Some(head) = first.chain_before {
            sealer.rewind_chain(head);
        }
        let chain_before = sealer.chain_head();
        let record = sealer
            .seal_gap(&gap)
            .expect("a live stream takes a gap record");
        if let Some(sp) = &self.spool {
            let mut sp = sp.lock().expect("spool lock");
            for e in &dropped {
                let h = &e.chunk.header;
                if let Err(err) = sp.ack(h.session, h.stream, h.seq) {
                    tracing::error!(error = %err, "cannot drop a chunk from the spool");
                }
            }
            if let Err(err) = sp.append(&record) {
                tracing::error!(error = %err, "cannot spool a gap record");
            }
        }
        tracing::warn!(
            session = %record.header.session,
            stream = %record.header.stream,
            chunks = gap.count,
            "spool full: dropped the oldest unsent chunks of a stream and recorded the gap"
        );
        self.dropped.fetch_add(gap.count, Ordering::Relaxed);
        self.gaps.fetch_add(1, Ordering::Relaxed);
        s.unacked.push_back(Entry {
            chunk: record,
            chain_before,
            _permit: None,
            sent_at: None,
        });
        drop(s);
        q.changed.notify_one();
        true
    }

    /// Seal an empty checkpoint chunk on `q` when its stream has chunks after its last
    /// checkpoint and the checkpoint interval has passed (an idle stream's tail is proven).
    async fn checkpoint_if_due(&self, q: &Queue) {
        let due = q
            .sealer
            .lock()
            .expect("sealer lock")
            .as_ref()
            .is_some_and(|s| s.checkpoint_due());
        if due && !q.state.lock().expect("queue lock").finished {
            self.push(q, &[], crate::crypto::now_us(), false).await;
        }
    }

    fn all_done(&self) -> bool {
        self.queues
            .lock()
            .expect("queues lock")
            .iter()
            .all(|q| q.done())
    }

    fn unacked(&self) -> u64 {
        self.queues
            .lock()
            .expect("queues lock")
            .iter()
            .map(|q| q.state.lock().expect("queue lock").unacked.len() as u64)
            .sum()
    }
}

/// Run an agent until its source ends and every chunk is acked, or until `stop` turns true
/// (then it seals the streams' final chunks and waits up to `drain` for their acks).
pub async fn run(
    config: AgentConfig,
    source: Source,
    stop: watch::Receiver<bool>,
    drain: Duration,
) -> Result<AgentReport, AgentError> {
    run_observed(config, source, stop, drain, None).await
}

/// Every address the configured nodes resolve to, in the nodes' order, without repeats (a name
/// with several addresses gives each, sorted, so that round-robin DNS answers in another
/// order do not move the agent's place in its rotation). Names that do not resolve now are
/// skipped.
pub(crate) fn resolve_nodes(nodes: &[String]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for n in nodes {
        if let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(n) {
            let mut addrs: Vec<SocketAddr> = addrs.collect();
            addrs.sort();
            for a in addrs {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// `run`, telling `observer` about every ack and rejection.
pub async fn run_observed(
    config: AgentConfig,
    source: Source,
    stop: watch::Receiver<bool>,
    drain: Duration,
    observer: Option<Arc<dyn Observer>>,
) -> Result<AgentReport, AgentError> {
    let agent = Arc::new(Agent::new(config, observer)?);
    metrics::describe();
    tracing::info!(agent = %agent.identity, kek = %agent.kek, nodes = ?agent.nodes, "agent starting; DEK made in memory");
    let conn = tokio::spawn(agent.clone().connection_loop());
    let metrics = match agent.config.metrics_listen {
        Some(addr) => Some(metrics::start_metrics(agent.clone(), addr).await?),
        None => None,
    };
    let sessions = match &source {
        Source::Synthetic(spec) => capture::synthetic(&agent, spec, stop.clone()).await,
        Source::Replay(paths) => capture::replay(&agent, paths).await?,
        Source::X11(cfg) => capture::x11(&agent, cfg, stop.clone()).await,
        Source::SpoolOnly => {
            let held = agent.unacked();
            tracing::info!(
                chunks = held,
                "draining the spool: sending what earlier runs left, then stopping"
            );
            Vec::new()
        }
    };
    let mut stop = stop;
    let mut deadline = stop.borrow().then(|| Instant::now() + drain);
    let mut watching = true;
    while !agent.all_done() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            changed = stop.changed(), if watching => {
                watching = changed.is_ok();
                if *stop.borrow() && deadline.is_none() {
                    deadline = Some(Instant::now() + drain);
                }
            }
        }
    }
    conn.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    agent.endpoint.close(
        quinn::VarInt::from_u32(CloseCode::Shutdown.code()),
        b"agent stopping",
    );
    let unacked = agent.unacked();
    let spooled = agent
        .spool
        .as_ref()
        .map_or(0, |s| s.lock().expect("spool lock").stats().records);
    if unacked > 0 {
        match &agent.config.spool_dir {
            Some(dir) if spooled >= unacked => tracing::warn!(
                unacked,
                spool = %dir.display(),
                "stopping with {unacked} chunks the server has not acked yet: all are held in the spool and will be sent at the next start (or with `sealstream agent --drain`)"
            ),
            Some(dir) => tracing::error!(
                unacked,
                spooled,
                spool = %dir.display(),
                "stopping with {unacked} chunks the server has not acked: {spooled} are held in the spool and will be sent at the next start; {} could not be written to the spool and are lost",
                unacked - spooled
            ),
            None => tracing::error!(
                unacked,
                "stopping with {unacked} chunks the server has not acked and no spool_dir in the agent's configuration: they are lost"
            ),
        }
    }
    Ok(AgentReport {
        agent: agent.identity.clone(),
        kek: agent.kek,
        sessions,
        chunks_sealed: agent.sealed.load(Ordering::Relaxed),
        chunks_acked: agent.acked.load(Ordering::Relaxed),
        sealed_bytes: agent.sealed_bytes.load(Ordering::Relaxed),
        unacked,
        rejected: agent.rejected.lock().expect("rejected lock").clone(),
        connects: agent.connects.load(Ordering::Relaxed),
        duplicate_acks: agent.duplicate_acks.load(Ordering::Relaxed),
        spool: agent
            .spool
            .as_ref()
            .map(|s| s.lock().expect("spool lock").stats()),
        dropped_chunks: agent.dropped.load(Ordering::Relaxed),
        gap_records: agent.gaps.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_node_is_resolved_once_in_order() {
        let cfg = AgentConfig {
            server: "127.0.0.1:7443".into(),
            servers: vec![
                "127.0.0.2:7443".into(),
                " 127.0.0.1:7443 ".into(),
                "localhost:7444".into(),
                "no-such-host.invalid:7443".into(),
            ],
            ..AgentConfig::default()
        };
        let nodes = cfg.addresses();
        assert_eq!(nodes.len(), 4, "the repeat is dropped: {nodes:?}");
        let addrs = resolve_nodes(&nodes);
        assert_eq!(addrs[0], "127.0.0.1:7443".parse().unwrap());
        assert_eq!(addrs[1], "127.0.0.2:7443".parse().unwrap());
        // A name gives each of its addresses; one that does not resolve is skipped.
        assert!(addrs[2..].iter().all(|a| a.port() == 7444), "{addrs:?}");
        assert!(addrs.len() >= 3, "{addrs:?}");
    }
}
