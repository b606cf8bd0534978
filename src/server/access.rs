//! Which agent certificates may connect: revoked certificates, certificates an agent's later
//! enrolment superseded, and disabled agents are refused at the handshake, and connections
//! already open are closed when a refresh finds them refused. The rules are read from
//! `agent_credential` / `agent_account` at start and every `access_poll_ms`, so `sealstream
//! agents revoke|disable|enable` takes effect without a restart.
//!
//! A node also records every CA-signed certificate it admits (`Metadata::record_admitted`):
//! certificates from an offline agent CA were never enrolled here, and so become visible to
//! `agents list`, `agents revoke` and the expiry gauge. It writes at most once a minute per
//! certificate (`seen`), and never holds up the connection for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::connection::Shared;
use crate::metadata::{AccessRows, Admitted, AgentAccount, Credential};
use crate::protocol::AgentId;

/// How often a node writes that it saw a certificate (the stored value is refreshed at most
/// once per `metadata::SEEN_REFRESH_US` anyway; this spares the database the statement).
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// Sightings remembered before the stale ones are dropped (one per certificate admitted in
/// the last minute, so the fleet's size at most).
const SEEN_CAPACITY: usize = 65_536;

/// Why a certificate is refused; the text is the connection's close reason (it names the
/// certificate, so the agent's uplink state says "certificate refused").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "agent certificate revoked ({reason}); it needs a new certificate: `agents enroll`, or with an offline CA `agents csr`, `ca sign` and `agents config`"
    )]
    Revoked { reason: String },
    #[error(
        "agent certificate not current: the agent was enrolled again or revoked; use its newest certificate"
    )]
    NotCurrent,
    #[error("agent disabled by an operator; its certificate is refused until `agents enable`")]
    Disabled,
}

impl Refusal {
    /// Label for `sealstream_connections_refused_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Revoked { .. } => "revoked",
            Refusal::NotCurrent => "not_current",
            Refusal::Disabled => "disabled",
        }
    }
}

/// The rules as last read.
#[derive(Debug, Default)]
pub struct Rules {
    by_fingerprint: HashMap<String, Credential>,
    accounts: HashMap<String, AgentAccount>,
}

impl Rules {
    pub fn from_rows(rows: AccessRows) -> Self {
        Rules {
            by_fingerprint: rows
                .credentials
                .into_iter()
                .map(|c| (c.fingerprint.clone(), c))
                .collect(),
            accounts: rows
                .accounts
                .into_iter()
                .map(|a| (a.agent.clone(), a))
                .collect(),
        }
    }

    /// Agents whose newest certificate not revoked (the latest notAfter) expires before
    /// `before_us` (microseconds since the epoch). An agent given a new certificate by the
    /// offline CA keeps its earlier one unrevoked; only the newest counts, so the older one's
    /// expiry raises no alert.
    pub fn expiring_before(&self, before_us: i64) -> usize {
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for c in self
            .by_fingerprint
            .values()
            .filter(|c| c.revoked_us.is_none())
        {
            let n = newest.entry(c.agent.as_str()).or_insert(c.not_after_us);
            *n = (*n).max(c.not_after_us);
        }
        newest.values().filter(|&&t| t < before_us).count()
    }

    /// May `agent` connect with the certificate whose fingerprint is `fingerprint`?
    pub fn check(&self, agent: &AgentId, fingerprint: &str) -> Result<(), Refusal> {
        let account = self.accounts.get(agent.as_str());
        if account.is_some_and(|a| a.disabled_us.is_some()) {
            return Err(Refusal::Disabled);
        }
        match self.by_fingerprint.get(fingerprint) {
            // A certificate of another agent's name cannot be: the CA signed this name.
            Some(c) if c.agent != agent.as_str() => Err(Refusal::NotCurrent),
            Some(c) => match &c.revoked_us {
                Some(_) => Err(Refusal::Revoked {
                    reason: c.revoked_reason.clone().unwrap_or_default(),
                }),
                None => Ok(()),
            },
            // Issued before the registry existed: accepted until the agent is enrolled again
            // or revoked, which makes only registered certificates valid for it.
            None if account.is_some_and(|a| a.registered_only) => Err(Refusal::NotCurrent),
            None => Ok(()),
        }
    }
}

/// The shared, refreshable rules, and when this node last recorded each certificate.
#[derive(Default)]
pub struct Access {
    rules: RwLock<Arc<Rules>>,
    seen: Mutex<HashMap<String, Instant>>,
}

impl Access {
    /// Whether this node should record a sighting of `fingerprint` at `now`: it did not in the
    /// last minute. Claims it (a failed write calls `forget`).
    pub fn sighting_due(&self, fingerprint: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().expect("sightings lock");
        if seen
            .get(fingerprint)
            .is_some_and(|&at| now.saturating_duration_since(at) < SEEN_EVERY)
        {
            return false;
        }
        if seen.len() >= SEEN_CAPACITY {
            seen.retain(|_, at| now.saturating_duration_since(*at) < SEEN_EVERY);
        }
        seen.insert(fingerprint.to_owned(), now);
        true
    }

    /// The write for a sighting failed: the next connection tries again.
    pub fn forget(&self, fingerprint: &str) {
        self.seen
            .lock()
            .expect("sightings lock")
            .remove(fingerprint);
    }

    pub fn set(&self, rules: Rules) {
        *self.rules.write().expect("access rules lock") = Arc::new(rules);
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().expect("access rules lock").clone()
    }
}

/// Record that this node admitted `conn`'s certificate (agent `agent`), unless it did in the
/// last minute: a task of its own, so the connection does not wait for the database. A
/// certificate the registry did not hold (from an offline CA) gets its row and is logged.
pub fn record_admission(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    agent: &AgentId,
    fingerprint: &str,
) {
    if !shared.access.sighting_due(fingerprint, Instant::now()) {
        return;
    }
    let Some(cert) = peer_certificate(conn) else {
        return;
    };
    let facts = match admitted(&cert, agent, fingerprint) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%agent, %fingerprint, error = %e, "cannot read the admitted certificate; not recorded");
            return;
        }
    };
    let shared = shared.clone();
    actix_rt::spawn(async move {
        let fingerprint = facts.fingerprint.clone();
        let (agent, serial) = (facts.agent.clone(), facts.serial.clone());
        match shared.metadata.record_admitted(facts).await {
            Ok(true) => {
                tracing::info!(%agent, %fingerprint, %serial, "agent certificate recorded: first seen (signed by the agent CA, not enrolled here)");
            }
            Ok(false) => {}
            Err(e) => {
                shared.access.forget(&fingerprint);
                tracing::warn!(%agent, %fingerprint, error = %e, "cannot record the agent certificate's sighting");
            }
        }
    });
}

/// What `agent_credential` records of an admitted certificate (DER).
fn admitted(cert: &[u8], agent: &AgentId, fingerprint: &str) -> Result<Admitted, String> {
    let (not_before_us, not_after_us) = crate::crypto::cert::validity_us(cert)?;
    Ok(Admitted {
        fingerprint: fingerprint.to_owned(),
        agent: agent.as_str().to_owned(),
        serial: crate::crypto::cert::serial_hex(cert)?,
        not_before_us,
        not_after_us,
        seen_us: crate::metadata::now_us(),
    })
}

/// The client certificate of a connection (the first of its chain).
fn peer_certificate(
    conn: &quinn::Connection,
) -> Option<rustls::pki_types::CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(fp: &str, agent: &str, revoked: Option<&str>) -> Credential {
        Credential {
            fingerprint: fp.into(),
            agent: agent.into(),
            issued_us: 1,
            not_after_us: 2,
            revoked_us: revoked.map(|_| 3),
            revoked_reason: revoked.map(str::to_owned),
        }
    }

    fn account(agent: &str, disabled: bool, registered_only: bool) -> AgentAccount {
        AgentAccount {
            agent: agent.into(),
            disabled_us: disabled.then_some(5),
            registered_only,
        }
    }

    #[test]
    fn revoked_superseded_and_disabled_are_refused_and_the_rest_accepted() {
        let a = AgentId::new("ts-01").unwrap();
        let b = AgentId::new("ts-02").unwrap();
        let legacy = AgentId::new("legacy").unwrap();
        let rules = Rules::from_rows(AccessRows {
            credentials: vec![
                cred("old", "ts-01", Some("superseded by a later certificate")),
                cred("new", "ts-01", None),
                cred("b1", "ts-02", None),
            ],
            accounts: vec![account("ts-01", false, true), account("ts-02", true, true)],
        });
        assert_eq!(rules.check(&a, "new"), Ok(()));
        assert_eq!(
            rules.check(&a, "old"),
            Err(Refusal::Revoked {
                reason: "superseded by a later certificate".into()
            })
        );
        assert_eq!(
            rules.check(&a, "never-registered"),
            Err(Refusal::NotCurrent)
        );
        assert_eq!(rules.check(&a, "b1"), Err(Refusal::NotCurrent));
        assert_eq!(rules.check(&b, "b1"), Err(Refusal::Disabled));
        assert_eq!(rules.check(&legacy, "anything"), Ok(()));
        assert!(Refusal::NotCurrent.to_string().contains("certificate"));
        assert!(Refusal::Disabled.to_string().contains("certificate"));
    }

    #[test]
    fn only_each_agents_newest_certificate_counts_as_expiring() {
        let c = |fp: &str, agent: &str, not_after_us: i64, revoked: bool| Credential {
            not_after_us,
            ..cred(fp, agent, revoked.then_some("superseded"))
        };
        let rules = Rules::from_rows(AccessRows {
            credentials: vec![
                // Renewed by the offline CA: the old certificate is not revoked, and expires.
                c("old", "ts-01", 100, false),
                c("new", "ts-01", 10_000, false),
                // Expiring, and its agent has nothing newer.
                c("b", "ts-02", 200, false),
                // Revoked: not counted.
                c("r", "ts-03", 100, true),
            ],
            accounts: Vec::new(),
        });
        assert_eq!(rules.expiring_before(1_000), 1);
        assert_eq!(rules.expiring_before(20_000), 2);
        assert_eq!(rules.expiring_before(50), 0);
    }

    #[test]
    fn a_certificate_is_recorded_at_most_once_a_minute_and_again_after_a_failure() {
        let access = Access::default();
        let t0 = Instant::now();
        assert!(access.sighting_due("a", t0));
        assert!(!access.sighting_due("a", t0 + Duration::from_secs(59)));
        assert!(access.sighting_due("b", t0), "each certificate on its own");
        assert!(access.sighting_due("a", t0 + Duration::from_secs(60)));
        access.forget("b");
        assert!(access.sighting_due("b", t0 + Duration::from_secs(1)));
    }
}
