//! The configured nodes (`server`, then `servers`) resolved to the addresses the agent
//! connects to in turn.

use std::net::SocketAddr;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

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
