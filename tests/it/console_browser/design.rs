use super::design_steps::{STEPS, record_steps};
use super::*;

/// Make the page's viewport `w`×`h` CSS pixels.
async fn viewport(page: &Page, w: u32, h: u32) {
    page.c.set_window_size(w, h).await.unwrap();
    let inner = page.js("return [innerWidth, innerHeight]").await;
    let (iw, ih) = (
        inner[0].as_u64().unwrap() as u32,
        inner[1].as_u64().unwrap() as u32,
    );
    if (iw, ih) != (w, h) {
        page.c
            .set_window_size(2 * w - iw, 2 * h - ih)
            .await
            .unwrap();
    }
    page.until(
        &format!("a {w}×{h} viewport"),
        &format!("return innerWidth === {w} && innerHeight === {h}"),
    )
    .await;
    // The timeline's axis follows its width (a ResizeObserver): let it settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The computed background of the page, and the theme it shows.
async fn backdrop(page: &Page) -> (String, String) {
    let v = page
        .js("return [getComputedStyle(document.body).backgroundColor, document.documentElement.dataset.theme]")
        .await;
    (
        v[0].as_str().unwrap().to_owned(),
        v[1].as_str().unwrap().to_owned(),
    )
}

/// Switch to `theme` with the header's toggle (a click, as a user would).
async fn theme(page: &Page, theme: &str) {
    if backdrop(page).await.1 != theme {
        page.click("theme-toggle").await;
    }
    assert_eq!(backdrop(page).await.1, theme);
}

/// Each row of the session table, as (its height in lines of its text, its agent), and
/// whether the table fits its box without scrolling sideways.
const ROWS_IN_LINES: &str = "const rows = [...document.querySelectorAll('#sessions tbody tr')];
  const wrap = document.getElementById('sessions').parentElement;
  return [rows.map(r => [r.getBoundingClientRect().height / parseFloat(getComputedStyle(r.cells[0]).lineHeight), r.cells[0].textContent]),
          wrap.scrollWidth <= wrap.clientWidth];";

/// The boxes of the canvas and the keystroke log, and the viewport.
const PLAYER_BOXES: &str = "const b = (id) => { const r = document.getElementById(id).getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  return {frame: b('frame'), keys: b('keys'), list: b('sessions'), vw: innerWidth, vh: innerHeight,
          page_width: document.documentElement.scrollWidth, page_height: document.documentElement.scrollHeight,
          ticks: [...document.querySelectorAll('#timeline-axis .tick-label')].map(t => t.textContent)};";

fn one_line_rows(shown: &serde_json::Value, at: &str) {
    let rows = shown[0].as_array().unwrap();
    assert!(!rows.is_empty(), "{at}: no rows");
    for r in rows {
        assert!(
            r[0].as_f64().unwrap() < 2.0,
            "{at}: the row of {} is {} lines high",
            r[1],
            r[0]
        );
    }
    assert_eq!(shown[1], json!(true), "{at}: the table scrolls sideways");
}

#[actix_rt::test]
async fn the_console_reads_at_a_glance_at_1280_and_1920_px_in_a_light_and_a_dark_theme() {
    let env = Env::start(Backend::Sqlite, true).await;
    let tmp = env.dir.path().to_owned();
    let op = Operator {
        env: &env,
        store: sealstream::storage::open_local(&env.store_dir()).unwrap(),
    };
    let md = env.server().metadata.clone();
    add_user(&md, "rita", Role::Reviewer, &["ts-*", "vdi-*"], RITA).await;
    let console = start(&env, |c| c.live_window_ms = 3_600_000).await;
    let downloads = tmp.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (driver, c) = browser(&downloads).await;
    // The screenshots docs/console.md shows: written there when SEALSTREAM_DOC_SCREENSHOTS=1
    // (how docs/console/20-26 were made), else beside the other tests' (the tree stays clean).
    let shots = if std::env::var_os("SEALSTREAM_DOC_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console")
    } else {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-design-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let mut page = Page { c, shots, n: 19 };

    // ts-01: the session reviewed, its screens drawn in this browser; and others for the list:
    // one spanning two days, one of a morning, one recording now.
    let now = sealstream::metadata::now_us();
    let t0 = now - 20 * 60_000_000;
    page.c.goto("about:blank").await.unwrap();
    record_steps(&op, &page, t0).await;
    let sec = 1_000_000;
    let mut ts02 = op.start("ts-02");
    let mut vdi = op.start("vdi-eu-03");
    let mut ts05 = op.start("ts-05");
    let mut ts07 = op.start("ts-07");
    let frames = |first: i64, n: u32, every: i64| -> Vec<(u32, u32, u32, i64)> {
        (0..n)
            .map(|i| (W, H, i, first + i64::from(i) * every))
            .collect()
    };
    let start2 = now - 3 * 3600 * sec;
    op.add(
        &mut ts02,
        &frames(start2, 6, 90 * sec),
        &[typed(start2 + sec, "make deploy")],
        Some(start2 + 600 * sec),
    )
    .await;
    let start3 = now - 30 * 3600 * sec;
    op.add(
        &mut vdi,
        &frames(start3, 3, 13 * 3600 * sec),
        &[],
        Some(start3 + 27 * 3600 * sec),
    )
    .await;
    let start5 = now - 5 * 3600 * sec;
    op.add(
        &mut ts05,
        &frames(start5, 4, 20 * sec),
        &[],
        Some(start5 + 90 * sec),
    )
    .await;
    let start7 = now - 40 * sec;
    op.add(
        &mut ts07,
        &frames(start7, 8, 5 * sec),
        &[typed(start7, "top")],
        None,
    )
    .await;

    // The session list at 1280 px, light: one line a row (dates included), sortable.
    viewport(&page, 1280, 900).await;
    page.c
        .goto(&format!("http://{}/", console.addr))
        .await
        .unwrap();
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await;
    theme(&page, "light").await;
    page.login("rita", RITA).await;
    page.until(
        "five sessions",
        "return document.querySelectorAll('#sessions tbody tr').length === 5",
    )
    .await;
    let shown = page.js(ROWS_IN_LINES).await;
    one_line_rows(&shown, "1280 px, the list");
    let vdi_span = page
        .js("return [...document.querySelectorAll('#sessions tbody tr')].find(r => r.cells[0].textContent === 'vdi-eu-03').cells[2].textContent")
        .await;
    assert!(
        vdi_span.as_str().unwrap().contains(&utc_date(start3))
            && vdi_span
                .as_str()
                .unwrap()
                .contains(&utc_date(start3 + 26 * 3600 * sec)),
        "{vdi_span}"
    );
    let agents = "return [...document.querySelectorAll('#sessions tbody tr')].map(r => r.cells[0].textContent)";
    let sort = |key: &str| format!("#sessions th[data-sort={key}] button");
    let client = page.c.clone();
    let click_css = move |css: String| {
        let c = client.clone();
        async move {
            c.find(Locator::Css(&css))
                .await
                .unwrap()
                .click()
                .await
                .unwrap()
        }
    };
    click_css(sort("agent")).await;
    assert_eq!(
        page.js(agents).await,
        json!(["ts-01", "ts-02", "ts-05", "ts-07", "vdi-eu-03"])
    );
    click_css(sort("agent")).await;
    assert_eq!(
        page.js(agents).await,
        json!(["vdi-eu-03", "ts-07", "ts-05", "ts-02", "ts-01"])
    );
    // Start: newest first, then oldest first.
    click_css(sort("start")).await;
    assert_eq!(
        page.js(agents).await,
        json!(["ts-07", "ts-01", "ts-02", "ts-05", "vdi-eu-03"])
    );
    click_css(sort("start")).await;
    assert_eq!(
        page.js(agents).await,
        json!(["vdi-eu-03", "ts-05", "ts-02", "ts-01", "ts-07"])
    );
    // State: recording now first (then incomplete, then complete).
    click_css(sort("state")).await;
    let states = page
        .js("return [...document.querySelectorAll('#sessions tbody tr')].map(r => r.dataset.state)")
        .await;
    assert_eq!(
        states,
        json!(["recording", "complete", "complete", "complete", "complete"])
    );
    click_css(sort("chunks")).await;
    let chunks = page
        .js("return [...document.querySelectorAll('#sessions tbody tr')].map(r => parseInt(r.cells[3].textContent))")
        .await;
    let counts: Vec<i64> = chunks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|p| p[0] <= p[1]), "{chunks}");
    click_css(sort("start")).await;
    page.shot("sessions-1280-light").await;

    // ts-01 decrypted, a search for "postgresql", the player after the gap.
    page.open_session("ts-01").await;
    page.until(
        "the verdict on ts-01",
        "return document.getElementById('proof-badge').dataset.status ?? null",
    )
    .await;
    assert_eq!(
        page.js("return document.getElementById('proof-badge').dataset.status")
            .await,
        json!("verified")
    );
    page.fill("decrypt-passphrase", PASS).await;
    page.click("decrypt-submit").await;
    page.until(
        "ts-01's keystrokes",
        &format!(
            "return document.querySelectorAll('#keylog li').length === {}",
            STEPS.len()
        ),
    )
    .await;
    page.fill("key-search", "postgresql").await;
    page.until(
        "the search marks",
        "return document.querySelectorAll('#timeline-marks .mark.hit').length === 5",
    )
    .await;
    page.js("[...document.querySelectorAll('#keylog li')].find(li => li.textContent.includes('is-active')).click()")
        .await;
    page.until(
        "the player at the keystroke",
        "return document.querySelector('#keylog li.current')?.textContent.includes('is-active')",
    )
    .await;
    // The next frame: the screen after the gap.
    let before = page.shown_seq().await;
    page.click("step-fwd").await;
    page.until(
        "the frame after the gap",
        &format!(
            "return document.getElementById('frame').dataset.shown === 'image' && document.getElementById('frame').dataset.seq !== '{}'",
            before.unwrap()
        ),
    )
    .await;
    assert_eq!(
        page.js("return document.querySelectorAll('#timeline-marks .mark.gap').length")
            .await,
        json!(1),
        "the dropped frames are marked"
    );

    // At 1280 px the keystroke log is beside the frame, all of both on screen; the timeline
    // has a time axis.
    let boxes = page.js(PLAYER_BOXES).await;
    let b = |what: &str, i: usize| boxes[what][i].as_f64().unwrap();
    let (vw, vh) = (boxes["vw"].as_f64().unwrap(), boxes["vh"].as_f64().unwrap());
    assert!(
        b("keys", 0) >= b("frame", 2),
        "the log right of the frame: {boxes}"
    );
    assert!(
        b("keys", 1) < b("frame", 3) && b("frame", 1) < b("keys", 3),
        "the log beside the frame, not below it: {boxes}"
    );
    assert!(
        b("keys", 2) <= vw && b("keys", 3) <= vh && b("frame", 3) <= vh && b("keys", 1) >= 0.0,
        "the frame and the log in the viewport: {boxes}"
    );
    assert!(
        boxes["page_width"].as_f64().unwrap() <= vw && boxes["page_height"].as_f64().unwrap() <= vh,
        "the whole player on screen, no scrolling: {boxes}"
    );
    let ticks = boxes["ticks"].as_array().unwrap();
    assert!(ticks.len() >= 3, "tick labels: {boxes}");
    for t in ticks {
        let t = t.as_str().unwrap();
        assert!(
            t.len() == 8 && t.as_bytes()[2] == b':' && t.as_bytes()[5] == b':',
            "an HH:MM:SS label: {t}"
        );
    }
    assert_eq!(
        page.js("const l = document.querySelector('#player .legend').getBoundingClientRect(); return l.height > 0 && l.bottom <= innerHeight")
            .await,
        json!(true),
        "the keyboard shortcuts are shown under the player"
    );
    page.shot("player-1280-light").await;

    // The dark theme: another background, remembered (only its name) across a reload.
    let light = backdrop(&page).await.0;
    theme(&page, "dark").await;
    let dark = backdrop(&page).await.0;
    assert_ne!(light, dark, "the theme toggle changes the background");
    page.shot("player-1280-dark").await;

    // 1920 px: the list, folded for want of room at 1280, comes back beside the player, one
    // line a row.
    viewport(&page, 1920, 1080).await;
    let boxes = page.js(PLAYER_BOXES).await;
    let b = |what: &str, i: usize| boxes[what][i].as_f64().unwrap();
    assert!(
        b("list", 2) <= b("frame", 0) && b("keys", 0) >= b("frame", 2) && b("keys", 2) <= 1920.0,
        "list, frame and log side by side: {boxes}"
    );
    one_line_rows(&page.js(ROWS_IN_LINES).await, "1920 px, beside the player");
    page.shot("player-1920-dark").await;
    theme(&page, "light").await;
    page.shot("player-1920-light").await;

    // Back at 1280 px, dark: a key file in a form WebCrypto cannot open gets a short message
    // and the two commands to copy, naming the file picked.
    viewport(&page, 1280, 900).await;
    theme(&page, "dark").await;
    page.c.refresh().await.unwrap();
    page.until(
        "the list after a reload",
        "return document.querySelectorAll('#sessions tbody tr').length === 5",
    )
    .await;
    assert_eq!(backdrop(&page).await, (dark.clone(), "dark".to_owned()));
    assert_eq!(
        page.js("return Object.keys(localStorage).map(k => [k, localStorage.getItem(k)])")
            .await,
        json!([["sealstream.theme", "dark"]]),
        "the page keeps a theme name and nothing else"
    );
    page.open_session("ts-01").await;
    traditional_key(&tmp, "old-form.pem");
    let file = page.c.find(Locator::Id("decrypt-file")).await.unwrap();
    file.send_keys(&tmp.join("old-form.pem").display().to_string())
        .await
        .unwrap();
    page.fill("decrypt-passphrase", PASS).await;
    page.click("decrypt-submit").await;
    let commands = page
        .until(
            "the commands",
            "const c = [...document.querySelectorAll('#decrypt-error .cmd code')].map(c => c.textContent); return c.length ? c : null",
        )
        .await;
    assert_eq!(
        commands,
        json!([
            "openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -in old-form.pem -out old-form-pkcs8.pem",
            "sealstream keys convert --in old-form.pem --out old-form-pkcs8.pem"
        ])
    );
    let notice = page
        .js("const e = document.getElementById('decrypt-error'); return [e.querySelector('.help-head').textContent, getComputedStyle(e).color === getComputedStyle(document.body).color]")
        .await;
    assert!(
        notice[0].as_str().unwrap().contains("traditional"),
        "{notice}"
    );
    assert_eq!(notice[1], json!(true), "a notice, not red text: {notice}");
    click_css("#decrypt-error .cmd button.copy".to_owned()).await;
    let copied = page
        .until(
            "the copy button's answer",
            "const b = document.querySelector('#decrypt-error .cmd button.copy'); return b.textContent !== 'Copy' && b.textContent",
        )
        .await;
    if copied == json!("Copied") {
        let clip = page
            .c
            .execute_async(
                "const done = arguments[0]; navigator.clipboard.readText().then(done, (e) => done('unreadable: ' + e))",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            clip.as_str().unwrap().starts_with("openssl pkcs8")
                || clip.as_str().unwrap().starts_with("unreadable"),
            "{clip}"
        );
    } else {
        // No clipboard permission in this browser: the command is selected for Ctrl+C.
        assert_eq!(
            page.js("return getSelection().toString()").await,
            commands[0]
        );
    }
    page.shot("key-form-1280-dark").await;

    // The keyboard shortcuts: `?` opens the list, Close closes it.
    page.js("document.getElementById('decrypt-passphrase').blur(); document.body.dispatchEvent(new KeyboardEvent('keydown', {key: '?', bubbles: true}))")
        .await;
    page.until(
        "the shortcuts",
        "return document.getElementById('shortcuts').open",
    )
    .await;
    page.shot("shortcuts-1280-dark").await;
    page.click("shortcuts-close").await;
    assert_eq!(
        page.js("return document.getElementById('shortcuts').open")
            .await,
        json!(false)
    );

    page.c.clone().close().await.unwrap();
    drop(driver);
    console.stop().await;
    env.stop().await;
}
