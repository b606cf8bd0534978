//! The review console's page in a real browser, for tests: Debian's headless Chromium through
//! chromedriver (fantoccini), a TCP relay that keeps every byte the browser and the console
//! exchange, captured logs, and small waits and searches.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::Client;
use sealstream_test_support::chromium;
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

pub use sealstream_test_support::chromium::Driver;

/// chromedriver on a free port, and a headless Chromium session that saves downloads in
/// `downloads` (killed, with its browsers, when the `Driver` drops, even by a panic).
pub async fn browser(downloads: &Path) -> (Driver, Client) {
    let prefs = json!({
        "download.default_directory": downloads.display().to_string(),
        "download.prompt_for_download": false
    });
    chromium::start(&["--no-first-run"], Some(prefs))
        .await
        .unwrap_or_else(|e| {
            panic!("{e:#} (chromedriver: Debian's chromium-driver; .ci/run installs it)")
        })
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

    /// Panic with `e` and the page's text.
    async fn fail<T>(&self, e: anyhow::Error) -> T {
        let status = self.js("return document.body.innerText").await;
        panic!("{e:#}; page text:\n{}", status.as_str().unwrap_or(""));
    }

    /// Wait (up to 20 s) until `script` returns something truthy; return it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        match chromium::until(&self.c, what, script, 200).await {
            Ok(v) => v,
            Err(e) => self.fail(e).await,
        }
    }

    pub async fn fill(&self, id: &str, text: &str) {
        chromium::fill(&self.c, id, text).await.unwrap();
    }

    pub async fn click(&self, id: &str) {
        chromium::click(&self.c, id).await.unwrap();
    }

    pub async fn login(&self, user: &str, password: &str) {
        self.fill("login-user", user).await;
        self.fill("login-password", password).await;
        self.click("login-submit").await;
    }

    /// Click the row of the session of `agent` (the first when several).
    pub async fn open_session(&self, agent: &str) {
        if let Err(e) = chromium::open_session(&self.c, agent, 200).await {
            self.fail(e).await
        }
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
