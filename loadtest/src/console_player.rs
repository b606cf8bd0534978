//! `sealstream-loadtest console-player`: the review console's player in headless Chromium.
//! An in-process server records a session of --frames real PNG frames of --frame-size bytes
//! (capture times 100 ms apart) and a live session; the console serves them; Chromium,
//! driven through chromedriver, decrypts and seeks. Measured in the page:
//! - open: from Decrypt to the first frame on screen;
//! - seek: from a click on the timeline to the decrypted frame on screen, beside fetching the
//!   same chunk's ciphertext alone (the baseline, in the same page);
//! - bytes fetched against the session's size (seeking must not download the session);
//! - JS heap and Chromium's memory (PSS of its processes) after opening, seeking and playing;
//! - live: capture time to screen for frames of a session still recording, beside the
//!   server's own ack latency for the same agent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::Client;
use sealstream::agent::{self, Observer, Source, synthetic};
use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::console::{Console, auth};
use sealstream::metadata::{ConsoleUser, Role, now_us};
use sealstream::protocol::AgentId;
use sealstream::server::Server;
use sealstream_test_support::chromium::{self, Driver};
use sealstream_test_support::proc_kib;
use serde::Serialize;
use serde_json::Value;

pub struct Args {
    pub frames: u32,
    pub frame_size: usize,
    pub seeks: usize,
    pub live_seconds: u64,
    pub json: Option<PathBuf>,
}

pub const PASSPHRASE: &str = "benchmark passphrase";
const PASSWORD: &str = "benchmark password";

#[derive(Serialize, Default)]
struct Stats {
    median: f64,
    p95: f64,
    max: f64,
    n: usize,
}

fn stats(mut v: Vec<f64>) -> Stats {
    if v.is_empty() {
        return Stats::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Stats {
        median: at(0.5),
        p95: at(0.95),
        max: at(1.0),
        n: v.len(),
    }
}

#[derive(Serialize)]
struct Report {
    frames: u32,
    frame_size: usize,
    session_bytes: u64,
    open_ms: f64,
    seek_ms: Stats,
    fetch_baseline_ms: Stats,
    seek_over_fetch: f64,
    /// Ciphertext the player fetched for all the seeks (baseline fetches not counted).
    fetched_bytes_during_seeks: u64,
    heap_mib: Vec<(String, f64)>,
    chromium_pss_mib: Vec<(String, f64)>,
    live_capture_to_screen_ms: Stats,
    live_ack_ms: Stats,
    chromium: String,
}

/// Ack latencies of the live agent.
#[derive(Default)]
struct Acks(Mutex<Vec<f64>>);

impl Observer for Acks {
    fn acked(&self, _bytes: usize, latency: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push(latency.as_secs_f64() * 1000.0);
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(run_async(args))
}

/// A server in this process on loopback ports with its data in `d`, and a passphrase-protected
/// KEK (PASSPHRASE) made and registered the how-to's way; returns its public key file.
pub async fn start_server(d: &std::path::Path) -> anyhow::Result<(ServeConfig, Server, PathBuf)> {
    let cfg = ServeConfig::from_text(
        &d.join("serve.toml"),
        "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"server\"\n",
    )?;
    let server = Server::start(&cfg).await.context("starting the server")?;
    let kek = sealstream::keys::generate_keypair(
        &d.join("kek"),
        2048,
        &sealstream::keys::Passphrase::new(PASSPHRASE.as_bytes().to_vec()),
    )?;
    server
        .metadata
        .insert_kek(
            true,
            true,
            &kek.public_path.display().to_string(),
            &kek.private_path.display().to_string(),
        )
        .await?;
    server.reload_keks().await;
    Ok((cfg, server, kek.public_path))
}

async fn run_async(a: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (cfg, server, kek) = start_server(d).await?;
    let pki = sealstream::pki::Pki::open_or_create(&cfg.data_dir)?;
    let agent_cfg = |name: &str| -> anyhow::Result<AgentConfig> {
        let files = pki.enroll_agent(
            &AgentId::new(name).map_err(anyhow::Error::msg)?,
            &d.join(name),
        )?;
        Ok(AgentConfig {
            server: server.quic_addr.to_string(),
            server_pins: vec![server.pin.to_string()],
            cert: files.cert,
            key: files.key,
            kek: kek.clone(),
            ..AgentConfig::default()
        })
    };

    // The recorded session: real PNGs, capture times 100 ms apart.
    eprintln!(
        "writing {} PNG frames of {} bytes ...",
        a.frames, a.frame_size
    );
    let frames_dir = d.join("frames");
    std::fs::create_dir_all(&frames_dir)?;
    let mut rng = synthetic::Rng::new(11);
    let start_ms = (now_us() / 1000) - i64::from(a.frames) * 100 - 60_000;
    let mut paths = Vec::new();
    let mut session_bytes = 0u64;
    for n in 0..a.frames {
        let (name, png) = synthetic::image_frame(&mut rng, a.frame_size, 0.0, u64::from(n));
        let p = frames_dir.join(name);
        std::fs::write(&p, &png)?;
        session_bytes += png.len() as u64;
        let t =
            std::time::UNIX_EPOCH + Duration::from_millis((start_ms + i64::from(n) * 100) as u64);
        std::fs::File::options()
            .write(true)
            .open(&p)?
            .set_modified(t)?;
        paths.push(p);
    }
    eprintln!("recording them through the server ...");
    let (_keep, rx) = tokio::sync::watch::channel(false);
    let report = agent::run(
        agent_cfg("bench-ts")?,
        Source::Replay(paths),
        rx,
        Duration::from_secs(30),
    )
    .await?;
    if report.unacked > 0 {
        bail!("{} chunks were not acked", report.unacked);
    }
    std::fs::remove_dir_all(&frames_dir)?;

    // The console and a reviewer.
    server
        .metadata
        .put_console_user(
            ConsoleUser {
                name: "bench".into(),
                role: Role::Admin,
                password_hash: auth::hash_password(PASSWORD).map_err(anyhow::Error::msg)?,
                agents: vec![],
                created_us: now_us(),
                disabled_us: None,
            },
            true,
            "loadtest",
            "user_add",
        )
        .await?;
    let store = sealstream::storage::open_local(&cfg.store_dir())?;
    let console_cfg = sealstream::config::Console {
        listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let console = Console::start(&console_cfg, server.metadata.clone(), store).await?;

    let (driver, c) = browser().await?;
    let chromium = c
        .execute("return navigator.userAgent", vec![])
        .await?
        .as_str()
        .unwrap_or("")
        .to_owned();
    let page = Page(c);
    page.c().goto(&console.url()).await?;
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await?;
    page.js("performance.setResourceTimingBufferSize(1000000)")
        .await?;
    page.fill("login-user", "bench").await?;
    page.fill("login-password", PASSWORD).await?;
    page.click("login-submit").await?;
    page.open("bench-ts").await?;
    page.fill("decrypt-passphrase", PASSPHRASE).await?;
    let open_ms = page
        .async_js(
            "const done = arguments[0]; const c = document.getElementById('frame'); const t0 = performance.now();
             new MutationObserver((m, o) => { if (c.dataset.seq !== undefined) { o.disconnect(); done(performance.now() - t0); } })
               .observe(c, { attributes: true });
             document.getElementById('decrypt-submit').click();",
        )
        .await?
        .as_f64()
        .context("open time")?;
    let mut heap = vec![("opened".to_owned(), page.heap_mib().await?)];
    let mut rss = vec![("opened".to_owned(), chromium_pss_mib(driver.profile()))];

    // Seeks to random points of the timeline, each to a frame not on screen.
    let mut seek_ms = Vec::new();
    let mut fetch_ms = Vec::new();
    let mut r = synthetic::Rng::new(5);
    for i in 0..a.seeks * 4 {
        if i == a.seeks {
            heap.push((
                format!("after {} seeks", seek_ms.len()),
                page.heap_mib().await?,
            ));
            rss.push((
                format!("after {} seeks", seek_ms.len()),
                chromium_pss_mib(driver.profile()),
            ));
        }
        let frac = (r.below(1_000_000) as f64) / 1_000_000.0;
        let v = page
            .async_js(&format!(
                "const done = arguments[0]; const c = document.getElementById('frame'); const t = document.getElementById('timeline');
                 const before = c.dataset.seq; const r = t.getBoundingClientRect();
                 const t0 = performance.now();
                 const o = new MutationObserver(() => {{ if (c.dataset.seq !== before) {{ o.disconnect(); done([performance.now() - t0, Number(c.dataset.seq)]); }} }});
                 o.observe(c, {{ attributes: true }});
                 t.dispatchEvent(new MouseEvent('click', {{ clientX: r.left + r.width * {frac}, clientY: r.top + 5, bubbles: true }}));
                 setTimeout(() => {{ o.disconnect(); done([null, null]); }}, 10000);"
            ))
            .await?;
        let (Some(ms), Some(seq)) = (v[0].as_f64(), v[1].as_u64()) else {
            continue; // the click landed on the frame already shown
        };
        seek_ms.push(ms);
        // The same chunk's ciphertext alone, fetched by the same page: the baseline.
        let f = page
            .async_js(&format!(
                "const done = arguments[0]; const row = document.querySelector('#sessions tbody tr.selected');
                 const t0 = performance.now();
                 fetch(`/api/agents/${{row.dataset.agent}}/sessions/${{row.dataset.session}}/streams/0/chunks?from_seq={seq}&count=1&baseline=1`)
                   .then(r => r.arrayBuffer()).then(() => done(performance.now() - t0));"
            ))
            .await?;
        fetch_ms.push(f.as_f64().unwrap_or(0.0));
    }
    let fetched = page
        .js("return performance.getEntriesByType('resource').filter(e => e.name.includes('/chunks?') && !e.name.includes('baseline=1')).reduce((s, e) => s + e.encodedBodySize, 0)")
        .await?
        .as_u64()
        .unwrap_or(0);
    page.js("performance.clearResourceTimings()").await?;
    heap.push((
        format!("after {} seeks", seek_ms.len()),
        page.heap_mib().await?,
    ));
    rss.push((
        format!("after {} seeks", seek_ms.len()),
        chromium_pss_mib(driver.profile()),
    ));

    // Play at 16x for 20 s from the start.
    page.js("document.getElementById('speed').value = '16'; document.getElementById('speed').dispatchEvent(new Event('change')); document.getElementById('play').click()").await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let played = page
        .js("return Number(document.getElementById('frame').dataset.seq)")
        .await?;
    page.js("document.getElementById('play').click()").await?;
    heap.push((
        format!("after playing at 16x to frame {played}"),
        page.heap_mib().await?,
    ));
    rss.push((
        format!("after playing at 16x to frame {played}"),
        chromium_pss_mib(driver.profile()),
    ));

    // Live: a session still recording, frames every 500 ms.
    let acks = Arc::new(Acks::default());
    let (stop_live, live_rx) = tokio::sync::watch::channel(false);
    let live_spec = synthetic::SyntheticSpec {
        users: 1,
        duration: Duration::from_secs(a.live_seconds + 60),
        frame_interval: Duration::from_millis(500),
        frame_size: a.frame_size,
        frame_size_spread: 0.0,
        images: true,
        ..Default::default()
    };
    let live_cfg = agent_cfg("bench-live")?;
    let obs: Arc<dyn Observer> = acks.clone();
    let live = actix_rt::spawn(agent::run_observed(
        live_cfg,
        Source::Synthetic(live_spec),
        live_rx,
        Duration::from_secs(5),
        Some(obs),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    page.js("document.getElementById('filter').requestSubmit()")
        .await?;
    page.open("bench-live").await?;
    page.fill("decrypt-passphrase", PASSPHRASE).await?;
    page.click("decrypt-submit").await?;
    page.until(
        "a live frame",
        "return document.getElementById('frame').dataset.seq",
    )
    .await?;
    let latencies = page
        .async_js(&format!(
            "const done = arguments[0]; const c = document.getElementById('frame'); const out = []; let last = c.dataset.seq;
             const o = new MutationObserver(() => {{ if (c.dataset.seq !== last) {{ last = c.dataset.seq; out.push(Date.now() - Number(c.dataset.captureUs) / 1000); }} }});
             o.observe(c, {{ attributes: true }});
             setTimeout(() => {{ o.disconnect(); done(out); }}, {});",
            a.live_seconds * 1000
        ))
        .await?;
    let live_ms: Vec<f64> = latencies
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let _ = stop_live.send(true);
    let _ = live.await;
    let ack_ms = acks.0.lock().map(|v| v.clone()).unwrap_or_default();

    let _ = page.0.close().await;
    console.stop().await;
    server.shutdown().await;

    let seek = stats(seek_ms);
    let fetch = stats(fetch_ms);
    let report = Report {
        frames: a.frames,
        frame_size: a.frame_size,
        session_bytes,
        open_ms,
        seek_over_fetch: seek.median / fetch.median.max(0.001),
        seek_ms: seek,
        fetch_baseline_ms: fetch,
        fetched_bytes_during_seeks: fetched,
        heap_mib: heap,
        chromium_pss_mib: rss,
        live_capture_to_screen_ms: stats(live_ms),
        live_ack_ms: stats(ack_ms),
        chromium,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// The browser's memory: the proportional set size (shared pages divided among their
/// sharers) of every process of this run's profile, summed (MiB).
fn chromium_pss_mib(profile: &std::path::Path) -> f64 {
    let kib: u64 = chromium::profile_pids(profile)
        .into_iter()
        .filter_map(|pid| proc_kib(pid as u32, "smaps_rollup", "Pss").ok())
        .sum();
    kib as f64 / 1024.0
}

/// chromedriver and a headless Chromium session whose page can measure its heap
/// (`performance.memory`, `window.gc()`).
pub(crate) async fn browser() -> anyhow::Result<(Driver, Client)> {
    chromium::start(
        &["--enable-precise-memory-info", "--js-flags=--expose-gc"],
        None,
    )
    .await
}

pub(crate) struct Page(pub(crate) Client);

impl Page {
    pub(crate) fn c(&self) -> &Client {
        &self.0
    }

    pub(crate) async fn js(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.0.execute(script, vec![]).await?)
    }

    pub(crate) async fn async_js(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.0.execute_async(script, vec![]).await?)
    }

    pub(crate) async fn until(&self, what: &str, script: &str) -> anyhow::Result<Value> {
        chromium::until(&self.0, what, script, 600).await
    }

    /// `until` for up to 10 minutes (a long search).
    pub(crate) async fn until_long(&self, what: &str, script: &str) -> anyhow::Result<Value> {
        chromium::until(&self.0, what, script, 6000).await
    }

    pub(crate) async fn fill(&self, id: &str, text: &str) -> anyhow::Result<()> {
        chromium::fill(&self.0, id, text).await
    }

    pub(crate) async fn click(&self, id: &str) -> anyhow::Result<()> {
        chromium::click(&self.0, id).await
    }

    async fn open(&self, agent: &str) -> anyhow::Result<()> {
        chromium::open_session(&self.0, agent, 600).await
    }

    /// The page's JS heap after a full garbage collection: what it keeps, not what it has not
    /// collected yet.
    async fn heap_mib(&self) -> anyhow::Result<f64> {
        Ok(self
            .js("window.gc(); return performance.memory ? performance.memory.usedJSHeapSize : 0")
            .await?
            .as_f64()
            .unwrap_or(0.0)
            / (1024.0 * 1024.0))
    }
}
