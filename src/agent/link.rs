//! The uplink's state as an operator sees it (connected, unreachable, or refused for a reason
//! that needs a person) and how long to wait before trying again. A refusal that will not go
//! away by itself (the server's key is not pinned, our certificate is refused, the KEK is
//! unknown or retired) backs off exponentially to a cap, with jitter; a server that is merely
//! unreachable is tried again at the configured pace. Every change of state is logged once,
//! with what to do, and exported as `sealstream_agent_uplink_state{state}`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const UPLINK_STATE: &str = "sealstream_agent_uplink_state";

/// Longest wait between attempts after a refusal that needs a person.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    /// No handshake: the server is down, unreachable, or the address is wrong.
    Unreachable,
    /// The server's key matches none of `server_pins`.
    ServerKeyMismatch,
    /// The server refused our client certificate (another deployment's CA, revoked, expired).
    CertificateRefused,
    /// The server does not know our KEK (`unknown_kek`) or has retired it (`inactive_kek`).
    KekUnknown,
    KekInactive,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Connecting,
        State::Connected,
        State::Unreachable,
        State::ServerKeyMismatch,
        State::CertificateRefused,
        State::KekUnknown,
        State::KekInactive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Unreachable => "unreachable",
            State::ServerKeyMismatch => "server_key_mismatch",
            State::CertificateRefused => "certificate_refused",
            State::KekUnknown => "kek_unknown",
            State::KekInactive => "kek_inactive",
        }
    }

    /// A refusal that retrying alone will not cure.
    pub fn needs_a_person(self) -> bool {
        matches!(
            self,
            State::ServerKeyMismatch
                | State::CertificateRefused
                | State::KekUnknown
                | State::KekInactive
        )
    }

    pub fn advice(self) -> &'static str {
        match self {
            State::Connecting | State::Connected => "",
            State::Unreachable => {
                "check that the server runs and that `server` in agent.toml reaches it (UDP)"
            }
            State::ServerKeyMismatch => {
                "the server's key is not in server_pins: if the server key was replaced, put its pin (printed by `sealstream serve` and `agents enroll`) in agent.toml"
            }
            State::CertificateRefused => {
                "the server refused this agent's certificate: give the agent a new certificate from this deployment's CA (`sealstream agents enroll`, or with an offline CA `agents csr`, `ca sign` and `agents config`: docs/deploy.md)"
            }
            State::KekUnknown => {
                "the server does not know this agent's KEK: register kek.pem's public key on the server (`sealstream keys register` or the how-to's insert)"
            }
            State::KekInactive => {
                "this agent's KEK is retired on the server: give the agent the new public key as kek.pem and restart it (data recorded before the retirement is still accepted)"
            }
        }
    }

    /// From a failed connection attempt or a connection that ended: what it says.
    pub fn of_connection_error(text: &str) -> State {
        if text.contains("server_pins") {
            State::ServerKeyMismatch
        } else if text.contains("certificate")
            || text.contains("unknown ca")
            || text.contains("UnknownCA")
            || text.contains("BadCertificate")
            || text.contains("revoked")
        {
            State::CertificateRefused
        } else {
            State::Unreachable
        }
    }
}

struct Inner {
    state: State,
    /// Attempts refused in a row for a reason that needs a person.
    refusals: u32,
    /// Not before this does the next attempt go out.
    retry_at: Instant,
}

pub struct Uplink {
    inner: Mutex<Inner>,
    base: Duration,
}

impl Uplink {
    pub fn new(base: Duration) -> Self {
        let u = Uplink {
            inner: Mutex::new(Inner {
                state: State::Connecting,
                refusals: 0,
                retry_at: Instant::now(),
            }),
            base: base.max(Duration::from_millis(10)),
        };
        metrics::describe_gauge!(
            UPLINK_STATE,
            "1 for the uplink's current state (connected, unreachable, or refused: server_key_mismatch, certificate_refused, kek_unknown, kek_inactive), 0 for the others."
        );
        u.export(State::Connecting);
        u
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("uplink lock").state
    }

    /// Set `sealstream_agent_uplink_state` for `current` (the metrics listener calls this
    /// too, since the recorder may be installed after the state was first set).
    pub fn export(&self, current: State) {
        for s in State::ALL {
            metrics::gauge!(UPLINK_STATE, "state" => s.name()).set(if s == current {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Things work: no backoff, and one line if that is news.
    pub fn ok(&self) {
        let mut i = self.inner.lock().expect("uplink lock");
        i.refusals = 0;
        i.retry_at = Instant::now();
        if i.state != State::Connected {
            let was = i.state;
            i.state = State::Connected;
            drop(i);
            if was.needs_a_person() || was == State::Unreachable {
                tracing::info!(was = was.name(), "uplink working again");
            }
            self.export(State::Connected);
        }
    }

    /// An attempt failed with `state`; returns how long to wait before the next one. Several
    /// streams refused in one round count as one refusal.
    pub fn failed(&self, state: State, detail: &str) -> Duration {
        let now = Instant::now();
        let mut i = self.inner.lock().expect("uplink lock");
        if state.needs_a_person() {
            if now >= i.retry_at {
                i.refusals = i.refusals.saturating_add(1);
                i.retry_at = now + backoff(self.base, i.refusals, jitter());
            }
        } else {
            i.refusals = 0;
            i.retry_at = now + self.base;
        }
        let wait = i.retry_at.saturating_duration_since(now);
        if i.state != state {
            i.state = state;
            drop(i);
            self.export(state);
            if state.needs_a_person() {
                tracing::error!(
                    state = state.name(),
                    detail,
                    retrying_every_up_to_s = MAX_BACKOFF.as_secs(),
                    "uplink refused: {}; all data stays queued (and spooled) until then",
                    state.advice()
                );
            } else {
                tracing::warn!(
                    state = state.name(),
                    detail,
                    "uplink down: {}; retrying, all data stays queued",
                    state.advice()
                );
            }
        }
        wait
    }
}

/// A factor in [0.8, 1.2) from the system's randomness.
fn jitter() -> f64 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        return 1.0;
    }
    0.8 + 0.4 * (u16::from_le_bytes(b) as f64 / 65536.0)
}

/// `base` doubled per refusal in a row, capped at `MAX_BACKOFF`, times `jitter`.
pub fn backoff(base: Duration, refusals: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << refusals.min(16));
    doubled.min(MAX_BACKOFF).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_back_off_exponentially_to_a_cap() {
        let base = Duration::from_millis(200);
        assert_eq!(backoff(base, 1, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(base, 3, 1.0), Duration::from_millis(1600));
        assert_eq!(backoff(base, 30, 1.0), MAX_BACKOFF);
        assert!(backoff(base, 30, 1.2) <= MAX_BACKOFF.mul_f64(1.2));
    }

    #[test]
    fn one_round_of_refused_streams_is_one_refusal_and_success_resets() {
        let u = Uplink::new(Duration::from_millis(100));
        let first = u.failed(State::KekInactive, "x");
        for _ in 0..100 {
            // Every stream of the same round: the wait shrinks, it does not grow.
            assert!(u.failed(State::KekInactive, "x") <= first);
        }
        assert_eq!(u.state(), State::KekInactive);
        u.ok();
        assert_eq!(u.state(), State::Connected);
        assert!(u.failed(State::Unreachable, "down") <= Duration::from_millis(100));
    }

    #[test]
    fn errors_are_classified_by_what_they_say() {
        assert_eq!(
            State::of_connection_error(
                "the cryptographic handshake failed: error 42: server key sha256:ab matches none of the configured server_pins"
            ),
            State::ServerKeyMismatch
        );
        assert_eq!(
            State::of_connection_error(
                "closed by peer: the cryptographic handshake failed: error 48: peer sent fatal alert UnknownCA"
            ),
            State::CertificateRefused
        );
        assert_eq!(
            State::of_connection_error("no handshake within 2s"),
            State::Unreachable
        );
    }
}
