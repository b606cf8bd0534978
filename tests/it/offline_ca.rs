//! An agent CA kept offline, as an operator runs it through the binary against a real server
//! (in-process, SQLite and PostgreSQL): `ca init`, `agents csr`, `ca sign`, then `agents
//! config` writes the agent.toml the agent runs with (and refuses a certificate of another CA
//! or a key that does not match); a CA-signed agent never registered anywhere (its agent.toml
//! made by hand, as before `agents config`) is recorded by the node it connects to; `agents
//! list` shows both with serial and expiry, `agents revoke` says what it revoked, and the
//! revoked agents are refused.

use std::path::Path;
use std::time::Duration;

use crate::common::agents::{run_agent, spec};
use crate::common::server::{Backend, Env, dek_accepted};
use sealstream::config::AgentConfig;
use sealstream::metadata::Admitted;

/// Run the binary; (exit code, stdout, stderr). On the blocking pool, so the in-process
/// server keeps running.
async fn sealstream(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealstream"))
            .args(&args)
            .env_remove("SEALSTREAM_LOG")
            .env_remove("SEALSTREAM_LOG_FORMAT")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `sealstream` with `args` (paths given as text), which must succeed; (stdout, stderr).
async fn ok(args: &[&str]) -> (String, String) {
    let (code, out, err) = sealstream(args.iter().map(|s| s.to_string()).collect()).await;
    assert_eq!(code, 0, "sealstream {args:?}:\n{out}\n{err}");
    (out, err)
}

/// `sealstream ca sign --ca-dir CA --csr CSR --out OUT`, which must succeed.
async fn ca_sign(ca: &Path, csr: &Path, out: &Path) {
    ok(&[
        "ca",
        "sign",
        "--ca-dir",
        p(ca),
        "--csr",
        p(csr),
        "--out",
        p(out),
    ])
    .await;
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn cert_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

/// The expiry date `agents list` shows for a certificate file (YYYY-MM-DD, UTC).
fn expiry_date(path: &Path) -> String {
    let (_, not_after) = sealstream::crypto::cert::validity_us(&cert_der(path)).unwrap();
    time::OffsetDateTime::from_unix_timestamp(not_after / 1_000_000)
        .unwrap()
        .date()
        .to_string()
}

/// The server's answer to a connection with `dir`'s agent.crt / agent.key registering a DEK:
/// `Ok`, or the reason the connection was closed with.
async fn accepted(env: &Env, name: &str, dir: &Path) -> Result<(), String> {
    let (_ep, conn) = env
        .connect(&dir.join("agent.crt"), &dir.join("agent.key"))
        .await
        .unwrap();
    dek_accepted(&conn, &env.kek_pub, name).await
}

/// The lines `agents list` prints for `agent`: its row, then its certificates.
fn listed(list: &str, agent: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = list
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{agent} ")));
    let row = lines
        .next()
        .unwrap_or_else(|| panic!("{agent} is not listed:\n{list}"));
    let certs = lines
        .take_while(|l| l.starts_with("  "))
        .map(str::to_owned)
        .collect();
    (row.split_whitespace().map(str::to_owned).collect(), certs)
}

async fn offline_ca_agents_are_configured_listed_and_revoked(backend: Backend) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (ca, foreign_ca) = (w.join("ca"), w.join("foreign-ca"));
    ok(&["ca", "init", "--dir", p(&ca)]).await;
    ok(&["ca", "init", "--dir", p(&foreign_ca)]).await;
    // The server trusts the offline CA: its ca.crt, no ca.key.
    let ca_crt = ca.join("ca.crt");
    let env = Env::start_tuned(backend, true, |cfg| {
        cfg.access_poll_ms = 100;
        std::fs::create_dir_all(cfg.data_dir.join("pki")).unwrap();
        std::fs::copy(&ca_crt, cfg.data_dir.join("pki/ca.crt")).unwrap();
    })
    .await;
    // The serve.toml an operator has: this node's address, state directory and database.
    let serve = w.join("serve.toml");
    std::fs::write(
        &serve,
        format!(
            "listen = \"{}\"\ndata_dir = \"{}\"\ndatabase_url = \"{}\"\n",
            env.server().quic_addr,
            env.cfg.data_dir.display(),
            env.cfg.database_url
        ),
    )
    .unwrap();
    let serve = p(&serve).to_owned();

    // `agents enroll` is refused before it says anything about an agent.toml.
    let (code, _, err) = sealstream(
        [
            "agents",
            "enroll",
            "ts-x",
            "--out",
            p(&w.join("x")),
            "--config",
            &serve,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("agents csr") && err.contains("agents config"),
        "{err}"
    );
    assert!(!err.contains("agent.toml: server ="), "{err}");
    assert!(!w.join("x/agent.toml").exists());

    // On the endpoint: a key and a request; where the CA is: the certificate.
    let ep = w.join("ts-ca-01");
    ok(&["agents", "csr", "ts-ca-01", "--dir", p(&ep)]).await;
    let (csr, crt) = (ep.join("agent.csr"), ep.join("agent.crt"));
    ca_sign(&ca, &csr, &crt).await;
    let foreign = ep.join("foreign.crt");
    ca_sign(&foreign_ca, &csr, &foreign).await;
    let other = w.join("other");
    ok(&["agents", "csr", "ts-other", "--dir", p(&other)]).await;

    let out = ep.join("agent.toml");
    let kek = env.kek_pub.clone();
    let config = |cert: &Path, key: &Path| {
        [
            "agents",
            "config",
            "--config",
            &serve,
            "--cert",
            p(cert),
            "--key",
            p(key),
        ]
        .into_iter()
        .chain(["--out", p(&out), "--kek", p(&kek)])
        .map(String::from)
        .collect::<Vec<_>>()
    };
    // Refused: another CA's certificate, a key that is not the certificate's.
    let (code, _, err) = sealstream(config(&foreign, &ep.join("agent.key"))).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("not accepted under the deployment's agent CA"),
        "{err}"
    );
    let (code, _, err) = sealstream(config(&crt, &other.join("agent.key"))).await;
    assert_ne!(code, 0);
    assert!(err.contains("does not match"), "{err}");
    assert!(!out.exists(), "a refusal writes nothing");

    let (code, _, err) = sealstream(config(&crt, &ep.join("agent.key"))).await;
    assert_eq!(code, 0, "{err}");
    let serial = sealstream::crypto::cert::serial_hex(&cert_der(&crt)).unwrap();
    assert!(err.contains(&serial), "{err}");
    // Audited as registered (the offline CA issued it, not this node), by the operator.
    let rows = env.server().metadata.audit_rows(None, 20).await.unwrap();
    let row = rows
        .iter()
        .find(|r| r.detail.contains("agent=ts-ca-01 "))
        .unwrap_or_else(|| panic!("no audit row for ts-ca-01: {rows:?}"));
    assert_eq!(row.action, "agent_certificate_registered", "{row:?}");
    assert!(
        row.actor.starts_with("cli:") && row.actor != "cli:unknown",
        "{row:?}"
    );
    // Where the key is not (it stays on the endpoint): checked against the request instead,
    // and the key's path written as given.
    let elsewhere = w.join("for-the-endpoint.toml");
    let by_request = |csr: &Path| {
        let args = ["agents", "config", "--config", &serve, "--cert", p(&crt)];
        args.into_iter()
            .chain(["--key", "/etc/sealstream/agent/agent.key", "--csr", p(csr)])
            .chain(["--out", p(&elsewhere)])
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let (code, _, err) = sealstream(by_request(&other.join("agent.csr"))).await;
    assert_ne!(code, 0);
    assert!(err.contains("does not match"), "{err}");
    let mut no_check = by_request(&csr);
    no_check.truncate(no_check.len() - 4);
    no_check.extend(["--out".into(), p(&elsewhere).into()]);
    let (code, _, err) = sealstream(no_check).await;
    assert_ne!(code, 0);
    assert!(err.contains("give --csr"), "{err}");
    let (code, _, err) = sealstream(by_request(&csr)).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already registered"), "{err}");
    let far = AgentConfig::load(&elsewhere).unwrap();
    assert_eq!(far.key, Path::new("/etc/sealstream/agent/agent.key"));

    // Registered with its serial; no node has seen it yet.
    let (list, _) = ok(&["agents", "list", "--config", &serve]).await;
    let (_, certs) = listed(&list, "ts-ca-01");
    assert!(certs[0].contains(&format!("serial {serial} ")), "{list}");
    assert!(certs[0].contains("first seen never"), "{list}");
    let mut cfg = AgentConfig::load(&out).unwrap();
    assert_eq!(cfg.addresses(), [env.server().quic_addr.to_string()]);
    assert_eq!(cfg.server_pins, [env.server().pin.to_string()]);
    assert_eq!(cfg.spool_dir, Some(ep.join("spool")));
    cfg.reconnect_ms = 100;
    let report = run_agent(cfg, spec(1, 1.0)).await;
    assert!(report.chunks_acked > 0, "{report:?}");
    assert_eq!(report.unacked, 0, "{report:?}");

    // An agent of the offline CA never registered: its agent.toml written by hand (the one
    // above with its own files). The node records its certificate when it admits it.
    let hand = w.join("ts-ca-02");
    ok(&["agents", "csr", "ts-ca-02", "--dir", p(&hand)]).await;
    let hand_csr = hand.join("agent.csr");
    ca_sign(&ca, &hand_csr, &hand.join("agent.crt")).await;
    let hand_serial =
        sealstream::crypto::cert::serial_hex(&cert_der(&hand.join("agent.crt"))).unwrap();
    let (list, _) = ok(&["agents", "list", "--config", &serve]).await;
    assert!(
        !list.contains("ts-ca-02"),
        "not known before it connects:\n{list}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::write(hand.join("agent.toml"), text.replace(p(&ep), p(&hand))).unwrap();
    let mut cfg = AgentConfig::load(&hand.join("agent.toml")).unwrap();
    assert_eq!(cfg.cert, hand.join("agent.crt"));
    cfg.reconnect_ms = 100;
    let report = run_agent(cfg, spec(1, 1.0)).await;
    assert!(report.chunks_acked > 0, "{report:?}");

    let (list, _) = ok(&["agents", "list", "--config", &serve]).await;
    for (agent, serial, crt) in [
        ("ts-ca-01", &serial, crt.clone()),
        ("ts-ca-02", &hand_serial, hand.join("agent.crt")),
    ] {
        let (row, certs) = listed(&list, agent);
        assert_eq!(row[1], "enabled", "{list}");
        assert_eq!(row[2], expiry_date(&crt), "{list}");
        assert_eq!(certs.len(), 1, "{list}");
        let c = &certs[0];
        assert!(c.contains(&format!("serial {serial} ")), "{list}");
        assert!(
            c.contains(&format!("valid until {}", expiry_date(&crt))),
            "{list}"
        );
        assert!(
            c.contains("first seen 20") && c.contains("last seen 20"),
            "{list}"
        );
        assert!(c.ends_with(": current"), "{list}");
    }

    for (agent, serial, dir) in [
        ("ts-ca-02", &hand_serial, &hand),
        ("ts-ca-01", &serial, &ep),
    ] {
        assert_eq!(accepted(&env, agent, dir).await, Ok(()));
        let (_, err) = ok(&[
            "agents",
            "revoke",
            agent,
            "--config",
            &serve,
            "--reason",
            "laptop lost",
        ])
        .await;
        assert!(err.contains("1 certificate(s) revoked"), "{err}");
        assert!(err.contains(&format!("serial {serial} ")), "{err}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let refused = accepted(&env, agent, dir).await.unwrap_err();
        assert!(refused.contains("revoked (laptop lost)"), "{refused}");
        let (list, _) = ok(&["agents", "list", "--config", &serve]).await;
        let (row, certs) = listed(&list, agent);
        assert_eq!(row[1], "revoked", "{list}");
        assert!(
            certs[0].contains("revoked 20") && certs[0].contains("(laptop lost)"),
            "{list}"
        );
    }
    // A revoked certificate gets no new agent.toml.
    std::fs::remove_file(&out).unwrap();
    let (code, _, err) = sealstream(config(&crt, &ep.join("agent.key"))).await;
    assert_ne!(code, 0);
    assert!(err.contains("was revoked"), "{err}");
    assert!(!out.exists());
    env.stop().await;
}

crate::common::on_both_backends!(
    offline_ca_agents_are_configured_listed_and_revoked,
    sqlite: offline_ca_agents_are_configured_listed_and_revoked_sqlite,
    postgres: offline_ca_agents_are_configured_listed_and_revoked_postgres,
);

/// Recording a sighting is idempotent and cheap: the row is written once, its last sighting
/// again only when the stored one is a minute old.
async fn sightings_are_written_at_most_once_a_minute(backend: Backend) {
    let env = Env::start(backend, false).await;
    let md = &env.server().metadata;
    let t0 = sealstream::metadata::now_us();
    let seen = |at: i64| Admitted {
        fingerprint: format!("sha256:{}", "ab".repeat(32)),
        agent: "ts-seen".into(),
        serial: "0a1b".into(),
        not_before_us: t0 - 1,
        not_after_us: t0 + 90 * 86_400_000_000,
        seen_us: at,
    };
    let stored = || async {
        let rows = md.certificates_seen().await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        (rows[0].first_seen_us, rows[0].last_seen_us)
    };
    assert!(md.record_admitted(seen(t0)).await.unwrap(), "new");
    assert_eq!(stored().await, (Some(t0), Some(t0)));
    assert!(!md.record_admitted(seen(t0 + 30_000_000)).await.unwrap());
    assert_eq!(stored().await, (Some(t0), Some(t0)), "fresh: not written");
    assert!(!md.record_admitted(seen(t0 + 61_000_000)).await.unwrap());
    assert_eq!(stored().await, (Some(t0), Some(t0 + 61_000_000)));
    // An agent revoked since the node read its rules: its unregistered certificate gets no
    // row (the node's next refresh refuses it).
    md.change_access(
        sealstream::metadata::AccessChange::Revoke {
            agent: "ts-gone".into(),
            reason: "decommissioned".into(),
        },
        "test",
    )
    .await
    .unwrap();
    let gone = Admitted {
        fingerprint: format!("sha256:{}", "cd".repeat(32)),
        agent: "ts-gone".into(),
        ..seen(t0)
    };
    assert!(!md.record_admitted(gone).await.unwrap());
    let rows = md.access_rows().await.unwrap();
    assert_eq!(rows.credentials.len(), 1, "{rows:?}");
    assert_eq!(rows.credentials[0].agent, "ts-seen");
    assert_eq!(rows.credentials[0].revoked_us, None);
    env.stop().await;
}

crate::common::on_both_backends!(
    sightings_are_written_at_most_once_a_minute,
    sqlite: sightings_are_written_at_most_once_a_minute_sqlite,
    postgres: sightings_are_written_at_most_once_a_minute_postgres,
);
