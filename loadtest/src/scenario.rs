//! A load scenario, read from `loadtest/scenarios/*.toml`.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated agents, each one QUIC connection with its own certificate.
    pub agents: usize,
    /// OS user sessions per agent (terminal server or VDI users), two streams each.
    pub users_per_agent: usize,
    /// Seconds of recording per agent.
    pub duration_s: f64,
    /// Agents start evenly spread over this many seconds.
    #[serde(default)]
    pub ramp_up_s: f64,
    /// Seconds the server is down at the start while agents record (the burst scenario).
    #[serde(default)]
    pub outage_s: f64,
    pub frames: Frames,
    pub keystrokes: Keystrokes,
    #[serde(default)]
    pub agent: AgentTuning,
    #[serde(default)]
    pub server: ServerTuning,
    /// `nodes` only: one node SIGKILLed during the run (and started again), with the agent
    /// connections per node sampled over time and the time to balance again.
    #[serde(default)]
    pub failover: Option<Failover>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    /// The node killed, counting from 1.
    pub node: usize,
    /// Seconds after the agents start.
    pub kill_at_s: f64,
    /// Seconds it stays down before it is started again; absent: down for good.
    #[serde(default)]
    pub down_s: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Frames {
    /// Mean frame size in bytes.
    pub size: usize,
    /// Sizes spread over size × (1 ± spread); 0 for fixed-size frames.
    #[serde(default)]
    pub spread: f64,
    /// Mean milliseconds between a user's frames; 0 sends as fast as acks allow.
    pub interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keystrokes {
    /// Events per batch (about 50 bytes each).
    pub events: usize,
    pub interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentTuning {
    /// Chunks in flight per stream ahead of their acks.
    pub window: usize,
    /// Unacked bytes an agent keeps before capture waits.
    pub max_unacked_bytes: usize,
    /// The agent's `rebalance_ms` (how often, about, an agent away from its first node looks
    /// whether that node is back); the agent's default unless given.
    pub rebalance_ms: u64,
    /// The agent's `node_order` in `[failover]` runs (`listed`, with `rebalance_ms = 0`, is how
    /// agents chose nodes before they balanced themselves). Throughput runs always list each
    /// agent's nodes starting at its own, in that order.
    pub node_order: sealstream::config::NodeOrder,
}

impl Default for AgentTuning {
    fn default() -> Self {
        AgentTuning {
            window: 32,
            max_unacked_bytes: 16 * 1024 * 1024,
            rebalance_ms: sealstream::config::AgentConfig::default().rebalance_ms,
            node_order: sealstream::config::NodeOrder::Spread,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTuning {
    pub segment_max_bytes: usize,
    pub segment_max_age_ms: u64,
    pub store_actors: usize,
    /// A PostgreSQL server the harness may create databases on (e.g.
    /// `postgres://postgres@127.0.0.1:5432/postgres`): the pipeline then runs on PostgreSQL,
    /// in a database of its own that is dropped afterwards. Empty: the embedded SQLite file.
    /// `--database-url` overrides it.
    pub database_url: String,
}

impl Default for ServerTuning {
    fn default() -> Self {
        ServerTuning {
            segment_max_bytes: 8 * 1024 * 1024,
            segment_max_age_ms: 200,
            store_actors: 2,
            database_url: String::new(),
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let s: Scenario =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(
            s.agents > 0 && s.users_per_agent > 0,
            "{}: agents and users_per_agent must be at least 1",
            path.display()
        );
        anyhow::ensure!(
            s.duration_s > 0.0,
            "{}: duration_s must be positive",
            path.display()
        );
        Ok(s)
    }

    pub fn streams(&self) -> usize {
        self.agents * self.users_per_agent * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 3);
    }
}
