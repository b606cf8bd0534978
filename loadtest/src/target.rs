//! What a scenario runs against: the real pipeline or the transport-only sink, as a child
//! `sealstream serve` process (so its CPU and memory are its own) or in this process (for the
//! smoke test). Also the customer KEK and the agents' enrolment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sealstream::config::{AgentConfig, ServeConfig};
use sealstream::keys::{self, Passphrase};
use sealstream::pki::Pki;
use sealstream::protocol::AgentId;
use sealstream_test_support::{free_tcp, free_udp};

use crate::scenario::Scenario;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Verification, segments with fsync, index commits: the real server.
    Pipeline,
    /// Same QUIC and TLS, acks without storing.
    Transport,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// A child `sealstream serve` process.
    Spawn,
    /// Inside this process (its CPU and memory are the harness's too).
    InProcess,
}

/// A prepared server: addresses chosen, PKI and KEK made, not started yet.
pub struct Prepared {
    pub mode: Mode,
    pub dir: PathBuf,
    pub cfg: ServeConfig,
    pub config_path: PathBuf,
    pub kek_public: PathBuf,
    pub kek_private: PathBuf,
}

pub enum Running {
    Child {
        child: tokio::process::Child,
        pid: u32,
    },
    InProcess {
        stop: std::sync::mpsc::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    },
}

/// The passphrase of the run's KEK private key (`<run dir>/customer/keypair.pem`): with it an
/// operator exports a kept store (`--keep-data`) with `sealstream export`.
pub const KEK_PASSPHRASE: &[u8] = b"loadtest passphrase, not a secret";

impl Prepared {
    /// `database_url` is the pipeline server's (empty: the embedded SQLite file).
    pub fn new(
        mode: Mode,
        dir: &Path,
        scenario: &Scenario,
        database_url: &str,
    ) -> anyhow::Result<Prepared> {
        std::fs::create_dir_all(dir)?;
        let mut cfg = ServeConfig {
            database_url: database_url.to_owned(),
            listen: free_udp()?,
            ops_listen: free_tcp()?,
            data_dir: dir.join("server"),
            kek_poll_ms: 200,
            ..ServeConfig::default()
        };
        cfg.segments.max_bytes = scenario.server.segment_max_bytes;
        cfg.segments.max_age_ms = scenario.server.segment_max_age_ms;
        cfg.segments.store_actors = scenario.server.store_actors;
        let config_path = dir.join("serve.toml");
        let toml = format!(
            "listen = \"{}\"\nops_listen = \"{}\"\ndata_dir = \"server\"\nkek_poll_ms = 200\ndatabase_url = {}\n[segments]\nmax_bytes = {}\nmax_age_ms = {}\nstore_actors = {}\n",
            cfg.listen,
            cfg.ops_listen,
            toml::Value::String(cfg.database_url.clone()),
            cfg.segments.max_bytes,
            cfg.segments.max_age_ms,
            cfg.segments.store_actors
        );
        std::fs::write(&config_path, toml)?;
        Pki::open_or_create(&cfg.data_dir)?;
        let pass = Passphrase::new(KEK_PASSPHRASE.to_vec());
        let g = keys::generate_keypair(&dir.join("customer"), 2048, &pass)?;
        Ok(Prepared {
            mode,
            dir: dir.to_owned(),
            cfg,
            config_path,
            kek_public: g.public_path,
            kek_private: g.private_path,
        })
    }

    /// Certificates and configurations for `n` agents.
    pub fn enroll(&self, n: usize, scenario: &Scenario) -> anyhow::Result<Vec<AgentConfig>> {
        let pki = Pki::open_or_create(&self.cfg.data_dir)?;
        let pin = pki.server_pin().to_string();
        (0..n)
            .map(|i| {
                let name = format!("lt-agent-{i:04}");
                let dir = self.dir.join("agents").join(&name);
                let files =
                    pki.enroll_agent(&AgentId::new(name).map_err(anyhow::Error::msg)?, &dir)?;
                Ok(AgentConfig {
                    server: self.cfg.listen.to_string(),
                    server_pins: vec![pin.clone()],
                    cert: files.cert,
                    key: files.key,
                    kek: self.kek_public.clone(),
                    window: scenario.agent.window,
                    max_unacked_bytes: scenario.agent.max_unacked_bytes,
                    reconnect_ms: 200,
                    ..AgentConfig::default()
                })
            })
            .collect()
    }

    /// Start the server and wait until it is ready (and the KEK registered).
    pub async fn start(&self, host: Host, bin: &Path) -> anyhow::Result<Running> {
        if self.mode == Mode::Pipeline {
            // Register the KEK before the server starts: no agent meets an unknown KEK.
            let md = sealstream::metadata::Metadata::open(
                &self.cfg.database_url,
                &self.cfg.sqlite_path(),
            )
            .await?;
            md.insert_kek(
                true,
                true,
                &self.kek_public.display().to_string(),
                &self.kek_private.display().to_string(),
            )
            .await?;
        }
        let running = match host {
            Host::Spawn => {
                let log = std::fs::File::create(self.dir.join("server.log"))?;
                let mut cmd = tokio::process::Command::new(bin);
                cmd.arg("serve").arg("--config").arg(&self.config_path);
                if self.mode == Mode::Transport {
                    cmd.arg("--sink");
                }
                cmd.env("SEALSTREAM_LOG", "warn")
                    .stderr(log)
                    .stdout(std::process::Stdio::null())
                    .kill_on_drop(true);
                let child = cmd
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?;
                let pid = child.id().context("child pid")?;
                Running::Child { child, pid }
            }
            Host::InProcess => {
                let (stop, stopped) = std::sync::mpsc::channel::<()>();
                let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
                let (cfg, mode) = (self.cfg.clone(), self.mode);
                let thread = std::thread::spawn(move || {
                    actix_rt::System::new().block_on(async move {
                        if mode == Mode::Transport {
                            match sealstream::server::sink::Sink::start(&cfg).await {
                                Ok(s) => {
                                    let _ = ready_tx.send(Ok(()));
                                    let _ =
                                        tokio::task::spawn_blocking(move || stopped.recv()).await;
                                    s.shutdown().await;
                                }
                                Err(e) => {
                                    let _ = ready_tx.send(Err(e.to_string()));
                                }
                            }
                        } else {
                            match sealstream::server::Server::start(&cfg).await {
                                Ok(s) => {
                                    let _ = ready_tx.send(Ok(()));
                                    let _ =
                                        tokio::task::spawn_blocking(move || stopped.recv()).await;
                                    s.shutdown().await;
                                }
                                Err(e) => {
                                    let _ = ready_tx.send(Err(e.to_string()));
                                }
                            }
                        }
                    });
                });
                tokio::task::spawn_blocking(move || ready_rx.recv())
                    .await?
                    .context("in-process server thread ended")?
                    .map_err(anyhow::Error::msg)?;
                Running::InProcess { stop, thread }
            }
        };
        if self.mode == Mode::Pipeline {
            self.wait_ready().await?;
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(running)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(self.cfg.ops_listen).await {
                let _ = s
                    .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await;
                let mut out = String::new();
                let _ = s.read_to_string(&mut out).await;
                if out.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "server not ready after 30 s (see {}/server.log)",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        match self {
            Running::Child { pid, .. } => *pid,
            Running::InProcess { .. } => std::process::id(),
        }
    }

    pub async fn stop(self) {
        match self {
            Running::Child { child, pid } => stop_child(child, pid).await,
            Running::InProcess { stop, thread } => {
                let _ = stop.send(());
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
    }
}

/// SIGTERM a child `sealstream serve` for a clean shutdown, then wait (SIGKILL after 15 s).
pub async fn stop_child(mut child: tokio::process::Child, pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
