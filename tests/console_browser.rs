//! The review console in a real browser: Debian's headless Chromium driven through
//! chromedriver (fantoccini), against the real server, its SQLite database and store, with a
//! recording of real PNG frames and a keystroke canary, and a second agent recording live.
//! Every byte the browser sends and receives passes a recording relay, so the test proves that
//! the passphrase and the plaintext never reach the server, its logs, database or store.
//! Screenshots of each step are kept in `target/tmp/console-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::PASS;
use common::agents::spec;
use common::browser::{
    Logs, Page, Wire, browser, contains, contains_bytes, recording_relay, tree_contains,
    wait_for_download,
};
use common::console::{add_user, picture, png, start};
use common::server::{Backend, Env};
use fantoccini::Locator;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sealstream::agent::{self, Source};
use sealstream::crypto::{AgentSigner, Checkpoints};
use sealstream::metadata::{ChunkRow, Role, SegmentCommit, StreamUpdate};
use sealstream::protocol::payload::Frame;
use sealstream::protocol::{AgentId, DekRecord, Kind, SealedChunk, Segment, SessionId, StreamId};
use sealstream::recorder::Recorder;
use sealstream::storage::{self, paths};
use serde_json::json;

const KEY_CANARY: &str = "KEYCANARY-93c1f0";
const W: u32 = 96;
const H: u32 = 64;
const FRAMES: u32 = 12;
const RITA: &str = "rita-reviewer-password";
const BOB: &str = "bob-reviewer-password";
const ANN: &str = "ann-admin-password";

/// Record FRAMES real PNG frames, one a second, and keystrokes with the canary, as agent ts-01.
async fn record_pngs(env: &Env, dir: &Path) -> i64 {
    let cfg = env.enroll("ts-01");
    record(cfg, dir, 0..FRAMES, true).await
}

/// Record frames `pictures` (one a second) and a keystroke per frame, with the canary at the
/// eighth when `canary`, through agent config `cfg`; returns the first capture time (ms).
async fn record(
    cfg: sealstream::config::AgentConfig,
    dir: &Path,
    pictures: std::ops::Range<u32>,
    canary: bool,
) -> i64 {
    std::fs::create_dir_all(dir).unwrap();
    let base_ms = sealstream::metadata::now_us() / 1000 - 60_000;
    let mut paths = Vec::new();
    for n in pictures.clone() {
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
    let mut keys = String::new();
    for n in pictures {
        let text = if n == 7 && canary {
            KEY_CANARY
        } else {
            "hello"
        };
        keys.push_str(&format!(
            "{{\"ts\":{},\"app\":\"notepad.exe\",\"key\":\"{text}\"}}\n",
            base_ms + i64::from(n) * 1000 + 100
        ));
    }
    let k = dir.join("keys.jsonl");
    std::fs::write(&k, keys).unwrap();
    paths.push(k);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let report = agent::run(cfg, Source::Replay(paths), rx, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.unacked, 0);
    base_ms
}

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
    common::genrsa(&tmp, "std.pem", 2048, &[]);
    common::pubout(&tmp, "std.pem", "std.crt", false);
    env.server()
        .metadata
        .insert_kek(
            true,
            false,
            &tmp.join("std.crt").display().to_string(),
            &tmp.join("std.pem").display().to_string(),
        )
        .await
        .unwrap();
    env.server().reload_keks().await;
    let mut std_cfg = env.enroll("ts-std");
    std_cfg.kek = tmp.join("std.crt");
    record(std_cfg, &tmp.join("std-frames"), 20..23, false).await;
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
    let pass = format!("pass:{PASS}");
    common::openssl(
        &tmp,
        &[
            "rsa",
            "-in",
            "keypair.pem",
            "-passin",
            &pass,
            "-traditional",
            "-aes256",
            "-passout",
            &pass,
            "-out",
            "trad.pem",
        ],
    );
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
    let audit = page
        .until("audit rows", "return document.querySelectorAll('#audit tbody tr').length > 0 && document.getElementById('audit').innerText")
        .await;
    let audit = audit.as_str().unwrap();
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

/// What a store and database operator can do to recordings, each written straight into the
/// store and the index as that operator would (object puts, SQL), and what the page says of
/// each: the same verdict `verify --agent-ca` gives on the same store, in a reviewer's words,
/// with capture times from the chunks themselves rather than the index.
struct Operator<'a> {
    env: &'a Env,
    store: Arc<dyn object_store::ObjectStore>,
}

const T0_US: i64 = 1_795_773_600_000_000;

impl Operator<'_> {
    /// `frames` PNG frames and a final chunk by enrolled agent `name`, signed by its enrolment
    /// key (checkpoints every 4 chunks) or, when `signed` is false, sealed from the public KEK
    /// alone (what anyone holding the public KEK can make in the agent's name).
    fn record(&self, name: &str, signed: bool, frames: u32) -> (DekRecord, Vec<SealedChunk>) {
        use rustls::pki_types::pem::PemObject;
        let cfg = self.env.enroll(name);
        let kek = sealstream::keys::load_public_key(&self.env.kek_pub).unwrap();
        let mut rec = Recorder::new(AgentId::new(name).unwrap(), &kek);
        if signed {
            let cert = CertificateDer::from_pem_file(&cfg.cert).unwrap();
            let key = PrivateKeyDer::from_pem_file(&cfg.key).unwrap();
            let signer = Arc::new(AgentSigner::new(&cert, &key).unwrap());
            let every = Checkpoints {
                every_chunks: 4,
                every: Duration::from_secs(3600),
            };
            rec = rec.signed_by(signer, every).unwrap();
        }
        let mut s = rec.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
        let mut chunks = Vec::new();
        for n in 0..frames {
            let image = png(W, H, &picture(W, H, n));
            let frame = Frame {
                name: &format!("screen-{n:03}.png"),
                image: &image,
            }
            .encode();
            chunks.push(
                s.seal(&frame, T0_US + i64::from(n) * 1_000_000, false)
                    .unwrap(),
            );
        }
        let end = T0_US + i64::from(frames) * 1_000_000;
        chunks.push(s.seal(&[], end, true).unwrap());
        (rec.dek_record().clone(), chunks)
    }

    /// Put `chunks` into one segment object and `record` beside it, and index them; `claim`
    /// edits the index's rows first (what the index says, not what is stored).
    async fn write(
        &self,
        record: &DekRecord,
        chunks: &[SealedChunk],
        claim: impl FnOnce(&mut Vec<ChunkRow>, &mut StreamUpdate),
    ) {
        let dek_key = paths::dek_record(&record.agent, record.dek_id);
        storage::put_new(self.store.as_ref(), &dek_key, record.encode().into())
            .await
            .unwrap();
        let created = sealstream::metadata::now_us();
        let id = Segment::new_id(created);
        let (bytes, sha256) = Segment::encode(id, created, chunks);
        let key = paths::segment(created, &id);
        let size = bytes.len() as u64;
        storage::put_new(self.store.as_ref(), &key, bytes)
            .await
            .unwrap();
        let mut offset = sealstream::protocol::segment::HEADER_LEN as u64;
        let mut rows = Vec::new();
        for c in chunks {
            let h = &c.header;
            rows.push(ChunkRow {
                agent: h.agent.clone(),
                session: h.session,
                stream: h.stream,
                seq: h.seq,
                digest: sealstream::protocol::segment::chunk_digest(c),
                offset,
                len: c.len() as u32,
                capture_us: h.capture_time_us,
                flags: sealstream::metadata::index_flags(c),
                dek_id: h.dek_id.0,
                gap_first: None,
            });
            offset += c.len() as u64;
        }
        let last = &chunks[chunks.len() - 1].header;
        let mut stream = StreamUpdate {
            agent: last.agent.clone(),
            session: last.session,
            stream: last.stream,
            kind: last.kind.code(),
            next_seq: last.seq + 1,
            final_seq: last.last.then_some(last.seq),
        };
        claim(&mut rows, &mut stream);
        let md = &self.env.server().metadata;
        md.insert_deks(vec![(record.clone(), dek_key.to_string())])
            .await
            .unwrap();
        md.commit_segment(SegmentCommit {
            segment_id: id,
            object_key: key.to_string(),
            size,
            sha256,
            chunks: rows,
            streams: vec![stream],
            fences: Vec::new(),
        })
        .await
        .unwrap();
    }
}

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
            "unproven",
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
