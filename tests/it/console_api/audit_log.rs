use super::*;

// ---- Issue 23, findings 5, 7 and 8: what the audit log says, equal login work, bad counts.

/// The audit rows a reviewer's access leaves, read as the admin's view reads them: a session of
/// an agent outside the grant asked for under a granted agent's path is a refusal naming the
/// agent it belongs to (session, index and ciphertext alike), details are plain `key=value`
/// text, and the admin pages through the log and filters it on the server.
async fn the_audit_log_names_what_was_asked_and_pages_by_filter(backend: Backend) {
    let (env, _) = recorded(backend).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let all = ann.get("/api/sessions").await.json();
    let of = |agent: &str| {
        all["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["agent"] == agent)
            .unwrap()["session"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ts, vdi) = (of("ts-01"), of("vdi-01"));
    let ts_hex = hex::encode("ts-01");

    // vdi-01's session under ts-01's path (granted): 404, and a refusal naming vdi-01.
    let under_ts = format!("/api/agents/{ts_hex}/sessions/{vdi}");
    let paths = [
        under_ts.clone(),
        format!("{under_ts}/index"),
        format!("{under_ts}/streams/0/chunks?from_seq=0&count=4"),
    ];
    for path in &paths {
        let r = rita.get(path).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }
    // A session that exists nowhere, under a granted agent: 404 and audited too.
    let nowhere = "00112233445566778899aabbccddeeff";
    let r = rita
        .get(&format!(
            "/api/agents/{ts_hex}/sessions/{nowhere}/streams/0/chunks?from_seq=0&count=1"
        ))
        .await;
    assert_eq!(r.status, 404);
    let rows = actions(&env).await;
    let rita_rows: Vec<_> = rows.iter().filter(|r| r.0 == "rita").collect();
    let naming_vdi: Vec<_> = rita_rows
        .iter()
        .filter(|r| r.1 == "denied" && r.2.contains("agent=vdi-01") && r.2.contains(&vdi))
        .collect();
    assert_eq!(
        naming_vdi.len(),
        3,
        "one refusal per request: {rita_rows:?}"
    );
    assert!(
        naming_vdi.iter().any(|r| r.2.contains("stream=0")),
        "the ciphertext request's refusal names its stream: {naming_vdi:?}"
    );
    assert!(
        !rita_rows
            .iter()
            .any(|r| r.1 != "denied" && r.2.contains(&vdi)),
        "no view, index read or fetch of vdi-01's session is logged: {rita_rows:?}"
    );
    assert!(
        rita_rows
            .iter()
            .any(|r| r.1 == "not_found" && r.2.contains(nowhere)),
        "{rita_rows:?}"
    );

    // `count=0` asks for nothing: refused, not answered with a chunk.
    let own = format!("/api/agents/{ts_hex}/sessions/{ts}");
    let r = ann
        .get(&format!("{own}/streams/0/chunks?from_seq=0&count=0"))
        .await;
    assert_eq!(r.status, 400, "{r:?}");

    // Details are text a person reads: no Rust `Some(..)`, `None` or quoted strings, with or
    // without the optional parts of each request.
    let t_mid = now_us();
    for path in [
        "/api/sessions".to_owned(),
        "/api/sessions?agent=ts-01&since_us=1".to_owned(),
        format!("{own}/index"),
        format!("{own}/index?stream=1&from_seq=2"),
        format!("{own}/streams/0/chunks?from_seq=0&count=2"),
    ] {
        assert_eq!(ann.get(&path).await.status, 200, "{path}");
    }
    for body in [
        format!(r#"{{"agent_hex":"{ts_hex}","session":"{ts}","what":"video"}}"#),
        format!(
            r#"{{"agent_hex":"{ts_hex}","session":"{ts}","what":"frames","from_us":1,"to_us":2}}"#
        ),
    ] {
        let r = ann.request("POST", "/api/exports", Some(&body)).await;
        assert_eq!(r.status, 204, "{r:?}");
    }
    let rows = actions(&env).await;
    let console_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "ann" || r.0 == "rita")
        .collect();
    for r in &console_rows {
        for debug in ["Some(", "None", "\""] {
            assert!(!r.2.contains(debug), "Rust debug text in {r:?}");
        }
    }
    for want in [
        "agent=ts-01 since_us=1 page=first",
        "stream=1 from_seq=2",
        "what=frames from_us=1 to_us=2",
    ] {
        assert!(
            console_rows.iter().any(|r| r.2.contains(want)),
            "{want}: {console_rows:?}"
        );
    }

    // The admin's view pages: newest first, `older` continues below, `newer` comes back.
    let ids_of = |v: &serde_json::Value| -> Vec<i64> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let first = ann.get("/api/audit?limit=5").await.json();
    let first_ids = ids_of(&first);
    assert_eq!(first_ids.len(), 5, "{first}");
    assert!(first_ids.windows(2).all(|w| w[0] > w[1]), "{first_ids:?}");
    assert!(first["newer"].is_null(), "the newest page: {first}");
    let older = first["older"].as_i64().expect("older rows exist");
    let second = ann
        .get(&format!("/api/audit?limit=5&before={older}"))
        .await
        .json();
    let second_ids = ids_of(&second);
    assert_eq!(second_ids.len(), 5);
    assert!(
        second_ids[0] < first_ids[4],
        "{second_ids:?} after {first_ids:?}"
    );
    let newer = second["newer"].as_i64().expect("newer rows exist");
    let back = ann
        .get(&format!("/api/audit?limit=5&after={newer}"))
        .await
        .json();
    // The first page again, but for the `view_audit` rows the paging itself wrote.
    let back_ids = ids_of(&back);
    assert_eq!(back_ids.len(), 5);
    assert_eq!(back_ids[4], first_ids[4], "{back_ids:?} vs {first_ids:?}");
    assert!(back_ids[4] > second_ids[0]);

    // Filters, on the server: every matching row and nothing else.
    let all_rows = env
        .server()
        .metadata
        .audit_rows(None, 10_000)
        .await
        .unwrap();
    let denied = ann
        .get("/api/audit?user=rita&action=denied&limit=1000")
        .await
        .json();
    let want: Vec<i64> = all_rows
        .iter()
        .filter(|r| r.actor == "rita" && r.action == "denied")
        .map(|r| r.id)
        .collect();
    assert!(want.len() >= 3);
    assert_eq!(ids_of(&denied), want);
    assert!(
        denied["older"].is_null() && denied["newer"].is_null(),
        "{denied}"
    );
    let since = ann
        .get(&format!("/api/audit?since_us={t_mid}&user=ann&limit=1000"))
        .await
        .json();
    let until = ann
        .get(&format!("/api/audit?until_us={t_mid}&user=ann&limit=1000"))
        .await
        .json();
    let (since_ids, until_ids) = (ids_of(&since), ids_of(&until));
    assert!(!since_ids.is_empty() && !until_ids.is_empty());
    assert!(
        since_ids.iter().min() > until_ids.iter().max(),
        "{since_ids:?} / {until_ids:?}"
    );
    let ann_before: Vec<i64> = all_rows
        .iter()
        .filter(|r| r.actor == "ann")
        .map(|r| r.id)
        .filter(|id| id <= until_ids.first().unwrap())
        .collect();
    assert_eq!(until_ids, ann_before, "every row of ann's up to t_mid");
    for r in since["rows"].as_array().unwrap() {
        assert_eq!(r["actor"], "ann");
    }
    // Reviewers have no audit view at all.
    assert_eq!(rita.get("/api/audit?user=rita").await.status, 404);
    console.stop().await;
    env.stop().await;
}

crate::common::on_both_backends!(
    the_audit_log_names_what_was_asked_and_pages_by_filter,
    sqlite: the_audit_log_names_what_was_asked_and_pages_by_filter_sqlite,
    postgres: the_audit_log_names_what_was_asked_and_pages_by_filter_postgres,
);

/// When the audit row cannot be written, nothing is served.
#[actix_rt::test]
async fn nothing_is_served_when_the_audit_log_cannot_be_written() {
    let (env, _) = recorded(Backend::Sqlite).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    assert_eq!(ann.get("/api/sessions").await.status, 200);
    let db = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
    db.execute_batch("ALTER TABLE audit_log RENAME TO audit_log_away")
        .unwrap();
    let r = ann.get("/api/sessions").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("audit log cannot be written")
    );
    let s = ann.get("/api/agents").await;
    assert_eq!(s.status, 503);
    db.execute_batch("ALTER TABLE audit_log_away RENAME TO audit_log")
        .unwrap();
    assert_eq!(ann.get("/api/sessions").await.status, 200);
    console.stop().await;
    env.stop().await;
}
