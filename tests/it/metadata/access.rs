//! Agent access: certificates issued, revoked, superseded; accounts disabled and enabled;
//! certificates admitted by a node, their serials and sightings.

use sealstream::metadata::{Admitted, CertSeen, SEEN_REFRESH_US};

use super::*;

conformance!(
    access_changes_read_back,
    sqlite: access_changes_read_back_sqlite,
    postgres: access_changes_read_back_postgres,
);
conformance!(
    admitted_certificates_note_serials_and_sightings,
    sqlite: admitted_certificates_note_serials_and_sightings_sqlite,
    postgres: admitted_certificates_note_serials_and_sightings_postgres,
);

fn fingerprint(n: u8) -> String {
    format!("sha256:{}", hex::encode([n; 32]))
}

fn credential(n: u8, agent_name: &str) -> Credential {
    Credential {
        fingerprint: fingerprint(n),
        agent: agent_name.into(),
        issued_us: 1_000 * i64::from(n),
        not_after_us: 9_000,
        revoked_us: None,
        revoked_reason: None,
    }
}

/// Access rows sorted (neither backend promises an order), their times checked to be in
/// `[t0, t1]` and replaced by 1.
fn settle_access(rows: AccessRows, t0: i64, t1: i64) -> (Vec<Credential>, Vec<AgentAccount>) {
    let within = |t: i64| {
        assert!((t0..=t1).contains(&t), "{t} not within [{t0}, {t1}]");
        1
    };
    let mut creds = rows.credentials;
    creds.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    for c in &mut creds {
        c.revoked_us = c.revoked_us.map(within);
    }
    let mut accounts = rows.accounts;
    accounts.sort_by(|a, b| a.agent.cmp(&b.agent));
    for a in &mut accounts {
        a.disabled_us = a.disabled_us.map(within);
    }
    (creds, accounts)
}

/// Issue (superseding earlier certificates), revoke, disable and enable read back the same:
/// outcomes, the rows, and each change's audit row; a certificate issued twice is refused and
/// changes nothing.
async fn access_changes_read_back(m: &Metadata) {
    let t0 = now_us();
    let change = |c: AccessChange| async move { m.change_access(c, "ops").await };
    let outcome = |revoked: &[u8], changed: bool| AccessOutcome {
        revoked: revoked.iter().map(|n| fingerprint(*n)).collect(),
        changed,
    };
    let revoke = |agent: &str| AccessChange::Revoke {
        agent: agent.into(),
        reason: "laptop lost".into(),
    };
    let disable = |agent: &str, disabled: bool| AccessChange::Disable {
        agent: agent.into(),
        disabled,
    };

    assert_eq!(
        change(AccessChange::Issue(credential(1, "ts-01")))
            .await
            .unwrap(),
        outcome(&[], true)
    );
    assert_eq!(
        change(AccessChange::Issue(credential(2, "ts-01")))
            .await
            .unwrap(),
        outcome(&[1], true),
        "the earlier certificate is superseded"
    );
    assert_eq!(
        change(AccessChange::Issue(credential(3, "ts-02")))
            .await
            .unwrap(),
        outcome(&[], true)
    );
    let snapshot = m.access_rows().await.unwrap();
    let audit_rows = count(m, Table::AuditLog).await;
    assert!(
        change(AccessChange::Issue(credential(1, "ts-01")))
            .await
            .is_err(),
        "a certificate issued twice is refused"
    );
    assert_eq!(
        settle_access(m.access_rows().await.unwrap(), t0, now_us()),
        settle_access(snapshot, t0, now_us()),
        "the refused issue changed nothing"
    );
    assert_eq!(count(m, Table::AuditLog).await, audit_rows, "nor audited");

    assert_eq!(change(revoke("ts-01")).await.unwrap(), outcome(&[2], true));
    assert_eq!(change(revoke("ts-01")).await.unwrap(), outcome(&[], true));
    assert_eq!(
        change(disable("ts-02", true)).await.unwrap(),
        outcome(&[], true)
    );
    let disabled_at = |rows: AccessRows| {
        rows.accounts
            .into_iter()
            .find(|a| a.agent == "ts-02")
            .and_then(|a| a.disabled_us)
    };
    let first = disabled_at(m.access_rows().await.unwrap());
    assert!(first.is_some());
    assert_eq!(
        change(disable("ts-02", true)).await.unwrap(),
        outcome(&[], false)
    );
    assert_eq!(
        disabled_at(m.access_rows().await.unwrap()),
        first,
        "disabled again: the first time is kept"
    );
    assert_eq!(
        change(disable("ts-03", true)).await.unwrap(),
        outcome(&[], true),
        "an agent never enrolled can be disabled"
    );
    assert_eq!(
        change(disable("ts-02", false)).await.unwrap(),
        outcome(&[], true)
    );
    assert_eq!(
        change(disable("ts-02", false)).await.unwrap(),
        outcome(&[], false)
    );
    assert_eq!(
        change(disable("ts-04", false)).await.unwrap(),
        outcome(&[], false)
    );
    let t1 = now_us();

    let revoked = |n: u8, agent: &str, reason: &str| Credential {
        revoked_us: Some(1),
        revoked_reason: Some(reason.into()),
        ..credential(n, agent)
    };
    let account = |agent: &str, disabled: bool, registered_only: bool| AgentAccount {
        agent: agent.into(),
        disabled_us: disabled.then_some(1),
        registered_only,
    };
    assert_eq!(
        settle_access(m.access_rows().await.unwrap(), t0, t1),
        (
            vec![
                revoked(1, "ts-01", "superseded by a later certificate"),
                revoked(2, "ts-01", "laptop lost"),
                credential(3, "ts-02"),
            ],
            vec![
                account("ts-01", false, true),
                account("ts-02", false, true),
                account("ts-03", true, false),
                account("ts-04", false, false),
            ]
        )
    );

    let (f1, f2, f3) = (fingerprint(1), fingerprint(2), fingerprint(3));
    let mut audited = m
        .audit_page(AuditQuery {
            actor: Some("ops".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    audited.reverse();
    let audited: Vec<(String, String)> =
        audited.into_iter().map(|r| (r.action, r.detail)).collect();
    let row = |action: &str, detail: String| (action.to_owned(), detail);
    assert_eq!(
        audited,
        vec![
            row(
                "agent_certificate_issued",
                format!("agent=ts-01 certificate={f1} not_after_us=9000 superseded=[]")
            ),
            row(
                "agent_certificate_issued",
                format!("agent=ts-01 certificate={f2} not_after_us=9000 superseded=[{f1}]")
            ),
            row(
                "agent_certificate_issued",
                format!("agent=ts-02 certificate={f3} not_after_us=9000 superseded=[]")
            ),
            row(
                "agent_revoked",
                format!("agent=ts-01 reason=\"laptop lost\" revoked=[{f2}]")
            ),
            row(
                "agent_revoked",
                "agent=ts-01 reason=\"laptop lost\" revoked=[]".into()
            ),
            row(
                "agent_disabled",
                "agent=ts-02 disabled=true changed=true".into()
            ),
            row(
                "agent_disabled",
                "agent=ts-02 disabled=true changed=false".into()
            ),
            row(
                "agent_disabled",
                "agent=ts-03 disabled=true changed=true".into()
            ),
            row(
                "agent_enabled",
                "agent=ts-02 disabled=false changed=true".into()
            ),
            row(
                "agent_enabled",
                "agent=ts-02 disabled=false changed=false".into()
            ),
            row(
                "agent_enabled",
                "agent=ts-04 disabled=false changed=false".into()
            ),
        ]
    );
}

fn admitted(n: u8, agent_name: &str, seen_us: i64) -> Admitted {
    Admitted {
        fingerprint: fingerprint(n),
        agent: agent_name.into(),
        serial: format!("{n:02x}{n:02x}"),
        not_before_us: 100 * i64::from(n),
        not_after_us: 9_000,
        seen_us,
    }
}

fn seen(n: u8, serial: Option<&str>, first: Option<i64>, last: Option<i64>) -> CertSeen {
    CertSeen {
        fingerprint: fingerprint(n),
        serial: serial.map(str::to_owned),
        first_seen_us: first,
        last_seen_us: last,
    }
}

async fn certificates(m: &Metadata) -> Vec<CertSeen> {
    let mut v = m.certificates_seen().await.unwrap();
    v.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    v
}

/// A certificate admitted for the first time gets its row (new to the registry), serial and
/// sightings; admitted again within `SEEN_REFRESH_US` nothing is written, later its last
/// sighting moves. An issued certificate gets a serial noted once, and its sightings at its
/// first admission. An agent that accepts registered certificates only gets no row for another.
async fn admitted_certificates_note_serials_and_sightings(m: &Metadata) {
    let t = 1_000_000_000;
    assert!(m.record_admitted(admitted(1, "ts-01", t)).await.unwrap());
    let row = |n: u8| {
        let want = fingerprint(n);
        async move {
            m.access_rows()
                .await
                .unwrap()
                .credentials
                .into_iter()
                .find(|c| c.fingerprint == want)
        }
    };
    assert_eq!(
        row(1).await,
        Some(Credential {
            issued_us: 100,
            ..credential(1, "ts-01")
        }),
        "an offline CA's certificate enters the registry as admitted"
    );
    assert_eq!(
        certificates(m).await,
        vec![seen(1, Some("0101"), Some(t), Some(t))]
    );
    let soon = t + SEEN_REFRESH_US - 1;
    assert!(!m.record_admitted(admitted(1, "ts-01", soon)).await.unwrap());
    assert_eq!(
        certificates(m).await,
        vec![seen(1, Some("0101"), Some(t), Some(t))],
        "a fresh sighting is not written again"
    );
    let later = t + SEEN_REFRESH_US + 1;
    assert!(
        !m.record_admitted(admitted(1, "ts-01", later))
            .await
            .unwrap()
    );
    assert_eq!(
        certificates(m).await,
        vec![seen(1, Some("0101"), Some(t), Some(later))]
    );

    // Issued here: no serial or sightings until noted or admitted.
    m.change_access(AccessChange::Issue(credential(2, "ts-02")), "ops")
        .await
        .unwrap();
    assert_eq!(
        certificates(m).await[1..],
        [seen(2, None, None, None)],
        "issued, never seen"
    );
    m.note_serial(&fingerprint(2), "beef").await.unwrap();
    m.note_serial(&fingerprint(2), "dead").await.unwrap();
    m.note_serial(&fingerprint(9), "0909").await.unwrap();
    assert_eq!(
        certificates(m).await[1..],
        [seen(2, Some("beef"), None, None)],
        "the first serial noted stays; an unknown certificate gets no row"
    );
    assert!(!m.record_admitted(admitted(2, "ts-02", t)).await.unwrap());
    assert_eq!(
        certificates(m).await[1..],
        [seen(2, Some("beef"), Some(t), Some(t))]
    );

    // Registered certificates only (`agents config`): another certificate gets no row.
    m.change_access(AccessChange::Register(credential(3, "ts-03")), "ops")
        .await
        .unwrap();
    assert!(!m.record_admitted(admitted(4, "ts-03", t)).await.unwrap());
    assert_eq!(row(4).await, None);
    assert_eq!(
        certificates(m).await.len(),
        3,
        "certificates 1, 2 and 3 only"
    );
}
