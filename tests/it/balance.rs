//! Fleet balance (issue 25, item 1): three node processes on one PostgreSQL and one bucket
//! (moto), 36 agents. A SIGKILLed node's agents spread over both survivors, not all onto one;
//! when it is back they return to it (each to its first node) within seconds, moving between
//! chunks; every chunk is acked, indexed and exported exactly once, and the returns re-send
//! nothing (no agent writes a chunk twice, no node counts a duplicate, after the failover).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealstream::agent::synthetic::SyntheticSpec;
use sealstream::agent::{AgentReport, Observer, Source};
use sealstream::config::AgentConfig;
use sealstream::metadata::Table;
use sealstream::pki::Pki;

use crate::common::agents::{spec, without_node_label};
use crate::common::moto::Moto;
use crate::common::nodes::{
    Estate, Node, check_bucket, estate_agent, start_all, stop_all, wait_ready, write_node,
};

const AGENTS: usize = 36;

/// Chunks the agents wrote to a node again.
#[derive(Default)]
struct Resent(AtomicU64);

impl Observer for Resent {
    fn acked(&self, _bytes: usize, _latency: Duration) {}
    fn resent(&self, _bytes: usize) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// `common::agents::run_agent`, telling `resent` about every chunk written again.
async fn run_agent(cfg: AgentConfig, spec: SyntheticSpec, resent: Arc<Resent>) -> AgentReport {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let source = Source::Synthetic(spec);
    let drain = Duration::from_secs(5);
    let run = sealstream::agent::run_observed(cfg, source, rx, drain, Some(resent));
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the agent delivers everything")
        .unwrap()
}

/// A value of `name` (with its labels as printed, e.g. `x{outcome="duplicate"}`) on a node's
/// `/metrics`; None when the node does not answer.
async fn metric(node: &Node, name: &str) -> Option<u64> {
    let (line, text) = sealstream_test_support::http_get(node.ops, "/metrics")
        .await
        .ok()?;
    if !line.contains(" 200 ") {
        return None;
    }
    let text = without_node_label(&text);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse::<f64>().unwrap_or(0.0));
    Some(value as u64)
}

/// Agent connections open on each node (0 for a node that does not answer).
async fn connections(nodes: &[Node]) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(
            metric(n, "sealstream_quic_connections_open")
                .await
                .unwrap_or(0),
        );
    }
    out
}

/// Identical chunks received again (and acked again) by each of `which` nodes.
async fn duplicates(nodes: &[Node], which: &[usize]) -> Vec<u64> {
    let mut out = Vec::new();
    for &i in which {
        let d = metric(
            &nodes[i],
            "sealstream_ingest_chunks_total{outcome=\"duplicate\"}",
        )
        .await;
        out.push(d.expect("a live node answers /metrics"));
    }
    out
}

/// Poll the connections until `done` says yes (returns them and how long it took) or
/// `within` passes (panics with `what` and the last counts).
async fn until(
    nodes: &[Node],
    within: Duration,
    what: &str,
    done: impl Fn(&[u64]) -> bool,
) -> (Vec<u64>, Duration) {
    let start = Instant::now();
    loop {
        let c = connections(nodes).await;
        if done(&c) {
            return (c, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{what}: connections per node {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_agents_spread_over_the_others_and_come_back_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let moto = Moto::start();
    let bucket = moto.bucket("fleet");
    let store_url = format!("{bucket}/recordings");
    let estate = Estate::create(d, "sealstream_balance").await;
    let (pg, kek_pub, md) = (&estate.pg, &estate.kek_pub, &estate.md);
    let settings = moto.settings_toml();
    let store = (store_url.as_str(), settings.as_str());
    let first = d.join("node-1");
    let mut nodes = vec![write_node(d, "node-1", pg, store, None)];
    for name in ["node-2", "node-3"] {
        nodes.push(write_node(d, name, pg, store, Some(&first)));
    }
    start_all(&mut nodes).await;

    // Every agent lists the nodes in the same order: the spread is the agents' own doing.
    let pki = Pki::open_or_create(&first).unwrap();
    let resent = Arc::new(Resent::default());
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let name = format!("fleet-{i:02}");
        let cfg = AgentConfig {
            rebalance_ms: 1000,
            ..estate_agent(&pki, d, &name, &nodes, &[0, 1, 2], kek_pub)
        };
        let mut s = spec(1, 30.0);
        s.frame_interval = Duration::from_millis(400);
        s.seed = i as u64;
        agents.push(tokio::spawn(run_agent(cfg, s, resent.clone())));
    }

    let log = |what: &str| eprintln!("[{:?}] {what}", std::time::SystemTime::now());
    let all = |c: &[u64]| c.iter().sum::<u64>() == AGENTS as u64;
    let (before, _) = until(
        &nodes,
        Duration::from_secs(10),
        "every agent connected",
        all,
    )
    .await;
    // Each agent starts on its own first node: the nodes share the agents out.
    assert!(
        before.iter().all(|&c| c > 0),
        "every node has agents: {before:?}"
    );
    let victim = (0..3).max_by_key(|&i| before[i]).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    log(&format!(
        "connections {before:?}; SIGKILL node-{}",
        victim + 1
    ));
    nodes[victim].child.kill9();
    let on_survivors = |c: &[u64]| survivors.iter().map(|&i| c[i]).sum::<u64>() == AGENTS as u64;
    let (spread, took) = until(
        &nodes,
        Duration::from_secs(10),
        "the killed node's agents reconnected",
        on_survivors,
    )
    .await;
    log(&format!("after {took:?}: connections {spread:?}"));
    for &s in &survivors {
        assert!(
            spread[s] > before[s],
            "node-{}'s {} agents spread over both survivors, not all onto one: before {before:?}, after {spread:?}",
            victim + 1,
            before[victim]
        );
    }
    // What the failover re-sent has arrived by now; from here on no chunk is sent twice (the
    // returns move between chunks).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let duplicated = duplicates(&nodes, &survivors).await;
    let resent_in_failover = resent.0.load(Ordering::Relaxed);
    nodes[victim].child.spawn();
    wait_ready(&nodes[victim]).await;
    log("node restarted");
    let (back, took) = until(
        &nodes,
        Duration::from_secs(12),
        "the restarted node's agents came back",
        |c| c == before.as_slice(),
    )
    .await;
    log(&format!("after {took:?}: connections {back:?}"));

    let mut reports = Vec::new();
    assert_eq!(
        resent.0.load(Ordering::Relaxed),
        resent_in_failover,
        "chunks written twice while agents moved back"
    );
    // (Read before the agents end: the duplicate counters of every node, the restarted
    // one's from its start.)
    assert_eq!(
        duplicates(&nodes, &[0, 1, 2]).await,
        (0..3)
            .map(|i| if i == victim {
                0
            } else {
                duplicated[survivors.iter().position(|&s| s == i).unwrap()]
            })
            .collect::<Vec<u64>>(),
        "chunks sent twice while agents moved back"
    );
    for a in agents {
        reports.push(a.await.unwrap());
    }
    let moves: u64 = reports.iter().map(|r| r.node_moves).sum();
    assert!(
        moves >= before[victim],
        "{moves} moves back for {} agents",
        before[victim]
    );
    let frames = check_bucket(&store_url, &moto, d, &reports).await;
    let sealed: u64 = reports.iter().map(|r| r.chunks_sealed).sum();
    assert_eq!(
        md.count(Table::Chunks).await.unwrap() as u64,
        sealed,
        "every acked chunk indexed once"
    );
    eprintln!(
        "{AGENTS} agents: {before:?} -> node-{} killed -> {spread:?} -> back {back:?} in {took:?}; {moves} moves; {sealed} chunks, {frames} frames exported once; {resent_in_failover} re-sent in the failover, none after",
        victim + 1
    );
    stop_all(&mut nodes);
    estate.drop_database().await;
}
