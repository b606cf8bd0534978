use super::*;

#[actix_rt::test]
async fn the_page_proves_what_it_shows_with_the_verdict_verify_gives() {
    let env = Env::start(Backend::Sqlite, true).await;
    let op = Operator {
        env: &env,
        store: sealstream::storage::open_local(&env.store_dir()).unwrap(),
    };
    // Genuine: signed to its final chunk.
    let (record, chunks) = op.record("ts-good", true, 9);
    op.write(&record, &chunks, |_, _| {}).await;
    // Forged: sealed from the public KEK alone in an enrolled agent's name.
    let (record, chunks) = op.record("ts-forged", false, 9);
    op.write(&record, &chunks, |_, _| {}).await;
    // Cut: its last chunks (after the checkpoint at chunk 7) are gone, and the index still
    // says it ended with its final chunk.
    let (record, chunks) = op.record("ts-cut", true, 9);
    op.write(&record, &chunks[..8], |_, s| {
        s.next_seq = 10;
        s.final_seq = Some(9);
    })
    .await;
    // A frame removed (store and index), and the next one's time moved by an hour in the index.
    let (record, mut chunks) = op.record("ts-removed", true, 9);
    chunks.remove(2);
    op.write(&record, &chunks, |rows, _| {
        let next = rows.iter_mut().find(|r| r.seq == 3).unwrap();
        next.capture_us += 3_600_000_000;
    })
    .await;

    // verify --agent-ca on the same store.
    let ca_path = env.cfg.data_dir.join("pki").join("ca.crt");
    let ca = sealstream::crypto::AgentCa::load(&ca_path).unwrap();
    let report = sealstream::inspect::verify(op.store.as_ref(), Some(&ca), |_| {})
        .await
        .unwrap();
    let verify = |agent: &str| {
        let v = report
            .streams
            .iter()
            .filter(|s| s.agent == agent)
            .map(|s| s.verdict)
            .min()
            .unwrap();
        serde_json::to_value(v).unwrap()
    };

    add_user(&env.server().metadata, "ann", Role::Admin, &[], ANN).await;
    let console = start(&env, |_| {}).await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-proof-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let downloads = env.dir.path().join("downloads");
    let (driver, c) = browser(&downloads).await;
    let mut page = Page { c, shots, n: 0 };
    page.c
        .goto(&format!("http://{}/", console.addr))
        .await
        .unwrap();
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await;
    page.login("ann", ANN).await;

    // (agent, status, verify's verdict, words the message must hold)
    let cases = [
        (
            "ts-good",
            "verified",
            "ok",
            "signed by agent \"ts-good\" through its final chunk 9",
        ),
        (
            "ts-forged",
            "unsigned",
            // verify --agent-ca's verdict for it (issue 22): not waived by --allow-incomplete.
            "unsigned",
            "not signed by a CA-issued agent",
        ),
        ("ts-cut", "incomplete", "incomplete", "cut after chunk 7"),
        ("ts-removed", "tampered", "tampered", "chunk 2 removed"),
    ];
    for (agent, status, verdict, words) in cases {
        page.open_session(agent).await;
        let shown = page
            .until(
                &format!("the verdict on {agent}"),
                "const b = document.getElementById('proof-badge'); \
                 return b.dataset.status ? [b.dataset.status, b.dataset.verdict, \
                 document.getElementById('proof-message').textContent] : null",
            )
            .await;
        assert_eq!(shown[0], status, "{agent}: {shown}");
        assert_eq!(shown[1], verdict, "{agent}: {shown}");
        assert_eq!(verify(agent), json!(verdict), "{agent}: verify agrees");
        assert!(
            shown[2].as_str().unwrap().contains(words),
            "{agent}: {shown}"
        );
        page.shot(&format!("proof-{agent}")).await;
    }
    // The cut one is "complete" by the index: the page's own verdict is what counts.
    let listed = page
        .js("return [...document.querySelectorAll('#sessions tbody tr')].find(r => r.cells[0].textContent === 'ts-cut').cells[4].textContent")
        .await;
    assert!(listed.as_str().unwrap().contains("complete"), "{listed}");
    // The CA the page checks against is shown for the reviewer to compare.
    let pinned = page
        .js("return document.getElementById('agent-ca').textContent")
        .await;
    assert!(
        pinned.as_str().unwrap().contains(&ca.fingerprint),
        "{pinned}"
    );

    // ts-removed (open last): its third frame is chunk 3, shown at chunk 3's own capture
    // time, not the hour later the index claims; the timeline marks what is not proven.
    page.click("step-fwd").await;
    page.click("step-fwd").await;
    page.until(
        "the third frame asked for",
        "return document.getElementById('frame').dataset.lockedIndex === '2'",
    )
    .await;
    let t3 = T0_US + 3_000_000;
    let clock = page
        .js(&format!(
            "return [document.getElementById('clock').textContent, \
             new Date({t3} / 1000).toISOString().replace('T', ' ').replace('Z', ' UTC')]"
        ))
        .await;
    assert_eq!(clock[0], clock[1], "{clock}");
    let unproven = page
        .js("return document.querySelectorAll('#timeline-marks .mark.unproven').length")
        .await;
    assert_eq!(unproven, json!(1));
    drop(page);
    drop(driver);
    console.stop().await;
    env.stop().await;
}
