//! The metadata conformance suite, run on both backends: every method of the backend traits
//! (`sealstream::metadata::store`: `IndexStore`, `KeyStore`, `AccessStore`, `ConsoleStore`,
//! `AuditStore`, `ReviewStore` and `Backend`) is exercised by at least one check here. Each
//! check is written once, against the public `Metadata` API (which calls the traits), and
//! `conformance!` makes it two tests: `<check>_sqlite` on a fresh embedded SQLite file and
//! `<check>_postgres` on a fresh PostgreSQL database (dropped at the end, also when the check
//! fails). Where the backends should agree, every answer is compared with one expected value
//! built from the check's own inputs, never from what either backend said; so a backend that
//! drifts fails its half of the pair.
//!
//! Covered: the backend's name, pings and counts; the segment index as the console reads it
//! (session summaries, chunk locations, frame picks, stream positions, digests), session pages
//! (order, cursors, filters, reviewer grants), repeated and conflicting index writes, KEK and
//! DEK records, agent access changes, admitted certificates' serials and sightings, leases and
//! fenced commits, the audit chain (and tampering with what it returns), audit pages, console
//! users, grants and logins.
//!
//! A difference between the backends fails its check on the backend at fault. The four the
//! suite found when it was written (KEK audit rows hashed only at the next write on SQLite, one
//! stream moved twice in a commit refused by PostgreSQL, KEK audit booleans, audit times to the
//! millisecond on SQLite) are fixed, and their checks run on both.
//!
//! Orders by agent or user name are byte order on SQLite and the database's collation on
//! PostgreSQL: these checks expect byte order, which a database created with `C` or `C.UTF-8`
//! (this machine's and CI's default) gives; one with a linguistic collation (e.g. ICU `en-US`)
//! lists `ts_04, ts-01, ts-02, TS-03` where SQLite lists `TS-03, ts-01, ts-02, ts_04`.
//!
//! Differences by design are asserted as designed: SQLite has no leases (`take_lease` is 0 and
//! fences nothing), and the KEK trigger's actor is `database` on SQLite, `database:<role>` on
//! PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use sealstream::metadata::{
    AccessChange, AccessOutcome, AccessRows, AgentAccount, AuditQuery, AuditRow, ChunkLocation,
    ChunkRow, ConsoleUser, Credential, INDEX_EMPTY, KekRow, Login, Metadata, RecordedAgent, Role,
    SegmentCommit, SessionQuery, SessionSummary, StreamRow, StreamState, StreamUpdate, Table,
    now_us,
};
use sealstream::protocol::chunk::{FLAG_CHECKPOINT, FLAG_FINAL, FLAG_GAP};
use sealstream::protocol::{AgentId, DekId, DekRecord, KekId, SessionId, StreamId};
use sha2::Digest;

use crate::common::server::{Backend, pg_exec};

/// A fresh, migrated metadata store of one backend, and what to remove afterwards.
struct Fixture {
    md: Metadata,
    _dir: tempfile::TempDir,
    pg_db: Option<String>,
}

impl Fixture {
    async fn open(backend: Backend) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg_db) = match backend {
            Backend::Sqlite => (String::new(), None),
            Backend::Postgres => {
                let mut id = [0u8; 6];
                getrandom::fill(&mut id).unwrap();
                let db = format!("sealstream_meta_{}", hex::encode(id));
                pg_exec(&format!("CREATE DATABASE {db}")).await;
                (format!("postgres://postgres@127.0.0.1:5432/{db}"), Some(db))
            }
        };
        match Metadata::open(&url, &dir.path().join("metadata.db")).await {
            Ok(md) => Fixture {
                md,
                _dir: dir,
                pg_db,
            },
            Err(e) => {
                if let Some(db) = &pg_db {
                    pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
                }
                panic!("opening the {backend:?} metadata store: {e}");
            }
        }
    }

    /// Close the store, drop its database, then fail as the check did (if it did).
    async fn close(self, outcome: std::thread::Result<()>) {
        let Fixture { md, _dir, pg_db } = self;
        drop(md);
        if let Some(db) = pg_db {
            pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Run `check` on a fresh store of `backend`.
macro_rules! on_backend {
    ($check:ident, $backend:expr) => {{
        let fx = Fixture::open($backend).await;
        let outcome = AssertUnwindSafe($check(&fx.md)).catch_unwind().await;
        fx.close(outcome).await;
    }};
}

/// `check` as two tests, one per backend.
macro_rules! conformance {
    ($check:ident, sqlite: $sqlite:ident, postgres: $postgres:ident $(,)?) => {
        #[tokio::test]
        async fn $sqlite() {
            on_backend!($check, Backend::Sqlite)
        }

        #[tokio::test]
        async fn $postgres() {
            on_backend!($check, Backend::Postgres)
        }
    };
}

mod access;
mod audit;
mod backend;
mod console;
mod index;
mod keys;
mod leases;

// ---------------------------------------------------------------------------------------------
// Building index rows the way the store actor does.

const DEK: [u8; 16] = [0xd0; 16];
const S1: [u8; 16] = [0x11; 16];
const S2: [u8; 16] = [0x22; 16];
/// Where a test segment's first chunk starts (after its header).
const SEGMENT_HEADER: u64 = 64;

fn recorded(agent: &str, sessions: i64, last_capture_us: i64) -> RecordedAgent {
    RecordedAgent {
        agent: agent.to_owned(),
        sessions,
        last_capture_us,
    }
}

fn kek_id(n: u8) -> KekId {
    KekId([n; 32])
}

fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

/// A session id of sixteen `n` bytes (so their order is `n`'s).
fn sid(n: u8) -> [u8; 16] {
    [n; 16]
}

fn digest_of(agent: &str, session: [u8; 16], stream: u32, seq: u64) -> [u8; 32] {
    sha2::Sha256::digest(format!("{agent}/{}/{stream}/{seq}", hex::encode(session))).into()
}

/// The kind a test stream carries: stream 0 frames, 1 keystrokes, any other activity.
fn kind_of(stream: u32) -> u8 {
    match stream {
        0 => 1,
        1 => 2,
        _ => 3,
    }
}

/// A frame chunk of 100 + (seq mod 1000) bytes, under `DEK`; `segment` sets its offset.
fn ch(agent_name: &str, session: [u8; 16], stream: u32, seq: u64, capture_us: i64) -> ChunkRow {
    ChunkRow {
        agent: agent(agent_name),
        session: SessionId(session),
        stream: StreamId(stream),
        seq,
        digest: digest_of(agent_name, session, stream, seq),
        offset: 0,
        len: 100 + (seq % 1000) as u32,
        capture_us,
        flags: 0,
        dek_id: DEK,
        gap_first: None,
    }
}

/// Segment `n` holding `chunks` back to back, with the streams' new positions as the store
/// actor computes them (next = highest seq + 1, final = a final chunk's seq).
fn segment(n: u8, chunks: Vec<ChunkRow>) -> SegmentCommit {
    let mut offset = SEGMENT_HEADER;
    let mut streams: BTreeMap<(AgentId, [u8; 16], u32), StreamUpdate> = BTreeMap::new();
    let chunks: Vec<ChunkRow> = chunks
        .into_iter()
        .map(|mut c| {
            c.offset = offset;
            offset += u64::from(c.len);
            let u = streams
                .entry((c.agent.clone(), c.session.0, c.stream.0))
                .or_insert_with(|| StreamUpdate {
                    agent: c.agent.clone(),
                    session: c.session,
                    stream: c.stream,
                    kind: kind_of(c.stream.0),
                    next_seq: 0,
                    final_seq: None,
                });
            u.next_seq = u.next_seq.max(c.seq.saturating_add(1));
            if c.flags & FLAG_FINAL != 0 {
                u.final_seq = Some(c.seq);
            }
            c
        })
        .collect();
    SegmentCommit {
        segment_id: [n; 16],
        object_key: format!("segments/{n:03}.seg"),
        size: offset,
        sha256: [n; 32],
        chunks,
        streams: streams.into_values().collect(),
        fences: Vec::new(),
    }
}

/// Where chunk `i` of `commit` is, as the console should read it back.
fn loc(commit: &SegmentCommit, i: usize) -> ChunkLocation {
    let c = &commit.chunks[i];
    ChunkLocation {
        stream: c.stream.0,
        seq: c.seq,
        object_key: commit.object_key.clone(),
        range: Some((c.offset, c.len)),
        capture_us: Some(c.capture_us),
        flags: Some(c.flags),
        dek_id: Some(c.dek_id),
    }
}

/// Summaries with their `updated_us` checked to be in `[t0, t1]` and then zeroed.
fn settled(mut v: Vec<SessionSummary>, t0: i64, t1: i64) -> Vec<SessionSummary> {
    for s in &mut v {
        assert!(
            (t0..=t1).contains(&s.updated_us),
            "updated_us {} of {} not within the commits' time [{t0}, {t1}]",
            s.updated_us,
            s.agent
        );
        s.updated_us = 0;
    }
    v
}

/// (agent, first byte of the session id) of each summary: a page's order at a glance.
fn keys(v: &[SessionSummary]) -> Vec<(String, u8)> {
    v.iter().map(|s| (s.agent.clone(), s.session[0])).collect()
}

fn seqs(v: &[ChunkLocation]) -> Vec<(u32, u64)> {
    v.iter().map(|l| (l.stream, l.seq)).collect()
}

async fn count(m: &Metadata, t: Table) -> i64 {
    m.count(t).await.unwrap()
}
