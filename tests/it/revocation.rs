//! Agent access without a restart: a revoked certificate, a certificate superseded by the
//! name's later enrolment and a disabled agent are refused at the handshake, connections
//! already open are closed, every change is in the audit log, and a renewed certificate is
//! picked up by the running agent at its next connection.

use std::path::Path;
use std::time::Duration;

use crate::common::agents::{run_agent, spec};
use crate::common::child::{ChildEnv as Env, metric};
use crate::common::server::{Backend, dek_accepted};
use sealstream::metadata::{AccessChange, Credential};
use sealstream::pki::{IssuedCert, Pki};
use sealstream::protocol::AgentId;

const POLL_MS: u64 = 100;

/// A server of the test's own (a child process), so that its connection counters count this
/// test's connections only.
async fn start(backend: Backend) -> Env {
    Env::start(backend, &[("access_poll_ms", &POLL_MS.to_string())]).await
}

/// `sealstream_quic_connections_{closed,refused}_total` for each reason (`what` is "closed"
/// or "refused"), as (reason, value).
fn connections(m: &str, what: &str) -> Vec<(&'static str, f64)> {
    let reasons: &[&'static str] = if what == "closed" {
        &["revoked", "not_current", "disabled"]
    } else {
        &[
            "revoked",
            "not_current",
            "disabled",
            "handshake",
            "handshake_timeout",
            "handshake_budget",
            "identity",
            "connection_cap",
        ]
    };
    reasons
        .iter()
        .map(|r| {
            let series = format!("sealstream_quic_connections_{what}_total{{reason=\"{r}\"}}");
            (*r, metric(m, &series))
        })
        .collect()
}

/// The connection counters read exactly `want` for the reasons named, 0 for every other.
fn assert_connections(m: &str, what: &str, want: &[(&str, f64)]) {
    for (reason, got) in connections(m, what) {
        let expected = want.iter().find(|w| w.0 == reason).map_or(0.0, |w| w.1);
        assert_eq!(got, expected, "connections {what} for {reason}:\n{m}");
    }
}

/// What `sealstream agents enroll` does: issue into `dir` and record it (superseding).
async fn enroll(env: &Env, name: &str, dir: &Path) -> IssuedCert {
    let pki = Pki::open_or_create(&env.cfg.data_dir).unwrap();
    let files = pki.enroll_agent(&AgentId::new(name).unwrap(), dir).unwrap();
    record(env, name, &files.issued).await;
    files.issued
}

async fn record(env: &Env, name: &str, issued: &IssuedCert) {
    env.server()
        .metadata
        .change_access(
            AccessChange::Issue(Credential {
                fingerprint: issued.fingerprint.clone(),
                agent: name.into(),
                issued_us: issued.issued_us,
                not_after_us: issued.not_after_us,
                revoked_us: None,
                revoked_reason: None,
            }),
            "test",
        )
        .await
        .unwrap();
}

async fn connect(env: &Env, dir: &Path) -> quinn::Connection {
    let (ep, conn) = env
        .connect(&dir.join("agent.crt"), &dir.join("agent.key"))
        .await
        .unwrap();
    std::mem::forget(ep);
    conn
}

/// The reason the server closed `conn` with, waiting up to 5 s.
async fn closed_reason(conn: &quinn::Connection) -> String {
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        Ok(other) => panic!("closed otherwise: {other}"),
        Err(_) => panic!("the server did not close the connection within 5 s"),
    }
}

/// Whether the server serves agent `name` with the credentials in `dir`: its connection
/// registers a DEK record (`Ok` only when the server answers it `Ok`). A refused connection is
/// closed right after its handshake: `Err` with the reason it was closed with.
async fn accepted(env: &Env, name: &str, dir: &Path) -> Result<(), String> {
    let conn = connect(env, dir).await;
    dek_accepted(&conn, &env.kek_pub, name).await
}

async fn revocation_closes_and_refuses(backend: Backend) {
    let env = start(backend).await;
    let dir = env.dir.path().join("ts-07");
    enroll(&env, "ts-07", &dir).await;
    let bystander = env.dir.path().join("ts-08");
    enroll(&env, "ts-08", &bystander).await;
    let open = connect(&env, &dir).await;
    // (One connection per agent: a second one of ts-08 would replace this one.)
    let other = connect(&env, &bystander).await;

    let out = env
        .server()
        .metadata
        .change_access(
            AccessChange::Revoke {
                agent: "ts-07".into(),
                reason: "laptop stolen".into(),
            },
            "test",
        )
        .await
        .unwrap();
    assert_eq!(out.revoked.len(), 1);
    let reason = closed_reason(&open).await;
    assert!(
        reason.contains("revoked (laptop stolen)"),
        "the open connection is closed, saying why: {reason}"
    );
    let again = accepted(&env, "ts-07", &dir).await.unwrap_err();
    assert!(again.contains("revoked"), "{again}");
    // Another agent is untouched.
    assert!(
        other.close_reason().is_none(),
        "the bystander stays connected"
    );
    // This server counted the one connection it closed and the one it refused, as revoked.
    let m = env.metrics().await;
    assert_connections(&m, "closed", &[("revoked", 1.0)]);
    assert_connections(&m, "refused", &[("revoked", 1.0)]);

    // Enrolled again, the name is back with its new certificate only.
    let fresh = env.dir.path().join("ts-07-again");
    enroll(&env, "ts-07", &fresh).await;
    tokio::time::sleep(Duration::from_millis(3 * POLL_MS)).await;
    assert_eq!(accepted(&env, "ts-07", &fresh).await, Ok(()));
    assert!(
        accepted(&env, "ts-07", &dir)
            .await
            .unwrap_err()
            .contains("revoked")
    );
    // Two issues and a revocation: each one an audit row (beside the KEK's registration,
    // which its table's trigger audits).
    let rows = env.server().metadata.audit_chain_rows().await.unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| !r.action.starts_with("kek_"))
            .count(),
        4,
        "{:?}",
        rows.iter().map(|r| &r.action).collect::<Vec<_>>()
    );
    assert!(sealstream::audit::verify_chain(&rows).problems.is_empty());
    // The old certificate refused once more; the new one let in; nothing else closed.
    let m = env.metrics().await;
    assert_connections(&m, "closed", &[("revoked", 1.0)]);
    assert_connections(&m, "refused", &[("revoked", 2.0)]);
    env.stop().await;
}

crate::common::on_both_backends!(
    revocation_closes_and_refuses,
    sqlite: a_revoked_agent_is_closed_and_refused_without_a_restart_sqlite,
    postgres: a_revoked_agent_is_closed_and_refused_without_a_restart_postgres,
);

#[actix_rt::test]
async fn enrolling_a_name_again_retires_its_old_certificate() {
    let env = start(Backend::Sqlite).await;
    let first = env.dir.path().join("vdi-1");
    enroll(&env, "vdi-1", &first).await;
    let open = connect(&env, &first).await;
    let second = env.dir.path().join("vdi-1-reimaged");
    enroll(&env, "vdi-1", &second).await;
    let reason = closed_reason(&open).await;
    assert!(reason.contains("superseded"), "{reason}");
    assert!(
        accepted(&env, "vdi-1", &first)
            .await
            .unwrap_err()
            .contains("superseded")
    );
    assert_eq!(accepted(&env, "vdi-1", &second).await, Ok(()));
    env.stop().await;
}

#[actix_rt::test]
async fn a_certificate_from_before_the_registry_works_until_its_agent_is_revoked() {
    let env = start(Backend::Sqlite).await;
    // Env::enroll issues without recording, as versions before the registry did.
    let legacy = env.enroll("old-host");
    let dir = legacy.cert.parent().unwrap().to_owned();
    assert_eq!(accepted(&env, "old-host", &dir).await, Ok(()));
    env.server()
        .metadata
        .change_access(
            AccessChange::Revoke {
                agent: "old-host".into(),
                reason: "decommissioned".into(),
            },
            "test",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3 * POLL_MS)).await;
    let refused = accepted(&env, "old-host", &dir).await.unwrap_err();
    // The node recorded the certificate when it admitted it (so the revocation revoked it), or
    // had not yet when the revocation came (then only registered certificates are accepted).
    assert!(
        refused.contains("revoked (decommissioned)") || refused.contains("not current"),
        "{refused}"
    );
    env.stop().await;
}

#[actix_rt::test]
async fn a_disabled_agent_is_refused_until_enabled() {
    let env = start(Backend::Sqlite).await;
    let dir = env.dir.path().join("kiosk");
    enroll(&env, "kiosk", &dir).await;
    let open = connect(&env, &dir).await;
    let md = &env.server().metadata;
    let disable = |disabled| AccessChange::Disable {
        agent: "kiosk".into(),
        disabled,
    };
    assert!(
        md.change_access(disable(true), "test")
            .await
            .unwrap()
            .changed
    );
    assert!(
        !md.change_access(disable(true), "test")
            .await
            .unwrap()
            .changed
    );
    assert!(closed_reason(&open).await.contains("disabled"));
    assert!(
        accepted(&env, "kiosk", &dir)
            .await
            .unwrap_err()
            .contains("disabled")
    );
    assert!(
        md.change_access(disable(false), "test")
            .await
            .unwrap()
            .changed
    );
    tokio::time::sleep(Duration::from_millis(3 * POLL_MS)).await;
    assert_eq!(accepted(&env, "kiosk", &dir).await, Ok(()));
    env.stop().await;
}

#[actix_rt::test]
async fn a_running_agent_picks_up_its_renewed_certificate_and_loses_nothing() {
    let env = start(Backend::Sqlite).await;
    // A config for this server (its pin and KEK), with the certificate `agents enroll` made.
    let mut cfg = env.enroll("template");
    let dir = env.dir.path().join("ts-renew");
    enroll(&env, "ts-renew", &dir).await;
    cfg.cert = dir.join("agent.crt");
    cfg.key = dir.join("agent.key");
    let pki = Pki::open_or_create(&env.cfg.data_dir).unwrap();
    let before = std::fs::read(&cfg.cert).unwrap();
    cfg.reconnect_ms = 50;
    let agent = tokio::spawn(run_agent(cfg.clone(), spec(2, 4.0)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // `sealstream agents renew`: new files in place, the old certificate revoked.
    let renewed = pki
        .renew_agent(&AgentId::new("ts-renew").unwrap(), &dir, 90)
        .unwrap();
    record(&env, "ts-renew", &renewed.issued).await;
    assert_ne!(std::fs::read(&cfg.cert).unwrap(), before);
    let report = agent.await.unwrap();
    assert!(
        report.connects >= 2,
        "the agent was disconnected and came back: {report:?}"
    );
    assert_eq!(report.unacked, 0);
    assert_eq!(report.chunks_acked, report.chunks_sealed);
    // The renewal revoked the certificate of the one open connection, which the server closed;
    // the agent came back with the new certificate, never refused.
    let m = env.metrics().await;
    assert_connections(&m, "closed", &[("revoked", 1.0)]);
    assert_connections(&m, "refused", &[]);
    env.stop().await;
}
