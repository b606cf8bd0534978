//! `run`: the agent started, its source captured until it ends or is stopped, the acks
//! waited for (up to the drain time), and the run's report with its counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Agent, AgentError, AgentReport, Observer, Source, capture, metrics};
use crate::config::AgentConfig;
use crate::protocol::uplink::CloseCode;

/// How long a stopping agent waits for its connection close to be sent.
const CLOSE_GRACE: Duration = Duration::from_millis(300);

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
    loop {
        // Registered before `all_done` is checked: an ack in between is not missed.
        let settled = agent.settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        if agent.all_done() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut settled => {}
            _ = until_deadline => {}
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
    // The close is sent by the endpoint's driver: give it the moment it needs before this
    // process exits, or the node hears nothing and logs the agent as timed out.
    let _ = tokio::time::timeout(CLOSE_GRACE, agent.endpoint.wait_idle()).await;
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
        node_moves: agent.node_moves.load(Ordering::Relaxed),
        resent_chunks: agent.resent.load(Ordering::Relaxed),
        duplicate_acks: agent.duplicate_acks.load(Ordering::Relaxed),
        spool: agent
            .spool
            .as_ref()
            .map(|s| s.lock().expect("spool lock").stats()),
        dropped_chunks: agent.dropped.load(Ordering::Relaxed),
        gap_records: agent.gaps.load(Ordering::Relaxed),
    })
}
