//! The backend itself: what it says it is, and that it answers, through `Metadata` and through
//! the trait object it holds.

use super::*;

conformance!(
    a_backend_names_itself_and_answers,
    sqlite: a_backend_names_itself_and_answers_sqlite,
    postgres: a_backend_names_itself_and_answers_postgres,
);

/// `kind` and `describe` name the backend (PostgreSQL by host, port and database, never a
/// password); `ping` answers; `Metadata` and its `&dyn Backend` say the same.
async fn a_backend_names_itself_and_answers(m: &Metadata) {
    let b = m.backend();
    assert_eq!(b.kind(), m.kind());
    assert_eq!(b.describe(), m.describe());
    match m.kind() {
        "sqlite" => assert_eq!(m.describe(), "SQLite (embedded, in the state directory)"),
        "postgresql" => {
            let d = m.describe();
            assert!(
                d.starts_with("PostgreSQL at 127.0.0.1:5432/sealstream_meta_"),
                "{d}"
            );
            assert!(!d.contains("postgres@"), "{d}");
        }
        other => panic!("unknown backend {other}"),
    }
    m.ping().await.unwrap();
    b.ping().await.unwrap();
    // The store a fresh open made is empty, as both count it.
    assert_eq!(count(m, Table::AuditLog).await, 0);
    assert_eq!(b.count(Table::Chunks).await.unwrap(), 0);
    m.audit("ops", "noted", "one row").await.unwrap();
    assert_eq!(b.count(Table::AuditLog).await.unwrap(), 1);
}
