//! Console accounts and logins: argon2id password hashes, login tokens (the database keeps
//! only their SHA-256), the per-login CSRF token, throttling of failed logins, and the
//! `Caller` extractor every API handler takes, so no handler runs for someone not logged in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{FromRequest, HttpRequest, web};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use futures::future::LocalBoxFuture;
use sha2::{Digest, Sha256};

use super::{ApiError, State};
use crate::metadata::review::agent_matches;
use crate::metadata::{ConsoleUser, Login, Role, now_us};

/// The login cookie's name.
pub const COOKIE: &str = "sealstream_login";
/// The header a state-changing request carries the login's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Hash a password with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Check a password against a stored PHC string; a malformed hash never verifies.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a random password, with the parameters `hash_password` gives stored hashes: a
/// login naming no user is checked against it, so that it does the same argon2 work as a wrong
/// password. Made once, when the console starts (a first unknown name must not pay for it).
pub(super) fn dummy_hash() -> Result<String, String> {
    hash_password(&hex::encode(random_token()))
}

/// 32 random bytes as URL-safe base64 (login tokens) or hex (CSRF tokens).
pub(super) fn random_token() -> [u8; 32] {
    let mut t = [0u8; 32];
    getrandom::fill(&mut t).expect("operating system random source failed");
    t
}

pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Failed logins per (user name, address): after `max` failures, each further attempt waits
/// 30 s, doubling up to 15 min; a good login clears the count.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<(String, IpAddr), (u32, Instant)>>,
}

impl Throttle {
    /// `Some(wait)` when this user and address must wait before trying again.
    pub fn wait(&self, user: &str, ip: IpAddr, max: u32) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        let (n, last) = map.get(&(user.to_owned(), ip))?;
        if *n < max {
            return None;
        }
        let backoff = Duration::from_secs(30 << (n - max).min(5)).min(Duration::from_secs(900));
        backoff.checked_sub(last.elapsed())
    }

    pub fn failed(&self, user: &str, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                map.retain(|_, (_, t)| t.elapsed() < Duration::from_secs(900));
            }
            let e = map
                .entry((user.to_owned(), ip))
                .or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&(user.to_owned(), ip));
        }
    }
}

/// The logged-in user making a request.
pub struct Caller {
    pub user: ConsoleUser,
    pub login: Login,
    pub address: String,
}

impl Caller {
    /// The agent patterns this caller may see; `None` for admins (every agent).
    pub fn allowed(&self) -> Option<Vec<String>> {
        match self.user.role {
            Role::Admin => None,
            Role::Reviewer => Some(self.user.agents.clone()),
        }
    }

    pub fn may_see(&self, agent: &str) -> bool {
        match self.user.role {
            Role::Admin => true,
            Role::Reviewer => self.user.agents.iter().any(|p| agent_matches(p, agent)),
        }
    }
}

/// The caller's address as the audit log records it.
pub(super) fn peer(req: &HttpRequest) -> (IpAddr, String) {
    let ip = req
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    (ip, ip.to_string())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<State>>().cloned();
        let token = req.cookie(COOKIE).map(|c| c.value().to_owned());
        let csrf = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD);
        let (_, address) = peer(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("console state missing".into()))?;
            let token = token.ok_or(ApiError::NotLoggedIn)?;
            let idle = state.cfg.idle_minutes as i64 * 60_000_000;
            let login = state
                .md
                .touch_login(token_sha256(&token), now_us(), idle)
                .await?
                .ok_or(ApiError::NotLoggedIn)?;
            let user = state
                .md
                .console_user(&login.user)
                .await?
                .filter(|u| u.disabled_us.is_none())
                .ok_or(ApiError::NotLoggedIn)?;
            if changes_state && csrf.as_deref() != Some(login.csrf.as_str()) {
                return Err(ApiError::Csrf);
            }
            Ok(Caller {
                user,
                login,
                address,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_verify_only_their_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horse ", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn failed_logins_wait_after_the_limit_and_a_good_login_clears_them() {
        let t = Throttle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.wait("ann", ip, 3).is_none());
            t.failed("ann", ip);
        }
        assert!(t.wait("ann", ip, 3).is_some());
        assert!(t.wait("bob", ip, 3).is_none(), "per user");
        t.succeeded("ann", ip);
        assert!(t.wait("ann", ip, 3).is_none());
    }
}
