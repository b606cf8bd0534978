//! The configured nodes (`server`, then `servers`) resolved to the addresses the agent
//! connects to; the agent's own order over them (`home_order`); and the probe that tells
//! whether a node is back (`answers`).
//!
//! Balance: under `node_order = "spread"` every agent ranks the nodes by a hash of its name
//! with each node's address (rendezvous hashing), so each node comes first ("home") for about
//! 1/n of the agents, and when a node fails, each of its agents goes to its own second choice:
//! they spread over the live nodes instead of all going to the same next one. Adding or losing
//! a node moves only the agents that ranked it first. An agent away from its first choice asks
//! the nodes it ranks higher, every `rebalance_ms` or so (jittered: agents come back gradually,
//! not all at once), whether they are back, and moves to the first that is (`stream.rs` does
//! the move between chunks, once every chunk sent has its ack).
//!
//! The probe is a QUIC datagram with a version no server speaks (RFC 9000 §15's reserved
//! `0x?a?a?a?a`): a live QUIC server answers it with a version negotiation packet, statelessly,
//! before any TLS, so probing takes no handshake, no lease and no connection on the node.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::NodeOrder;

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

/// The order `agent` tries `addrs` in: as listed, or (`Spread`) by the weight of each address
/// for this agent, highest first. The weight depends only on the agent's name and the
/// address, so every agent computes its order alone, and the same order on every start.
pub(crate) fn home_order(agent: &str, addrs: &[SocketAddr], order: NodeOrder) -> Vec<SocketAddr> {
    let mut out = addrs.to_vec();
    if order == NodeOrder::Spread {
        out.sort_by_cached_key(|a| (std::cmp::Reverse(weight(agent, a)), *a));
    }
    out
}

/// The rendezvous weight of `addr` for `agent`: the first 8 bytes of a SHA-256 over both.
fn weight(agent: &str, addr: &SocketAddr) -> u64 {
    let mut h = Sha256::new();
    h.update(b"sealstream node order 1\0");
    h.update(agent.as_bytes());
    h.update(b"\0");
    h.update(addr.to_string().as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// How long to wait before the next look for a better node: `mean` times a factor in
/// [0.5, 1.5) from the system's randomness, so agents displaced together do not come back
/// together.
pub(crate) fn rebalance_wait(mean: Duration) -> Duration {
    let mut b = [0u8; 2];
    let unit = match getrandom::fill(&mut b) {
        Ok(()) => u16::from_le_bytes(b) as f64 / 65536.0,
        Err(_) => 0.5,
    };
    mean.mul_f64(0.5 + unit)
}

/// A version QUIC reserves for forcing version negotiation (RFC 9000 §15: `0x?a?a?a?a`).
const PROBE_VERSION: u32 = 0x5a6a_7a8a;
/// Servers drop smaller datagrams of an unknown version (RFC 9000 §14.1).
const PROBE_SIZE: usize = 1200;

/// A long-header packet of `PROBE_VERSION` with the connection ids `ids` (destination, then
/// source), padded to `PROBE_SIZE`.
fn version_probe(ids: &[u8; 16]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROBE_SIZE);
    p.push(0xc0 | (ids[0] & 0x0f));
    p.extend_from_slice(&PROBE_VERSION.to_be_bytes());
    p.push(8);
    p.extend_from_slice(&ids[..8]);
    p.push(8);
    p.extend_from_slice(&ids[8..]);
    p.resize(PROBE_SIZE, 0);
    p
}

/// `reply` is a version negotiation packet (long header, version 0) answering the probe made
/// with `ids`: its destination id is the probe's source id, and the other way round.
fn is_version_negotiation(reply: &[u8], ids: &[u8; 16]) -> bool {
    reply.len() >= 7 + 16
        && reply[0] & 0x80 != 0
        && reply[1..5] == [0, 0, 0, 0]
        && reply[5] == 8
        && reply[6..14] == ids[8..]
        && reply[14] == 8
        && reply[15..23] == ids[..8]
}

/// Whether a QUIC server answers on `addr` within `within` (three tries, for lost datagrams).
/// A closed port usually answers with an ICMP error, which ends the probe early.
pub(crate) async fn answers(addr: SocketAddr, within: Duration) -> bool {
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
        return false;
    };
    if sock.connect(addr).await.is_err() {
        return false;
    }
    let mut ids = [0u8; 16];
    if getrandom::fill(&mut ids).is_err() {
        return false;
    }
    let probe = version_probe(&ids);
    let mut buf = vec![0u8; 2048];
    for _ in 0..3 {
        if sock.send(&probe).await.is_err() {
            return false;
        }
        let wait = tokio::time::sleep(within / 3);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                got = sock.recv(&mut buf) => match got {
                    Ok(n) if is_version_negotiation(&buf[..n], &ids) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                },
            }
        }
    }
    false
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

    fn three() -> Vec<SocketAddr> {
        ["10.0.0.1:7443", "10.0.0.2:7443", "10.0.0.3:7443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect()
    }

    #[test]
    fn every_node_is_first_for_a_fair_share_of_names_and_a_failed_nodes_names_spread() {
        let nodes = three();
        let names: Vec<String> = (0..3000).map(|i| format!("ts-{i:04}")).collect();
        // first[a] = names whose first choice is node a; second[a][b] = of those, the ones
        // whose second choice is node b.
        let mut first = [0usize; 3];
        let mut second = [[0usize; 3]; 3];
        for n in &names {
            let order = home_order(n, &nodes, NodeOrder::Spread);
            assert_eq!(order.len(), 3);
            let ix = |a: &SocketAddr| nodes.iter().position(|x| x == a).unwrap();
            first[ix(&order[0])] += 1;
            second[ix(&order[0])][ix(&order[1])] += 1;
        }
        for (a, &f) in first.iter().enumerate() {
            assert!((900..=1100).contains(&f), "node {a} first for {f} of 3000");
            for (b, &s) in second[a].iter().enumerate() {
                if a != b {
                    // A failed node's agents split about evenly over the two others.
                    let share = s as f64 / f as f64;
                    assert!((0.42..=0.58).contains(&share), "{a}->{b}: {s} of {f}");
                }
            }
        }
    }

    #[test]
    fn the_order_is_the_agents_own_whatever_the_list_and_losing_a_node_moves_only_its_agents() {
        let nodes = three();
        let mut reversed = nodes.clone();
        reversed.reverse();
        let two = &nodes[..2];
        for i in 0..300 {
            let name = format!("vdi-{i}");
            let order = home_order(&name, &nodes, NodeOrder::Spread);
            assert_eq!(order, home_order(&name, &reversed, NodeOrder::Spread));
            let without = home_order(&name, two, NodeOrder::Spread);
            let kept: Vec<SocketAddr> = order.into_iter().filter(|a| two.contains(a)).collect();
            assert_eq!(without, kept, "{name}: the others keep their order");
        }
        assert_eq!(home_order("x", &reversed, NodeOrder::Listed), reversed);
    }

    #[test]
    fn waits_are_spread_around_the_mean() {
        let mean = Duration::from_millis(1000);
        let waits: Vec<Duration> = (0..400).map(|_| rebalance_wait(mean)).collect();
        assert!(waits.iter().all(|w| *w >= mean / 2 && *w < mean * 3 / 2));
        let early = waits.iter().filter(|w| **w < mean).count();
        assert!(
            (120..=280).contains(&early),
            "{early} of 400 below the mean"
        );
    }

    #[test]
    fn a_version_negotiation_answer_is_recognised_and_an_echo_is_not() {
        let ids: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        let probe = version_probe(&ids);
        assert_eq!(probe.len(), PROBE_SIZE);
        assert!(!is_version_negotiation(&probe, &ids), "our own datagram");
        let mut vn = vec![0xc3, 0, 0, 0, 0, 8];
        vn.extend_from_slice(&ids[8..]);
        vn.push(8);
        vn.extend_from_slice(&ids[..8]);
        vn.extend_from_slice(&1u32.to_be_bytes());
        assert!(is_version_negotiation(&vn, &ids));
        let other: [u8; 16] = [9; 16];
        assert!(
            !is_version_negotiation(&vn, &other),
            "another probe's answer"
        );
    }

    #[tokio::test]
    async fn a_quic_server_answers_the_probe_and_other_ports_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::Pki::open_or_create(dir.path()).unwrap();
        let cfg = crate::transport::server_config(
            pki.ca_cert.clone(),
            pki.server_cert.clone(),
            pki.server_key(),
            &crate::config::Limits::default(),
        )
        .unwrap();
        let socket = crate::transport::udp_socket(([127, 0, 0, 1], 0).into(), 1 << 20).unwrap();
        let server = crate::transport::endpoint(socket, Some(cfg)).unwrap();
        let quic = server.local_addr().unwrap();
        assert!(answers(quic, Duration::from_secs(3)).await, "a live node");
        assert_eq!(server.open_connections(), 0, "the probe made no connection");

        // Something else on UDP that answers (echoes): not a node.
        let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = vec![0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        assert!(
            !answers(echo_addr, Duration::from_millis(600)).await,
            "an echo"
        );

        // A node that is gone: nothing listens on its port any more.
        drop(server);
        let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let t = std::time::Instant::now();
        assert!(
            !answers(gone_addr, Duration::from_millis(600)).await,
            "a closed port"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
