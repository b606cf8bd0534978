//! Console users, grants and logins.

use super::*;

conformance!(
    console_users_grants_and_logins_round_trip,
    sqlite: console_users_grants_and_logins_round_trip_sqlite,
    postgres: console_users_grants_and_logins_round_trip_postgres,
);

fn user(name: &str, role: Role, agents: &[&str], created_us: i64) -> ConsoleUser {
    ConsoleUser {
        name: name.into(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        agents: agents.iter().map(|a| a.to_string()).collect(),
        created_us,
        disabled_us: None,
    }
}

fn login(token: u8, user: &str, at: i64) -> Login {
    Login {
        token_sha256: [token; 32],
        user: user.into(),
        csrf: format!("csrf-{token}"),
        address: format!("10.0.0.{token}"),
        created_us: at,
        last_seen_us: at,
    }
}

/// Accounts round trip (a name taken is refused with `new_only`; an update keeps the creation
/// time; disabling ends the user's logins); a reviewer's grants, read back, select the same
/// sessions; logins are kept while used, end when idle (and sweep every idle one), on logout.
async fn console_users_grants_and_logins_round_trip(m: &Metadata) {
    assert_eq!(m.console_users().await.unwrap(), vec![]);
    assert_eq!(m.console_user("ann").await.unwrap(), None);
    let ann = user("ann", Role::Admin, &[], 1_000);
    let bob = user("bob", Role::Reviewer, &["ts-*", "vdi_1", "eu-*-7"], 2_000);
    assert!(
        m.put_console_user(ann.clone(), true, "cli", "user_add")
            .await
            .unwrap()
    );
    assert!(
        !m.put_console_user(
            user("ann", Role::Reviewer, &["x"], 3),
            true,
            "cli",
            "user_add"
        )
        .await
        .unwrap(),
        "a name taken"
    );
    assert!(
        m.put_console_user(bob.clone(), true, "cli", "user_add")
            .await
            .unwrap()
    );
    assert_eq!(m.console_user("bob").await.unwrap(), Some(bob.clone()));
    assert_eq!(
        m.console_users().await.unwrap(),
        vec![ann.clone(), bob.clone()]
    );

    // The grants as read back choose the sessions a reviewer sees.
    let granted = m.console_user("bob").await.unwrap().unwrap().agents;
    let chunks = ["ts-01", "vdi_1", "vdiX1", "eu-west-7", "eu-7", "TS-01"]
        .iter()
        .enumerate()
        .map(|(i, a)| ch(a, S1, 0, 0, 100 * (i as i64 + 1)))
        .collect();
    m.commit_segment(segment(1, chunks)).await.unwrap();
    let seen: Vec<String> = m
        .sessions(SessionQuery {
            allowed: Some(granted.clone()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.agent)
        .collect();
    assert_eq!(seen, vec!["eu-west-7", "vdi_1", "ts-01"]);
    let agents: Vec<String> = m
        .recorded_agents(Some(granted))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.agent)
        .collect();
    assert_eq!(agents, vec!["eu-west-7", "ts-01", "vdi_1"]);

    // Logins.
    for l in [login(1, "bob", 10_000), login(2, "ann", 10_000)] {
        m.insert_login(l).await.unwrap();
    }
    assert!(
        m.insert_login(login(1, "bob", 10_000)).await.is_err(),
        "a token is one login"
    );
    assert_eq!(
        m.touch_login([1; 32], 10_500, 1_000).await.unwrap(),
        Some(Login {
            last_seen_us: 10_500,
            ..login(1, "bob", 10_000)
        })
    );
    assert_eq!(
        m.touch_login([1; 32], 11_400, 1_000)
            .await
            .unwrap()
            .map(|l| l.last_seen_us),
        Some(11_400),
        "used within the idle time"
    );
    assert_eq!(
        m.touch_login([1; 32], 20_000, 1_000).await.unwrap(),
        None,
        "idle too long"
    );
    assert_eq!(
        count(m, Table::ConsoleLogin).await,
        0,
        "every idle login is swept"
    );
    assert_eq!(m.touch_login([2; 32], 10_600, 1_000).await.unwrap(), None);

    m.insert_login(login(3, "bob", 30_000)).await.unwrap();
    m.insert_login(login(4, "ann", 30_000)).await.unwrap();
    let disabled = ConsoleUser {
        role: Role::Admin,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$new".into(),
        agents: vec!["*".into()],
        created_us: 9_999,
        disabled_us: Some(31_000),
        ..bob.clone()
    };
    assert!(
        m.put_console_user(disabled.clone(), false, "cli", "user_disable")
            .await
            .unwrap()
    );
    assert_eq!(
        m.console_user("bob").await.unwrap(),
        Some(ConsoleUser {
            created_us: 2_000,
            ..disabled
        }),
        "replaced, the creation time kept"
    );
    assert_eq!(
        m.touch_login([3; 32], 30_001, 1_000).await.unwrap(),
        None,
        "a disabled user's logins end"
    );
    assert!(
        m.touch_login([4; 32], 30_001, 1_000)
            .await
            .unwrap()
            .is_some()
    );
    m.delete_login([4; 32]).await.unwrap();
    m.delete_login([5; 32]).await.unwrap();
    assert_eq!(m.touch_login([4; 32], 30_002, 1_000).await.unwrap(), None);
    assert_eq!(count(m, Table::ConsoleLogin).await, 0);

    let mut audited = m
        .audit_page(AuditQuery {
            actor: Some("cli".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    audited.reverse();
    assert_eq!(
        audited
            .into_iter()
            .map(|r| (r.action, r.detail))
            .collect::<Vec<_>>(),
        vec![
            (
                "user_add".to_owned(),
                "user=ann role=admin agents=[] disabled=false".to_owned()
            ),
            (
                "user_add".to_owned(),
                "user=bob role=reviewer agents=[ts-*,vdi_1,eu-*-7] disabled=false".to_owned()
            ),
            (
                "user_disable".to_owned(),
                "user=bob role=admin agents=[*] disabled=true".to_owned()
            ),
        ],
        "one row per change made, none for the name refused"
    );
}
