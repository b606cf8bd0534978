//! The harness end to end on a tiny scenario: both targets run, every chunk is acked once,
//! and the reports are written.

use std::process::Command;

#[test]
fn the_smoke_scenario_runs_against_sink_and_pipeline() {
    let out = tempfile::tempdir().unwrap();
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_sealstream-loadtest"))
        .args(["run", "--in-process", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("pipeline / transport throughput"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    for run in ["transport", "pipeline"] {
        let r = &report[run];
        assert_eq!(r["lost"], 0, "{run}");
        assert_eq!(r["duplicates"], 0, "{run}");
        assert!(r["acked_chunks"].as_u64().unwrap() > 10, "{run}: {r}");
        assert_eq!(r["acked_chunks"], r["sealed_chunks"], "{run}");
        assert!(r["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        report["stored_chunks"], report["pipeline"]["acked_chunks"],
        "each acked chunk indexed once"
    );
    assert!(report["ratio"].as_f64().unwrap() > 0.0);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Acked throughput"));
}
