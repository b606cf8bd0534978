//! Metadata: KEK and DEK records, the segment and chunk index, stream positions, the audit log.
//! PostgreSQL when a database URL is configured, else an embedded SQLite file with the same
//! schema. The only module that issues SQL; `migrations/` holds the schema, applied at start.
//! `store` has the backends' traits by concern, `sql` the statements both run alike.

mod forward;
mod postgres;
pub mod review;
mod rows;
mod sql;
mod sqlite;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{AgentId, DekRecord, SessionId, StreamId};

pub use review::{
    AuditQuery, AuditRow, ChunkLocation, ConsoleUser, Login, RecordedAgent, Role, SessionQuery,
    SessionSummary, StreamState,
};
pub use store::{
    AccessStore, AuditStore, Backend, ConsoleStore, Fut, IndexStore, KeyStore, ReviewStore,
};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// `target` is `host:port/database`; `detail` the server's or the driver's words, once.
    #[error("PostgreSQL at {target}: {detail}")]
    Postgres { target: String, detail: String },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("metadata worker stopped: {0}")]
    Worker(String),
    #[error("bad row: {0}")]
    Row(String),
}

/// One row of `encryption_kek`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KekRow {
    pub id: i64,
    pub active: bool,
    pub priv_encrypted: bool,
    pub pub_datafile: String,
    pub priv_datafile: Option<String>,
    pub fingerprint: Option<String>,
    pub agent_id: Option<String>,
    /// When the row was retired (`active = false`), microseconds since the epoch.
    pub retired_us: Option<i64>,
}

/// What is stored of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRow {
    pub kind: u8,
    pub next_seq: u64,
    pub final_seq: Option<u64>,
    /// The ranges (first, last) the stream's newest stored gap records dropped, oldest first.
    pub dropped: Vec<(u64, u64)>,
}

/// Gap-record ranges read back with a stream (as many as `server::verify` remembers).
pub const DROPPED_RANGES: u32 = 64;

#[derive(Clone, Debug)]
pub struct ChunkRow {
    pub agent: AgentId,
    pub session: SessionId,
    pub stream: StreamId,
    pub seq: u64,
    pub digest: [u8; 32],
    /// Where the chunk's bytes start in its segment object, and how many there are.
    pub offset: u64,
    pub len: u32,
    pub capture_us: i64,
    /// The chunk's flags (`index_flags`): bit 0 final, bit 1 gap record, bit 2 checkpoint,
    /// bit 7 an empty plaintext.
    pub flags: u8,
    pub dek_id: [u8; 16],
    /// A gap record's first dropped number (it dropped `gap_first ..= seq - 1`).
    pub gap_first: Option<u64>,
}

impl ChunkRow {
    /// The index row of chunk `c`, whose SHA-256 is `digest`, stored at `offset` of its
    /// segment; `gap_first` for a gap record.
    pub fn of(
        c: &crate::protocol::SealedChunk,
        digest: [u8; 32],
        offset: u64,
        gap_first: Option<u64>,
    ) -> Self {
        let h = &c.header;
        ChunkRow {
            agent: h.agent.clone(),
            session: h.session,
            stream: h.stream,
            seq: h.seq,
            digest,
            offset,
            len: c.len() as u32,
            capture_us: h.capture_time_us,
            flags: index_flags(c),
            dek_id: h.dek_id.0,
            gap_first,
        }
    }
}

#[derive(Clone, Debug)]
pub struct StreamUpdate {
    pub agent: AgentId,
    pub session: SessionId,
    pub stream: StreamId,
    pub kind: u8,
    pub next_seq: u64,
    pub final_seq: Option<u64>,
}

/// Everything committed, in one transaction, once a segment object is durable.
#[derive(Clone, Debug)]
pub struct SegmentCommit {
    pub segment_id: [u8; 16],
    pub object_key: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub chunks: Vec<ChunkRow>,
    pub streams: Vec<StreamUpdate>,
    /// The lease epoch each agent's chunks were accepted under (PostgreSQL; none on SQLite).
    /// Chunks and stream updates of an agent whose lease moved on are not indexed.
    pub fences: Vec<(AgentId, i64)>,
}

/// PostgreSQL pool settings (the embedded SQLite file has one connection).
#[derive(Clone, Debug)]
pub struct DbSettings {
    pub index_connections: usize,
    pub key_connections: usize,
    pub acquire_timeout: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for DbSettings {
    fn default() -> Self {
        Self::from(&crate::config::Database::default())
    }
}

impl From<&crate::config::Database> for DbSettings {
    fn from(d: &crate::config::Database) -> Self {
        DbSettings {
            index_connections: d.index_connections,
            key_connections: d.key_connections,
            acquire_timeout: Duration::from_millis(d.acquire_timeout_ms),
            connect_timeout: Duration::from_millis(d.connect_timeout_ms),
            statement_timeout: Duration::from_millis(d.statement_timeout_ms),
        }
    }
}

/// The metadata store: one backend, chosen at start, behind the [`Backend`] traits. Its
/// methods say what each operation does; the backends' SQL is in `sqlite` and `postgres`.
#[derive(Clone)]
pub struct Metadata(Arc<dyn Backend>);

impl Metadata {
    /// Connect (PostgreSQL URL, or the SQLite file when `url` is empty) and apply migrations.
    pub async fn open(url: &str, sqlite_file: &Path) -> Result<Self, MetaError> {
        Self::open_with(url, sqlite_file, &DbSettings::default()).await
    }

    /// `open` with explicit PostgreSQL pool settings.
    pub async fn open_with(
        url: &str,
        sqlite_file: &Path,
        settings: &DbSettings,
    ) -> Result<Self, MetaError> {
        let backend: Arc<dyn Backend> = if url.is_empty() {
            Arc::new(sqlite::Lite::open(sqlite_file).await?)
        } else {
            Arc::new(postgres::Pg::connect(url, settings).await?)
        };
        backend.migrate().await?;
        Ok(Metadata(backend))
    }

    /// The backend, for code written against the traits.
    pub fn backend(&self) -> &dyn Backend {
        &*self.0
    }

    /// "PostgreSQL at host:port/db" or "SQLite" (no password).
    pub fn describe(&self) -> String {
        self.0.describe()
    }

    /// `postgresql` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    pub async fn ping(&self) -> Result<(), MetaError> {
        self.0.ping().await
    }

    pub async fn keks(&self) -> Result<Vec<KekRow>, MetaError> {
        self.0.keks().await
    }

    pub async fn set_kek_fingerprint(&self, id: i64, fingerprint: &str) -> Result<(), MetaError> {
        self.0.set_kek_fingerprint(id, fingerprint).await
    }

    /// Note when an inactive row was retired, if nobody did (the how-to retires with
    /// `active = false` alone).
    pub async fn mark_kek_retired(&self, id: i64) -> Result<(), MetaError> {
        self.0.mark_kek_retired(id).await
    }

    /// Record wrapped DEKs with their object keys, in one statement (idempotent per DEK id).
    pub async fn insert_deks(&self, records: Vec<(DekRecord, String)>) -> Result<(), MetaError> {
        self.0.insert_deks(records).await
    }

    /// DEK records registered in the last minute, per agent: the key actor starts each agent's
    /// new-DEK budget from them, so a restart does not refill it.
    pub async fn deks_in_last_minute(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.0.deks_in_last_minute().await
    }

    /// The agents that registered these DEK ids, for those registered at all.
    pub async fn dek_owners(
        &self,
        dek_ids: Vec<[u8; 16]>,
    ) -> Result<HashMap<[u8; 16], String>, MetaError> {
        self.0.dek_owners(dek_ids).await
    }

    pub async fn stream(
        &self,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
    ) -> Result<Option<StreamRow>, MetaError> {
        self.0.stream(agent, session, stream).await
    }

    pub async fn chunk_digest(
        &self,
        agent: &AgentId,
        session: SessionId,
        stream: StreamId,
        seq: u64,
    ) -> Result<Option<[u8; 32]>, MetaError> {
        self.0.chunk_digest(agent, session, stream, seq).await
    }

    /// Index a durable segment: its row, its chunks and the streams' new positions, atomically.
    /// Returns the agents whose fence failed (a newer connection holds their lease): their
    /// chunks were left out.
    pub async fn commit_segment(&self, commit: SegmentCommit) -> Result<Vec<AgentId>, MetaError> {
        self.0.commit_segment(commit).await
    }

    /// Take `agent`'s lease for a connection on `node`: its epoch, higher than any before.
    /// SQLite (one node) has no leases: 0, which fences nothing.
    pub async fn take_lease(&self, agent: &AgentId, node: &str) -> Result<i64, MetaError> {
        self.0.take_lease(agent, node).await
    }

    /// Every agent's lease, by agent (none on SQLite).
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, MetaError> {
        self.0.leases().await
    }

    pub async fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), MetaError> {
        self.0.audit(actor, action, detail).await
    }

    /// Every `audit_log` row with its chain columns, in insertion order (`audit verify`).
    pub async fn audit_chain_rows(&self) -> Result<Vec<crate::audit::ChainRow>, MetaError> {
        self.0.audit_chain_rows().await
    }

    /// The audit chain's last row: (chain number, row hash).
    pub async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, MetaError> {
        self.0.audit_head().await
    }

    /// The agent certificates and accounts, for the server's access check and `agents list`.
    pub async fn access_rows(&self) -> Result<AccessRows, MetaError> {
        self.0.access_rows().await
    }

    /// Apply an access change and write its audit row (actor `actor`), atomically.
    pub async fn change_access(
        &self,
        change: AccessChange,
        actor: &str,
    ) -> Result<AccessOutcome, MetaError> {
        self.0.change_access(change, actor.to_owned()).await
    }

    /// Record that this node admitted a CA-signed agent certificate: its row in
    /// `agent_credential` if it has none (a certificate from an offline agent CA), its serial
    /// and first sighting if they are missing, and its last sighting if the one stored is older
    /// than [`SEEN_REFRESH_US`]. Idempotent; writes nothing when the row is there and fresh.
    /// Returns whether the certificate was new to the registry.
    pub async fn record_admitted(&self, cert: Admitted) -> Result<bool, MetaError> {
        self.0.record_admitted(cert).await
    }

    /// Note a registered certificate's serial number (hex), if none is noted yet.
    pub async fn note_serial(&self, fingerprint: &str, serial: &str) -> Result<(), MetaError> {
        self.0
            .note_serial(fingerprint.to_owned(), serial.to_owned())
            .await
    }

    /// Serial and sightings of every certificate in `agent_credential` (`agents list`,
    /// `agents revoke`).
    pub async fn certificates_seen(&self) -> Result<Vec<CertSeen>, MetaError> {
        self.0.certificates_seen().await
    }

    /// Count rows of a table (operators' checks and tests).
    pub async fn count(&self, table: Table) -> Result<i64, MetaError> {
        self.0.count(table).await
    }

    /// Run the how-to's statement: register a KEK by its file paths.
    pub async fn insert_kek(
        &self,
        active: bool,
        priv_encrypted: bool,
        pub_datafile: &str,
        priv_datafile: &str,
    ) -> Result<(), MetaError> {
        self.0
            .insert_kek(active, priv_encrypted, pub_datafile, priv_datafile)
            .await
    }
}

/// One row of `agent_lease`: the connection (on `node`) that holds an agent's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub agent: String,
    pub epoch: i64,
    pub node: String,
    pub since_us: i64,
}

/// One row of `agent_credential`: a certificate issued to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// `sha256:<hex>` of the certificate's DER bytes.
    pub fingerprint: String,
    pub agent: String,
    pub issued_us: i64,
    pub not_after_us: i64,
    pub revoked_us: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// A CA-signed agent certificate a node admitted, as `Metadata::record_admitted` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// `sha256:<hex>` of the certificate's DER bytes.
    pub fingerprint: String,
    pub agent: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// notBefore, the `issued_us` of a certificate recorded at its first connection.
    pub not_before_us: i64,
    pub not_after_us: i64,
    /// When the node admitted it.
    pub seen_us: i64,
}

/// What `agent_credential` knows of a certificate besides the access rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSeen {
    pub fingerprint: String,
    pub serial: Option<String>,
    pub first_seen_us: Option<i64>,
    pub last_seen_us: Option<i64>,
}

/// A stored last sighting younger than this is not written again (one minute).
pub const SEEN_REFRESH_US: i64 = 60_000_000;

/// One row of `agent_account`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAccount {
    pub agent: String,
    pub disabled_us: Option<i64>,
    /// Only certificates in `agent_credential` are accepted for this agent.
    pub registered_only: bool,
}

/// Everything the server's access check reads.
#[derive(Clone, Debug, Default)]
pub struct AccessRows {
    pub credentials: Vec<Credential>,
    pub accounts: Vec<AgentAccount>,
}

/// A change to an agent's access, written with its audit row in one transaction.
#[derive(Clone, Debug)]
pub enum AccessChange {
    /// A new certificate; every earlier one of the agent not yet revoked is revoked as
    /// superseded.
    Issue(Credential),
    /// As `Issue`, for a certificate issued elsewhere (an offline agent CA) and registered
    /// here (`agents config`): audited as registered, not issued.
    Register(Credential),
    /// Every certificate of the agent not yet revoked is revoked.
    Revoke { agent: String, reason: String },
    /// Refuse (true) or accept again (false) every certificate of the agent.
    Disable { agent: String, disabled: bool },
}

impl AccessChange {
    pub fn agent(&self) -> &str {
        match self {
            AccessChange::Issue(c) | AccessChange::Register(c) => &c.agent,
            AccessChange::Revoke { agent, .. } | AccessChange::Disable { agent, .. } => agent,
        }
    }

    fn action(&self) -> &'static str {
        match self {
            AccessChange::Issue(_) => "agent_certificate_issued",
            AccessChange::Register(_) => "agent_certificate_registered",
            AccessChange::Revoke { .. } => "agent_revoked",
            AccessChange::Disable { disabled: true, .. } => "agent_disabled",
            AccessChange::Disable {
                disabled: false, ..
            } => "agent_enabled",
        }
    }
}

/// What an access change did: the certificates it revoked, and whether it changed anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessOutcome {
    pub revoked: Vec<String>,
    pub changed: bool,
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The audit row's detail for a change and its outcome.
fn access_detail(change: &AccessChange, outcome: &AccessOutcome) -> String {
    let revoked = outcome.revoked.join(",");
    match change {
        AccessChange::Issue(c) | AccessChange::Register(c) => format!(
            "agent={} certificate={} not_after_us={} superseded=[{revoked}]",
            c.agent, c.fingerprint, c.not_after_us
        ),
        AccessChange::Revoke { agent, reason } => {
            format!("agent={agent} reason={reason:?} revoked=[{revoked}]")
        }
        AccessChange::Disable { agent, disabled } => {
            format!(
                "agent={agent} disabled={disabled} changed={}",
                outcome.changed
            )
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Table {
    EncryptionKek,
    EncryptionDek,
    Segments,
    Chunks,
    Streams,
    AuditLog,
    AgentCredential,
    RecordingSession,
    ConsoleLogin,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::EncryptionKek => "encryption_kek",
            Table::EncryptionDek => "encryption_dek",
            Table::Segments => "segments",
            Table::Chunks => "chunks",
            Table::Streams => "streams",
            Table::AuditLog => "audit_log",
            Table::AgentCredential => "agent_credential",
            Table::RecordingSession => "recording_session",
            Table::ConsoleLogin => "console_login",
        }
    }
}

/// Index flag bit 7: the chunk's plaintext is empty (its ciphertext is the tag alone), which
/// its length shows to anyone; the console leaves such chunks (stream ends, idle checkpoints)
/// out of the frame list.
pub const INDEX_EMPTY: u8 = 0x80;

/// The flags the index keeps for a chunk: its own flags byte (final, gap, checkpoint) and
/// `INDEX_EMPTY`.
pub fn index_flags(c: &crate::protocol::SealedChunk) -> u8 {
    let h = &c.header;
    u8::from(h.last)
        | (u8::from(h.gap) << 1)
        | (u8::from(h.checkpoint) << 2)
        | if c.ciphertext().len() == crate::protocol::chunk::TAG_LEN {
            INDEX_EMPTY
        } else {
            0
        }
}

/// Migrations in order: (version, PostgreSQL text, SQLite text).
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_init.sql"),
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_agent_access.sql"),
        include_str!("../../migrations/sqlite/0002_agent_access.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_review.sql"),
        include_str!("../../migrations/sqlite/0003_review.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_audit_chain.sql"),
        include_str!("../../migrations/sqlite/0004_audit_chain.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_agent_lease.sql"),
        include_str!("../../migrations/sqlite/0005_agent_lease.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_dek_by_kek.sql"),
        include_str!("../../migrations/sqlite/0006_dek_by_kek.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_gap_ranges.sql"),
        include_str!("../../migrations/sqlite/0007_gap_ranges.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_kek_audit_booleans.sql"),
        include_str!("../../migrations/sqlite/0008_kek_audit_booleans.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres/0009_agent_seen.sql"),
        include_str!("../../migrations/sqlite/0009_agent_seen.sql"),
    ),
];
