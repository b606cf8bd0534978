use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_x_displays_are_recorded_as_their_screenshots_show_with_keys_and_activity() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let a = Xvfb::start(800, 600);
    let b = Xvfb::start(640, 480);
    let (stop, agent) = start_agent(env.enroll("ts-01"), capture_config(&[&a, &b]));
    // Let the agent find both displays and send their first keyframes.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let public = "sealstream-x11-canary";
    let secret = "secret-x11-canary";
    let (_term, term) = a.xterm("public-term", "60x10+10+10");
    a.type_text(public);
    let (_vault, vault) = a.xterm("secret-vault", "40x6+420+380");
    a.type_text(secret);
    a.focus(&term);
    a.ok("xdotool", &["key", "ctrl+l"]);
    a.type_text("done");
    // Settle, then the independent screenshot; the screen does not change after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sw, sh, shot) = a.shot();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = stop_acked(stop, agent, "the agent stops after SIGTERM's equivalent").await;
    assert_eq!(report.sessions.len(), 2, "one session per display");

    let (_, out, all) = export_complete(&env.store_dir(), env.private_key(), "ts-01").await;
    assert_eq!(all.len(), 2);
    let start = |s: &Session| {
        s.event("session_start")
            .cloned()
            .expect("a session_start event")
    };
    let sa = all
        .iter()
        .find(|s| start(s)["display"] == a.display())
        .expect("display A's session");
    let sb = all
        .iter()
        .find(|s| start(s)["display"] == b.display())
        .expect("display B's session");
    assert_eq!(start(sa)["width"], 800);
    assert_eq!(start(sb)["height"], 480);
    for s in [sa, sb] {
        assert_eq!(
            s.activity.last().unwrap()["event"],
            "session_end",
            "{:?}",
            s.activity
        );
    }

    // Display B never changed: its keyframe is its only frame (idle sends nothing).
    assert_eq!(sb.frames.len(), 1, "{:?}", sb.frames);

    // The keys typed into the public terminal, with its title; none of the excluded one's.
    let keys = typed(&sa.keystrokes);
    assert!(
        keys.contains(&format!("{public}[Enter]")),
        "typed keys: {keys}"
    );
    assert!(keys.contains("Ctrl+L"), "typed keys: {keys}");
    assert!(sa.keystrokes.contains("\"title\":\"public-term\""));
    assert!(!keys.contains(secret), "an excluded window's keys: {keys}");
    assert!(
        sa.activity
            .iter()
            .any(|e| e["event"] == "focus" && e["title"] == "public-term"),
        "{:?}",
        sa.activity
    );
    assert!(
        sa.activity
            .iter()
            .any(|e| e["event"] == "focus" && e["excluded"] == true && e["title"] == ""),
        "{:?}",
        sa.activity
    );
    // No plaintext byte of the export (frames are pixels, not text: they are checked below)
    // holds the secret canary.
    assert_eq!(tree_has(out.path(), secret.as_bytes()), None);

    // The last frame is the screenshot, pixel for pixel, except the excluded window: black.
    let last = sa.frames.last().unwrap();
    let frame = decode_png(&std::fs::read(last).unwrap(), sw as u16, sh as u16)
        .unwrap_or_else(|e| panic!("{}: {e}", last.display()));
    let (vx, vy, vw, vh) = a.geometry(&vault);
    let inside = |x: usize, y: usize| x >= vx && x < vx + vw && y >= vy && y < vy + vh;
    let mut differ = 0;
    let mut vault_lit = 0;
    for y in 0..sh {
        for x in 0..sw {
            let i = (y * sw + x) * 3;
            if inside(x, y) {
                assert_eq!(&frame[i..i + 3], &[0, 0, 0], "excluded pixel {x},{y}");
                vault_lit += (shot[i..i + 3] != [0, 0, 0]) as usize;
            } else if frame[i..i + 3] != shot[i..i + 3] {
                differ += 1;
            }
        }
    }
    assert_eq!(differ, 0, "pixels differing from the screenshot");
    assert!(vault_lit > 100, "the screenshot shows the excluded window");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_resized_mid_session_is_recorded_from_a_keyframe_at_its_new_size() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(1024, 768);
    let (_term, _) = x.xterm("resize-term", "60x10+10+10");
    let (stop, agent) = start_agent(env.enroll("ts-resize"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    x.type_text("typed-before-the-resize");
    tokio::time::sleep(Duration::from_secs(1)).await;
    x.resize(800, 600);
    tokio::time::sleep(Duration::from_secs(1)).await;
    x.type_text("typed-after-the-resize");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot = x.shot();
    assert_eq!((shot.0, shot.1), (800, 600));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, all) = export_complete(&env.store_dir(), env.private_key(), "ts-resize").await;
    assert_eq!(all.len(), 1, "a resize does not end the session");
    let s = &all[0];
    assert_eq!(s.activity.last().unwrap()["reason"], "agent stopping");
    let resize = s.event("resize").expect("a resize event");
    assert_eq!(
        (&resize["width"], &resize["height"]),
        (&800.into(), &600.into())
    );
    assert!(typed(&s.keystrokes).contains("typed-after-the-resize"));
    // The screens before the resize are 1024x768, every one after it 800x600 (the first of
    // them a keyframe of the new screen: compositing would fail otherwise), and the last is
    // the screenshot.
    let sizes: Vec<(usize, usize)> = s.frames.iter().map(|f| png_size(f)).collect();
    let at = sizes
        .iter()
        .position(|&d| d == (800, 600))
        .unwrap_or_else(|| panic!("no frame at the new size: {sizes:?}"));
    assert!(at > 0, "{sizes:?}");
    assert!(sizes[..at].iter().all(|&d| d == (1024, 768)), "{sizes:?}");
    assert!(sizes[at..].iter().all(|&d| d == (800, 600)), "{sizes:?}");
    assert!(
        sizes.len() > at + 1,
        "screens after the resize's: {sizes:?}"
    );
    assert_eq!(differing_pixels(s.frames.last().unwrap(), &shot), 0);
    holds_all_recorded(s, &report.sessions[0]);
    // As sent: the first update at the new size is a keyframe (a reader seeking there
    // decodes it alone, not the updates since the session's first keyframe).
    let updates = screen_updates(&env.store_dir(), &env.private_key(), &s.id).await;
    assert_eq!(updates.len(), sizes.len(), "{updates:?}");
    assert_eq!(updates[0], (true, 1024, 768), "{updates:?}");
    assert_eq!(updates[at], (true, 800, 600), "{updates:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_resized_over_and_over_stays_one_session() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(1024, 768);
    let (_term, _) = x.xterm("storm-term", "60x10+10+10");
    x.resize(800, 600);
    let mut capture = capture_config(&[&x]);
    capture.fps = 30.0;
    let (stop, agent) = start_agent(env.enroll("ts-storm"), capture);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A remote desktop client's window dragged to and fro: the screen resized continually.
    let resizes = tokio::task::block_in_place(|| {
        x.resize_storm([(800, 600), (1024, 768)], Duration::from_secs(3))
    });
    eprintln!("{resizes} resizes");
    x.type_text("typed-after-the-storm");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot = x.shot();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, all) = export_complete(&env.store_dir(), env.private_key(), "ts-storm").await;
    let ends: Vec<String> = all
        .iter()
        .filter_map(|s| s.event("session_end")?["reason"].as_str())
        .map(|r| r.chars().take(160).collect())
        .collect();
    assert_eq!(all.len(), 1, "resizes do not end the session: {ends:#?}");
    let s = &all[0];
    assert_eq!(s.activity.last().unwrap()["reason"], "agent stopping");
    assert!(
        s.activity.iter().filter(|e| e["event"] == "resize").count() >= 2,
        "{:?}",
        s.activity
    );
    assert_eq!(differing_pixels(s.frames.last().unwrap(), &shot), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_pause_file_exists_nothing_is_recorded_and_activity_says_so() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(640, 480);
    let pause = env.dir.path().join("pause");
    let mut capture = capture_config(&[&x]);
    capture.pause_file = Some(pause.clone());
    let (stop, agent) = start_agent(env.enroll("ts-pause"), capture);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_term, _) = x.xterm("paused-term", "60x10+10+10");
    x.type_text("before-the-pause");
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&pause, b"").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused_canary = "typed-while-paused-7c1e";
    x.type_text(paused_canary);
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::remove_file(&pause).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    x.type_text("after-the-pause");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_acked(stop, agent, "the agent stops").await;
    let (_, out) = export_all(&env.store_dir(), env.private_key()).await;
    let all = sessions(&out.path().join("ts-pause"));
    assert_eq!(all.len(), 1);
    let s = &all[0];
    let keys = typed(&s.keystrokes);
    assert!(
        keys.contains("before-the-pause") && keys.contains("after-the-pause"),
        "{keys}"
    );
    assert!(
        !keys.contains(paused_canary),
        "keys typed while paused: {keys}"
    );
    let events: Vec<&str> = s
        .activity
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|e| *e == "paused" || *e == "resumed")
        .collect();
    assert_eq!(events, ["paused", "resumed"], "{:?}", s.activity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrolling_terminal_is_sent_as_copies_and_recorded_as_its_screenshot_shows() {
    let env = ChildEnv::start(Backend::Sqlite, &[]).await;
    let x = Xvfb::start(800, 600);
    let (_term, _) = x.xterm("scroll-term", "100x40+0+0");
    let (stop, agent) = start_agent(env.enroll("ts-scroll"), capture_config(&[&x]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Lines at a steady rate (20 a second) for several seconds: the terminal scrolls under
    // the agent's 5 frames a second, a few lines each frame.
    x.type_text("for i in $(seq 160); do echo line $i $((i * 7919 % 10007)); sleep 0.05; done");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let shot = x.shot();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = stop_acked(stop, agent, "the agent stops").await;

    let (_, _out, all) = export_complete(&env.store_dir(), env.private_key(), "ts-scroll").await;
    assert_eq!(all.len(), 1);
    let s = &all[0];
    holds_all_recorded(s, &report.sessions[0]);
    // Composited from the copies and rectangles, the last screen is the screenshot.
    assert_eq!(differing_pixels(s.frames.last().unwrap(), &shot), 0);
    let updates = decoded_updates(&env.store_dir(), &env.private_key(), &s.id, |u| {
        (u.keyframe, u.copies.len())
    })
    .await;
    assert_eq!(updates.len(), s.frames.len(), "{updates:?}");
    let scrolls = updates.iter().filter(|&&(_, copies)| copies > 0).count();
    eprintln!("{scrolls} of {} updates with a copy", updates.len());
    assert!(scrolls >= 10, "updates (keyframe, copies): {updates:?}");
    assert!(
        updates.iter().all(|&(key, copies)| !key || copies == 0),
        "a keyframe with a copy: {updates:?}"
    );
    env.stop().await;
}
