//! The review console: an HTTPS server (actix-web, rustls) that is a thin, authorized window
//! on the store and the database. It serves the page's embedded assets, logs reviewers in,
//! lists what the index knows without keys, and hands out ciphertext (single chunks, as byte
//! ranges of their segments), wrapped DEK records and KEK key files as stored: the browser
//! decrypts. It holds no passphrase, opened key, DEK or plaintext, and audits every access
//! before answering (fail-closed).

mod api;
mod assets;
pub mod auth;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};
use object_store::ObjectStore;

use crate::config;
use crate::metadata::{MetaError, Metadata};

/// The page's Content-Security-Policy: only our own scripts and styles, no inline script, no
/// framing, no other origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
     media-src 'self' blob:; connect-src 'self'; worker-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console on {addr}: {detail}")]
    Listen { addr: SocketAddr, detail: String },
    #[error("console TLS: {0}")]
    Tls(String),
    #[error(
        "console agent CA: {0} (set [console] agent_ca to the deployment's agent CA certificate)"
    )]
    AgentCa(String),
    #[error("console: cannot make the dummy password hash: {0}")]
    Password(String),
}

/// The agent CA the page checks signatures against: its PEM text and fingerprint.
pub struct AgentCaFile {
    pub pem: String,
    pub fingerprint: String,
}

impl AgentCaFile {
    pub fn load(path: &std::path::Path) -> Result<Self, ConsoleError> {
        let ca = crate::crypto::AgentCa::load(path).map_err(ConsoleError::AgentCa)?;
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ConsoleError::AgentCa(format!("{}: {e}", path.display())))?;
        Ok(AgentCaFile {
            pem,
            fingerprint: ca.fingerprint,
        })
    }
}

/// What every handler shares.
pub struct State {
    pub md: Metadata,
    pub store: Arc<dyn ObjectStore>,
    pub cfg: config::Console,
    pub throttle: auth::Throttle,
    /// Cookies carry `Secure` (HTTPS).
    pub secure: bool,
    /// `None`: no agent CA configured, the page cannot check signatures.
    pub agent_ca: Option<AgentCaFile>,
    /// Argon2 computations this console has run: one per login attempt, whatever the name.
    pub password_work: std::sync::atomic::AtomicU64,
    /// What a login naming no user is checked against (`auth::dummy_hash`).
    pub dummy_hash: String,
}

/// An API answer other than success: a status and a message for the page.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not logged in (or the login expired): log in again")]
    NotLoggedIn,
    #[error("missing or wrong CSRF token: reload the page")]
    Csrf,
    #[error("wrong user name or password")]
    BadLogin,
    #[error("too many failed logins: try again in {0} s")]
    Throttled(u64),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("the audit log cannot be written, so nothing is served: {0}")]
    AuditUnavailable(String),
    #[error("metadata unavailable: {0}")]
    Metadata(#[from] MetaError),
    #[error("store: {0}")]
    Store(String),
    #[error("{0}")]
    Internal(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotLoggedIn | ApiError::BadLogin => StatusCode::UNAUTHORIZED,
            ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::AuditUnavailable(_) | ApiError::Metadata(_) | ApiError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(
            self,
            ApiError::AuditUnavailable(_)
                | ApiError::Metadata(_)
                | ApiError::Store(_)
                | ApiError::Internal(_)
        ) {
            tracing::error!(error = %self, "console request failed");
        }
        let mut r = HttpResponse::build(self.status_code());
        r.insert_header(("Cache-Control", "no-store"));
        if let ApiError::Throttled(s) = self {
            r.insert_header(("Retry-After", s.to_string()));
        }
        r.json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// A running console.
pub struct Console {
    pub addr: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
    handle: actix_web::dev::ServerHandle,
    state: web::Data<State>,
}

impl Console {
    /// Bind `cfg.listen` and serve. Call inside an actix `System` (or actix-rt runtime).
    pub async fn start(
        cfg: &config::Console,
        md: Metadata,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Console, ConsoleError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|e| ConsoleError::Listen {
            addr: cfg.listen,
            detail: e.to_string(),
        })?;
        Self::start_on(listener, cfg, md, store).await
    }

    /// Serve on a listener the caller bound (tests bind port 0).
    pub async fn start_on(
        listener: TcpListener,
        cfg: &config::Console,
        md: Metadata,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Console, ConsoleError> {
        let addr = listener.local_addr().map_err(|e| ConsoleError::Listen {
            addr: cfg.listen,
            detail: e.to_string(),
        })?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls_config(c, k)?),
            _ => None,
        };
        let agent_ca = match (&cfg.agent_ca, &cfg.default_agent_ca) {
            (Some(path), _) => Some(AgentCaFile::load(path)?),
            (None, Some(path)) if path.exists() => Some(AgentCaFile::load(path)?),
            (None, default) => {
                tracing::warn!(
                    looked_at = ?default,
                    "no agent CA for the console: set [console] agent_ca; the page cannot check agents' signatures"
                );
                None
            }
        };
        let dummy_hash = auth::dummy_hash().map_err(ConsoleError::Password)?;
        let state = web::Data::new(State {
            md,
            store,
            cfg: cfg.clone(),
            throttle: auth::Throttle::default(),
            secure: tls.is_some(),
            agent_ca,
            password_work: Default::default(),
            dummy_hash,
        });
        let shared = state.clone();
        let app = move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::JsonConfig::default().limit(16 * 1024))
                .wrap(
                    DefaultHeaders::new()
                        .add(("Content-Security-Policy", CSP))
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("Referrer-Policy", "no-referrer"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Cross-Origin-Opener-Policy", "same-origin"))
                        .add(("Cross-Origin-Resource-Policy", "same-origin")),
                )
                .configure(api::routes)
                .configure(assets::routes)
        };
        let server = HttpServer::new(app)
            .workers(2)
            .disable_signals()
            .shutdown_timeout(5);
        let listen_err = |e: std::io::Error| ConsoleError::Listen {
            addr,
            detail: e.to_string(),
        };
        let (server, scheme) = match tls {
            Some(t) => (
                server.listen_rustls_0_23(listener, t).map_err(listen_err)?,
                "https",
            ),
            None => (server.listen(listener).map_err(listen_err)?, "http"),
        };
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(%addr, scheme, "review console listening");
        Ok(Console {
            addr,
            scheme,
            handle,
            state: shared,
        })
    }

    /// Argon2 verifications run since start: each login attempt costs one, whether or not its
    /// user exists.
    pub fn password_work(&self) -> u64 {
        self.state
            .password_work
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The hash a login naming no user is checked against (its parameters are those of a
    /// stored hash; its password is random and forgotten).
    pub fn dummy_hash(&self) -> &str {
        &self.state.dummy_hash
    }

    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.addr)
    }

    /// Stop accepting, finish requests in progress.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// TLS 1.2 and 1.3 (browsers), the certificate chain and key from PEM files.
fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, ConsoleError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConsoleError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ConsoleError::Tls(format!(
            "{}: no CERTIFICATE block",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConsoleError::Tls(format!("{}: {e}", key.display())))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ConsoleError::Tls(e.to_string()))
}
