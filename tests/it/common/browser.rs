//! The review console's page in a real browser, for tests: Debian's headless Chromium through
//! chromedriver (fantoccini), a TCP relay that keeps every byte the browser and the console
//! exchange, captured logs, and small waits and searches.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Bytes each way through the relay.
#[derive(Default)]
pub struct Wire {
    pub up: Vec<u8>,
    pub down: Vec<u8>,
}

/// A TCP relay from the browser to the console that keeps every byte.
pub async fn recording_relay(to: SocketAddr, wire: Arc<Mutex<Wire>>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                return;
            };
            let wire = wire.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let w1 = wire.clone();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        w1.lock().unwrap().up.extend_from_slice(&buf[..n]);
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        wire.lock().unwrap().down.extend_from_slice(&buf[..n]);
                    }
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    addr
}

/// Log lines of this process, kept for the canary search.
#[derive(Clone, Default)]
pub struct Logs(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// chromedriver, killed (and reaped) when the test ends, even by a panic.
pub struct Driver(std::process::Child, tempfile::TempDir);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // Chromium outlives a killed chromedriver: end the browsers of this profile too.
        for pid in profile_pids(self.1.path()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Driver {
    /// The browser's profile directory (its `Default/Sessions`, caches, ...).
    pub fn profile(&self) -> &Path {
        self.1.path()
    }
}

/// The processes whose command line names the browser profile `dir`.
fn profile_pids(dir: &std::path::Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmd)
                .contains(&needle)
                .then_some(pid)
        })
        .collect()
}

/// chromedriver on a free port, and a headless Chromium session that saves downloads in
/// `downloads`.
pub async fn browser(downloads: &Path) -> (Driver, Client) {
    let port = super::agents::free_tcp().port();
    let driver = Driver(
        std::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)"),
        tempfile::tempdir().unwrap(),
    );
    let profile = format!("--user-data-dir={}", driver.1.path().display());
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", profile],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false
            }
        }
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let url = format!("http://127.0.0.1:{port}");
    // fantoccini's client is built for https too; chromedriver is plain http on loopback.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for _ in 0..100 {
        if let Ok(c) = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            return (driver, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start on {url}");
}

pub struct Page {
    pub c: Client,
    pub shots: PathBuf,
    pub n: usize,
}

impl Page {
    pub async fn shot(&mut self, name: &str) {
        self.n += 1;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.n)), png).unwrap();
    }

    pub async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Wait (up to 20 s) until `script` returns something truthy; return it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        for _ in 0..200 {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = self.js("return document.body.innerText").await;
        panic!(
            "timed out waiting for {what}; page text:\n{}",
            status.as_str().unwrap_or("")
        );
    }

    pub async fn fill(&self, id: &str, text: &str) {
        let e = self.c.find(Locator::Id(id)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, id: &str) {
        self.c
            .find(Locator::Id(id))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    pub async fn login(&self, user: &str, password: &str) {
        self.fill("login-user", user).await;
        self.fill("login-password", password).await;
        self.click("login-submit").await;
    }

    /// Click the row of the session of `agent` (the first when several).
    pub async fn open_session(&self, agent: &str) {
        self.until(
            &format!("a session of {agent}"),
            &format!(
                "return [...document.querySelectorAll('#sessions tbody tr')].some(r => r.cells[0].textContent === '{agent}')"
            ),
        )
        .await;
        self.js(&format!(
            "[...document.querySelectorAll('#sessions tbody tr')].find(r => r.cells[0].textContent === '{agent}').click()"
        ))
        .await;
        self.until(
            "the decrypt form",
            "return !document.getElementById('decrypt-form').hidden",
        )
        .await;
    }

    pub async fn shown_seq(&self) -> Option<u64> {
        self.js("return document.getElementById('frame').dataset.seq ?? null")
            .await
            .as_str()
            .map(|s| s.parse().unwrap())
    }
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

pub fn tree_contains(dir: &Path, needle: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(hit) = tree_contains(&p, needle) {
                return Some(hit);
            }
        } else if std::fs::read(&p).is_ok_and(|b| contains(&b, needle)) {
            return Some(p);
        }
    }
    None
}

pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of a finished download ending in `ext` not in `seen` (then added to it).
pub async fn wait_for_download(dir: &Path, ext: &str, seen: &mut Vec<PathBuf>) -> Vec<u8> {
    for _ in 0..200 {
        if let Some(p) = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(ext) && !seen.contains(p))
        {
            let b = std::fs::read(&p).unwrap();
            if !b.is_empty() {
                seen.push(p);
                return b;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {ext} download in {}", dir.display());
}
