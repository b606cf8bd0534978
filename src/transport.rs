//! QUIC and TLS settings, built explicitly: TLS 1.3 only, no 0-RTT, ALPN `sealstream/1`,
//! agent client certificates checked against the agent CA on the server, the server's public
//! key pinned on the agent, and every flow-control limit and socket buffer set by us.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::Limits;
use crate::protocol::KekId;
use crate::protocol::uplink::CloseCode;

pub const ALPN: &[u8] = b"sealstream/1";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("socket {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// Close `conn` with `code` and `reason` (reasons are for people and logs; peers act on codes).
pub fn close(conn: &quinn::Connection, code: CloseCode, reason: &str) {
    conn.close(VarInt::from_u32(code.code()), reason.as_bytes());
}

/// The close code the peer closed `conn` with, if it closed it with one of ours.
pub fn peer_close_code(e: &quinn::ConnectionError) -> Option<CloseCode> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            CloseCode::from_code(c.error_code.into_inner())
        }
        _ => None,
    }
}

/// The transport limits shared by server and agent.
pub fn transport_config(limits: &Limits) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(
        VarInt::from_u64(limits.max_streams_per_connection).unwrap_or(VarInt::MAX),
    )
    .max_concurrent_uni_streams(VarInt::from_u32(0))
    .receive_window(VarInt::from_u64(limits.connection_receive_window).unwrap_or(VarInt::MAX))
    .stream_receive_window(VarInt::from_u64(limits.stream_receive_window).unwrap_or(VarInt::MAX))
    .send_window(limits.connection_receive_window)
    .max_idle_timeout(Some(
        IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
            .unwrap_or(IdleTimeout::from(VarInt::from_u32(30_000))),
    ))
    .keep_alive_interval(Some(Duration::from_millis(
        (limits.idle_timeout_ms / 3).max(500),
    )));
    t
}

/// Server crypto: TLS 1.3, client certificates required and verified against `agent_ca`.
pub fn server_config(
    agent_ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(agent_ca).map_err(tls)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(tls)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(tls)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    // No 0-RTT: early data could be replayed. (quinn's `with_single_cert` would enable it.)
    cfg.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(cfg).map_err(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(limits)));
    server.migration(false);
    Ok(server)
}

/// Agent crypto: TLS 1.3, the server accepted only if its key matches a pin, our certificate.
pub fn client_config(
    pins: Vec<KekId>,
    cert: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TransportError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier {
            pins,
            provider: provider(),
        }))
        .with_client_auth_cert(cert, key)
        .map_err(tls)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.enable_early_data = false;
    let crypto = QuicClientConfig::try_from(cfg).map_err(tls)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(limits)));
    Ok(client)
}

/// A UDP socket with our buffer sizes, for a quinn endpoint.
pub fn udp_socket(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, TransportError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| TransportError::Socket { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: the kernel caps these at net.core.rmem_max / wmem_max (see ops/).
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

/// A quinn endpoint on `socket`: a server when `server` is given.
pub fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, TransportError> {
    let addr = socket
        .local_addr()
        .map_err(|source| TransportError::Socket {
            addr: "0.0.0.0:0".parse().expect("valid"),
            source,
        })?;
    quinn::Endpoint::new(
        EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| TransportError::Socket { addr, source })
}

/// Accepts the server only if the SHA-256 of its certificate's public key is one of the pins.
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<KekId>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = crate::crypto::cert::spki_pin(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self.pins.contains(&pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server key {pin} matches none of the configured server_pins"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
