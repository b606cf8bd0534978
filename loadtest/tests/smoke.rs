//! The harness end to end on a tiny scenario: the transport-only sink and the pipeline on
//! both databases (SQLite and a PostgreSQL database the harness creates and drops) run, every
//! chunk is acked once and indexed once, an export of each pipeline's store (`--check-export`:
//! the run's KEK and passphrase, as an operator would) holds every frame and keystroke the
//! agents sealed byte for byte, and the reports are written.

use std::process::Command;

#[test]
fn the_smoke_scenario_runs_against_sink_and_pipeline() {
    let out = tempfile::tempdir().unwrap();
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let admin = std::env::var("SEALSTREAM_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let run = Command::new(env!("CARGO_BIN_EXE_sealstream-loadtest"))
        .args([
            "run",
            "--in-process",
            "--compare-sqlite",
            "--check-export",
            "--scenario",
        ])
        .arg(&scenario)
        .arg("--database-url")
        .arg(&admin)
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
    assert!(
        stdout.contains("postgresql / sqlite pipeline throughput"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["database"], "postgresql");
    assert_eq!(report["pipeline"]["database"], "postgresql");
    assert_eq!(report["pipeline_sqlite"]["database"], "sqlite");
    for run in ["transport", "pipeline", "pipeline_sqlite"] {
        let r = &report[run];
        assert_eq!(r["duplicates"], 0, "{run}");
        assert!(r["acked_chunks"].as_u64().unwrap() > 10, "{run}: {r}");
        assert_eq!(
            r["acked_chunks"], r["sealed_chunks"],
            "{run}: every sealed chunk acked"
        );
        assert!(r["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
    for run in ["pipeline", "pipeline_sqlite"] {
        let r = &report[run];
        assert_eq!(
            r["stored_chunks"], r["acked_chunks"],
            "{run}: each acked chunk indexed once"
        );
        // What the store holds, not what the index says: the export decrypts every sealed
        // chunk, and every frame (by SHA-256) and keystroke batch is the one the agents sealed.
        assert_eq!(
            r["export_mismatches"], 0,
            "{run}: {}",
            r["export_first_mismatches"]
        );
        assert_eq!(r["exported_chunks"], r["sealed_chunks"], "{run}: {r}");
        assert!(
            r["export_frames_matched"].as_u64().unwrap() > 10,
            "{run}: {r}"
        );
        assert!(report[run]["ratio_to_transport"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        report["transport"]["exported_chunks"],
        serde_json::Value::Null,
        "the sink stores nothing to export"
    );
    assert!(report["ratio"].as_f64().unwrap() > 0.0);
    assert!(report["postgres_to_sqlite"].as_f64().unwrap() > 0.0);
    // The harness dropped the database it made.
    let left = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'sealstream_lt_smoke_%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    });
    assert_eq!(left, 0, "the run's PostgreSQL database was dropped");
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Acked throughput"));
}
