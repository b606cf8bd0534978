//! Agent access: certificates issued, revoked, superseded; accounts disabled and enabled.

use super::*;

conformance!(
    access_changes_read_back,
    sqlite: access_changes_read_back_sqlite,
    postgres: access_changes_read_back_postgres,
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
