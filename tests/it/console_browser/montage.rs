use super::*;

/// The RGB pixels of a PNG as `synthetic::png` writes it (stored deflate blocks, filter 0).
fn stored_png_rgb(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let (mut w, mut h, mut z) = (0, 0, Vec::new());
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let data = &png[at + 8..at + 8 + len];
        match &png[at + 4..at + 8] {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap());
                h = u32::from_be_bytes(data[4..8].try_into().unwrap());
            }
            b"IDAT" => z.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    let mut i = 2;
    loop {
        let last = z[i] & 1;
        assert_eq!(z[i] & 6, 0, "a stored block");
        let n = u16::from_le_bytes([z[i + 1], z[i + 2]]) as usize;
        raw.extend_from_slice(&z[i + 5..i + 5 + n]);
        i += 5 + n;
        if last == 1 {
            break;
        }
    }
    let rgb = raw
        .chunks(w as usize * 3 + 1)
        .flat_map(|row| {
            assert_eq!(row[0], 0, "filter none");
            row[1..].to_vec()
        })
        .collect();
    (w, h, rgb)
}

/// The frame image of chunk `seq` of a session's stream 0, decrypted here from the store with
/// the KEK's private key (what the page must show).
async fn frame_image(env: &Env, agent: &str, session_hex: &str, seq: u64) -> Vec<u8> {
    let md = &env.server().metadata;
    let session: [u8; 16] = hex::decode(session_hex).unwrap().try_into().unwrap();
    let loc = md
        .chunk_locations(agent, session, Some(0), seq, 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let (offset, len) = loc.range.unwrap();
    let store = storage::open_local(&env.store_dir()).unwrap();
    let bytes = storage::get_range(
        store.as_ref(),
        &object_store::path::Path::from(loc.object_key),
        offset,
        len,
    )
    .await
    .unwrap();
    let (chunk, _) = SealedChunk::decode_prefix(&bytes).unwrap();
    let (_, record) = md.dek_record(chunk.header.dek_id.0).await.unwrap().unwrap();
    let key = env.private_key();
    let dek =
        sealstream::crypto::Dek::unwrap(&DekRecord::decode(&record).unwrap(), &key.key, key.kek_id)
            .unwrap();
    let plain = sealstream::crypto::StreamKey::for_chunk(&dek, &chunk.header)
        .open(&chunk)
        .unwrap();
    Frame::decode(&plain).unwrap().image.to_vec()
}

#[actix_rt::test]
async fn the_live_montage_shows_every_live_session_decrypted_in_the_browser_and_no_other_teams() {
    let env = Env::start(Backend::Sqlite, true).await;
    let tmp = env.dir.path().to_owned();
    // A finished session (not live), and two agents recording now: one of rita's, one of
    // another team's.
    record_pngs(&env, &tmp.join("frames")).await;
    let (stop_live, live_rx) = tokio::sync::watch::channel(false);
    let mut live_spec = spec(1, 120.0);
    live_spec.frame_interval = Duration::from_millis(400);
    live_spec.images = true;
    let mut agents = Vec::new();
    for name in ["ts-live", "other-live"] {
        agents.push(tokio::spawn(agent::run(
            env.enroll(name),
            Source::Synthetic(live_spec.clone()),
            live_rx.clone(),
            Duration::from_secs(5),
        )));
    }
    add_user(
        &env.server().metadata,
        "rita",
        Role::Reviewer,
        &["ts-*"],
        RITA,
    )
    .await;
    let (console, wire, driver, mut page) = overview_page(&env, "montage").await;
    // Count the page's decoded frames: made and closed.
    page.js(
        "const made = window.createImageBitmap; window.bitmaps = { made: 0, closed: 0 };
         window.createImageBitmap = async (...a) => { const b = await made(...a); window.bitmaps.made += 1;
           const close = b.close.bind(b); b.close = () => { window.bitmaps.closed += 1; close(); }; return b; };",
    )
    .await;
    page.click("montage-open").await;
    page.until(
        "the live session's tile",
        "return document.querySelector('#montage-grid .tile[data-agent=\"ts-live\"]') !== null",
    )
    .await;
    let tiles = page
        .js("return [...document.querySelectorAll('#montage-grid .tile')].map(t => [t.dataset.agent, t.dataset.state, t.querySelector('.tile-cover').textContent])")
        .await;
    assert_eq!(
        tiles,
        json!([["ts-live", "encrypted", "Encrypted"]]),
        "one tile, rita's live session only, Encrypted"
    );
    assert_eq!(
        page.js("return document.querySelector('#montage-grid canvas').dataset.seq ?? null")
            .await,
        json!(null),
        "nothing decrypted before the passphrase"
    );
    page.shot("montage-encrypted").await;

    // A wrong passphrase says so, and leaves the tile Encrypted.
    page.fill("montage-passphrase", "wrong horse battery").await;
    page.click("montage-decrypt-submit").await;
    let err = page
        .until(
            "the passphrase error",
            "return document.getElementById('montage-error').textContent",
        )
        .await;
    assert_eq!(err, "Wrong passphrase for this key file.");
    assert_eq!(
        page.js("return document.querySelector('#montage-grid .tile').dataset.state")
            .await,
        json!("encrypted")
    );
    page.fill("montage-passphrase", PASS).await;
    page.click("montage-decrypt-submit").await;
    page.until(
        "the decrypted tile",
        "return document.querySelector('#montage-grid canvas').dataset.seq ?? null",
    )
    .await;
    let session = page
        .js("return document.querySelector('#montage-grid .tile').dataset.session")
        .await;
    let session = session.as_str().unwrap().to_owned();
    // Pixel for pixel the frame the agent recorded (decrypted here from the store); the
    // canvas and its sequence number are read together (the tile moves on as frames arrive).
    let v = page
        .js("const c = document.querySelector('#montage-grid canvas'); return [c.dataset.seq, c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]")
        .await;
    let first: u64 = v[0].as_str().unwrap().parse().unwrap();
    let (w, h, rgb) = stored_png_rgb(&frame_image(&env, "ts-live", &session, first).await);
    assert_eq!(
        (v[1].as_u64().unwrap(), v[2].as_u64().unwrap()),
        (u64::from(w), u64::from(h))
    );
    let shown: Vec<u8> = v[3]
        .as_array()
        .unwrap()
        .chunks(4)
        .flat_map(|p| p[..3].iter().map(|v| v.as_u64().unwrap() as u8))
        .collect();
    assert!(shown == rgb, "the tile shows frame {first} exactly");
    page.shot("montage-decrypted").await;

    // Updated as frames arrive: a newer frame replaces the first.
    page.until(
        "a newer frame on the tile",
        &format!(
            "return Number(document.querySelector('#montage-grid canvas').dataset.seq ?? -1) > {first}"
        ),
    )
    .await;
    // One decoded frame per tile: every ImageBitmap made was closed once drawn.
    let bitmaps = page.js("return window.bitmaps").await;
    assert!(bitmaps["made"].as_u64().unwrap() >= 2, "{bitmaps}");
    assert_eq!(bitmaps["made"], bitmaps["closed"], "{bitmaps}");
    assert_eq!(
        page.js("return document.querySelectorAll('#montage-grid .tile').length")
            .await,
        json!(1)
    );
    // Another team's live session never shows, even asked for by name.
    let text = page
        .js("return document.getElementById('montage-view').innerText")
        .await;
    assert!(!text.as_str().unwrap().contains("other-live"), "{text}");
    let other = page_fetch(
        &page,
        &format!(
            "/api/overview?live=true&agents={}",
            hex::encode("other-live")
        ),
    )
    .await;
    assert_eq!(other[0], json!(200));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(other[1].as_str().unwrap()).unwrap()["sessions"],
        json!([])
    );

    // Lock forgets the frame: the tile is Encrypted again, and stays so after the next poll.
    page.click("lock").await;
    page.until(
        "the tile locked",
        "return document.querySelector('#montage-grid .tile').dataset.state === 'encrypted'",
    )
    .await;
    assert_eq!(
        page.js("return document.querySelector('#montage-grid canvas').dataset.seq ?? null")
            .await,
        json!(null)
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        page.js("return [document.querySelector('#montage-grid .tile').dataset.state, !document.getElementById('montage-decrypt').hidden]")
            .await,
        json!(["encrypted", true])
    );

    // A click on the tile opens the player on that session.
    page.js("document.querySelector('#montage-grid .tile').click()")
        .await;
    page.until(
        "the player on ts-live",
        "return !document.getElementById('session-view').hidden && document.getElementById('session-title').textContent.startsWith('ts-live')",
    )
    .await;
    assert_eq!(
        page.js("return document.getElementById('montage-view').hidden")
            .await,
        json!(true)
    );

    page.c.clone().close().await.unwrap();
    drop(driver);
    let _ = stop_live.send(true);
    for a in agents {
        let _ = a.await;
    }
    console.stop().await;
    let wire = std::mem::take(&mut *wire.lock().unwrap());
    assert!(contains(&wire.up, "/api/overview"));
    assert!(!contains(&wire.up, PASS), "the passphrase was sent");
    env.stop().await;
}
