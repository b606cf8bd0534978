//! What a metadata backend does, one trait per concern: the segment index and leases
//! ([`IndexStore`]), KEK and DEK records ([`KeyStore`]), agent certificates and accounts
//! ([`AccessStore`]), console accounts and logins ([`ConsoleStore`]), the audit log
//! ([`AuditStore`]) and the console's reads of the index ([`ReviewStore`]). [`Backend`] is all
//! of them with opening chores; `sqlite::Lite` and `postgres::Pg` implement it, and
//! [`Metadata`](super::Metadata) holds one as `Arc<dyn Backend>`.
//!
//! Methods return boxed futures ([`Fut`]) rather than being `async fn`: `Metadata` picks its
//! backend at run time, and a trait with `async fn` cannot be a trait object. (This is what the
//! `async-trait` crate would write; it is only a dev-dependency, and the plain type keeps the
//! library without one more proc macro.) Arguments are what the backends take, mostly owned, so
//! the futures borrow only `self` (and, where named `'a`, the arguments given by reference).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use super::review::{
    AuditQuery, AuditRow, ChunkLocation, ConsoleUser, Login, SessionQuery, SessionSummary,
};
use super::{
    AccessChange, AccessOutcome, AccessRows, Admitted, CertSeen, KekRow, LeaseRow, MetaError,
    RecordedAgent, SegmentCommit, StreamRow, Table,
};
use crate::protocol::{AgentId, DekRecord, SessionId, StreamId};

/// A metadata operation's result, to await.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, MetaError>> + Send + 'a>>;

/// Segments, chunks, stream positions and agents' leases (the ingest path's writes and reads).
pub trait IndexStore: Send + Sync {
    fn stream<'a>(
        &'a self,
        agent: &'a AgentId,
        session: SessionId,
        stream: StreamId,
    ) -> Fut<'a, Option<StreamRow>>;

    fn chunk_digest<'a>(
        &'a self,
        agent: &'a AgentId,
        session: SessionId,
        stream: StreamId,
        seq: u64,
    ) -> Fut<'a, Option<[u8; 32]>>;

    /// The segment, its chunks and stream positions, atomically; the agents fenced out.
    fn commit_segment(&self, commit: SegmentCommit) -> Fut<'_, Vec<AgentId>>;

    /// The agent's new lease epoch (0 where there are no leases).
    fn take_lease<'a>(&'a self, agent: &'a AgentId, node: &'a str) -> Fut<'a, i64>;

    /// Every lease, by agent.
    fn leases(&self) -> Fut<'_, Vec<LeaseRow>>;
}

/// `encryption_kek` and `encryption_dek`.
pub trait KeyStore: Send + Sync {
    fn keks(&self) -> Fut<'_, Vec<KekRow>>;

    fn set_kek_fingerprint<'a>(&'a self, id: i64, fingerprint: &'a str) -> Fut<'a, ()>;

    fn mark_kek_retired(&self, id: i64) -> Fut<'_, ()>;

    fn insert_kek<'a>(
        &'a self,
        active: bool,
        priv_encrypted: bool,
        pub_datafile: &'a str,
        priv_datafile: &'a str,
    ) -> Fut<'a, ()>;

    fn insert_deks(&self, records: Vec<(DekRecord, String)>) -> Fut<'_, ()>;

    /// DEK records registered in the last minute, per agent.
    fn deks_in_last_minute(&self) -> Fut<'_, Vec<(String, i64)>>;

    fn dek_owners(&self, dek_ids: Vec<[u8; 16]>) -> Fut<'_, HashMap<[u8; 16], String>>;

    /// A DEK record's owner and bytes.
    fn dek_record(&self, dek_id: [u8; 16]) -> Fut<'_, Option<(String, Vec<u8>)>>;

    /// The agents with a DEK record wrapped under `kek`.
    fn kek_agents(&self, kek: String) -> Fut<'_, Vec<String>>;
}

/// `agent_credential` and `agent_account`: who may connect.
pub trait AccessStore: Send + Sync {
    fn access_rows(&self) -> Fut<'_, AccessRows>;

    /// The change and its audit row (by `actor`), atomically.
    fn change_access(&self, change: AccessChange, actor: String) -> Fut<'_, AccessOutcome>;

    /// Whether the admitted certificate was new to the registry.
    fn record_admitted(&self, cert: Admitted) -> Fut<'_, bool>;

    fn note_serial(&self, fingerprint: String, serial: String) -> Fut<'_, ()>;

    fn certificates_seen(&self) -> Fut<'_, Vec<CertSeen>>;
}

/// `console_user` and `console_login`: who may use the review console.
pub trait ConsoleStore: Send + Sync {
    fn console_user(&self, name: String) -> Fut<'_, Option<ConsoleUser>>;

    fn console_users(&self) -> Fut<'_, Vec<ConsoleUser>>;

    /// Insert or replace an account (`new_only`: `false` when taken), with its audit row.
    fn put_console_user(
        &self,
        user: ConsoleUser,
        new_only: bool,
        actor: String,
        action: String,
    ) -> Fut<'_, bool>;

    fn insert_login(&self, login: Login) -> Fut<'_, ()>;

    /// The login, touched at `now_us` unless idle longer than `idle_us` (then deleted).
    fn touch_login(
        &self,
        token_sha256: [u8; 32],
        now_us: i64,
        idle_us: i64,
    ) -> Fut<'_, Option<Login>>;

    fn delete_login(&self, token_sha256: [u8; 32]) -> Fut<'_, ()>;
}

/// `audit_log` and its hash chain.
pub trait AuditStore: Send + Sync {
    fn audit<'a>(&'a self, actor: &'a str, action: &'a str, detail: &'a str) -> Fut<'a, ()>;

    /// `[actor, action, detail, address]`.
    fn audit_from(&self, row: [String; 4]) -> Fut<'_, ()>;

    fn audit_chain_rows(&self) -> Fut<'_, Vec<crate::audit::ChainRow>>;

    /// The chain's last row: (chain number, row hash).
    fn audit_head(&self) -> Fut<'_, Option<(i64, Vec<u8>)>>;

    fn audit_page(&self, q: AuditQuery) -> Fut<'_, Vec<AuditRow>>;
}

/// The review console's reads of the index: sessions, agents, where chunks are.
pub trait ReviewStore: Send + Sync {
    fn sessions(&self, q: SessionQuery) -> Fut<'_, Vec<SessionSummary>>;

    /// The session `session` of `q.agent`.
    fn session(&self, q: SessionQuery, session: [u8; 16]) -> Fut<'_, Option<SessionSummary>>;

    fn recorded_agents(&self, allowed: Option<Vec<String>>) -> Fut<'_, Vec<RecordedAgent>>;

    fn chunk_locations(
        &self,
        agent: String,
        session: [u8; 16],
        stream: Option<u32>,
        from_seq: u64,
        limit: u32,
    ) -> Fut<'_, Vec<ChunkLocation>>;

    /// `slots` is at least 1, and 1 unless both ends are given.
    fn frame_picks(
        &self,
        agent: String,
        session: [u8; 16],
        stream: u32,
        since_us: Option<i64>,
        until_us: Option<i64>,
        slots: u32,
    ) -> Fut<'_, Vec<ChunkLocation>>;

    fn session_agents(&self, session: [u8; 16]) -> Fut<'_, Vec<String>>;
}

/// A whole metadata backend.
pub trait Backend:
    IndexStore + KeyStore + AccessStore + ConsoleStore + AuditStore + ReviewStore
{
    /// What the backend is, for logs (no password).
    fn describe(&self) -> String;

    /// `postgresql` or `sqlite`.
    fn kind(&self) -> &'static str;

    /// Apply the migrations not applied yet.
    fn migrate(&self) -> Fut<'_, ()>;

    fn ping(&self) -> Fut<'_, ()>;

    fn count(&self, table: Table) -> Fut<'_, i64>;
}
