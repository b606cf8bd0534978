//! moto's S3 server (PyPI `moto[server]`) on a loopback port, one per test: a real S3 API
//! (signed requests, conditional PUT, multipart uploads) for the object store tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealstream::config;

use super::agents::free_tcp;

pub struct Moto {
    proc: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Start `moto_server` (or `python3 -m moto.server`) and wait until it answers.
    pub fn start() -> Moto {
        let addr = free_tcp();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let port = addr.port().to_string();
        let spawn = |program: &str, pre: &[&str]| {
            Command::new(program)
                .args(pre)
                .args(["-H", "127.0.0.1", "-p", &port])
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
        };
        let proc = spawn("moto_server", &[])
            .or_else(|_| spawn("python3", &["-m", "moto.server"]))
            .expect("moto's S3 server: pip install 'moto[server]' (.ci/run installs it)");
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on {addr}: {}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(
            dir.path().join("credentials"),
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
        )
        .unwrap();
        Moto {
            proc,
            endpoint: format!("http://{addr}"),
            dir,
        }
    }

    /// Create bucket `name` (moto accepts the unsigned request).
    pub fn bucket(&self, name: &str) -> String {
        use std::io::{Read, Write};
        let host = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(host).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
        format!("s3://{name}")
    }

    /// The AWS shared credentials file the tests use (moto accepts any key).
    pub fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// `[store]` settings that reach this server.
    pub fn settings(&self) -> config::Store {
        config::Store {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            credentials_file: self.credentials(),
            retry_timeout_ms: 5_000,
            ..config::Store::default()
        }
    }

    /// The same as a `[store]` section of a configuration file.
    pub fn settings_toml(&self) -> String {
        format!(
            "[store]\nendpoint = \"{}\"\nregion = \"us-east-1\"\ncredentials_file = \"{}\"\nretry_timeout_ms = 5000\n",
            self.endpoint,
            self.credentials().display()
        )
    }

    /// Environment for a `sealstream` command reading this server by URL alone.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.credentials().display().to_string(),
            ),
        ]
    }
}

/// An HTTP proxy in front of moto that answers `503 SlowDown` (S3's throttling) to every
/// request while `throttle` is set, and forwards them otherwise: object_store's own retries
/// meet real HTTP throttling. Each request is sent upstream with `Connection: close`, so every
/// request opens a connection of its own and is judged by itself.
pub struct Throttle {
    pub endpoint: String,
    pub throttle: Arc<AtomicBool>,
    /// Requests answered 503.
    pub slowed: Arc<AtomicU64>,
}

impl Throttle {
    pub async fn start(upstream: &str) -> Throttle {
        let upstream: std::net::SocketAddr =
            upstream.trim_start_matches("http://").parse().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let throttle = Arc::new(AtomicBool::new(false));
        let slowed = Arc::new(AtomicU64::new(0));
        let (t, s) = (throttle.clone(), slowed.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (t, s) = (t.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = proxy_one(client, upstream, &t, &s).await;
                });
            }
        });
        Throttle {
            endpoint,
            throttle,
            slowed,
        }
    }
}

async fn proxy_one(
    mut client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    throttle: &AtomicBool,
    slowed: &AtomicU64,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if throttle.load(Ordering::SeqCst) {
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut left = length.saturating_sub(buf.len() - head_end);
        let mut sink = vec![0u8; 65536];
        while left > 0 {
            let n = client.read(&mut sink[..left.min(65536)]).await?;
            if n == 0 {
                break;
            }
            left -= n;
        }
        slowed.fetch_add(1, Ordering::Relaxed);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        client
            .write_all(
                format!(
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
        return client.shutdown().await;
    }
    let mut up = tokio::net::TcpStream::connect(upstream).await?;
    up.write_all(close_after(&head).as_bytes()).await?;
    up.write_all(&buf[head_end..]).await?;
    let (mut client_read, mut client_write) = client.split();
    let (mut up_read, mut up_write) = up.split();
    // The rest of the request body up; the answer down with `Connection: close` in its head
    // too, so the client never sends a second request on this connection.
    let upload = async {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        // The client's side may end first: the answer still goes down.
        std::future::pending::<()>().await
    };
    let download = async {
        let mut answer = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 8192];
            let n = up_read.read(&mut chunk).await?;
            if n == 0 {
                return client_write.shutdown().await;
            }
            answer.extend_from_slice(&chunk[..n]);
            if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&answer[..end]).into_owned();
        client_write
            .write_all(close_after(&head).as_bytes())
            .await?;
        client_write.write_all(&answer[end..]).await?;
        tokio::io::copy(&mut up_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::select! {
        r = download => r,
        _ = upload => Ok(()),
    }
}

/// An HTTP head with its `Connection` header replaced by `Connection: close`.
fn close_after(head: &str) -> String {
    let mut out: String = head
        .split("\r\n")
        .filter(|l| {
            !l.is_empty()
                && !l
                    .split_once(':')
                    .is_some_and(|(k, _)| k.eq_ignore_ascii_case("connection"))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str("Connection: close\r\n\r\n");
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}
