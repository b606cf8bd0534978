//! `sealstream agent`: captures (synthetic or replayed), seals each chunk under a DEK made in
//! memory at start-up and wrapped under the KEK, and streams over one QUIC connection (server
//! key pinned, client certificate) with one stream per (user session, kind). Every chunk stays
//! in memory until the server acks it; after a reconnect, unacked chunks are resent oldest
//! first with the same bytes. When the memory budget is full, capture waits.

pub mod spool;
pub mod synthetic;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::config::{AgentConfig, Limits, SpoolFull};
use crate::crypto::{StreamSealer, now_us};
use crate::keys::{self, KeyError};
use crate::protocol::payload::Frame;
use crate::protocol::uplink::{self, MSG_CHUNK, MSG_DEK, Reject, Response};
use crate::protocol::{AgentId, KekId, Kind, SealedChunk, SessionId};
use crate::recorder::{self, FRAMES_STREAM, KEYSTROKES_STREAM, KeystrokeBatcher, Recorder};
use crate::transport::{self, TransportError};
use synthetic::{Rng, SyntheticSpec};

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

enum StreamEnd {
    Done,
    Reopen(Duration),
}

struct Agent {
    config: AgentConfig,
    identity: AgentId,
    recorder: Recorder,
    kek: KekId,
    dek_message: Bytes,
    spool: Option<Mutex<spool::Spool>>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    server: SocketAddr,
    queues: Mutex<Vec<Arc<Queue>>>,
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
    fn new(config: AgentConfig, observer: Option<Arc<dyn Observer>>) -> Result<Self, AgentError> {
        let (certs, key) = read_credentials(&config)?;
        let identity =
            crate::pki::agent_identity(&certs[0]).map_err(|detail| AgentError::Credentials {
                path: config.cert.clone(),
                detail,
            })?;
        let kek = keys::load_public_key(config.wrapping_kek())?;
        let recorder = Recorder::new(identity.clone(), &kek);
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
        let client = transport::client_config(pins, certs, key, &limits)?;
        let server = std::net::ToSocketAddrs::to_socket_addrs(&config.server)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| AgentError::Address(config.server.clone()))?;
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("valid");
        let endpoint = transport::endpoint(transport::udp_socket(bind, 4 * 1024 * 1024)?, None)?;
        Ok(Agent {
            memory: Arc::new(Semaphore::new(config.max_unacked_bytes)),
            config,
            identity,
            kek: kek.kek_id,
            recorder,
            dek_message: msg.freeze(),
            spool,
            endpoint,
            client,
            server,
            queues: Mutex::new(Vec::new()),
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
        let q = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
            sealer: Mutex::new(sealer),
            dek_message,
        });
        self.queues.lock().expect("queues lock").push(q.clone());
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
        let chunk = q
            .sealer
            .lock()
            .expect("sealer lock")
            .as_mut()
            .expect("live streams have a sealer")
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
                _permit: Some(permit),
                sent_at: None,
            });
            s.finished |= last;
        }
        q.changed.notify_one();
    }

    async fn connection_loop(self: Arc<Self>) {
        loop {
            let attempt = async {
                let connecting = self
                    .endpoint
                    .connect_with(self.client.clone(), self.server, &self.config.server_name)
                    .map_err(|e| e.to_string())?;
                // A handshake to a server that is down retransmits with growing backoff; start
                // over instead, so agents reconnect within a few seconds of the server's return.
                let limit = Duration::from_millis(self.config.connect_timeout_ms);
                match tokio::time::timeout(limit, connecting).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no handshake within {limit:?}")),
                }
            };
            match attempt.await {
                Ok(conn) => {
                    self.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(server = %self.server, agent = %self.identity, "connected");
                    self.clone().serve_connection(conn).await;
                }
                Err(e) => {
                    tracing::warn!(server = %self.server, error = %e, "cannot connect; retrying")
                }
            }
            for q in self.queues.lock().expect("queues lock").iter() {
                q.state.lock().expect("queue lock").sent = 0;
            }
            tokio::time::sleep(Duration::from_millis(self.config.reconnect_ms)).await;
        }
    }

    async fn serve_connection(self: Arc<Self>, conn: quinn::Connection) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut started = 0;
        loop {
            let queues: Vec<Arc<Queue>> =
                self.queues.lock().expect("queues lock")[started..].to_vec();
            started += queues.len();
            for q in queues {
                let (me, c) = (self.clone(), conn.clone());
                tasks.spawn(async move {
                    let end = me.serve_stream(&c, &q).await;
                    (q, end)
                });
            }
            tokio::select! {
                _ = self.new_queue.notified() => {}
                reason = conn.closed() => {
                    tracing::warn!(%reason, "connection lost; unacked chunks will be resent");
                    break;
                }
                Some(Ok((q, end))) = tasks.join_next() => {
                    if let StreamEnd::Reopen(delay) = end {
                        q.state.lock().expect("queue lock").sent = 0;
                        let (me, c) = (self.clone(), conn.clone());
                        tasks.spawn(async move {
                            tokio::time::sleep(delay).await;
                            let end = me.serve_stream(&c, &q).await;
                            (q, end)
                        });
                    }
                }
            }
        }
        tasks.abort_all();
    }

    fn count_reject(&self, r: Reject) {
        if let Some(o) = &self.observer {
            o.rejected(r);
        }
        *self
            .rejected
            .lock()
            .expect("rejected lock")
            .entry(r.name().to_owned())
            .or_default() += 1;
    }

    /// One QUIC stream for one queue: the DEK record, then every unacked chunk from the oldest.
    async fn serve_stream(&self, conn: &quinn::Connection, q: &Queue) -> StreamEnd {
        let retry = Duration::from_millis(self.config.reconnect_ms.max(100));
        if q.done() {
            return StreamEnd::Done;
        }
        let Ok((mut send, recv)) = conn.open_bi().await else {
            return StreamEnd::Reopen(retry);
        };
        let (tx, mut responses) = mpsc::channel(4096);
        let reader = tokio::spawn(read_responses(recv, tx));
        let _stop_reader = AbortOnDrop(reader);
        if send.write_all(&q.dek_message).await.is_err() {
            return StreamEnd::Reopen(retry);
        }
        match responses.recv().await {
            Some(Response {
                outcome: Ok(()), ..
            }) => {}
            Some(Response {
                outcome: Err(r),
                reason,
                ..
            }) => {
                self.count_reject(r);
                tracing::warn!(outcome = r.name(), %reason, "server refused our DEK; keeping all data and retrying");
                return StreamEnd::Reopen(retry.max(Duration::from_millis(500)));
            }
            None => return StreamEnd::Reopen(retry),
        }
        q.state.lock().expect("queue lock").sent = 0;
        let mut out = BytesMut::new();
        loop {
            let batch: Vec<Bytes> = {
                let mut s = q.state.lock().expect("queue lock");
                let room = self.config.window.saturating_sub(s.sent);
                let end = (s.sent + room).min(s.unacked.len());
                let now = Instant::now();
                let start = s.sent;
                let batch = s
                    .unacked
                    .range_mut(start..end)
                    .map(|e| {
                        e.sent_at = Some(now);
                        e.chunk.bytes().clone()
                    })
                    .collect();
                s.sent = end;
                batch
            };
            for b in batch {
                out.clear();
                uplink::encode_message(MSG_CHUNK, &b, &mut out);
                if send.write_all(&out).await.is_err() {
                    return StreamEnd::Reopen(retry);
                }
            }
            if q.done() {
                let _ = send.finish();
                return StreamEnd::Done;
            }
            tokio::select! {
                _ = q.changed.notified() => {}
                resp = responses.recv() => {
                    let Some(resp) = resp else { return StreamEnd::Reopen(retry) };
                    if resp.kind != MSG_CHUNK {
                        continue;
                    }
                    match resp.outcome {
                        Ok(()) => {
                            let mut s = q.state.lock().expect("queue lock");
                            let mut n = 0;
                            let now = Instant::now();
                            while s.unacked.front().is_some_and(|e| e.chunk.header.seq <= resp.seq) {
                                let e = s.unacked.pop_front().expect("checked");
                                if let Some(sp) = &self.spool {
                                    let h = &e.chunk.header;
                                    if let Err(err) = sp.lock().expect("spool lock").ack(h.session, h.stream, h.seq) {
                                        tracing::error!(error = %err, "cannot record an ack in the spool");
                                    }
                                }
                                if let Some(o) = &self.observer {
                                    o.acked(e.chunk.len(), now.saturating_duration_since(e.sent_at.unwrap_or(now)));
                                }
                                n += 1;
                            }
                            if n == 0 {
                                self.duplicate_acks.fetch_add(1, Ordering::Relaxed);
                            }
                            s.sent = s.sent.saturating_sub(n);
                            self.acked.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(r) if r.retryable() => {
                            self.count_reject(r);
                            tracing::info!(outcome = r.name(), reason = %resp.reason, seq = resp.seq, "chunk deferred by the server; resending later");
                            return StreamEnd::Reopen(retry);
                        }
                        Err(r) => {
                            // The server will never take this chunk: drop it, say so, go on.
                            self.count_reject(r);
                            tracing::error!(outcome = r.name(), reason = %resp.reason, seq = resp.seq, "chunk refused by the server; dropped");
                            let mut s = q.state.lock().expect("queue lock");
                            if let Some(i) = s.unacked.iter().position(|e| e.chunk.header.seq == resp.seq) {
                                s.unacked.remove(i);
                            }
                            return StreamEnd::Reopen(Duration::ZERO);
                        }
                    }
                }
            }
        }
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
                let e = s.unacked.get(s.sent)?;
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
        let from = s.sent;
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
            _permit: None,
            sent_at: None,
        });
        drop(s);
        q.changed.notify_one();
        true
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_responses(mut recv: quinn::RecvStream, tx: mpsc::Sender<Response>) {
    let mut buf = BytesMut::new();
    loop {
        loop {
            match Response::decode(&mut buf) {
                Ok(Some(r)) => {
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "malformed response from the server");
                    return;
                }
            }
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            _ => return,
        }
    }
}

pub const SPOOL_BYTES: &str = "sealstream_agent_spool_bytes";
pub const SPOOL_RECORDS: &str = "sealstream_agent_spool_records";
pub const OLDEST_UNACKED_AGE: &str = "sealstream_agent_oldest_unacked_age_seconds";
pub const UNACKED_CHUNKS: &str = "sealstream_agent_unacked_chunks";
pub const DROPPED_CHUNKS: &str = "sealstream_agent_dropped_chunks_total";

/// The agent's /metrics listener, and a task refreshing its gauges every second.
async fn start_metrics(
    agent: Arc<Agent>,
    addr: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    use metrics::{Unit, describe_counter, describe_gauge};
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Credentials {
                path: format!("metrics_listen {addr}").into(),
                detail: e.to_string(),
            })?;
    crate::server::ops::prometheus();
    describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Bytes in the agent's disk spool.");
    describe_gauge!(
        SPOOL_RECORDS,
        "Chunks in the agent's disk spool, not yet acked."
    );
    describe_gauge!(
        OLDEST_UNACKED_AGE,
        Unit::Seconds,
        "Age of the oldest chunk not yet acked (by capture time)."
    );
    describe_gauge!(UNACKED_CHUNKS, "Chunks waiting for the server's ack.");
    describe_counter!(
        DROPPED_CHUNKS,
        "Chunks dropped because the spool was full (reported as gaps)."
    );
    let state = crate::server::ops::OpsState {
        metadata: None,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let serve = tokio::spawn(crate::server::ops::serve(listener, state));
    Ok(tokio::spawn(async move {
        let _serve = AbortOnDrop(serve);
        let mut dropped = 0;
        loop {
            if let Some(sp) = &agent.spool {
                let st = sp.lock().expect("spool lock").stats();
                metrics::gauge!(SPOOL_BYTES).set(st.bytes as f64);
                metrics::gauge!(SPOOL_RECORDS).set(st.records as f64);
            }
            let oldest = agent
                .queues
                .lock()
                .expect("queues lock")
                .iter()
                .filter_map(|q| {
                    q.state
                        .lock()
                        .expect("queue lock")
                        .unacked
                        .front()
                        .map(|e| e.chunk.header.capture_time_us)
                })
                .min();
            let age = oldest.map_or(0.0, |t| ((now_us() - t).max(0) as f64) / 1e6);
            metrics::gauge!(OLDEST_UNACKED_AGE).set(age);
            metrics::gauge!(UNACKED_CHUNKS).set(agent.unacked() as f64);
            let d = agent.dropped.load(Ordering::Relaxed);
            metrics::counter!(DROPPED_CHUNKS).increment(d - dropped);
            dropped = d;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}

/// One user session being recorded.
struct User {
    report: SessionReport,
    frames: Arc<Queue>,
    keys: Arc<Queue>,
    keys_hash: Sha256,
}

impl User {
    fn new(agent: &Agent, label: String) -> Self {
        let session = SessionId::random();
        User {
            report: SessionReport {
                session,
                user: label,
                frames: Vec::new(),
                keystrokes_sha256: [0; 32],
                plaintext_bytes: 0,
            },
            frames: agent.add_stream(agent.recorder.open_stream(
                session,
                FRAMES_STREAM,
                Kind::Frame,
            )),
            keys: agent.add_stream(agent.recorder.open_stream(
                session,
                KEYSTROKES_STREAM,
                Kind::Keystrokes,
            )),
            keys_hash: Sha256::new(),
        }
    }

    async fn frame(&mut self, agent: &Agent, name: &str, image: &[u8], captured: i64) {
        let plain = Frame { name, image }.encode();
        agent.push(&self.frames, &plain, captured, false).await;
        self.report
            .frames
            .push((name.to_owned(), Sha256::digest(image).into()));
        self.report.plaintext_bytes += image.len() as u64;
    }

    async fn keystrokes(&mut self, agent: &Agent, batch: &[u8]) {
        agent.push(&self.keys, batch, now_us(), false).await;
        self.keys_hash.update(batch);
        self.report.plaintext_bytes += batch.len() as u64;
    }

    /// End both streams with an empty final chunk.
    async fn finish(mut self, agent: &Agent) -> SessionReport {
        agent.push(&self.frames, &[], now_us(), true).await;
        agent.push(&self.keys, &[], now_us(), true).await;
        self.report.keystrokes_sha256 = self.keys_hash.finalize().into();
        self.report
    }
}

async fn synthetic(
    agent: &Agent,
    spec: &SyntheticSpec,
    mut stop: watch::Receiver<bool>,
) -> Vec<SessionReport> {
    let mut rng = Rng::new(spec.seed);
    let start = Instant::now();
    let mut users: Vec<(User, Instant, Instant, u64)> = (0..spec.users)
        .map(|i| {
            let jitter =
                Duration::from_millis(rng.below(spec.frame_interval.as_millis().max(1) as u64));
            (
                User::new(agent, format!("user{i:03}")),
                start + jitter,
                start + jitter / 2,
                0,
            )
        })
        .collect();
    while start.elapsed() < spec.duration && !*stop.borrow() {
        let now = Instant::now();
        for (user, next_frame, next_keys, n) in users.iter_mut() {
            if now >= *next_frame {
                let (name, image) =
                    synthetic::frame(&mut rng, spec.frame_size, spec.frame_size_spread, *n);
                user.frame(agent, &name, &image, now_us()).await;
                *n += 1;
                let half = spec.frame_interval / 2;
                *next_frame = now
                    + half
                    + Duration::from_millis(rng.below(spec.frame_interval.as_millis() as u64 + 1));
            }
            if now >= *next_keys {
                let idx: usize = user.report.user[4..].parse().unwrap_or(0);
                let lines =
                    synthetic::keystrokes(&mut rng, idx, spec.keystroke_events, now_us() / 1000);
                let mut batch = Vec::new();
                for l in lines {
                    batch.extend_from_slice(&l);
                    batch.push(b'\n');
                }
                user.keystrokes(agent, &batch).await;
                *next_keys = now + spec.keystroke_interval;
            }
        }
        let next = users
            .iter()
            .map(|(_, f, k, _)| (*f).min(*k))
            .min()
            .unwrap_or(now)
            .min(start + spec.duration);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => {}
        }
    }
    let mut out = Vec::new();
    for (u, ..) in users {
        out.push(u.finish(agent).await);
    }
    out
}

async fn replay(agent: &Agent, paths: &[PathBuf]) -> Result<Vec<SessionReport>, AgentError> {
    let inputs = recorder::scan_inputs(paths)?;
    let mut user = User::new(agent, "replay".into());
    let mut batcher = KeystrokeBatcher::default();
    for input in &inputs {
        match input {
            recorder::Input::Frame(path) => {
                let image = std::fs::read(path).map_err(|source| recorder::InputError::Read {
                    path: path.clone(),
                    source,
                })?;
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("frame.png")
                    .to_owned();
                user.frame(agent, &name, &image, now_us()).await;
            }
            recorder::Input::Keystrokes(path) => {
                let text = std::fs::read(path).map_err(|source| recorder::InputError::Read {
                    path: path.clone(),
                    source,
                })?;
                for (n, line) in text.split(|b| *b == b'\n').enumerate() {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let full =
                        batcher
                            .push(line)
                            .map_err(|reason| recorder::InputError::Invalid {
                                path: path.clone(),
                                reason: format!("line {}: {reason}", n + 1),
                            })?;
                    if let Some(b) = full {
                        user.keystrokes(agent, &b).await;
                    }
                }
            }
        }
    }
    if let Some(b) = batcher.take() {
        user.keystrokes(agent, &b).await;
    }
    Ok(vec![user.finish(agent).await])
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

/// `run`, telling `observer` about every ack and rejection.
pub async fn run_observed(
    config: AgentConfig,
    source: Source,
    stop: watch::Receiver<bool>,
    drain: Duration,
    observer: Option<Arc<dyn Observer>>,
) -> Result<AgentReport, AgentError> {
    let agent = Arc::new(Agent::new(config, observer)?);
    tracing::info!(agent = %agent.identity, kek = %agent.kek, server = %agent.server, "agent starting; DEK made in memory");
    let conn = tokio::spawn(agent.clone().connection_loop());
    let metrics = match agent.config.metrics_listen {
        Some(addr) => Some(start_metrics(agent.clone(), addr).await?),
        None => None,
    };
    let sessions = match &source {
        Source::Synthetic(spec) => synthetic(&agent, spec, stop.clone()).await,
        Source::Replay(paths) => replay(&agent, paths).await?,
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
    agent
        .endpoint
        .close(quinn::VarInt::from_u32(0), b"agent stopping");
    let unacked = agent.unacked();
    if unacked > 0 {
        tracing::error!(
            unacked,
            "stopping with chunks the server has not acked: they are lost (the disk spool is not built yet)"
        );
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
