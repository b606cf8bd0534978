//! Which agent certificates may connect: revoked certificates, certificates an agent's later
//! enrolment superseded, and disabled agents are refused at the handshake, and connections
//! already open are closed when a refresh finds them refused. The rules are read from
//! `agent_credential` / `agent_account` at start and every `access_poll_ms`, so `sealstream
//! agents revoke|disable|enable` takes effect without a restart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::metadata::{AccessRows, AgentAccount, Credential};
use crate::protocol::AgentId;

/// Why a certificate is refused; the text is the connection's close reason (it names the
/// certificate, so the agent's uplink state says "certificate refused").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("agent certificate revoked ({reason}); enrol the agent again")]
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

    /// Certificates not revoked that expire before `before_us` (microseconds since the epoch).
    pub fn expiring_before(&self, before_us: i64) -> usize {
        self.by_fingerprint
            .values()
            .filter(|c| c.revoked_us.is_none() && c.not_after_us < before_us)
            .count()
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

/// The shared, refreshable rules.
#[derive(Default)]
pub struct Access {
    rules: RwLock<Arc<Rules>>,
}

impl Access {
    pub fn set(&self, rules: Rules) {
        *self.rules.write().expect("access rules lock") = Arc::new(rules);
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().expect("access rules lock").clone()
    }
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
}
