use super::*;

// ---- A captured X session (issue 20): screen updates composited in the page, activity ----

const X_TITLE: &str = "review-xterm-5c1d";
const X_CANARY: &str = "xkeycanary-2f7a90";

/// Run X clients on `x` on a blocking thread: the in-process server and agent go on meanwhile.
async fn on_display<T: Send + 'static>(
    x: &Arc<Xvfb>,
    f: impl FnOnce(&Xvfb) -> T + Send + 'static,
) -> T {
    let x = x.clone();
    tokio::task::spawn_blocking(move || f(&x)).await.unwrap()
}

/// Wait until the player says it shows frame `n` of `of`, named `name`, with no remark (no
/// malformed or unopened update, no empty chunk).
async fn until_frame(page: &Page, n: usize, of: usize, name: &str) {
    page.until(
        &format!("frame {n} of {of} ({name})"),
        &format!(
            "return document.getElementById('frame-info').textContent === 'frame {n} of {of} ({name})'"
        ),
    )
    .await;
}

/// A key pressed on the page (the player's shortcuts).
async fn press(page: &Page, key: &str) {
    page.js(&format!(
        "document.body.dispatchEvent(new KeyboardEvent('keydown', {{key: '{key}', bubbles: true}}))"
    ))
    .await;
}

/// How many pixels of the player's canvas differ from the screenshot `shot`, and the box
/// (x0, y0, x1, y1) they span; the canvas must be the screenshot's size.
async fn canvas_vs(page: &Page, (w, h, shot): &(usize, usize, Vec<u8>)) -> (usize, [usize; 4]) {
    let (cw, ch, rgb) = canvas_rgb(page, "#frame").await;
    assert_eq!(
        (cw as usize, ch as usize),
        (*w, *h),
        "the canvas is the screen's size"
    );
    let mut bbox = [usize::MAX, usize::MAX, 0, 0];
    let mut n = 0;
    for (i, (a, b)) in rgb.chunks_exact(3).zip(shot.chunks_exact(3)).enumerate() {
        if a != b {
            let (x, y) = (i % w, i / w);
            n += 1;
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x),
                bbox[3].max(y),
            ];
        }
    }
    (n, bbox)
}

#[actix_rt::test]
async fn the_console_shows_a_captured_x_session_as_the_display_showed_it() {
    let env = Env::start(Backend::Sqlite, true).await;
    add_user(
        &env.server().metadata,
        "rita",
        Role::Reviewer,
        &["ts-*"],
        RITA,
    )
    .await;

    // An X display recorded by the agent's X11 source (no pointer drawn), through this server
    // with its KEK: an xterm appears, titled X_TITLE, and the canary is typed into it.
    let x = Arc::new(Xvfb::start(640, 480));
    let (stop, agent) = start_agent(env.enroll("ts-x11"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _term = on_display(&x, |x| {
        let (term, _) = x.xterm(X_TITLE, "60x10+10+10");
        x.type_text(&format!("echo {X_CANARY}"));
        term
    })
    .await;
    // Settle, then the independent screenshot; the screen does not change after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot_file = env.dir.path().join("x11-shot.png");
    let shot = on_display(&x, move |x| x.screenshot(&shot_file)).await;
    assert_eq!((shot.0, shot.1), (640, 480));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let report = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("the agent stops")
        .unwrap();
    assert_eq!(report.unacked, 0, "everything acked");
    assert_eq!(report.sessions.len(), 1, "one session for the display");
    let frames = &report.sessions[0].frames;
    assert!(frames.len() >= 2, "a keyframe and updates: {frames:?}");
    let (first, last) = (&frames[0].0, &frames[frames.len() - 1].0);
    assert!(last.ends_with(".ssu"), "screen updates: {last}");
    let m = frames.len();

    // The reviewer logs in, opens the session and gives the key file and its passphrase.
    let (console, _wire, driver, mut page) = overview_page(&env, "x11").await;
    page.open_session("ts-x11").await;
    let file = page.c.find(Locator::Id("decrypt-file")).await.unwrap();
    file.send_keys(&env.kek_priv.display().to_string())
        .await
        .unwrap();
    page.fill("decrypt-passphrase", PASS).await;
    page.click("decrypt-submit").await;
    until_frame(&page, 1, m, first).await;

    // The last frame (End) is the screen as the screenshot shows it, pixel for pixel.
    press(&page, "End").await;
    until_frame(&page, m, m, last).await;
    let (differ, bbox) = canvas_vs(&page, &shot).await;
    assert_eq!(
        differ, 0,
        "pixels of the last frame differing from the screenshot, within {bbox:?}"
    );
    page.shot("x11-last-frame").await;

    // Beside it: the xterm's focus in the activity log, the canary in the keystroke log.
    page.until(
        "the xterm's focus in the activity log",
        &format!(
            "return [...document.querySelectorAll('#activitylog li')].some(li => li.querySelector('.act-focus') \
             && li.querySelector('.act-detail')?.textContent === '{X_TITLE}')"
        ),
    )
    .await;
    let typed = page
        .js("return [...document.querySelectorAll('#keylog .key-typed')].map(s => s.textContent).join('')")
        .await;
    assert!(
        typed.as_str().unwrap().contains(X_CANARY),
        "the keystroke log: {typed}"
    );

    // Back to the first frame (the display before the text, if not before the xterm), then
    // forward to the last again: by a seek (End), and by playing through every update (16×).
    press(&page, "Home").await;
    until_frame(&page, 1, m, first).await;
    let (differ, _) = canvas_vs(&page, &shot).await;
    assert!(
        differ > 100,
        "the first frame is not the last: {differ} pixels differ"
    );
    press(&page, "End").await;
    until_frame(&page, m, m, last).await;
    let (differ, bbox) = canvas_vs(&page, &shot).await;
    assert_eq!(differ, 0, "after seeking back and forth, within {bbox:?}");
    press(&page, "Home").await;
    until_frame(&page, 1, m, first).await;
    page.js("const s = document.getElementById('speed'); s.value = '16'; s.dispatchEvent(new Event('change'))")
        .await;
    page.click("play").await;
    page.until(
        "the end of playing",
        "return document.getElementById('play').dataset.playing === 'false'",
    )
    .await;
    until_frame(&page, m, m, last).await;
    let (differ, bbox) = canvas_vs(&page, &shot).await;
    assert_eq!(differ, 0, "after playing to the end, within {bbox:?}");
    page.shot("x11-played").await;

    page.c.clone().close().await.unwrap();
    drop(driver);
    console.stop().await;
    env.stop().await;
}
