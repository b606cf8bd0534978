//! A transport-only sink for benchmarks: the same QUIC and TLS settings as the server (client
//! certificates, limits, socket buffers), reading every message and acking it at once, with no
//! verification, storage or database. The load-test harness runs a scenario against it and
//! against the real pipeline, side by side, and reports the ratio.

use std::net::SocketAddr;

use actix::prelude::*;
use bytes::BytesMut;

use super::ServeError;
use crate::config::ServeConfig;
use crate::pki::Pki;
use crate::protocol::KekId;
use crate::protocol::uplink::CloseCode;
use crate::protocol::uplink::{self, MSG_CHUNK, Response};

pub struct Sink {
    pub quic_addr: SocketAddr,
    pub pin: KekId,
    endpoint: quinn::Endpoint,
    task: actix_rt::task::JoinHandle<()>,
    arbiters: Vec<Arbiter>,
}

impl Sink {
    /// Start on `cfg.listen`. Call inside an actix `System`.
    pub async fn start(cfg: &ServeConfig) -> Result<Sink, ServeError> {
        let pki = Pki::open_or_create(&cfg.data_dir)?;
        let (endpoint, quic_addr) = super::bind_endpoint(cfg, &pki)?;
        let arbiters: Vec<Arbiter> = (0..cfg.ingest_threads()).map(|_| Arbiter::new()).collect();
        let handles: Vec<_> = arbiters.iter().map(Arbiter::handle).collect();
        let ep = endpoint.clone();
        let task = actix_rt::spawn(async move {
            let mut next = 0usize;
            while let Some(incoming) = ep.accept().await {
                handles[next % handles.len()].spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        actix_rt::spawn(discard(send, recv));
                    }
                });
                next += 1;
            }
        });
        tracing::info!(%quic_addr, "transport-only sink listening (acks without storing)");
        Ok(Sink {
            quic_addr,
            pin: pki.server_pin(),
            endpoint,
            task,
            arbiters,
        })
    }

    pub async fn shutdown(self) {
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::Shutdown.code()),
            b"sink shutting down",
        );
        self.task.abort();
        for a in self.arbiters {
            a.stop();
        }
    }
}

async fn discard(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        out.clear();
        loop {
            match uplink::decode_message(&mut buf) {
                Ok(Some(m)) => {
                    // The sequence number sits at bytes 44..52 of a chunk (docs/format.md).
                    let seq = if m.kind == MSG_CHUNK && m.body.len() >= 52 {
                        u64::from_be_bytes(m.body[44..52].try_into().expect("8 bytes"))
                    } else {
                        0
                    };
                    Response {
                        kind: m.kind,
                        seq,
                        outcome: Ok(()),
                        reason: String::new(),
                    }
                    .encode(&mut out);
                }
                Ok(None) => {
                    if buf.is_empty() {
                        buf = BytesMut::new();
                    }
                    break;
                }
                Err(_) => return,
            }
        }
        if !out.is_empty() && send.write_all(&out).await.is_err() {
            return;
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            _ => return,
        }
    }
}
