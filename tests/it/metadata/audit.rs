//! The audit log: the chain, its pages and times, and the KEK rows the database audits.

use super::*;

conformance!(
    audit_chain_verifies_and_shows_tampering,
    sqlite: audit_chain_verifies_and_shows_tampering_sqlite,
    postgres: audit_chain_verifies_and_shows_tampering_postgres,
);
conformance!(
    audit_pages_filter_and_continue,
    sqlite: audit_pages_filter_and_continue_sqlite,
    postgres: audit_pages_filter_and_continue_postgres,
);
conformance!(
    audit_times_show_the_chained_microsecond,
    sqlite: audit_times_show_the_chained_microsecond_sqlite,
    postgres: audit_times_show_the_chained_microsecond_postgres,
);
conformance!(
    kek_changes_are_audited,
    sqlite: kek_changes_are_audited_sqlite,
    postgres: kek_changes_are_audited_postgres,
);
conformance!(
    kek_audit_details_spell_booleans_alike,
    sqlite: kek_audit_details_spell_booleans_alike_sqlite,
    postgres: kek_audit_details_spell_booleans_alike_postgres,
);
conformance!(
    kek_audit_rows_are_hashed_when_written,
    sqlite: kek_audit_rows_are_hashed_when_written_sqlite,
    postgres: kek_audit_rows_are_hashed_when_written_postgres,
);

/// What a chain row says, without its hashes and time.
fn said(r: &sealstream::audit::ChainRow) -> (i64, Option<i64>, &str, &str, &str, Option<&str>) {
    (
        r.id,
        r.chain_seq,
        &r.actor,
        &r.action,
        &r.detail,
        r.address.as_deref(),
    )
}

/// Rows written every way the API writes them chain in order and verify; the head is the last
/// row's; and each kind of tampering with the rows read back (an edit, a deleted row, a changed
/// time or address, two rows swapped) is found, in the same words on both.
async fn audit_chain_verifies_and_shows_tampering(m: &Metadata) {
    assert_eq!(m.audit_head().await.unwrap(), None);
    let empty = sealstream::audit::verify_chain(&m.audit_chain_rows().await.unwrap());
    assert_eq!((empty.rows, empty.head, empty.problems.len()), (0, None, 0));

    let t0 = now_us();
    m.audit("ann", "login", "result=ok").await.unwrap();
    m.audit_from("ann", "view_session", "agent=ts-01", "10.0.0.1")
        .await
        .unwrap();
    let bob = ConsoleUser {
        name: "bob".into(),
        role: Role::Reviewer,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        agents: vec!["ts-*".into()],
        created_us: 5,
        disabled_us: None,
    };
    assert!(
        m.put_console_user(bob, true, "ann", "user_add")
            .await
            .unwrap()
    );
    m.change_access(
        AccessChange::Disable {
            agent: "ts-09".into(),
            disabled: true,
        },
        "ops",
    )
    .await
    .unwrap();
    m.audit("ann", "export", "agent=ts-01 session=x")
        .await
        .unwrap();
    let t1 = now_us();

    let rows = m.audit_chain_rows().await.unwrap();
    assert_eq!(
        rows.iter().map(said).collect::<Vec<_>>(),
        vec![
            (1, Some(1), "ann", "login", "result=ok", None),
            (
                2,
                Some(2),
                "ann",
                "view_session",
                "agent=ts-01",
                Some("10.0.0.1")
            ),
            (
                3,
                Some(3),
                "ann",
                "user_add",
                "user=bob role=reviewer agents=[ts-*] disabled=false",
                None
            ),
            (
                4,
                Some(4),
                "ops",
                "agent_disabled",
                "agent=ts-09 disabled=true changed=true",
                None
            ),
            (5, Some(5), "ann", "export", "agent=ts-01 session=x", None),
        ]
    );
    let times: Vec<i64> = rows.iter().map(|r| r.at_us.expect("timed")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // SQLite's clock has milliseconds.
    assert!(
        times.iter().all(|t| (t0 - 1_000..=t1).contains(t)),
        "{times:?} not within [{t0}, {t1}]"
    );
    assert_eq!(rows[0].prev_hash.as_deref(), Some(&[0u8; 32][..]));
    for w in rows.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].row_hash, "row {} follows", w[1].id);
    }
    let report = sealstream::audit::verify_chain(&rows);
    let last = rows[4].row_hash.clone().expect("hashed");
    assert_eq!(
        (report.rows, report.problems.clone(), report.unhashed_tail),
        (5, vec![], 0)
    );
    assert_eq!(report.head, Some((5, hex::encode(&last))));
    assert_eq!(m.audit_head().await.unwrap(), Some((5, last)));

    let tampered = |f: &dyn Fn(&mut Vec<sealstream::audit::ChainRow>)| {
        let mut copy = rows.clone();
        f(&mut copy);
        sealstream::audit::verify_chain(&copy).problems
    };
    let edited = |seq: i64, what: &str| {
        format!("chain row {seq} ({what}) was edited: its hash does not match its contents")
    };
    let follows = |seq: i64, id: i64| {
        format!(
            "chain row {seq} (id {id}) does not follow the row before it: a row was inserted, removed or reordered here"
        )
    };
    assert_eq!(
        tampered(&|r| r[1].detail = "agent=ts-02".into()),
        vec![edited(2, "id 2, view_session \"ann\"")]
    );
    assert_eq!(
        tampered(&|r| {
            r.remove(2);
        }),
        vec!["chain row 3 is missing: deleted".to_owned()]
    );
    assert_eq!(
        tampered(&|r| *r[3].at_us.as_mut().unwrap() += 1),
        vec![edited(4, "id 4, agent_disabled \"ops\"")]
    );
    assert_eq!(
        tampered(&|r| r[0].address = Some("10.9.9.9".into())),
        vec![edited(1, "id 1, login \"ann\"")]
    );
    assert_eq!(
        tampered(&|r| {
            r[1].chain_seq = Some(3);
            r[2].chain_seq = Some(2);
        }),
        vec![
            follows(2, 3),
            edited(2, "id 3, user_add \"ann\""),
            follows(3, 2),
            edited(3, "id 2, view_session \"ann\""),
            follows(4, 4),
        ]
    );
}

/// Audit pages: newest first, older pages below an id, newer pages above one (still newest
/// first), filters by actor, action and time, all alike.
async fn audit_pages_filter_and_continue(m: &Metadata) {
    for i in 0..6i64 {
        let actor = if i % 2 == 0 { "ann" } else { "bob" };
        let action = if i < 3 { "login" } else { "view_session" };
        m.audit_from(actor, action, &format!("n={i}"), &format!("10.0.0.{i}"))
            .await
            .unwrap();
        // Distinct times even on SQLite's millisecond clock.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    m.audit("ops", "export", "n=6").await.unwrap();

    let full = |id: i64| {
        let i = id - 1;
        let (actor, action, address) = match id {
            7 => ("ops", "export", None),
            _ => (
                if i % 2 == 0 { "ann" } else { "bob" },
                if i < 3 { "login" } else { "view_session" },
                Some(format!("10.0.0.{i}")),
            ),
        };
        (
            id,
            actor.to_owned(),
            action.to_owned(),
            format!("n={i}"),
            address,
        )
    };
    type Seen = (i64, String, String, String, Option<String>);
    let seen = |v: Vec<AuditRow>| -> Vec<Seen> {
        v.into_iter()
            .map(|r| (r.id, r.actor, r.action, r.detail, r.address))
            .collect()
    };
    let ids = |v: Vec<AuditRow>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        seen(m.audit_rows(None, 3).await.unwrap()),
        [7, 6, 5].map(full).to_vec()
    );
    assert_eq!(
        seen(m.audit_rows(Some(5), 10).await.unwrap()),
        [4, 3, 2, 1].map(full).to_vec()
    );
    let page = |q: AuditQuery| async move { ids(m.audit_page(q).await.unwrap()) };
    let q = AuditQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        page(AuditQuery {
            after: Some(2),
            limit: 2,
            ..q.clone()
        })
        .await,
        vec![4, 3],
        "the newer page right above id 2"
    );
    assert_eq!(
        page(AuditQuery {
            before: Some(6),
            after: Some(2),
            ..q.clone()
        })
        .await,
        vec![5, 4, 3],
        "between two ids"
    );
    assert_eq!(
        page(AuditQuery {
            actor: Some("ann".into()),
            ..q.clone()
        })
        .await,
        vec![5, 3, 1]
    );
    assert_eq!(
        page(AuditQuery {
            action: Some("login".into()),
            ..q.clone()
        })
        .await,
        vec![3, 2, 1]
    );
    assert_eq!(
        page(AuditQuery {
            actor: Some("bob".into()),
            action: Some("view_session".into()),
            ..q.clone()
        })
        .await,
        vec![6, 4]
    );
    assert_eq!(
        page(AuditQuery {
            actor: Some("nobody".into()),
            ..q.clone()
        })
        .await,
        Vec::<i64>::new()
    );
    let at: HashMap<i64, i64> = m
        .audit_chain_rows()
        .await
        .unwrap()
        .iter()
        .map(|r| (r.id, r.at_us.unwrap()))
        .collect();
    assert_eq!(
        page(AuditQuery {
            since_us: Some(at[&3]),
            until_us: Some(at[&5]),
            ..q.clone()
        })
        .await,
        vec![5, 4, 3],
        "both ends included"
    );
    assert_eq!(
        page(AuditQuery {
            since_us: Some(at[&6]),
            action: Some("view_session".into()),
            ..q.clone()
        })
        .await,
        vec![6]
    );
}

/// Each audit row's time as the console shows it is the chained time, to the microsecond.
async fn audit_times_show_the_chained_microsecond(m: &Metadata) {
    for i in 0..20 {
        m.audit("ann", "login", &format!("n={i}")).await.unwrap();
    }
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let want: Vec<(i64, String)> = m
        .audit_chain_rows()
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|r| {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(r.at_us.unwrap()) * 1000,
            )
            .unwrap();
            (r.id, at.format(&format).unwrap())
        })
        .collect();
    let shown: Vec<(i64, String)> = m
        .audit_rows(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.at))
        .collect();
    assert_eq!(shown, want);
}

/// The KEK writes a backend makes on its own: registering, a fingerprint set, a retirement.
async fn kek_writes(m: &Metadata) {
    m.insert_kek(true, true, "/k/a.crt", "/k/a.pem")
        .await
        .unwrap();
    m.insert_kek(false, false, "/k/b.crt", "/k/b.pem")
        .await
        .unwrap();
    let fa = kek_id(0xaa).to_string();
    m.set_kek_fingerprint(1, &fa).await.unwrap();
    // Neither changes a row: no audit row.
    m.set_kek_fingerprint(1, &fa).await.unwrap();
    m.mark_kek_retired(1).await.unwrap();
    m.mark_kek_retired(2).await.unwrap();
    m.mark_kek_retired(2).await.unwrap();
}

/// Every KEK change is audited by the database (the how-to's INSERT included), and the rows
/// join the chain. The trigger's actor is `database` on SQLite and `database:<role>` on
/// PostgreSQL by design; how the `active=` field is spelled is the next check's.
async fn kek_changes_are_audited(m: &Metadata) {
    kek_writes(m).await;
    let rows = m.audit_chain_rows().await.unwrap();
    let fa = kek_id(0xaa).to_string();
    let actor = match m.kind() {
        "postgresql" => "database:postgres",
        _ => "database",
    };
    let without_active = |detail: &str| {
        detail
            .split(' ')
            .filter(|w| !w.starts_with("active="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        rows.iter()
            .map(|r| (
                r.actor.as_str(),
                r.action.as_str(),
                without_active(&r.detail)
            ))
            .collect::<Vec<_>>(),
        vec![
            (
                actor,
                "kek_insert",
                "id=1 fingerprint=- pub_datafile=/k/a.crt priv_datafile=/k/a.pem".to_owned()
            ),
            (
                actor,
                "kek_insert",
                "id=2 fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem".to_owned()
            ),
            (
                actor,
                "kek_update",
                format!("id=1 fingerprint={fa} pub_datafile=/k/a.crt priv_datafile=/k/a.pem")
            ),
            (
                actor,
                "kek_update",
                "id=2 fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem".to_owned()
            ),
        ]
    );
    // Reading the head chains whatever is pending (SQLite hashes rows outside SQL).
    let head = m.audit_head().await.unwrap();
    let rows = m.audit_chain_rows().await.unwrap();
    let report = sealstream::audit::verify_chain(&rows);
    assert_eq!(
        (report.problems, report.unhashed_tail, head.map(|h| h.0)),
        (vec![], 0, Some(4))
    );
}

/// The KEK trigger's details are the same text on both backends.
async fn kek_audit_details_spell_booleans_alike(m: &Metadata) {
    kek_writes(m).await;
    let fa = kek_id(0xaa).to_string();
    let details: Vec<String> = m
        .audit_chain_rows()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.detail)
        .collect();
    assert_eq!(
        details,
        vec![
            "id=1 active=true fingerprint=- pub_datafile=/k/a.crt priv_datafile=/k/a.pem"
                .to_owned(),
            "id=2 active=false fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem"
                .to_owned(),
            format!(
                "id=1 active=true fingerprint={fa} pub_datafile=/k/a.crt priv_datafile=/k/a.pem"
            ),
            "id=2 active=false fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem"
                .to_owned(),
        ]
    );
}

/// An audit row the API's own KEK calls cause is in the hashed chain as soon as the call
/// returns, as every other audit write's is.
async fn kek_audit_rows_are_hashed_when_written(m: &Metadata) {
    kek_writes(m).await;
    let report = sealstream::audit::verify_chain(&m.audit_chain_rows().await.unwrap());
    assert_eq!(
        (report.rows, report.problems, report.unhashed_tail),
        (4, vec![], 0)
    );
}
