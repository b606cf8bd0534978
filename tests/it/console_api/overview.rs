use super::*;

/// `/api/overview` (the page's Live montage, Screen snapshots and keystrokes report): each
/// session of the caller's agents with its stream ids and where its frames to show are, the
/// newest frame or the newest of each part of a range, another team's agents never, every call
/// audited.
async fn the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant(
    backend: Backend,
) {
    let (env, reports) = recorded(backend).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let md = &env.server().metadata;
    let (ts, vdi) = (hex::encode("ts-01"), hex::encode("vdi-01"));

    let all = ann.get("/api/overview").await;
    assert_eq!(all.status, 200, "{all:?}");
    let all = all.json();
    let sessions = all["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{all}");
    for r in &reports {
        let s = &r.sessions[0];
        let row = sessions
            .iter()
            .find(|x| x["agent"] == r.agent.as_str())
            .unwrap();
        assert_eq!(row["session"], hex::encode(s.session.0));
        assert_eq!(row["frame_stream"], 0);
        assert_eq!(row["key_stream"], 1);
        assert_eq!(row["state"], "complete");
        let keys = md
            .chunk_locations(r.agent.as_str(), s.session.0, Some(1), 0, 10_000)
            .await
            .unwrap();
        assert_eq!(row["key_chunks"], keys.len() as u64);
        // The newest frame: the last image, not the empty chunk that ends the stream.
        let newest = s.frames.len() as u64 - 1;
        let frames = row["frames"].as_array().unwrap();
        assert_eq!(frames.len(), 1, "{row}");
        assert_eq!(frames[0]["seq"], newest);
        let loc = md
            .chunk_locations(r.agent.as_str(), s.session.0, Some(0), newest, 1)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(frames[0]["capture_us"], loc.capture_us.unwrap());
        assert_eq!(frames[0]["dek_id"], hex::encode(loc.dek_id.unwrap()));
        assert_eq!(frames[0]["len"], loc.range.unwrap().1);

        // Slots: the newest frame of each of three parts of the session's time.
        let (first, last) = (
            row["first_capture_us"].as_i64().unwrap(),
            row["last_capture_us"].as_i64().unwrap(),
        );
        let q = format!(
            "/api/overview?agents={}&since_us={first}&until_us={last}&slots=3",
            hex::encode(r.agent.as_str())
        );
        let picked = ann.get(&q).await.json();
        let picked = picked["sessions"][0]["frames"].as_array().unwrap().clone();
        let rows = md
            .chunk_locations(r.agent.as_str(), s.session.0, Some(0), 0, 10_000)
            .await
            .unwrap();
        let capture = |seq: u64| {
            rows.iter()
                .find(|c| c.seq == seq)
                .unwrap()
                .capture_us
                .unwrap()
        };
        let slot = |us: i64| (us - first) * 3 / (last - first + 1);
        assert!(!picked.is_empty() && picked.len() <= 3, "{picked:?}");
        for (i, f) in picked.iter().enumerate() {
            let seq = f["seq"].as_u64().unwrap();
            let later = rows
                .iter()
                .filter(|c| c.seq > seq && (c.seq as usize) < s.frames.len())
                .find(|c| slot(c.capture_us.unwrap()) == slot(capture(seq)));
            assert!(
                later.is_none(),
                "frame {seq} is its part's newest: {later:?}"
            );
            if i > 0 {
                assert!(slot(capture(seq)) > slot(capture(picked[i - 1]["seq"].as_u64().unwrap())));
            }
        }
        assert_eq!(picked.last().unwrap()["seq"], newest);
    }
    // Without frames; and none is live (both ended with their final chunk).
    let none = ann.get("/api/overview?slots=0").await.json();
    assert!(
        none["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["frames"] == serde_json::json!([]))
    );
    let live = ann.get("/api/overview?live=true").await.json();
    assert_eq!(live["sessions"], serde_json::json!([]));

    // A reviewer sees only her agents, even when she names another team's.
    let names = |v: serde_json::Value| -> Vec<String> {
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["agent"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(rita.get("/api/overview").await.json()), ["ts-01"]);
    assert_eq!(
        names(
            rita.get(&format!("/api/overview?agents={vdi}"))
                .await
                .json()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            rita.get(&format!("/api/overview?agents={ts},{vdi}&slots=0"))
                .await
                .json()
        ),
        ["ts-01"]
    );
    assert_eq!(rita.get("/api/overview?agents=zz").await.status, 400);
    // Every call is in the audit log, with what was asked.
    let rows = actions(&env).await;
    let asked: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "rita" && r.1 == "list_overview")
        .map(|r| r.2.as_str())
        .collect();
    assert!(asked.contains(&"slots=1 page=first"), "{asked:?}");
    assert!(
        asked.contains(&"agents=vdi-01 slots=1 page=first"),
        "{asked:?}"
    );
    assert!(
        asked.contains(&"agents=ts-01,vdi-01 slots=0 page=first"),
        "{asked:?}"
    );
    console.stop().await;
    env.stop().await;
}

#[actix_rt::test]
async fn the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant_sqlite() {
    the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant(Backend::Sqlite)
        .await;
}

#[actix_rt::test]
async fn the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant_postgres() {
    the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant(Backend::Postgres)
        .await;
}

/// Agent patterns are case-sensitive on both databases: a reviewer of `ts-*` is not listed an
/// agent named `TS-01` (SQLite's LIKE ignores ASCII case unless told not to).
async fn grants_are_case_sensitive(backend: Backend) {
    let env = Env::start(backend, true).await;
    for name in ["ts-01", "TS-01"] {
        run_agent(env.enroll(name), spec(1, 0.3)).await;
    }
    add_user(
        &env.server().metadata,
        "rita",
        Role::Reviewer,
        &["ts-*"],
        RITA,
    )
    .await;
    let console = start(&env, |_| {}).await;
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let listed = rita.get("/api/sessions").await.json();
    let agents: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["ts-01"], "{listed}");
    let recorded = rita.get("/api/agents").await.json();
    let names: Vec<&str> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ts-01"], "{recorded}");
    console.stop().await;
    env.stop().await;
}

crate::common::on_both_backends!(
    grants_are_case_sensitive,
    sqlite: grants_are_case_sensitive_sqlite,
    postgres: grants_are_case_sensitive_postgres,
);
