//! Agents in tests: a small synthetic load, running one to the end, and the checker that
//! compares an export with what the agents recorded. Plus small network helpers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sealstream::agent::{self, AgentReport, Source, synthetic::SyntheticSpec};
use sealstream::config::AgentConfig;
use sealstream::export::{self, Status};
use sealstream::storage;
use sha2::{Digest, Sha256};

/// A few frames a second of 8 KiB and a keystroke batch every 400 ms per user.
pub fn spec(users: usize, secs: f64) -> SyntheticSpec {
    SyntheticSpec {
        users,
        duration: Duration::from_secs_f64(secs),
        frame_interval: Duration::from_millis(150),
        frame_size: 8 * 1024,
        frame_size_spread: 0.5,
        keystroke_interval: Duration::from_millis(400),
        keystroke_events: 5,
        seed: 7,
        images: false,
    }
}

/// The checker: export `store` and compare with what the agents recorded. Returns the number
/// of frames verified. Any acked-but-missing frame, altered byte or duplicate fails.
pub async fn check(
    store_dir: &Path,
    key: &sealstream::keys::PrivateKeyFile,
    reports: &[AgentReport],
    out: &Path,
) -> usize {
    let store = storage::open_local(store_dir).unwrap();
    check_store(store.as_ref(), key, reports, out).await
}

/// `check` on any object store (S3 on moto as well as a directory).
pub async fn check_store(
    store: &dyn object_store::ObjectStore,
    key: &sealstream::keys::PrivateKeyFile,
    reports: &[AgentReport],
    out: &Path,
) -> usize {
    for r in reports {
        assert_eq!(
            r.unacked, 0,
            "{}: {} chunks never acked",
            r.agent, r.unacked
        );
        assert_eq!(r.duplicate_acks, 0);
    }
    let report = export::export(store, std::slice::from_ref(key), None, out)
        .await
        .unwrap();
    assert!(!report.tampered(), "{:?}", report.damaged_objects);
    let frames = check_sessions(out, reports);
    let sealed: u64 = reports.iter().map(|r| r.chunks_sealed).sum();
    let exported: u64 = report.streams.iter().map(|s| s.chunks).sum();
    assert_eq!(exported, sealed, "every sealed chunk exported exactly once");
    for s in &report.streams {
        assert_eq!(s.status, Status::Complete, "{s:?}");
    }
    frames
}

pub async fn run_agent(cfg: AgentConfig, spec: SyntheticSpec) -> AgentReport {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(180),
        agent::run(cfg, Source::Synthetic(spec), rx, Duration::from_secs(5)),
    )
    .await
    .expect("the agent delivers everything (once any fault clears)")
    .unwrap()
}

/// A process's resident memory in KiB (Linux). Panics when it cannot be read: a memory
/// check that read 0 would pass whatever the process did.
pub fn rss_kib(pid: u32) -> u64 {
    sealstream_test_support::proc_kib(pid, "status", "VmRSS")
        .unwrap_or_else(|e| panic!("the memory of process {pid} cannot be read: {e}"))
}

pub fn free_udp() -> SocketAddr {
    sealstream_test_support::free_udp().unwrap()
}

pub fn free_tcp() -> SocketAddr {
    sealstream_test_support::free_tcp().unwrap()
}

/// GET `path` over plain HTTP/1.0; returns (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    sealstream_test_support::http_get(addr, path).await.unwrap()
}

/// The body of `/metrics` at `addr`, which must answer 200.
pub async fn metrics_text(addr: SocketAddr) -> String {
    let (line, text) = http_get(addr, "/metrics").await;
    assert!(line.contains(" 200 "), "{line}");
    without_node_label(&text)
}

/// A server's exposition without the `node` label every series carries, so that tests can
/// look lines up as `name{label="…"} value` (checked to be there first).
pub fn without_node_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = match line.find("{node=\"") {
            Some(at) if !line.starts_with('#') => {
                let rest = &line[at + 7..];
                let end = rest.find('"').expect("a closed node label");
                let after = &rest[end + 1..];
                let after = after.strip_prefix(',').map_or_else(
                    || {
                        after
                            .strip_prefix('}')
                            .map_or(after.to_owned(), |a| a.to_owned())
                    },
                    |a| format!("{{{a}"),
                );
                format!("{}{after}", &line[..at])
            }
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Every frame and keystroke batch the agents recorded is in the export at `out`, byte for
/// byte, each frame once; returns the number of frames checked.
pub fn check_sessions(out: &Path, reports: &[AgentReport]) -> usize {
    let mut frames = 0;
    for r in reports {
        for s in &r.sessions {
            let base = out.join(r.agent.dir_name()).join(s.session.to_string());
            let names = std::fs::read_dir(base.join("frames")).unwrap().count();
            assert_eq!(
                names,
                s.frames.len(),
                "frames exported once each (no duplicates, none missing)"
            );
            for (name, digest) in &s.frames {
                let got = std::fs::read(base.join("frames").join(name))
                    .unwrap_or_else(|_| panic!("acked frame {name} missing"));
                assert_eq!(Sha256::digest(&got).as_slice(), digest, "{name}");
                frames += 1;
            }
            let ks = std::fs::read(base.join("keystrokes.jsonl")).unwrap();
            assert_eq!(Sha256::digest(&ks).as_slice(), s.keystrokes_sha256);
        }
    }
    frames
}
