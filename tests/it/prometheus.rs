//! The Prometheus side: the exposition passes `promtool check metrics`, the shipped scrape
//! configuration and alert rules pass `promtool check config` / `check rules`, and every metric
//! the alerts and the Grafana dashboard use is one the server exports. promtool comes from
//! Debian's `prometheus` package (`.ci/run` installs it); without it the test fails, unless
//! `SEALSTREAM_SKIP_PROMTOOL=1` asks for the promtool checks to be skipped (said on stderr; the
//! name checks still run).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::server::{Backend, Env};

fn promtool() -> Option<&'static str> {
    Command::new("promtool")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "promtool")
}

/// The promtool checks are skipped only when asked for: `SEALSTREAM_SKIP_PROMTOOL=1`.
fn skip_promtool() -> bool {
    std::env::var("SEALSTREAM_SKIP_PROMTOOL").is_ok_and(|v| v == "1")
}

/// Metric names (without _bucket/_sum/_count) a PromQL expression uses.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("sealstream_") {
            let base = word
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            out.push(base.to_owned());
        }
    }
    out
}

#[actix_rt::test]
async fn the_exposition_alerts_and_dashboard_agree_and_pass_promtool() {
    let env = Env::start(Backend::Sqlite, true).await;
    let cfg = env.enroll("scraped");
    let r = crate::common::agents::run_agent(
        cfg,
        sealstream::agent::synthetic::SyntheticSpec {
            users: 1,
            duration: Duration::from_millis(800),
            frame_size: 4096,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.unacked, 0);
    let (_, text) = crate::common::agents::http_get(env.server().ops_addr, "/metrics").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    let mut used = Vec::new();
    let alerts = std::fs::read_to_string(root.join("ops/prometheus/alerts.yml")).unwrap();
    used.extend(names_in(&alerts));
    let dash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("ops/grafana/sealstream.json")).unwrap())
            .unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            used.extend(names_in(t["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() > 10);
    for name in used {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is used by ops/ but not exported"
        );
    }

    let Some(tool) = promtool() else {
        assert!(
            skip_promtool(),
            "promtool is not installed: install Debian's `prometheus` package (.ci/run does), \
             or set SEALSTREAM_SKIP_PROMTOOL=1 to skip the promtool checks"
        );
        eprintln!(
            "SEALSTREAM_SKIP_PROMTOOL=1 and promtool not installed: SKIPPED the promtool checks \
             of the exposition, ops/prometheus/prometheus.yml, alerts.yml and alerts_test.yml"
        );
        env.stop().await;
        return;
    };
    let mut child = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (cmd, file) in [
        ("config", "ops/prometheus/prometheus.yml"),
        ("rules", "ops/prometheus/alerts.yml"),
        ("test-rules", "ops/prometheus/alerts_test.yml"),
    ] {
        // `promtool test rules`: each alert fires for the one node that misbehaves, with the
        // node in its texts, and not for the healthy one.
        let args: &[&str] = match cmd {
            "test-rules" => &["test", "rules"],
            _ => &["check", cmd],
        };
        let out = Command::new(tool)
            .args(args)
            .arg(root.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check {cmd} {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    env.stop().await;
}
