use super::*;

/// Record frames `pictures` (one a second, as `record`) and the keystroke lines `events` makes
/// from the first capture time (ms) through agent config `cfg`; returns that time.
async fn record_events(
    cfg: sealstream::config::AgentConfig,
    dir: &Path,
    pictures: std::ops::Range<u32>,
    events: impl Fn(i64) -> Vec<String>,
) -> i64 {
    std::fs::create_dir_all(dir).unwrap();
    let base_ms = sealstream::metadata::now_us() / 1000 - 60_000;
    let mut paths = Vec::new();
    for n in pictures {
        let p = dir.join(format!("screen-{n:03}.png"));
        std::fs::write(&p, png(W, H, &picture(W, H, n))).unwrap();
        let t =
            std::time::UNIX_EPOCH + Duration::from_millis((base_ms + i64::from(n) * 1000) as u64);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
        paths.push(p);
    }
    let k = dir.join("keys.jsonl");
    std::fs::write(&k, events(base_ms).join("\n") + "\n").unwrap();
    paths.push(k);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let report = agent::run(cfg, Source::Replay(paths), rx, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.unacked, 0);
    base_ms
}

#[actix_rt::test]
async fn the_keystrokes_report_searches_many_sessions_in_the_browser_fetching_only_keystrokes() {
    let env = Env::start(Backend::Sqlite, true).await;
    let tmp = env.dir.path().to_owned();
    let base = record_pngs(&env, &tmp.join("ts-01")).await;
    record_events(env.enroll("ts-02"), &tmp.join("ts-02"), 0..3, |b| {
        vec![
            format!("{{\"ts\":{},\"app\":\"excel.exe\",\"window\":\"Quarterly plan.xlsx\",\"text\":\"sum\"}}", b + 100),
            format!("{{\"ts\":{},\"app\":\"excel.exe\",\"window\":\"Quarterly plan.xlsx\",\"text\":\"total\"}}", b + 1100),
            format!("{{\"ts\":{},\"app\":\"cmd.exe\",\"window\":\"C:\\\\Windows\",\"text\":\"dir\"}}", b + 2100),
        ]
    })
    .await;
    // Another team's agent typed the canary too.
    record(env.enroll("other-01"), &tmp.join("other-01"), 30..33, true).await;
    add_user(
        &env.server().metadata,
        "rita",
        Role::Reviewer,
        &["ts-*"],
        RITA,
    )
    .await;
    let (console, wire, driver, mut page) = overview_page(&env, "report").await;
    let rows_of = "return [...document.querySelectorAll('#report tbody tr')].map(r => [r.className, ...[...r.cells].map(c => c.textContent)])";
    let done = "return document.getElementById('report-view').dataset.state === 'done'";
    let search = |text: &str| {
        format!(
            "document.getElementById('report-search').value = {}; document.getElementById('report-filter').requestSubmit()",
            json!(text)
        )
    };

    page.click("report-open").await;
    page.until(
        "the agents",
        "return document.getElementById('report-agents').options.length > 0",
    )
    .await;
    let options = page
        .js("return [...document.getElementById('report-agents').options].map(o => o.textContent)")
        .await;
    assert_eq!(options, json!(["ts-01", "ts-02"]));
    // Before the passphrase: one Encrypted row per session, no text.
    page.js(&search(KEY_CANARY)).await;
    page.until("the search done", done).await;
    let rows = page.js(rows_of).await;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r[0], "encrypted", "{r:?}");
        assert!(r[5].contains("Encrypted"), "{r:?}");
    }
    let table = page
        .js("return document.getElementById('report-view').innerText")
        .await;
    assert!(
        !table.as_str().unwrap().contains(KEY_CANARY)
            && !table.as_str().unwrap().contains("other-01")
    );
    page.shot("report-encrypted").await;

    // The passphrase: the search runs again, decrypted; one hit, ts-01's.
    page.fill("report-passphrase", PASS).await;
    page.click("report-decrypt-submit").await;
    page.until(
        "the decrypted search",
        "return document.getElementById('report-view').dataset.state === 'done' && document.getElementById('report-view').dataset.hits === '1'",
    )
    .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(page.js(rows_of).await).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let at = base + 7 * 1000 + 100;
    let when = format!("{}.{:03}", input_time(at).replace('T', " "), at % 1000);
    assert_eq!(rows[0][0], "hit");
    assert_eq!(rows[0][1], when);
    assert_eq!(rows[0][2], "ts-01");
    assert!(
        rows[0][3].ends_with("verified"),
        "the session's keystrokes proven: {rows:?}"
    );
    assert_eq!(rows[0][4], "notepad.exe");
    assert_eq!(rows[0][5], KEY_CANARY);
    page.shot("report-hit").await;

    // Window titles are searched too, case-insensitively.
    page.js(&search("quarterly")).await;
    page.until("the window search", done).await;
    let rows: Vec<Vec<String>> = serde_json::from_value(page.js(rows_of).await).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r[2] == "ts-02" && r[4] == "Quarterly plan.xlsx — excel.exe"),
        "{rows:?}"
    );
    assert_eq!(
        rows.iter().map(|r| r[5].as_str()).collect::<Vec<_>>(),
        ["sum", "total"]
    );
    // A time range that ends before the canary was typed: no hit.
    page.js(&format!(
        "document.getElementById('report-until').value = '{}'",
        input_time(at - 1000)
    ))
    .await;
    page.js(&search(KEY_CANARY)).await;
    page.until("the ranged search", done).await;
    assert_eq!(page.js(rows_of).await, json!([]));
    // One agent, every keystroke.
    page.js("document.getElementById('report-until').value = ''")
        .await;
    pick_agents(&page, "report-agents", &["ts-02"]).await;
    page.js(&search("")).await;
    page.until("ts-02's keystrokes", done).await;
    let rows: Vec<Vec<String>> = serde_json::from_value(page.js(rows_of).await).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r[2].as_str(), r[5].as_str()))
            .collect::<Vec<_>>(),
        [("ts-02", "sum"), ("ts-02", "total"), ("ts-02", "dir")]
    );
    // Only keystroke streams were fetched (stream 1), never a frame (stream 0); neither the
    // passphrase nor the searched text left the page.
    {
        let w = wire.lock().unwrap();
        assert!(contains(&w.up, "/streams/1/chunks"));
        assert!(!contains(&w.up, "/streams/0/chunks"), "a frame was fetched");
        assert!(!contains(&w.up, PASS) && !contains(&w.up, KEY_CANARY));
    }
    let asked = page_fetch(
        &page,
        &format!("/api/overview?slots=0&agents={}", hex::encode("other-01")),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(asked[1].as_str().unwrap()).unwrap()["sessions"],
        json!([])
    );

    // A row opens the player at that moment: ts-01's canary, typed during frame 7.
    pick_agents(&page, "report-agents", &[]).await;
    page.js(&search(KEY_CANARY)).await;
    page.until(
        "the canary row",
        "return document.getElementById('report-view').dataset.state === 'done' && document.querySelector('#report tbody tr.hit')",
    )
    .await;
    page.js("document.querySelector('#report tbody tr.hit').click()")
        .await;
    page.until(
        "the player at frame 7",
        "return document.getElementById('session-title').textContent.startsWith('ts-01') && document.getElementById('frame').dataset.lockedIndex === '7'",
    )
    .await;

    // What a reviewer searched for is not kept in the browser's profile once the page is left.
    page.click("report-open").await;
    page.fill("report-search", "REPORTSEARCH-51c9e2").await;
    page.c.goto("about:blank").await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(profile_holds(driver.profile(), "REPORTSEARCH-51c9e2"), None);

    page.c.clone().close().await.unwrap();
    drop(driver);
    console.stop().await;
    env.stop().await;
}
