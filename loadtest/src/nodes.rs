//! `sealstream-loadtest nodes`: the scenario's agents against 1 and against N ingest nodes
//! (child `sealstream serve` processes) sharing one PostgreSQL database and one store (a local
//! directory, or S3 on a moto server the harness starts), each agent listing every node. For
//! each run: aggregate throughput and ack latency (the agents'), and per node the bytes it
//! received, its peak RSS and its segment writes (store PUT requests) per second. Every run
//! also checks that each acked chunk is indexed exactly once. A scenario with `[failover]`
//! kills a node during the run and reports the fleet's balance over time (`balance`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sealstream::config::{AgentConfig, NodeOrder};
use sealstream::keys::{self, Passphrase};
use sealstream::pki::Pki;
use sealstream::protocol::AgentId;
use sealstream_test_support::{free_tcp, free_udp, http_get, proc_kib};
use serde::Serialize;

use crate::balance::{self, Balance, NodeProcess};
use crate::runner::{self, RunResult};
use crate::scenario::Scenario;
use crate::target::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Local,
    S3,
}

pub struct Args {
    pub scenario: Scenario,
    pub counts: Vec<usize>,
    pub store: StoreKind,
    pub database_url: String,
    pub rounds: usize,
    pub bin: PathBuf,
    pub out: PathBuf,
    pub command: String,
}

#[derive(Serialize)]
pub struct NodeFigures {
    pub node: String,
    pub received_mb_per_s: f64,
    pub peak_rss_mib: u64,
    pub segment_puts_per_s: f64,
}

#[derive(Serialize)]
pub struct Run {
    pub round: usize,
    pub nodes: usize,
    pub store: StoreKind,
    pub aggregate_mb_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub acked_chunks: u64,
    pub stored_chunks: i64,
    pub lost: u64,
    pub duplicates: u64,
    pub store_puts_per_s: f64,
    pub per_node: Vec<NodeFigures>,
    /// `[failover]` scenarios: connections per node over time and the time to balance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
}

#[derive(Serialize)]
pub struct NodesReport {
    pub command: String,
    pub machine: crate::report::Machine,
    pub scenario: String,
    pub runs: Vec<Run>,
    /// Median aggregate throughput with the most nodes / with one node.
    pub median_scaling: Option<f64>,
}

/// moto's S3 server on a loopback port, with one bucket.
struct Moto {
    child: tokio::process::Child,
    endpoint: String,
}

impl Moto {
    async fn start(dir: &Path) -> anyhow::Result<Moto> {
        let port = free_tcp()?.port();
        let log = std::fs::File::create(dir.join("moto.log"))?;
        let spawn = |program: &str, pre: &[&str]| {
            tokio::process::Command::new(program)
                .args(pre)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(log.try_clone().expect("log file"))
                .kill_on_drop(true)
                .spawn()
        };
        let child = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .context("starting moto_server (pip install 'moto[server]')")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_tcp(addr, "moto_server").await?;
        std::fs::write(
            dir.join("credentials"),
            "[default]\naws_access_key_id = loadtest\naws_secret_access_key = loadtest\n",
        )?;
        Ok(Moto {
            child,
            endpoint: format!("http://{addr}"),
        })
    }

    async fn bucket(&self, name: &str) -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.endpoint.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(host).await?;
        s.write_all(
            format!("PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        anyhow::ensure!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
        Ok(())
    }
}

async fn wait_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what} did not listen on {addr}")
}

struct Node {
    name: String,
    quic: SocketAddr,
    ops: SocketAddr,
    config: PathBuf,
    pin: String,
    log: PathBuf,
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmHWM").unwrap_or(0) * 1024
}

/// The value of an unlabelled-or-node-labelled series `name` in a Prometheus text page, summed
/// over its lines.
pub(crate) fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A node's `/metrics` page.
async fn scrape(ops: SocketAddr) -> anyhow::Result<String> {
    Ok(http_get(ops, "/metrics").await?.1)
}

/// One run: `n` nodes on a database of their own and a fresh store, the scenario's agents.
async fn measure(args: &Args, n: usize, round: usize, moto: Option<&Moto>) -> anyhow::Result<Run> {
    let sc = &args.scenario;
    let dir = args.out.join(format!("round-{round}-{n}-nodes"));
    std::fs::create_dir_all(&dir)?;
    let db = crate::pg::TempDatabase::create(&args.database_url, "nodes").await?;
    let (store_url, store_section) = match moto {
        Some(m) => {
            let bucket = format!("lt-{round}-{n}");
            m.bucket(&bucket).await?;
            (
                format!("s3://{bucket}/recordings"),
                format!(
                    "[store]\nendpoint = \"{}\"\nregion = \"us-east-1\"\ncredentials_file = \"{}\"\n",
                    m.endpoint,
                    args.out.join("credentials").display()
                ),
            )
        }
        None => (dir.join("store").display().to_string(), String::new()),
    };
    let mut nodes = Vec::new();
    for i in 0..n {
        let name = format!("node-{}", i + 1);
        let data_dir = dir.join(&name);
        if i > 0 {
            std::fs::create_dir_all(data_dir.join("pki"))?;
            for f in ["ca.crt", "ca.key"] {
                std::fs::copy(dir.join("node-1/pki").join(f), data_dir.join("pki").join(f))?;
            }
        }
        let pin = Pki::open_or_create(&data_dir)?.server_pin().to_string();
        let (quic, ops) = (free_udp()?, free_tcp()?);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"{quic}\"\nops_listen = \"{ops}\"\ndata_dir = \"{}\"\ndatabase_url = {}\nstore_url = \"{store_url}\"\nnode_id = \"{name}\"\nkek_poll_ms = 200\n[segments]\nmax_bytes = {}\nmax_age_ms = {}\nstore_actors = {}\n{store_section}",
                data_dir.display(),
                toml::Value::String(db.url.clone()),
                sc.server.segment_max_bytes,
                sc.server.segment_max_age_ms,
                sc.server.store_actors,
            ),
        )?;
        nodes.push(Node {
            log: dir.join(format!("{name}.log")),
            name,
            quic,
            ops,
            config,
            pin,
        });
    }
    let pass = Passphrase::new(b"loadtest passphrase, not a secret".to_vec());
    let kek = keys::generate_keypair(&dir.join("customer"), 2048, &pass)?;
    let md = sealstream::metadata::Metadata::open(&db.url, Path::new("unused.db")).await?;
    md.insert_kek(
        true,
        true,
        &kek.public_path.display().to_string(),
        &kek.private_path.display().to_string(),
    )
    .await?;
    let pki = Pki::open_or_create(&dir.join("node-1"))?;
    let pins: Vec<String> = nodes.iter().map(|x| x.pin.clone()).collect();
    let addrs: Vec<String> = nodes.iter().map(|x| x.quic.to_string()).collect();
    let failover = sc
        .failover
        .clone()
        .filter(|f| f.node >= 1 && f.node <= n && n > 1);
    let agents: Vec<AgentConfig> = (0..sc.agents)
        .map(|i| {
            let name = format!("lt-agent-{i:04}");
            let files = pki.enroll_agent(
                &AgentId::new(&name).map_err(anyhow::Error::msg)?,
                &dir.join("agents").join(&name),
            )?;
            // Each agent lists every node, starting at its own. Throughput runs take them in
            // that order ("listed": exactly even); failover runs as the scenario says (by
            // default "spread": the agents' own orders, whatever the list's).
            let order: Vec<String> = (0..n).map(|k| addrs[(i + k) % n].clone()).collect();
            let node_order = match failover {
                None => NodeOrder::Listed,
                Some(_) => sc.agent.node_order,
            };
            Ok(AgentConfig {
                server: order[0].clone(),
                servers: order[1..].to_vec(),
                node_order,
                rebalance_ms: sc.agent.rebalance_ms,
                server_pins: pins.clone(),
                cert: files.cert,
                key: files.key,
                kek: kek.public_path.clone(),
                window: sc.agent.window,
                max_unacked_bytes: sc.agent.max_unacked_bytes,
                reconnect_ms: 200,
                ..AgentConfig::default()
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let pb = indicatif::ProgressBar::new(((sc.ramp_up_s + sc.duration_s) * 10.0) as u64);
    let label = format!("{n} node(s), {:?} store", args.store);
    let nodes_ref = &nodes;
    let bin = &args.bin;
    let procs: Vec<NodeProcess> = nodes
        .iter()
        .map(|x| NodeProcess {
            name: x.name.clone(),
            config: x.config.clone(),
            log: x.log.clone(),
            ops: x.ops,
        })
        .collect();
    let procs_ref = &procs;
    let pids = Arc::new(Mutex::new(Vec::new()));
    let pids_ref = &pids;
    let started = std::time::Instant::now();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let watcher = failover.clone().map(|f| {
        tokio::spawn(balance::watch(
            f,
            procs.clone(),
            bin.clone(),
            pids.clone(),
            started,
            done_rx,
        ))
    });
    let (result, children): (RunResult, Vec<(tokio::process::Child, u32)>) = runner::run(
        sc,
        Mode::Pipeline,
        &label,
        agents,
        || async move {
            let mut children = Vec::new();
            for node in procs_ref {
                let (child, pid) = balance::spawn(bin, node)?;
                pids_ref.lock().expect("pids lock").push(pid);
                children.push((child, pid));
            }
            for node in nodes_ref {
                wait_tcp(node.ops, &node.name).await?;
            }
            let pid = children[0].1;
            Ok((children, pid))
        },
        &pb,
    )
    .await?;
    pb.finish_and_clear();
    let _ = done_tx.send(true);
    let trace = match watcher {
        Some(w) => Some(w.await??),
        None => None,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut per_node = Vec::new();
    let mut puts = 0.0;
    // A node killed and started again: its second process's memory.
    let again = trace
        .as_ref()
        .zip(failover.as_ref())
        .and_then(|(t, f)| Some((f.node - 1, t.restarted.as_ref()?.1)));
    for (i, (node, &(_, pid))) in nodes.iter().zip(&children).enumerate() {
        let pid = match again {
            Some((k, p)) if k == i => p,
            _ => pid,
        };
        let page = scrape(node.ops).await.unwrap_or_default();
        let segments = metric(&page, "sealstream_store_segment_bytes_count");
        puts += segments;
        per_node.push(NodeFigures {
            node: node.name.clone(),
            received_mb_per_s: metric(&page, "sealstream_ingest_received_bytes_total")
                / 1e6
                / elapsed,
            peak_rss_mib: peak_rss(pid) >> 20,
            segment_puts_per_s: segments / elapsed,
        });
    }
    for (child, pid) in children {
        crate::target::stop_child(child, pid).await;
    }
    let balance = match (trace, &failover) {
        (Some(mut t), Some(f)) => {
            if let Some((child, pid)) = t.restarted.take() {
                crate::target::stop_child(child, pid).await;
            }
            Some(balance::figures(&t, f, &result.agent_reports))
        }
        _ => None,
    };
    let stored = md.count(sealstream::metadata::Table::Chunks).await?;
    drop(md);
    if let Err(e) = db.drop_now().await {
        eprintln!("warning: could not drop the run's database: {e:#}");
    }
    let _ = std::fs::remove_dir_all(dir.join("store"));
    let _ = std::fs::remove_dir_all(dir.join("agents"));
    Ok(Run {
        round,
        nodes: n,
        store: args.store,
        aggregate_mb_per_s: result.mb_per_s,
        ack_p50_ms: result.ack_latency_ms.p50,
        ack_p99_ms: result.ack_latency_ms.p99,
        acked_chunks: result.acked_chunks,
        stored_chunks: stored,
        lost: result.lost,
        duplicates: result.duplicates,
        store_puts_per_s: puts / elapsed,
        per_node,
        balance,
    })
}

pub async fn run(args: Args) -> anyhow::Result<NodesReport> {
    std::fs::create_dir_all(&args.out)?;
    let moto = match args.store {
        StoreKind::S3 => Some(Moto::start(&args.out).await?),
        StoreKind::Local => None,
    };
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        // Alternate the order between rounds: drift on a shared machine favours neither.
        let mut counts = args.counts.clone();
        if round % 2 == 0 {
            counts.reverse();
        }
        for &n in &counts {
            let r = measure(&args, n, round, moto.as_ref()).await?;
            println!(
                "round {round}: {n} node(s), {:?}: {:.1} MB/s aggregate, ack p50 {:.1} ms p99 {:.1} ms, {:.1} store PUTs/s, per node {}",
                args.store,
                r.aggregate_mb_per_s,
                r.ack_p50_ms,
                r.ack_p99_ms,
                r.store_puts_per_s,
                r.per_node
                    .iter()
                    .map(|x| format!(
                        "{} {:.1} MB/s RSS {} MiB",
                        x.node, x.received_mb_per_s, x.peak_rss_mib
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(b) = &r.balance {
                let s = |v: Option<f64>| v.map_or("never".into(), |x| format!("{x:.1} s"));
                println!(
                    "balance, {} agents: before the kill {:?}; node-{} killed: {:?}, every agent connected again after {}; restarted: every node at half its fair share after {}, as before the kill after {}; {} moves back; {} chunks re-sent (after the kill)",
                    b.agents,
                    b.before_kill,
                    b.killed_node,
                    b.after_kill,
                    s(b.failover_s),
                    s(b.half_fair_share_s),
                    s(b.as_before_s),
                    b.moves,
                    b.resent_chunks
                );
            }
            runs.push(r);
        }
    }
    if let Some(mut m) = moto {
        let _ = m.child.kill().await;
    }
    let median = |n: usize| {
        crate::report::median(
            runs.iter()
                .filter(|r| r.nodes == n)
                .map(|r| r.aggregate_mb_per_s),
        )
    };
    let (lo, hi) = (
        args.counts.iter().min().copied().unwrap_or(1),
        args.counts.iter().max().copied().unwrap_or(1),
    );
    let median_scaling = match (median(lo), median(hi)) {
        (Some(a), Some(b)) if lo != hi => Some(b / a.max(1e-9)),
        _ => None,
    };
    Ok(NodesReport {
        command: args.command.clone(),
        machine: crate::report::Machine::read(),
        scenario: args.scenario.name.clone(),
        runs,
        median_scaling,
    })
}
