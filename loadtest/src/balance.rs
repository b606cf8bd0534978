//! `nodes` with a `[failover]` scenario: one node SIGKILLed while the agents record (and
//! started again after `down_s`), the agent connections of every node sampled every 500 ms
//! from its `/metrics` (`sealstream_quic_connections_open`), and from them: how the killed
//! node's agents spread over the others, how long until they were all connected again, and
//! how long after the restart until the fleet is balanced again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::scenario::Failover;

/// What the failover task needs of a node: its name, how to start it and where it answers.
#[derive(Clone)]
pub struct NodeProcess {
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub ops: SocketAddr,
}

/// Start `sealstream serve` for `node` (its log appended to), returning the child and pid.
pub fn spawn(
    bin: &std::path::Path,
    node: &NodeProcess,
) -> anyhow::Result<(tokio::process::Child, u32)> {
    use anyhow::Context;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    let child = tokio::process::Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&node.config)
        .env("SEALSTREAM_LOG", "warn")
        .stderr(log)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("child pid")?;
    Ok((child, pid))
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionSample {
    /// Seconds since the agents started.
    pub t: f64,
    /// Agent connections open on each node (0 while a node does not answer).
    pub per_node: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct Balance {
    pub agents: usize,
    /// The node killed (1-based), when, and when it answered again after its restart.
    pub killed_node: usize,
    pub killed_at_s: Option<f64>,
    pub restarted_at_s: Option<f64>,
    /// Connections per node just before the kill, and just before the restart (or at the end).
    pub before_kill: Vec<u64>,
    pub after_kill: Vec<u64>,
    /// From the kill until every agent was connected to a live node.
    pub failover_s: Option<f64>,
    /// From the restart until every node held at least half its fair share (agents / nodes).
    pub half_fair_share_s: Option<f64>,
    /// From the restart until the connections per node were as before the kill.
    pub as_before_s: Option<f64>,
    /// Moves back to a node earlier in an agent's order, over all agents.
    pub moves: u64,
    /// Chunks written to a node again, over all agents (after a lost connection: the kill).
    pub resent_chunks: u64,
    pub connections: Vec<ConnectionSample>,
}

/// Agent connections open on `ops`'s node, None when it does not answer.
async fn connections(ops: SocketAddr) -> Option<u64> {
    let (line, page) = tokio::time::timeout(
        Duration::from_secs(2),
        sealstream_test_support::http_get(ops, "/metrics"),
    )
    .await
    .ok()?
    .ok()?;
    if !line.contains(" 200 ") {
        return None;
    }
    Some(crate::nodes::metric(&page, "sealstream_quic_connections_open") as u64)
}

/// Runs beside the agents (whose clock starts at `started`) until `done`: kills the node at
/// its time (by pid, from `pids`), starts it again after `down_s`, samples connections.
/// Returns the samples, the kill and restart times, and the restarted child to stop.
pub async fn watch(
    f: Failover,
    nodes: Vec<NodeProcess>,
    bin: PathBuf,
    pids: Arc<Mutex<Vec<u32>>>,
    started: Instant,
    mut done: watch::Receiver<bool>,
) -> anyhow::Result<Trace> {
    let victim = f.node - 1;
    let mut trace = Trace {
        samples: Vec::new(),
        killed_at_s: None,
        restarted_at_s: None,
        restarted: None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*done.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => break,
        }
        let t = started.elapsed().as_secs_f64();
        if trace.killed_at_s.is_none() && t >= f.kill_at_s {
            let pid = pids.lock().expect("pids lock").get(victim).copied();
            if let Some(pid) = pid {
                std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status()?;
                trace.killed_at_s = Some(t);
                println!("{t:6.1} s: SIGKILL {}", nodes[victim].name);
            }
        }
        if let (Some(k), Some(down), None) = (trace.killed_at_s, f.down_s, &trace.restarted)
            && t >= k + down
        {
            trace.restarted = Some(spawn(&bin, &nodes[victim])?);
            println!("{t:6.1} s: {} started again", nodes[victim].name);
        }
        let mut per_node = Vec::with_capacity(nodes.len());
        for n in &nodes {
            per_node.push(connections(n.ops).await);
        }
        if trace.restarted.is_some() && trace.restarted_at_s.is_none() && per_node[victim].is_some()
        {
            trace.restarted_at_s = Some(t);
        }
        let per_node: Vec<u64> = per_node.into_iter().map(|c| c.unwrap_or(0)).collect();
        if trace.samples.len().is_multiple_of(10) {
            println!("{t:6.1} s: connections per node {per_node:?}");
        }
        trace.samples.push(ConnectionSample { t, per_node });
    }
    Ok(trace)
}

pub struct Trace {
    pub samples: Vec<ConnectionSample>,
    pub killed_at_s: Option<f64>,
    /// When the restarted node first answered its `/metrics`.
    pub restarted_at_s: Option<f64>,
    pub restarted: Option<(tokio::process::Child, u32)>,
}

/// The figures from a trace of `agents` agents over the nodes, `f.node` killed.
pub fn figures(trace: &Trace, f: &Failover, reports: &[sealstream::agent::AgentReport]) -> Balance {
    let agents = reports.len();
    let victim = f.node - 1;
    let s = &trace.samples;
    let n = s.first().map_or(0, |x| x.per_node.len());
    let kill = trace.killed_at_s.unwrap_or(f64::INFINITY);
    let back = trace.restarted_at_s;
    let last_before = |t: f64| {
        s.iter()
            .rev()
            .find(|x| x.t < t)
            .map(|x| x.per_node.clone())
            .unwrap_or_default()
    };
    let before_kill = last_before(kill);
    let after_kill = last_before(back.unwrap_or(f64::INFINITY));
    let first_after = |from: f64, ok: &dyn Fn(&[u64]) -> bool| {
        s.iter()
            .find(|x| x.t >= from && ok(&x.per_node))
            .map(|x| x.t - from)
    };
    let all = agents as u64;
    let failover_s = first_after(kill, &|c| {
        c.iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, v)| v)
            .sum::<u64>()
            == all
    });
    let half = agents as f64 / n.max(1) as f64 / 2.0;
    let (half_fair_share_s, as_before_s) = match back {
        Some(b) => (
            first_after(b, &|c| c.iter().all(|&v| v as f64 >= half)),
            first_after(b, &|c| c == before_kill.as_slice()),
        ),
        None => (None, None),
    };
    Balance {
        agents,
        killed_node: f.node,
        killed_at_s: trace.killed_at_s,
        restarted_at_s: back,
        before_kill,
        after_kill,
        failover_s,
        half_fair_share_s,
        as_before_s,
        moves: reports.iter().map(|r| r.node_moves).sum(),
        resent_chunks: reports.iter().map(|r| r.resent_chunks).sum(),
        connections: s.clone(),
    }
}
