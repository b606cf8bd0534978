//! `sealstream serve`: run the ingest service until SIGINT or SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use sealstream::config::ServeConfig;
use sealstream::server::Server;

pub fn run(config: &Path, sink: bool) -> anyhow::Result<ExitCode> {
    let cfg = ServeConfig::load(config)?;
    if sink {
        return actix_rt::System::new().block_on(async move {
            let sink = sealstream::server::sink::Sink::start(&cfg).await?;
            eprintln!(
                "transport-only sink on QUIC {} (acks without storing; a benchmark baseline)\nserver pin for agents: {}",
                sink.quic_addr, sink.pin
            );
            wait_for_signal().await;
            sink.shutdown().await;
            Ok(ExitCode::SUCCESS)
        });
    }
    actix_rt::System::new().block_on(async move {
        let server = Server::start(&cfg)
            .await
            .with_context(|| format!("starting the server from {}", config.display()))?;
        let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let reach = if server.quic_addr.ip().is_unspecified() {
            " (all interfaces: agents on other machines can connect)"
        } else if server.quic_addr.ip().is_loopback() {
            " (loopback only: agents on this machine only)"
        } else {
            ""
        };
        eprintln!(
            "sealstream serving QUIC on {}{reach}, ops on http://{}\n  node: {}\n  state (agent CA, server key{}): {}\n  agent CA: {}\n  store: {}\n  metadata: {}\nserver pin for agents: {}",
            server.quic_addr,
            server.ops_addr,
            server.node,
            if cfg.database_url.is_empty() { ", SQLite file" } else { "" },
            abs(&cfg.data_dir).display(),
            if sealstream::pki::ca_is_offline(&cfg.data_dir) {
                "offline (ca.crt only: this node issues no agent certificate)"
            } else {
                "on this node (ca.key here: `agents enroll` issues certificates)"
            },
            match server.store.local_dir() {
                Some(d) => abs(d).display().to_string(),
                None => server.store.to_string(),
            },
            server.metadata.describe(),
            server.pin
        );
        let console = match &cfg.console {
            Some(c) => {
                let store = sealstream::storage::open(&cfg.store_location(), &cfg.store)?.objects;
                let console = sealstream::console::Console::start(c, server.metadata.clone(), store)
                    .await
                    .context("starting the review console")?;
                eprintln!("review console on {}", console.url());
                Some(console)
            }
            None => None,
        };
        wait_for_signal().await;
        eprintln!("shutting down: closing connections and writing batched segments");
        if let Some(c) = console {
            c.stop().await;
        }
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
