//! The review console in a real browser: Debian's headless Chromium driven through
//! chromedriver (fantoccini), against the real server, its SQLite database and store, with a
//! recording of real PNG frames and a keystroke canary, and a second agent recording live.
//! Every byte the browser sends and receives passes a recording relay, so the test proves that
//! the passphrase and the plaintext never reach the server, its logs, database or store.
//! An X display recorded by the agent's X11 source is shown as its screenshot shows it.
//! Screenshots of each step are kept in `target/tmp/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::PASS;
use crate::common::agents::spec;
use crate::common::browser::{
    Logs, Page, Wire, browser, contains, contains_bytes, recording_relay, tree_contains,
    wait_for_download,
};
use crate::common::console::{add_user, picture, png, start};
use crate::common::server::{Backend, Env};
use crate::common::xvfb::{Xvfb, capture_config, start_agent};
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

mod captured_x;
mod design;
mod design_steps;
mod keystrokes;
mod montage;
mod player;
mod privacy;
mod proof;
mod snapshots;

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

/// Rewrite `tmp/keypair.pem` in the traditional form openssl 1.x writes (`Proc-Type:
/// 4,ENCRYPTED`, which WebCrypto cannot open) as `tmp/out`, same passphrase.
fn traditional_key(tmp: &Path, out: &str) {
    let pass = format!("pass:{PASS}");
    crate::common::openssl(
        tmp,
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
            out,
        ],
    );
}

/// Record frames `pictures` as agent ts-std, whose KEK is server-held (registered with
/// priv_encrypted = false and an unencrypted key file made by openssl), into `tmp/dir`.
async fn record_standard(env: &Env, tmp: &Path, dir: &str, pictures: std::ops::Range<u32>) {
    crate::common::genrsa(tmp, "std.pem", 2048, &[]);
    crate::common::pubout(tmp, "std.pem", "std.crt", false);
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
    record(std_cfg, &tmp.join(dir), pictures, false).await;
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
            rows.push(ChunkRow::of(
                c,
                sealstream::protocol::segment::chunk_digest(c),
                offset,
                None,
            ));
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

/// A recording written straight into the store and the index, signed as its agent would,
/// whose streams can go on later (a session still recording).
struct Written {
    record: DekRecord,
    frames: sealstream::crypto::StreamSealer,
    keys: sealstream::crypto::StreamSealer,
    dek_stored: bool,
}

impl Operator<'_> {
    fn start(&self, name: &str) -> Written {
        use rustls::pki_types::pem::PemObject;
        let cfg = self.env.enroll(name);
        let kek = sealstream::keys::load_public_key(&self.env.kek_pub).unwrap();
        let cert = CertificateDer::from_pem_file(&cfg.cert).unwrap();
        let key = PrivateKeyDer::from_pem_file(&cfg.key).unwrap();
        let signer = Arc::new(AgentSigner::new(&cert, &key).unwrap());
        let every = Checkpoints {
            every_chunks: 4,
            every: Duration::from_secs(3600),
        };
        let rec = Recorder::new(AgentId::new(name).unwrap(), &kek)
            .signed_by(signer, every)
            .unwrap();
        let session = SessionId::random();
        Written {
            record: rec.dek_record().clone(),
            frames: rec.open_stream(session, StreamId(0), Kind::Frame),
            keys: rec.open_stream(session, StreamId(1), Kind::Keystrokes),
            dek_stored: false,
        }
    }

    /// Seal `frames` ((width, height, picture, capture µs)) and keystroke events ((JSON line,
    /// capture µs), one a chunk), and final chunks at `end` when given; store them as one
    /// segment and index them.
    async fn add(
        &self,
        w: &mut Written,
        frames: &[(u32, u32, u32, i64)],
        keys: &[(String, i64)],
        end: Option<i64>,
    ) {
        let mut chunks = Vec::new();
        for &(fw, fh, n, at) in frames {
            let image = png(fw, fh, &picture(fw, fh, n));
            let name = format!("screen-{n:03}.png");
            let frame = Frame {
                name: &name,
                image: &image,
            }
            .encode();
            chunks.push(w.frames.seal(&frame, at, false).unwrap());
        }
        if let Some(end) = end {
            chunks.push(w.frames.seal(&[], end, true).unwrap());
        }
        for (line, at) in keys {
            chunks.push(
                w.keys
                    .seal(format!("{line}\n").as_bytes(), *at, false)
                    .unwrap(),
            );
        }
        if let Some(end) = end {
            chunks.push(w.keys.seal(&[], end, true).unwrap());
        }
        self.commit(w, &chunks, &[]).await;
    }

    /// Store `chunks` of `w` as one segment (with `w`'s DEK record the first time) and index
    /// them; `gaps` are the gap records among them, as (the record's seq, the first seq it
    /// says was dropped).
    async fn commit(&self, w: &mut Written, chunks: &[SealedChunk], gaps: &[(u64, u64)]) {
        if !w.dek_stored {
            let dek_key = paths::dek_record(&w.record.agent, w.record.dek_id);
            storage::put_new(self.store.as_ref(), &dek_key, w.record.encode().into())
                .await
                .unwrap();
            self.env
                .server()
                .metadata
                .insert_deks(vec![(w.record.clone(), dek_key.to_string())])
                .await
                .unwrap();
            w.dek_stored = true;
        }
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
        let mut streams: Vec<StreamUpdate> = Vec::new();
        for c in chunks {
            let h = &c.header;
            let gap_first = h
                .gap
                .then(|| gaps.iter().find(|g| g.0 == h.seq).map(|g| g.1))
                .flatten();
            rows.push(ChunkRow::of(
                c,
                sealstream::protocol::segment::chunk_digest(c),
                offset,
                gap_first,
            ));
            offset += c.len() as u64;
            let update = StreamUpdate {
                agent: h.agent.clone(),
                session: h.session,
                stream: h.stream,
                kind: h.kind.code(),
                next_seq: h.seq + 1,
                final_seq: h.last.then_some(h.seq),
            };
            match streams.iter_mut().find(|s| s.stream == h.stream) {
                Some(s) => *s = update,
                None => streams.push(update),
            }
        }
        self.env
            .server()
            .metadata
            .commit_segment(SegmentCommit {
                segment_id: id,
                object_key: key.to_string(),
                size,
                sha256,
                chunks: rows,
                streams,
                fences: Vec::new(),
            })
            .await
            .unwrap();
    }
}

/// A keystroke event as an agent records it: what was typed is in `text`.
fn typed(at_us: i64, text: &str) -> (String, i64) {
    let line = json!({
        "ts": at_us / 1000,
        "app": "notepad.exe",
        "window": "notes.txt - Notepad",
        "text": text,
    });
    (line.to_string(), at_us)
}

/// Whether a file under `dir` holds `needle`, as UTF-8 or as UTF-16 (how Chromium keeps a
/// page's form state in its session files).
fn profile_holds(dir: &Path, needle: &str) -> Option<PathBuf> {
    let utf16: Vec<u8> = needle.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| contains(&b, needle) || contains_bytes(&b, &utf16))
            {
                return Some(p);
            }
        }
    }
    None
}

/// The UTC date (YYYY-MM-DD) of a time in µs since the epoch.
fn utc_date(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap();
    t.date().to_string()
}

// ---- The overviews (issue 23, views 10–12): Live montage, Screen snapshots, Keystrokes report ----

/// The RGB pixels of the canvas `selector` finds: (width, height, rgb).
async fn canvas_rgb(page: &Page, selector: &str) -> (u32, u32, Vec<u8>) {
    let v = page
        .js(&format!(
            "const c = document.querySelector({selector:?}); \
             return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]"
        ))
        .await;
    let rgb = v[2]
        .as_array()
        .unwrap()
        .chunks(4)
        .flat_map(|p| p[..3].iter().map(|v| v.as_u64().unwrap() as u8))
        .collect();
    (
        v[0].as_u64().unwrap() as u32,
        v[1].as_u64().unwrap() as u32,
        rgb,
    )
}

/// The API answer to `path` in the page (with its login): [status, body text].
async fn page_fetch(page: &Page, path: &str) -> serde_json::Value {
    page.c
        .execute_async(
            &format!(
                "const done = arguments[0]; fetch('{path}').then(async r => done([r.status, await r.text()]))"
            ),
            vec![],
        )
        .await
        .unwrap()
}

/// A logged-in page for the overview tests: the console behind a recording relay.
async fn overview_page(
    env: &Env,
    name: &str,
) -> (
    sealstream::console::Console,
    Arc<Mutex<Wire>>,
    crate::common::browser::Driver,
    Page,
) {
    let console = start(env, |_| {}).await;
    let wire = Arc::new(Mutex::new(Wire::default()));
    let relay = recording_relay(console.addr, wire.clone()).await;
    let shots =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{name}-screenshots"));
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let downloads = env.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (driver, c) = browser(&downloads).await;
    let page = Page { c, shots, n: 0 };
    page.c.goto(&format!("http://{relay}/")).await.unwrap();
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await;
    page.login("rita", RITA).await;
    page.until(
        "the overview buttons",
        "return !document.getElementById('overviews').hidden",
    )
    .await;
    (console, wire, driver, page)
}

/// A time (ms) as a datetime-local input's value (UTC, to the second).
fn input_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap()
}

/// Pick `agents` in the multiple select `id` (none: every agent).
async fn pick_agents(page: &Page, id: &str, agents: &[&str]) {
    let hexes: Vec<String> = agents.iter().map(hex::encode).collect();
    page.js(&format!(
        "const want = {}; for (const o of document.getElementById('{id}').options) o.selected = want.includes(o.value);",
        json!(hexes)
    ))
    .await;
}
