//! What every handler shares: audit rows (written before the answer, refusal if they cannot
//! be), a request's agent and session ids parsed and checked against the caller's grants.

use crate::console::auth::Caller;
use crate::console::{ApiError, State};

impl State {
    /// Write an audit row for `caller`; when it cannot be written, the access is refused.
    pub(super) async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        detail: &str,
    ) -> Result<(), ApiError> {
        self.md
            .audit_from(&caller.user.name, action, detail, &caller.address)
            .await
            .map_err(|e| ApiError::AuditUnavailable(e.to_string()))
    }

    /// Audit a refused access and answer 404 (the caller learns nothing about what exists).
    pub(super) async fn denied(&self, caller: &Caller, what: &str) -> ApiError {
        if let Err(e) = self.audit(caller, "denied", what).await {
            return e;
        }
        tracing::warn!(user = %caller.user.name, what, "console access outside the user's agents refused");
        ApiError::NotFound
    }
}

pub(super) fn parse_id(hex_id: &str) -> Result<[u8; 16], ApiError> {
    hex::decode(hex_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("{hex_id:?} is not 32 hex digits")))
}

pub(super) fn parse_agent(agent_hex: &str) -> Result<String, ApiError> {
    hex::decode(agent_hex)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::BadRequest("agent: hex of the agent id's UTF-8".into()))
}

/// An audit row's detail: `key=value` pairs, the absent ones left out, text a person reads.
pub(super) fn details(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A name from a request (an agent id, a filter) as audit text: letters, digits and `-_.:*@`
/// as they are, anything else (spaces, `=`, quotes, control characters) as `%XX`, so a row
/// always reads as `key=value` pairs.
pub(super) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().take(128) {
        if c.is_alphanumeric() || "-_.:*@".contains(c) {
            out.push(c);
        } else {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// The agent and session of a path, checked against the caller's grants.
pub(super) async fn visible(
    state: &State,
    caller: &Caller,
    agent_hex: &str,
    session_hex: &str,
) -> Result<(String, [u8; 16]), ApiError> {
    let agent = parse_agent(agent_hex)?;
    let session = parse_id(session_hex)?;
    if !caller.may_see(&agent) {
        return Err(state
            .denied(
                caller,
                &format!("agent={} session={}", text(&agent), hex::encode(session)),
            )
            .await);
    }
    Ok((agent, session))
}

/// Is `session` one of `agent`'s? When it is not (another agent's, asked for under this
/// agent's path, or no session at all), audit what was really asked for and answer 404: a
/// refusal naming the agent it belongs to when the caller may not see that agent, else
/// `not_found`. `more`: the request's other parts for the row (`stream=0`).
pub(super) async fn owned(
    state: &State,
    caller: &Caller,
    agent: &str,
    session: [u8; 16],
    more: &str,
) -> Result<(), ApiError> {
    let owners = state.md.session_agents(session).await?;
    if owners.iter().any(|a| a == agent) {
        return Ok(());
    }
    let session = hex::encode(session);
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(" {more}")
    };
    let asked_as = text(agent);
    Err(match owners.iter().find(|a| !caller.may_see(a)) {
        Some(real) => {
            state
                .denied(
                    caller,
                    &format!(
                        "agent={} session={session}{more} asked_as={asked_as}",
                        text(real)
                    ),
                )
                .await
        }
        None => {
            let recorded_by = (!owners.is_empty())
                .then(|| owners.iter().map(|a| text(a)).collect::<Vec<_>>().join(","));
            let detail = details(&[
                ("agent", Some(asked_as)),
                ("session", Some(session)),
                ("recorded_by", recorded_by),
            ]);
            match state
                .audit(caller, "not_found", &format!("{detail}{more}"))
                .await
            {
                Ok(()) => ApiError::NotFound,
                Err(e) => e,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_details_are_key_value_text_with_request_names_escaped() {
        assert_eq!(
            details(&[
                ("agent", Some(text("ts-01"))),
                ("since_us", None),
                ("page", Some("first".into())),
            ]),
            "agent=ts-01 page=first"
        );
        assert_eq!(text("ts-*.eu:1@x"), "ts-*.eu:1@x");
        assert_eq!(
            text("a b=\"c\"\nx"),
            "a%20b%3D%22c%22%0Ax",
            "nothing that would read as another pair or row"
        );
        assert_eq!(text("ünï"), "ünï", "letters of any script stay readable");
    }
}
