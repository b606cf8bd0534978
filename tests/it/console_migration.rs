//! A database indexed before the console (schema version 2) gains its byte-range columns and
//! its session list when a new server opens it: old sessions are listed (counted, timed by
//! their segments) and their chunks, which have no byte range, say so instead of playing.

use crate::common::server::pg_exec;
use sealstream::metadata::{Metadata, SessionQuery};

const V1: &str = include_str!("../../migrations/postgres/0001_init.sql");
const V2: &str = include_str!("../../migrations/postgres/0002_agent_access.sql");
const L1: &str = include_str!("../../migrations/sqlite/0001_init.sql");
const L2: &str = include_str!("../../migrations/sqlite/0002_agent_access.sql");

/// Two segments and three chunks of one session, as version 2 indexed them.
const OLD_ROWS_PG: &str = "
    INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count, created_at) VALUES
      ('\\x01', 'v1/segments/2026-01-01/01.seg', 100, '\\x00', 2, '2026-01-01 10:00:00+00'),
      ('\\x02', 'v1/segments/2026-01-01/02.seg', 100, '\\x00', 1, '2026-01-01 10:05:00+00');
    INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest) VALUES
      ('old-ts', '\\x0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', 0, 0, '\\x01', '\\x00'),
      ('old-ts', '\\x0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', 0, 1, '\\x01', '\\x00'),
      ('old-ts', '\\x0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', 0, 2, '\\x02', '\\x00');
    INSERT INTO audit_log (actor, action, detail) VALUES
      ('op', 'kek_unwrap', 'before the chain'), ('op', 'export', 'also before');";

async fn check(md: &Metadata) {
    let s = md
        .sessions(SessionQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].agent, "old-ts");
    assert_eq!(s[0].chunks, 3);
    assert_eq!(
        s[0].first_capture_us, 1_767_261_600_000_000,
        "2026-01-01 10:00 UTC"
    );
    assert_eq!(
        s[0].last_capture_us, 1_767_261_900_000_000,
        "2026-01-01 10:05 UTC"
    );
    let session = s[0].session;
    let rows = md
        .chunk_locations("old-ts", session, Some(0), 0, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|r| r.range.is_none()),
        "no byte range for old chunks"
    );
    // Audit rows written before migration 4 enter the hash chain in their order, and rows
    // written after it follow them.
    md.audit("ann", "after", "the upgrade").await.unwrap();
    let audit = md.audit_chain_rows().await.unwrap();
    let report = sealstream::audit::verify_chain(&audit);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let order: Vec<(Option<i64>, &str)> = audit
        .iter()
        .map(|r| (r.chain_seq, r.detail.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![
            (Some(1), "before the chain"),
            (Some(2), "also before"),
            (Some(3), "the upgrade")
        ]
    );
}

#[tokio::test]
async fn a_version_2_sqlite_database_is_listed_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.db");
    {
        let db = rusqlite::Connection::open(&file).unwrap();
        db.execute_batch(L1).unwrap();
        db.execute_batch(L2).unwrap();
        db.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
             INSERT INTO schema_migrations (version) VALUES (1), (2);
             INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count, created_at) VALUES
               (x'01', 'v1/segments/2026-01-01/01.seg', 100, x'00', 2, '2026-01-01 10:00:00'),
               (x'02', 'v1/segments/2026-01-01/02.seg', 100, x'00', 1, '2026-01-01 10:05:00');
             INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest) VALUES
               ('old-ts', x'0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', 0, 0, x'01', x'00'), ('old-ts', x'0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', 0, 1, x'01', x'00'),
               ('old-ts', x'0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a', 0, 2, x'02', x'00');
             INSERT INTO audit_log (actor, action, detail) VALUES
               ('op', 'kek_unwrap', 'before the chain'), ('op', 'export', 'also before');",
        )
        .unwrap();
    }
    let md = Metadata::open("", &file).await.unwrap();
    check(&md).await;
}

#[tokio::test]
async fn a_version_2_postgres_database_is_listed_after_the_upgrade() {
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).unwrap();
    let db = format!("sealstream_test_{}", hex::encode(id));
    pg_exec(&format!("CREATE DATABASE {db}")).await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "{V1}\n{V2}\nCREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
                 INSERT INTO schema_migrations (version) VALUES (1), (2);\n{OLD_ROWS_PG}"
            ))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    }
    let md = Metadata::open(&url, std::path::Path::new("unused.db"))
        .await
        .unwrap();
    check(&md).await;
    drop(md);
    pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}
