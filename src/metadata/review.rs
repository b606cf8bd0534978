//! What the review console reads and writes: recorded sessions and where their chunks are,
//! DEK records by id, console accounts and logins, audit rows with the caller's address.
//! The SQL itself is in `postgres::review` and `sqlite::review`.

use super::{MetaError, Metadata};

/// A console account's role: admins see every agent, the audit log and manage nothing else
/// from the page; reviewers see only the agents their patterns grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Reviewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reviewer => "reviewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "reviewer" => Some(Role::Reviewer),
            _ => None,
        }
    }
}

/// One row of `console_user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleUser {
    pub name: String,
    pub role: Role,
    /// PHC string (argon2id).
    pub password_hash: String,
    /// Agent patterns a reviewer may see (`*` matches any run of characters).
    pub agents: Vec<String>,
    pub created_us: i64,
    pub disabled_us: Option<i64>,
}

/// One row of `console_login` (the cookie's token is kept only as its SHA-256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub token_sha256: [u8; 32],
    pub user: String,
    pub csrf: String,
    pub address: String,
    pub created_us: i64,
    pub last_seen_us: i64,
}

/// Which sessions to list: newest last capture first, `limit` of them, after a cursor.
#[derive(Clone, Debug, Default)]
pub struct SessionQuery {
    /// `None`: every agent (admins); `Some(patterns)`: only agents matching one of them.
    pub allowed: Option<Vec<String>>,
    pub agent: Option<String>,
    /// Sessions whose captures overlap `[since_us, until_us]`.
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    /// Continue after this (last_capture_us, agent, session) of the previous page.
    pub before: Option<(i64, String, [u8; 16])>,
    pub limit: u32,
}

/// A stream of a session, as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamState {
    pub stream: u32,
    pub kind: u8,
    pub next_seq: u64,
    pub final_seq: Option<u64>,
}

/// One row of `recording_session` with its streams and whether its KEK is a customer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    pub agent: String,
    pub session: [u8; 16],
    pub first_capture_us: i64,
    pub last_capture_us: i64,
    pub chunks: i64,
    pub bytes: i64,
    pub gaps: i64,
    pub updated_us: i64,
    /// `Some(true)` when the newest DEK is wrapped to a customer (E2EE) KEK.
    pub encrypted: Option<bool>,
    pub streams: Vec<StreamState>,
}

/// An agent with recordings: how many sessions, and its newest capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedAgent {
    pub agent: String,
    pub sessions: i64,
    pub last_capture_us: i64,
}

/// Where one chunk's bytes are: a byte range of a segment object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    pub stream: u32,
    pub seq: u64,
    pub object_key: String,
    /// `None` for chunks indexed before byte ranges were recorded (migration 3).
    pub range: Option<(u64, u32)>,
    pub capture_us: Option<i64>,
    pub flags: Option<u8>,
    pub dek_id: Option<[u8; 16]>,
}

/// One `audit_log` row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub address: Option<String>,
}

/// Which audit rows the admin's view asks for: newest first, `limit` of them, matching every
/// filter given, with ids below `before` (an older page) or above `after` (a newer one).
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub before: Option<i64>,
    pub after: Option<i64>,
    /// The row's actor (the console user, `database`, ...), exactly.
    pub actor: Option<String>,
    /// The row's action (`login`, `denied`, ...), exactly.
    pub action: Option<String>,
    /// Written at or after / at or before these times (µs since the epoch).
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub limit: u32,
}

/// Does `agent` match `pattern` (`*` any run of characters, everything else literal)?
pub fn agent_matches(pattern: &str, agent: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == agent;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !agent.starts_with(first) || agent.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &agent[first.len()..agent.len() - last.len()];
    if !agent.ends_with(last) {
        return false;
    }
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A pattern as SQL `LIKE ... ESCAPE '\'`.
pub(super) fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

impl Metadata {
    /// A page of recorded sessions, newest first.
    pub async fn sessions(&self, q: SessionQuery) -> Result<Vec<SessionSummary>, MetaError> {
        self.0.sessions(q).await
    }

    /// One session's summary (`None` when unknown).
    pub async fn session(
        &self,
        agent: &str,
        session: [u8; 16],
    ) -> Result<Option<SessionSummary>, MetaError> {
        let q = SessionQuery {
            agent: Some(agent.to_owned()),
            ..Default::default()
        };
        self.0.session(q, session).await
    }

    /// Agents with recordings (those `allowed` match), their session counts and last capture.
    pub async fn recorded_agents(
        &self,
        allowed: Option<Vec<String>>,
    ) -> Result<Vec<RecordedAgent>, MetaError> {
        self.0.recorded_agents(allowed).await
    }

    /// A session's chunks of `stream` (all streams when `None`) from `from_seq`, in order.
    pub async fn chunk_locations(
        &self,
        agent: &str,
        session: [u8; 16],
        stream: Option<u32>,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<ChunkLocation>, MetaError> {
        self.0
            .chunk_locations(agent.to_owned(), session, stream, from_seq, limit)
            .await
    }

    /// The frames an overview (montage, snapshots) shows of a session's frame stream `stream`:
    /// with `slots` = 1, the newest frame captured in `[since_us, until_us]` (an end left out is
    /// open); with more slots and both ends, the newest frame of each of `slots` equal parts of
    /// the range, in order. Frames only: gap records and empty chunks (checkpoints, the final
    /// chunk) are left out. Capture times are the index's: the page reads the chunk's own.
    pub async fn frame_picks(
        &self,
        agent: &str,
        session: [u8; 16],
        stream: u32,
        since_us: Option<i64>,
        until_us: Option<i64>,
        slots: u32,
    ) -> Result<Vec<ChunkLocation>, MetaError> {
        let slots = match (since_us, until_us) {
            (Some(s), Some(u)) if u > s => slots.max(1),
            _ => 1,
        };
        let agent = agent.to_owned();
        self.0
            .frame_picks(agent, session, stream, since_us, until_us, slots)
            .await
    }

    /// The agents that recorded a session with this id (normally one): who a request for it
    /// under another agent's path really asked about.
    pub async fn session_agents(&self, session: [u8; 16]) -> Result<Vec<String>, MetaError> {
        self.0.session_agents(session).await
    }

    /// A DEK record's owner and bytes, by DEK id.
    pub async fn dek_record(
        &self,
        dek_id: [u8; 16],
    ) -> Result<Option<(String, Vec<u8>)>, MetaError> {
        self.0.dek_record(dek_id).await
    }

    /// The agents that have a DEK record wrapped under `kek` (a `sha256:` KEK id).
    pub async fn kek_agents(&self, kek: &str) -> Result<Vec<String>, MetaError> {
        self.0.kek_agents(kek.to_owned()).await
    }

    pub async fn console_user(&self, name: &str) -> Result<Option<ConsoleUser>, MetaError> {
        self.0.console_user(name.to_owned()).await
    }

    pub async fn console_users(&self) -> Result<Vec<ConsoleUser>, MetaError> {
        self.0.console_users().await
    }

    /// Insert a new account, or replace an existing one's role, hash, agents and disabled
    /// time; the audit row (`actor`, `action`) is written in the same transaction. `new_only`
    /// refuses to overwrite: `Ok(false)` when the name is taken.
    pub async fn put_console_user(
        &self,
        user: ConsoleUser,
        new_only: bool,
        actor: &str,
        action: &str,
    ) -> Result<bool, MetaError> {
        let (actor, action) = (actor.to_owned(), action.to_owned());
        self.0.put_console_user(user, new_only, actor, action).await
    }

    pub async fn insert_login(&self, login: Login) -> Result<(), MetaError> {
        self.0.insert_login(login).await
    }

    /// The login with this token hash, its last-seen time moved to `now_us` when it is still
    /// within `idle_us`; a login idle longer is deleted and `None` returned.
    pub async fn touch_login(
        &self,
        token_sha256: [u8; 32],
        now_us: i64,
        idle_us: i64,
    ) -> Result<Option<Login>, MetaError> {
        self.0.touch_login(token_sha256, now_us, idle_us).await
    }

    pub async fn delete_login(&self, token_sha256: [u8; 32]) -> Result<(), MetaError> {
        self.0.delete_login(token_sha256).await
    }

    /// An audit row with the caller's address.
    pub async fn audit_from(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        address: &str,
    ) -> Result<(), MetaError> {
        let v = [actor, action, detail, address].map(str::to_owned);
        self.0.audit_from(v).await
    }

    /// The newest audit rows, `limit` of them, with ids below `before`.
    pub async fn audit_rows(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, MetaError> {
        self.audit_page(AuditQuery {
            before,
            limit,
            ..Default::default()
        })
        .await
    }

    /// A page of audit rows matching `q`, newest first.
    pub async fn audit_page(&self, q: AuditQuery) -> Result<Vec<AuditRow>, MetaError> {
        self.0.audit_page(q).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_patterns_match_as_globs() {
        assert!(agent_matches("ts-01", "ts-01"));
        assert!(!agent_matches("ts-01", "ts-011"));
        assert!(agent_matches("ts-*", "ts-01"));
        assert!(agent_matches("*", "anything"));
        assert!(agent_matches("*-vdi-*", "eu-vdi-7"));
        assert!(!agent_matches("ts-*", "vdi-1"));
        assert!(!agent_matches("a*a", "a"));
        assert!(agent_matches("a*a", "aa"));
        assert_eq!(like_pattern("ts_1*%"), "ts\\_1%\\%");
    }
}
