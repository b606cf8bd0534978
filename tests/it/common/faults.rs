//! Fault injection harness: a server as a killable child process, a failing and slow segment
//! writer, a UDP relay that can cut the network, and a private PostgreSQL cluster that can be
//! stopped and started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sealstream::config::ServeConfig;
use sealstream::storage::{PutOutcome, StoreError, durable::SegmentWriter};

use super::agents::free_tcp;

/// A server as a child process, so it can be killed with SIGKILL.
pub struct Child {
    pub cfg: ServeConfig,
    pub config_path: PathBuf,
    pub proc: Option<std::process::Child>,
}

impl Child {
    pub fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// `spawn` with extra environment variables.
    pub fn spawn_with(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.cfg.data_dir.join("server.log"))
            .unwrap();
        self.proc = Some(
            std::process::Command::new(env!("CARGO_BIN_EXE_sealstream"))
                .args(["serve", "--config"])
                .arg(&self.config_path)
                .env("SEALSTREAM_LOG", "warn")
                .envs(env.iter().copied())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill().unwrap(); // SIGKILL
            p.wait().unwrap();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(p.id().to_string())
                .status();
            p.wait().unwrap();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Fails every `fail_every`-th segment write and delays every write by `delay`.
#[derive(Debug)]
pub struct Faulty {
    pub inner: Arc<dyn SegmentWriter>,
    pub fail_every: u64,
    pub delay: Duration,
    pub calls: AtomicU64,
    pub failed: Arc<AtomicU64>,
    pub broken: Arc<AtomicBool>,
}

impl SegmentWriter for Faulty {
    fn put(
        &self,
        path: object_store::path::Path,
        parts: Vec<Bytes>,
    ) -> futures::future::BoxFuture<'static, Result<PutOutcome, StoreError>> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let fail = self.broken.load(Ordering::Relaxed) || n.is_multiple_of(self.fail_every);
        let (inner, delay, failed) = (self.inner.clone(), self.delay, self.failed.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                failed.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Local {
                    path: path.to_string(),
                    detail: "injected failure".into(),
                });
            }
            inner.put(path, parts).await
        })
    }
}

/// A TCP relay to `target` (a node's way to PostgreSQL) that can be cut: while `cut` is set,
/// open connections are dropped and new ones closed at once.
pub async fn tcp_relay(target: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if cut.load(Ordering::SeqCst) {
                continue; // dropped: closed at once
            }
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let severed = async {
                    while !cut.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = severed => {}
                }
            });
        }
    });
    addr
}

/// A UDP relay between agent and server whose traffic can be cut.
pub async fn relay(server: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    relay_each_way(server, cut.clone(), cut).await
}

/// `relay` with each direction cut on its own: `up` agent to server, `down` server to agent.
pub async fn relay_each_way(
    server: SocketAddr,
    up: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) -> SocketAddr {
    let cut = up;
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut backs: std::collections::HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> =
            Default::default();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = front.recv_from(&mut buf).await else {
                return;
            };
            if cut.load(Ordering::Relaxed) {
                continue;
            }
            let back = match backs.get(&from) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(server).await.unwrap();
                    let (b2, f2, c2) = (b.clone(), front.clone(), down.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            // A packet sent while the server was down comes back as an ICMP
                            // error on this connected socket: keep relaying once it is back
                            // (ending here cut that agent off for good: the soak found it).
                            let n = match b2.recv(&mut buf).await {
                                Ok(n) => n,
                                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                    continue;
                                }
                                Err(_) => return,
                            };
                            if !c2.load(Ordering::Relaxed) {
                                let _ = f2.send_to(&buf[..n], from).await;
                            }
                        }
                    });
                    backs.insert(from, b.clone());
                    b
                }
            };
            let _ = back.send(&buf[..n]).await;
        }
    });
    addr
}

/// A private PostgreSQL cluster (initdb as user postgres) that the test may stop and start.
pub struct PrivatePg {
    dir: PathBuf,
    port: u16,
}

impl PrivatePg {
    fn bin(name: &str) -> PathBuf {
        let v = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        v.join("bin").join(name)
    }

    fn as_postgres(args: &[&std::ffi::OsStr]) -> std::process::ExitStatus {
        std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
    }

    pub fn new(base: &Path) -> PrivatePg {
        let dir = base.join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(base)
            .status()
            .unwrap();
        assert!(chown.success());
        let initdb = Self::bin("initdb");
        let st = Self::as_postgres(&[
            initdb.as_os_str(),
            "-D".as_ref(),
            dir.as_os_str(),
            "--auth=trust".as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
        ]);
        assert!(st.success(), "initdb");
        let port = free_tcp().port();
        let pg = PrivatePg { dir, port };
        pg.start();
        pg
    }

    pub fn start(&self) {
        let pg_ctl = Self::bin("pg_ctl");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        let st = Self::as_postgres(&[
            pg_ctl.as_os_str(),
            "-D".as_ref(),
            self.dir.as_os_str(),
            "-o".as_ref(),
            opts.as_ref(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "start".as_ref(),
        ]);
        assert!(st.success(), "pg_ctl start");
    }

    pub fn stop(&self) {
        let pg_ctl = Self::bin("pg_ctl");
        let st = Self::as_postgres(&[
            pg_ctl.as_os_str(),
            "-D".as_ref(),
            self.dir.as_os_str(),
            "-m".as_ref(),
            "fast".as_ref(),
            "-w".as_ref(),
            "stop".as_ref(),
        ]);
        assert!(st.success(), "pg_ctl stop");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let pg_ctl = Self::bin("pg_ctl");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_ctl)
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "stop"])
            .status();
    }
}
