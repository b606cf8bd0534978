use super::*;

const OTHER: &str = "other-team-password";

#[actix_rt::test]
async fn screen_snapshots_show_the_latest_frames_by_agent_and_time_decrypted_in_the_browser() {
    let env = Env::start(Backend::Sqlite, true).await;
    let tmp = env.dir.path().to_owned();
    let base = record_pngs(&env, &tmp.join("ts-01")).await;
    record(env.enroll("ts-02"), &tmp.join("ts-02"), 20..23, false).await;
    record(env.enroll("other-01"), &tmp.join("other-01"), 30..33, true).await;
    // A standard-mode agent (server-held KEK): shown as usual, without a passphrase.
    record_standard(&env, &tmp, "ts-std", 40..43).await;
    add_user(
        &env.server().metadata,
        "rita",
        Role::Reviewer,
        &["ts-*"],
        RITA,
    )
    .await;
    add_user(
        &env.server().metadata,
        "olga",
        Role::Reviewer,
        &["other-*"],
        OTHER,
    )
    .await;
    let (console, wire, driver, mut page) = overview_page(&env, "snapshots").await;

    page.click("snapshots-open").await;
    let tiles_of = "return [...document.querySelectorAll('#snapshots-grid .tile')].map(t => [t.dataset.agent, t.dataset.state, t.querySelector('canvas').dataset.seq ?? null])";
    let tiles = page
        .until(
            "three tiles, the standard-mode one shown",
            &format!("const t = (() => {{ {tiles_of} }})(); return t.length === 3 && t.some(x => x[1] === 'shown') && t"),
        )
        .await;
    let mut tiles: Vec<(String, String, Option<String>)> = serde_json::from_value(tiles).unwrap();
    tiles.sort();
    assert_eq!(
        tiles,
        vec![
            ("ts-01".into(), "encrypted".into(), None),
            ("ts-02".into(), "encrypted".into(), None),
            ("ts-std".into(), "shown".into(), Some("2".into())),
        ],
        "rita's sessions only; the customer-KEK ones Encrypted until the passphrase"
    );
    let tile = |agent: &str| format!("#snapshots-grid .tile[data-agent=\"{agent}\"] canvas");
    assert_eq!(
        canvas_rgb(&page, &tile("ts-std")).await,
        (W, H, picture(W, H, 42))
    );
    let options = page
        .js("return [...document.getElementById('snapshots-agents').options].map(o => o.textContent)")
        .await;
    assert_eq!(options, json!(["ts-01", "ts-02", "ts-std"]));
    page.shot("snapshots-encrypted").await;

    // The passphrase: each session's latest frame, pixel for pixel.
    page.fill("snapshots-passphrase", PASS).await;
    page.click("snapshots-decrypt-submit").await;
    page.until(
        "every tile decrypted",
        "return [...document.querySelectorAll('#snapshots-grid .tile')].every(t => t.dataset.state === 'shown')",
    )
    .await;
    assert_eq!(
        canvas_rgb(&page, &tile("ts-01")).await,
        (W, H, picture(W, H, FRAMES - 1))
    );
    assert_eq!(
        canvas_rgb(&page, &tile("ts-02")).await,
        (W, H, picture(W, H, 22))
    );
    assert!(
        page.until(
            "the decrypt form hidden",
            "return document.getElementById('snapshots-decrypt').hidden"
        )
        .await
            == json!(true)
    );
    page.shot("snapshots-decrypted").await;

    // By time: up to frame 5 of ts-01 (the others were captured later), and by agent.
    let to = input_time((base + 5_999) / 1000 * 1000);
    page.js(&format!("document.getElementById('snapshots-until').value = '{to}'; document.getElementById('snapshots-filter').requestSubmit()"))
        .await;
    let tiles = page
        .until(
            "ts-01 up to frame 5",
            &format!("const t = (() => {{ {tiles_of} }})(); return t.length === 1 && t[0][2] === '5' && t"),
        )
        .await;
    assert_eq!(tiles, json!([["ts-01", "shown", "5"]]));
    assert_eq!(
        canvas_rgb(&page, &tile("ts-01")).await,
        (W, H, picture(W, H, 5))
    );
    page.js("document.getElementById('snapshots-until').value = ''")
        .await;
    pick_agents(&page, "snapshots-agents", &["ts-02"]).await;
    page.js("document.getElementById('snapshots-filter').requestSubmit()")
        .await;
    let tiles = page
        .until(
            "ts-02 only",
            &format!("const t = (() => {{ {tiles_of} }})(); return t.length === 1 && t[0][0] === 'ts-02' && t[0][1] === 'shown' && t"),
        )
        .await;
    assert_eq!(tiles, json!([["ts-02", "shown", "2"]]));

    // One hour, every five minutes: the hour of ts-01's last frame holds it.
    pick_agents(&page, "snapshots-agents", &[]).await;
    let last = base + i64::from(FRAMES - 1) * 1000;
    let hour = input_time(last / 3_600_000 * 3_600_000);
    page.js(&format!(
        "document.getElementById('snapshots-mode').value = 'hour'; document.getElementById('snapshots-mode').dispatchEvent(new Event('change'));
         document.getElementById('snapshots-hour').value = '{}'; document.getElementById('snapshots-filter').requestSubmit()",
        &hour[..16]
    ))
    .await;
    page.until(
        "ts-01's last frame in its hour",
        &format!("const t = (() => {{ {tiles_of} }})(); return t.some(x => x[0] === 'ts-01' && x[2] === '{}')", FRAMES - 1),
    )
    .await;
    let agents = page
        .js("return [...new Set([...document.querySelectorAll('#snapshots-grid .tile')].map(t => t.dataset.agent))].sort()")
        .await;
    assert_eq!(agents, json!(["ts-01", "ts-02", "ts-std"]));
    page.shot("snapshots-hour").await;

    // A click opens the player on that session at that frame.
    page.js(&format!(
        "[...document.querySelectorAll('#snapshots-grid .tile')].find(t => t.dataset.agent === 'ts-01' && t.querySelector('canvas').dataset.seq === '{}').click()",
        FRAMES - 1
    ))
    .await;
    page.until(
        "the player at ts-01's last frame",
        &format!(
            "return document.getElementById('session-title').textContent.startsWith('ts-01') && document.getElementById('frame').dataset.lockedIndex === '{}'",
            FRAMES - 1
        ),
    )
    .await;

    // Another team's reviewer sees only their own agent.
    page.click("logout").await;
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await;
    page.login("olga", OTHER).await;
    page.until(
        "the overview buttons",
        "return !document.getElementById('overviews').hidden",
    )
    .await;
    page.click("snapshots-open").await;
    let tiles = page
        .until(
            "olga's tile",
            &format!("const t = (() => {{ {tiles_of} }})(); return t.length > 0 && t"),
        )
        .await;
    assert_eq!(tiles, json!([["other-01", "encrypted", null]]));
    let asked = page_fetch(
        &page,
        &format!("/api/overview?agents={}", hex::encode("ts-01")),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(asked[1].as_str().unwrap()).unwrap()["sessions"],
        json!([])
    );

    page.c.clone().close().await.unwrap();
    drop(driver);
    console.stop().await;
    let wire = std::mem::take(&mut *wire.lock().unwrap());
    assert!(!contains(&wire.up, PASS), "the passphrase was sent");
    env.stop().await;
}
