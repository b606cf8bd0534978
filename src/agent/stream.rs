//! The agent's uplink: one QUIC connection (made again whenever it drops), one stream per
//! queue, the DEK record first, then every unacked chunk from the oldest, acks and refusals
//! read back in order. Nodes are tried in the agent's own order (`nodes::home_order`); while
//! on a node later in it than another that is back, the agent moves there between chunks:
//! it stops sending, waits for the acks of what it sent, closes, and connects to the better
//! node, so a move re-sends nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::link::State;
use super::{Agent, Queue, nodes};
use crate::protocol::uplink::{self, CloseCode, MSG_CHUNK, Reject, Response};
use crate::transport;

enum StreamEnd {
    Done,
    Reopen(Duration),
}

type StreamTasks = JoinSet<(Arc<Queue>, StreamEnd)>;

/// How a connection ended.
enum Ended {
    /// Closed by the server (with its close code, if it is one of ours) or lost, and why.
    Closed(Option<CloseCode>, String),
    /// Left, with no chunk in flight, for this node earlier in the agent's order.
    Moved(SocketAddr),
}

/// How waiting for the acks before a move ended.
enum Drain {
    /// Nothing in flight: the agent may leave.
    Done,
    /// Not every ack came within `MOVE_DRAIN`: the move is put off; these streams ended
    /// meanwhile and are to be opened again after their delay.
    PutOff(Vec<(Arc<Queue>, Duration)>),
    /// The connection was lost meanwhile.
    Lost(quinn::ConnectionError),
}

/// Longest wait for the acks of the chunks in flight before a move.
const MOVE_DRAIN: Duration = Duration::from_secs(10);

impl Agent {
    /// The address for the next attempt, and how many there are: the configured nodes are
    /// tried in the agent's order, in turn, so a node that is down or gone only costs one
    /// attempt per round. Names are resolved again each time (within 2 s, else the last
    /// answer stands); addresses of the other IP family than the agent's socket are left out.
    async fn pick_node(&self) -> (SocketAddr, usize) {
        let nodes = self.nodes.clone();
        let lookup = tokio::task::spawn_blocking(move || super::resolve_nodes(&nodes));
        let ipv4 = self.endpoint.local_addr().map_or(true, |a| a.is_ipv4());
        let fresh: Vec<SocketAddr> =
            match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                Ok(Ok(addrs)) => addrs.into_iter().filter(|a| a.is_ipv4() == ipv4).collect(),
                _ => Vec::new(),
            };
        let mut known = self.addrs.lock().expect("addresses lock");
        if !fresh.is_empty() {
            *known = fresh;
        }
        let order = nodes::home_order(self.identity.as_str(), &known, self.config.node_order);
        drop(known);
        let i = self.next_node.load(Ordering::Relaxed) as usize % order.len().max(1);
        let server = order.get(i).copied().unwrap_or(order[0]);
        *self.server.lock().expect("server lock") = server;
        (server, order.len().max(1))
    }

    /// The agent's order of the addresses it knows now.
    fn order(&self) -> Vec<SocketAddr> {
        let known = self.addrs.lock().expect("addresses lock").clone();
        nodes::home_order(self.identity.as_str(), &known, self.config.node_order)
    }

    /// Every `rebalance_ms` or so (jittered), while `current` is not first in the agent's
    /// order: the first node before it that answers a probe. Never, with `rebalance_ms = 0`.
    async fn better_node(&self, current: SocketAddr) -> SocketAddr {
        if self.config.rebalance_ms == 0 {
            return std::future::pending().await;
        }
        let mean = Duration::from_millis(self.config.rebalance_ms);
        let within = Duration::from_millis(self.config.connect_timeout_ms.clamp(100, 1000));
        loop {
            tokio::time::sleep(nodes::rebalance_wait(mean)).await;
            let order = self.order();
            let Some(p) = order.iter().position(|a| *a == current) else {
                continue;
            };
            for &node in &order[..p] {
                if nodes::answers(node, within).await {
                    return node;
                }
            }
        }
    }

    /// Chunks written on the current connection and not acked yet.
    fn in_flight(&self) -> usize {
        self.queues
            .lock()
            .expect("queues lock")
            .iter()
            .map(|q| q.state.lock().expect("queue lock").sent)
            .sum()
    }

    /// Before a move: stop sending chunks and wait (up to `MOVE_DRAIN`) until every chunk
    /// sent has its ack. Streams keep reading acks meanwhile.
    async fn drain_for_move(&self, conn: &quinn::Connection, tasks: &mut StreamTasks) -> Drain {
        // Set before `in_flight` reads the queues: a stream choosing what to send (under its
        // queue lock) either has counted it in `sent` already or sees this and sends nothing.
        self.moving.store(true, Ordering::SeqCst);
        let deadline = tokio::time::sleep(MOVE_DRAIN);
        tokio::pin!(deadline);
        let mut reopen = Vec::new();
        loop {
            // Registered before the check: an ack in between is not missed.
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.in_flight() == 0 {
                return Drain::Done;
            }
            tokio::select! {
                _ = &mut settled => {}
                _ = &mut deadline => return Drain::PutOff(reopen),
                reason = conn.closed() => return Drain::Lost(reason),
                Some(Ok((q, end))) = tasks.join_next() => {
                    if let StreamEnd::Reopen(delay) = end {
                        // What it had written will be written again on its next stream.
                        q.state.lock().expect("queue lock").sent = 0;
                        reopen.push((q, delay));
                    }
                }
            }
        }
    }

    /// Serve `q` on `conn` after `delay`, in `tasks`.
    fn spawn_stream(
        self: &Arc<Self>,
        tasks: &mut StreamTasks,
        conn: &quinn::Connection,
        q: Arc<Queue>,
        delay: Duration,
    ) {
        let (me, c) = (self.clone(), conn.clone());
        tasks.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let end = me.serve_stream(&c, &q).await;
            (q, end)
        });
    }

    pub(super) async fn connection_loop(self: Arc<Self>) {
        let mut failed_in_round = 0usize;
        loop {
            let (server, nodes) = self.pick_node().await;
            let attempt = async {
                let connecting = self
                    .endpoint
                    .connect_with(self.client_config(), server, &self.config.server_name)
                    .map_err(|e| e.to_string())?;
                // A handshake to a server that is down retransmits with growing backoff; start
                // over instead, so agents reconnect within a few seconds of the server's return.
                let limit = Duration::from_millis(self.config.connect_timeout_ms);
                match tokio::time::timeout(limit, connecting).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no handshake within {limit:?}")),
                }
            };
            // Ok(None): a connection served and ended; Ok(Some(node)): left for a better
            // node; Err: this node did not take us, and why.
            let outcome = match attempt.await {
                Ok(conn) => {
                    self.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%server, agent = %self.identity, "connected");
                    match self.clone().serve_connection(conn, server).await {
                        Ended::Moved(to) => Ok(Some(to)),
                        // Our certificate is refused after the handshake, when the server
                        // checks it (TLS's own alert, or our close code once it is checked
                        // again); a node that cannot reach its database sends agents
                        // elsewhere: either way the connection closes at once, and the code
                        // says which.
                        Ended::Closed(code, reason) => match code {
                            Some(c) if c.needs_a_person() => {
                                Err((State::CertificateRefused, reason))
                            }
                            Some(c) if c.is_refusal() => Err((State::Unreachable, reason)),
                            Some(_) => Ok(None),
                            None => match State::of_connection_error(&reason) {
                                s if s.needs_a_person() => Err((s, reason)),
                                _ => Ok(None),
                            },
                        },
                    }
                }
                Err(e) => Err((State::of_connection_error(&e), e)),
            };
            match outcome {
                // The next attempt goes to the node moved to.
                Ok(Some(to)) => {
                    if let Some(p) = self.order().iter().position(|a| *a == to) {
                        self.next_node.store(p as u64, Ordering::Relaxed);
                    }
                }
                // The next attempt goes to the next node: this one may be gone.
                _ => {
                    self.next_node.fetch_add(1, Ordering::Relaxed);
                }
            }
            let wait = match outcome {
                Ok(Some(_)) => {
                    failed_in_round = 0;
                    Duration::ZERO
                }
                Ok(None) => {
                    failed_in_round = 0;
                    Duration::from_millis(self.config.reconnect_ms)
                }
                Err((state, e)) => {
                    failed_in_round += 1;
                    if failed_in_round < nodes {
                        // Other nodes are left to try in this round: at once. Only a whole
                        // round refused backs off (one node with a wrong pin must not hold
                        // the agent back while the others take it).
                        tracing::info!(%server, error = %e, "node unreachable or refusing; trying the next");
                        Duration::from_millis(20)
                    } else {
                        failed_in_round = 0;
                        self.uplink.failed(state, &e)
                    }
                }
            };
            for q in self.queues.lock().expect("queues lock").iter() {
                q.state.lock().expect("queue lock").sent = 0;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Serve `conn` (to `server`) until it closes, or until the agent leaves it for a node
    /// earlier in its order; returns which, and why it closed: the server's close code, if
    /// it closed it with one, and the text.
    async fn serve_connection(
        self: Arc<Self>,
        conn: quinn::Connection,
        server: SocketAddr,
    ) -> Ended {
        self.moving.store(false, Ordering::SeqCst);
        let mut tasks = StreamTasks::new();
        let mut next_serial = 0;
        let better = self.better_node(server);
        tokio::pin!(better);
        loop {
            let queues: Vec<Arc<Queue>> = self
                .queues
                .lock()
                .expect("queues lock")
                .iter()
                .filter(|q| q.serial >= next_serial)
                .cloned()
                .collect();
            if let Some(last) = queues.last() {
                next_serial = last.serial + 1;
            }
            for q in queues {
                self.spawn_stream(&mut tasks, &conn, q, Duration::ZERO);
            }
            let lost = |reason: quinn::ConnectionError, tasks: &mut StreamTasks| {
                tracing::warn!(%reason, "connection lost; unacked chunks will be resent");
                tasks.abort_all();
                Ended::Closed(transport::peer_close_code(&reason), reason.to_string())
            };
            tokio::select! {
                _ = self.new_queue.notified() => {}
                reason = conn.closed() => return lost(reason, &mut tasks),
                Some(Ok((q, end))) = tasks.join_next() => {
                    if let StreamEnd::Reopen(delay) = end {
                        q.state.lock().expect("queue lock").sent = 0;
                        self.spawn_stream(&mut tasks, &conn, q, delay);
                    }
                }
                to = &mut better => match self.drain_for_move(&conn, &mut tasks).await {
                    Drain::Done => {
                        tracing::info!(from = %server, %to, "moving to a node earlier in this agent's order, between chunks (every chunk sent is acked)");
                        self.node_moves.fetch_add(1, Ordering::Relaxed);
                        transport::close(&conn, CloseCode::Shutdown, "agent moving to another node");
                        tasks.abort_all();
                        return Ended::Moved(to);
                    }
                    Drain::Lost(reason) => return lost(reason, &mut tasks),
                    Drain::PutOff(reopen) => {
                        tracing::info!(from = %server, %to, "not moving yet: chunks sent are still waiting for their acks");
                        self.moving.store(false, Ordering::SeqCst);
                        for q in self.queues.lock().expect("queues lock").iter() {
                            q.changed.notify_one();
                        }
                        for (q, delay) in reopen {
                            self.spawn_stream(&mut tasks, &conn, q, delay);
                        }
                        better.set(self.better_node(server));
                    }
                },
            }
        }
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
                let refusal = match r {
                    Reject::UnknownKek => Some(State::KekUnknown),
                    Reject::InactiveKek => Some(State::KekInactive),
                    _ => None,
                };
                return match refusal {
                    // Logged once per change of state, with what to do; backs off.
                    Some(state) => StreamEnd::Reopen(self.uplink.failed(state, &reason)),
                    None => {
                        tracing::info!(outcome = r.name(), %reason, "server deferred our DEK record; keeping all data and retrying");
                        StreamEnd::Reopen(retry.max(Duration::from_millis(500)))
                    }
                };
            }
            None => return StreamEnd::Reopen(retry),
        }
        self.uplink.ok();
        q.state.lock().expect("queue lock").sent = 0;
        let mut out = BytesMut::new();
        loop {
            let batch: Vec<Bytes> = {
                let mut s = q.state.lock().expect("queue lock");
                // Nothing more while the agent is leaving this node (`drain_for_move`).
                let room = if self.moving.load(Ordering::SeqCst) {
                    0
                } else {
                    self.config.window.saturating_sub(s.sent)
                };
                let end = (s.sent + room).min(s.unacked.len());
                let now = Instant::now();
                let start = s.sent;
                let batch = s
                    .unacked
                    .range_mut(start..end)
                    .map(|e| {
                        if e.sent_at.replace(now).is_some() {
                            self.resent.fetch_add(1, Ordering::Relaxed);
                            if let Some(o) = &self.observer {
                                o.resent(e.chunk.len());
                            }
                        }
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
                                let waited = crate::crypto::now_us() - e.chunk.header.capture_time_us;
                                metrics::histogram!(super::metrics::CAPTURE_TO_ACK)
                                    .record(waited.max(0) as f64 / 1e6);
                                n += 1;
                            }
                            if n == 0 {
                                self.duplicate_acks.fetch_add(1, Ordering::Relaxed);
                            }
                            s.sent = s.sent.saturating_sub(n);
                            // Counted before the queue lock is let go: whoever sees the queue
                            // done (the drain, woken by another stream's ack) sees this count.
                            self.acked.fetch_add(n as u64, Ordering::Relaxed);
                            drop(s);
                            if n > 0 {
                                // Spool bytes released, and this queue may be done.
                                self.spool_room.notify_waiters();
                                self.settled.notify_waiters();
                            }
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
                            drop(s);
                            // This queue may be done now.
                            self.settled.notify_waiters();
                            return StreamEnd::Reopen(Duration::ZERO);
                        }
                    }
                }
            }
        }
    }
}

pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn read_responses(mut recv: quinn::RecvStream, tx: mpsc::Sender<Response>) {
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
