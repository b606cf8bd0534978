use super::*;

#[actix_rt::test]
async fn a_reviewer_decrypts_watches_searches_and_exports_in_the_browser_and_the_server_learns_nothing()
 {
    let logs = Logs::default();
    let sink = logs.clone();
    // Global: the console's workers log from threads of their own.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish(),
    )
    .expect("the only subscriber of this test binary");
    let env = Env::start(Backend::Sqlite, true).await;
    let tmp = env.dir.path().to_owned();
    record_pngs(&env, &tmp.join("frames")).await;
    // A standard-mode agent: its KEK is server-held (priv_encrypted = false, an unencrypted
    // key file), so the page opens it without a passphrase.
    record_standard(&env, &tmp, "std-frames", 20..23).await;
    let md = env.server().metadata.clone();
    add_user(&md, "rita", Role::Reviewer, &["ts-*"], RITA).await;
    add_user(&md, "bob", Role::Reviewer, &["elsewhere-*"], BOB).await;
    add_user(&md, "ann", Role::Admin, &[], ANN).await;

    // A second agent keeps recording while the page is open (live view).
    let (stop_live, live_rx) = tokio::sync::watch::channel(false);
    let mut live_spec = spec(1, 120.0);
    live_spec.frame_interval = Duration::from_millis(400);
    live_spec.images = true;
    let live = tokio::spawn(agent::run(
        env.enroll("ts-live"),
        Source::Synthetic(live_spec),
        live_rx,
        Duration::from_secs(5),
    ));

    let console = start(&env, |_| {}).await;
    let wire = Arc::new(Mutex::new(Wire::default()));
    let relay = recording_relay(console.addr, wire.clone()).await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let downloads = tmp.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (driver, c) = browser(&downloads).await;
    let mut page = Page { c, shots, n: 0 };
    let url = format!("http://{relay}/");

    // Log in: a wrong password is refused, then the right one.
    page.c.goto(&url).await.unwrap();
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await;
    page.login("rita", "not her password").await;
    let err = page
        .until(
            "the login error",
            "return document.getElementById('login-error').textContent",
        )
        .await;
    assert_eq!(err, "wrong user name or password");
    page.shot("login-refused").await;
    page.login("rita", RITA).await;
    page.open_session("ts-01").await;
    // The page checked what the store holds before anything else: signed to its end.
    let proof = page
        .until(
            "the verdict on ts-01",
            "return document.getElementById('proof-badge').dataset.status ?? null",
        )
        .await;
    assert_eq!(proof, "verified");

    // The session is marked Encrypted; nothing is shown before decryption.
    let badges = page
        .js("return [...document.querySelectorAll('#sessions .badge')].map(b => b.textContent)")
        .await;
    assert!(
        badges.as_array().unwrap().iter().any(|b| b == "Encrypted"),
        "{badges}"
    );
    assert_eq!(page.shown_seq().await, None);
    page.shot("session-encrypted").await;

    // A wrong passphrase says so.
    page.fill("decrypt-passphrase", "wrong horse battery").await;
    page.click("decrypt-submit").await;
    let err = page
        .until(
            "the passphrase error",
            "return document.getElementById('decrypt-error').textContent",
        )
        .await;
    assert_eq!(err, "Wrong passphrase for this key file.");
    page.shot("wrong-passphrase").await;

    // The right one: frame 0 on the canvas, pixel for pixel the original.
    page.fill("decrypt-passphrase", PASS).await;
    page.click("decrypt-submit").await;
    page.until(
        "frame 0",
        "return document.getElementById('frame').dataset.seq === '0'",
    )
    .await;
    let pixels = page
        .js("const c = document.getElementById('frame'); return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]")
        .await;
    assert_eq!(pixels[0], json!(W));
    assert_eq!(pixels[1], json!(H));
    let rgba: Vec<u8> = pixels[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    let rgb: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    assert!(
        rgb == picture(W, H, 0),
        "the canvas shows exactly the recorded frame 0"
    );
    page.shot("decrypted").await;

    // The keystroke log holds the canary; a search for it seeks the player to frame 7.
    page.until(
        "the keystroke canary",
        &format!("return document.getElementById('keylog').textContent.includes('{KEY_CANARY}')"),
    )
    .await;
    page.fill("key-search", KEY_CANARY).await;
    page.until(
        "the player at the search hit",
        "return document.getElementById('frame').dataset.seq === '7'",
    )
    .await;
    let hits = page
        .js("return document.querySelectorAll('.mark.hit').length")
        .await;
    assert_eq!(hits, json!(1));
    page.shot("search-hit").await;

    // Step, and click the timeline's start.
    page.click("step-fwd").await;
    page.until(
        "frame 8",
        "return document.getElementById('frame').dataset.seq === '8'",
    )
    .await;
    page.js("const t = document.getElementById('timeline'); const r = t.getBoundingClientRect(); t.dispatchEvent(new MouseEvent('click', {clientX: r.left + 1, clientY: r.top + 5, bubbles: true}))").await;
    page.until(
        "frame 0 after a seek",
        "return document.getElementById('frame').dataset.seq === '0'",
    )
    .await;

    // Export the frames, the keystrokes and a manifest, made in the browser.
    page.click("export-frames").await;
    page.until(
        "the frames export",
        "return document.getElementById('export-state').textContent === 'frames saved'",
    )
    .await;
    let mut seen = Vec::new();
    let zip = wait_for_download(&downloads, ".zip", &mut seen).await;
    for n in [0, 7, FRAMES - 1] {
        let original = png(W, H, &picture(W, H, n));
        assert!(
            contains_bytes(&zip, &original),
            "frame {n} is in the ZIP byte for byte"
        );
    }
    assert!(contains(&zip, "manifest.json") && contains(&zip, KEY_CANARY));
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(png(W, H, &picture(W, H, 3))));
    assert!(
        contains(&zip, &digest),
        "the manifest has each frame's SHA-256"
    );
    page.click("export-video").await;
    page.until(
        "the video export",
        "return document.getElementById('export-state').textContent === 'video saved'",
    )
    .await;
    let webm = wait_for_download(&downloads, ".webm", &mut seen).await;
    assert_eq!(&webm[..4], &[0x1a, 0x45, 0xdf, 0xa3], "a WebM (EBML) file");

    // A range: frames 3 to 5 (In at the third frame, Out at the fifth) only.
    page.js("document.getElementById('export-state').textContent = ''")
        .await;
    for (step, id) in [(2, "mark-in"), (4, "mark-out")] {
        page.js("document.getElementById('timeline').dispatchEvent(new MouseEvent('click', {clientX: 0, bubbles: true}))").await;
        page.until(
            "frame 0",
            "return document.getElementById('frame').dataset.seq === '0'",
        )
        .await;
        for _ in 0..step {
            page.click("step-fwd").await;
        }
        page.until(
            "the stepped frame",
            &format!("return document.getElementById('frame').dataset.seq === '{step}'"),
        )
        .await;
        page.click(id).await;
    }
    assert_eq!(
        page.js("return document.getElementById('range').textContent")
            .await,
        json!("frames 3–5")
    );
    page.click("export-frames").await;
    page.until(
        "the range export",
        "return document.getElementById('export-state').textContent === 'frames saved'",
    )
    .await;
    let part = wait_for_download(&downloads, ".zip", &mut seen).await;
    for n in 0..FRAMES {
        let inside = contains_bytes(&part, &png(W, H, &picture(W, H, n)));
        assert_eq!(
            inside,
            (2..=4).contains(&n),
            "frame {n} in the range export: {inside}"
        );
    }

    // A server-held KEK's session: no Encrypted marker, shown without a passphrase.
    page.js("document.getElementById('filter').requestSubmit()")
        .await;
    page.until(
        "ts-std's session",
        "return [...document.querySelectorAll('#sessions tbody tr')].some(r => r.cells[0].textContent === 'ts-std')",
    )
    .await;
    let std_badges = page
        .js("return [...document.querySelectorAll('#sessions tbody tr')].find(r => r.cells[0].textContent === 'ts-std').innerText")
        .await;
    assert!(
        !std_badges.as_str().unwrap().contains("Encrypted"),
        "{std_badges}"
    );
    page.js("[...document.querySelectorAll('#sessions tbody tr')].find(r => r.cells[0].textContent === 'ts-std').click()").await;
    page.until("ts-std frame 0", "return document.getElementById('frame').dataset.seq === '0' && document.getElementById('decrypt-form').hidden").await;
    let pixels = page
        .js("const c = document.getElementById('frame'); return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
        .await;
    let rgb: Vec<u8> = pixels
        .as_array()
        .unwrap()
        .chunks(4)
        .flat_map(|p| p[..3].iter().map(|v| v.as_u64().unwrap() as u8))
        .collect();
    assert!(
        rgb == picture(W, H, 20),
        "the server-held KEK's frame, pixel for pixel"
    );

    // Live view: the session still recording shows frames captured after the page opened.
    let opened_us = sealstream::metadata::now_us();
    page.js("document.getElementById('filter').requestSubmit()")
        .await;
    page.open_session("ts-live").await;
    let live_badge = page
        .js("return document.querySelector('#sessions tbody tr .badge.recording') !== null")
        .await;
    assert_eq!(live_badge, json!(true));
    // The reviewer picks a key file from their own disk: the traditional form openssl 1.x
    // writes is named, with the command that converts it; the converted file opens.
    traditional_key(&tmp, "trad.pem");
    let converted = tmp.join("converted.pem");
    let phrase = || Ok(sealstream::keys::Passphrase::new(PASS.as_bytes().to_vec()));
    sealstream::keys::convert_private_key(&tmp.join("trad.pem"), &converted, phrase, phrase)
        .unwrap();
    let file = page.c.find(Locator::Id("decrypt-file")).await.unwrap();
    file.send_keys(&tmp.join("trad.pem").display().to_string())
        .await
        .unwrap();
    page.fill("decrypt-passphrase", PASS).await;
    page.click("decrypt-submit").await;
    let err = page
        .until(
            "the key form error",
            "return document.getElementById('decrypt-error').textContent",
        )
        .await;
    let err = err.as_str().unwrap();
    assert!(
        err.contains("traditional") && err.contains("openssl pkcs8 -topk8"),
        "{err}"
    );
    assert!(err.contains("sealstream keys convert"), "{err}");
    page.shot("key-form").await;
    page.js("document.getElementById('decrypt-file').value = ''")
        .await;
    let file = page.c.find(Locator::Id("decrypt-file")).await.unwrap();
    file.send_keys(&converted.display().to_string())
        .await
        .unwrap();
    page.fill("decrypt-passphrase", PASS).await;
    page.click("decrypt-submit").await;
    page.until(
        "a live frame captured after the page opened",
        &format!(
            "return Number(document.getElementById('frame').dataset.captureUs ?? 0) > {opened_us}"
        ),
    )
    .await;
    assert_eq!(
        page.js("return !document.getElementById('live-badge').hidden")
            .await,
        json!(true)
    );
    page.shot("live").await;

    // Lock forgets the keys: the frame and the keystrokes go, the passphrase is asked again.
    page.click("lock").await;
    assert_eq!(page.shown_seq().await, None);
    assert_eq!(
        page.js("return document.getElementById('keylog').children.length")
            .await,
        json!(0)
    );
    assert_eq!(
        page.js("return !document.getElementById('decrypt-form').hidden")
            .await,
        json!(true)
    );
    // A step while locked lands in the locked state (the player says which frame it would
    // show) and draws nothing: with keys left behind it would decrypt instead.
    page.click("step-fwd").await;
    page.until(
        "the step handled while locked",
        "return document.getElementById('frame').dataset.lockedIndex ?? null",
    )
    .await;
    assert_eq!(page.shown_seq().await, None, "nothing decrypts after Lock");
    page.shot("locked").await;

    // Logout: back to the login form, and the API answers 401.
    page.click("logout").await;
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await;
    let me = page
        .c
        .execute_async(
            "const done = arguments[0]; fetch('/api/me').then(r => done(r.status))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(me, json!(401));

    // A reviewer without the grant sees no session, and asking directly gets 404.
    page.login("bob", BOB).await;
    page.until(
        "bob's empty list",
        "return !document.getElementById('main-view').hidden",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = page
        .js("return document.querySelectorAll('#sessions tbody tr').length")
        .await;
    assert_eq!(rows, json!(0));
    let ts = md
        .sessions(sealstream::metadata::SessionQuery {
            agent: Some("ts-01".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let s = ts.iter().find(|s| s.agent == "ts-01").unwrap();
    let path = format!(
        "/api/agents/{}/sessions/{}/index",
        hex::encode("ts-01"),
        hex::encode(s.session)
    );
    let status = page
        .c
        .execute_async(
            &format!("const done = arguments[0]; fetch('{path}').then(r => done(r.status))"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(404));
    page.shot("no-grant").await;

    // An admin sees the audit log: rita's ciphertext fetches and exports, bob's refusal.
    page.click("logout").await;
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await;
    page.login("ann", ANN).await;
    page.until(
        "the audit button",
        "return !document.getElementById('audit-open').hidden",
    )
    .await;
    page.click("audit-open").await;
    // Every page of it, newest first (Older until there is none).
    let mut audit = String::new();
    loop {
        let shown = page
            .until("audit rows", "return document.getElementById('audit').dataset.page && document.querySelectorAll('#audit tbody tr').length > 0 && document.getElementById('audit').innerText")
            .await;
        audit.push_str(shown.as_str().unwrap());
        if page
            .js("return document.getElementById('audit-older').disabled")
            .await
            == json!(true)
        {
            break;
        }
        page.js("delete document.getElementById('audit').dataset.page")
            .await;
        page.click("audit-older").await;
    }
    let audit = audit.as_str();
    for want in [
        "fetch_ciphertext",
        "fetch_key_file",
        "fetch_dek",
        "export",
        "login_failed",
        "denied",
        "127.0.0.1",
    ] {
        assert!(audit.contains(want), "{want} in the audit view:\n{audit}");
    }
    page.shot("audit").await;

    page.c.clone().close().await.unwrap();
    drop(driver);
    let _ = stop_live.send(true);
    let _ = live.await;
    console.stop().await;
    let store = env.store_dir();
    let data = env.cfg.data_dir.clone();
    env.server().metadata.ping().await.unwrap();

    // The secrets stayed in the browser: neither the passphrase nor the recorded keystroke
    // canary crossed the wire towards the server, is in its logs, its database or its store;
    // the keystroke canary never came back from the server in plaintext either.
    let wire = std::mem::take(&mut *wire.lock().unwrap());
    assert!(
        contains(&wire.up, "/api/login"),
        "the relay saw the traffic"
    );
    assert!(
        wire.down.len() > 100_000,
        "ciphertext came through the relay"
    );
    for canary in [PASS, KEY_CANARY] {
        assert!(
            !contains(&wire.up, canary),
            "{canary:?} was sent to the server"
        );
        assert!(
            !contains(&wire.down, canary),
            "{canary:?} came from the server"
        );
        assert!(
            !contains(&logs.0.lock().unwrap(), canary),
            "{canary:?} is in the logs"
        );
        assert_eq!(
            tree_contains(&store, canary),
            None,
            "{canary:?} in the store"
        );
        assert_eq!(
            tree_contains(&data, canary),
            None,
            "{canary:?} in the data directory"
        );
    }
    assert!(!logs.0.lock().unwrap().is_empty(), "the logs were captured");
    env.stop().await;
}
