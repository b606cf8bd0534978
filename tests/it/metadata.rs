//! One conformance suite for the metadata store, run on both backends. Each check is written
//! once, against the public `Metadata` API, and `conformance!` makes it two tests: `<check>_sqlite`
//! on a fresh embedded SQLite file and `<check>_postgres` on a fresh PostgreSQL database (dropped
//! at the end, also when the check fails). Where the backends should agree, every answer is
//! compared with one expected value built from the check's own inputs, never from what either
//! backend said; so a backend that drifts fails its half of the pair.
//!
//! Covered: the segment index as the console reads it (session summaries, chunk locations,
//! frame picks, stream positions, digests), session pages (order, cursors, filters, reviewer
//! grants), repeated and conflicting index writes, KEK and DEK records, agent access changes,
//! leases and fenced commits, the audit chain (and tampering with what it returns), audit pages,
//! console users, grants and logins.
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
    ChunkRow, ConsoleUser, Credential, INDEX_EMPTY, KekRow, Login, Metadata, Role, SegmentCommit,
    SessionQuery, SessionSummary, StreamRow, StreamState, StreamUpdate, Table, now_us,
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

conformance!(
    segment_index_reads_back,
    sqlite: segment_index_reads_back_sqlite,
    postgres: segment_index_reads_back_postgres,
);
conformance!(
    session_pages_order_filter_and_continue,
    sqlite: session_pages_order_filter_and_continue_sqlite,
    postgres: session_pages_order_filter_and_continue_postgres,
);
conformance!(
    repeated_and_conflicting_index_writes_keep_the_first,
    sqlite: repeated_and_conflicting_index_writes_keep_the_first_sqlite,
    postgres: repeated_and_conflicting_index_writes_keep_the_first_postgres,
);
conformance!(
    a_commit_may_move_one_stream_twice,
    sqlite: a_commit_may_move_one_stream_twice_sqlite,
    postgres: a_commit_may_move_one_stream_twice_postgres,
);
conformance!(
    keks_and_deks_read_back,
    sqlite: keks_and_deks_read_back_sqlite,
    postgres: keks_and_deks_read_back_postgres,
);
conformance!(
    access_changes_read_back,
    sqlite: access_changes_read_back_sqlite,
    postgres: access_changes_read_back_postgres,
);
conformance!(
    leases_raise_epochs_and_fence_stale_commits,
    sqlite: leases_raise_epochs_and_fence_stale_commits_sqlite,
    postgres: leases_raise_epochs_and_fence_stale_commits_postgres,
);
conformance!(
    audit_chain_verifies_and_shows_tampering,
    sqlite: audit_chain_verifies_and_shows_tampering_sqlite,
    postgres: audit_chain_verifies_and_shows_tampering_postgres,
);
conformance!(
    audit_pages_filter_and_continue,
    sqlite: audit_pages_filter_and_continue_sqlite,
    postgres: audit_pages_filter_and_continue_postgres,
);
conformance!(
    audit_times_show_the_chained_microsecond,
    sqlite: audit_times_show_the_chained_microsecond_sqlite,
    postgres: audit_times_show_the_chained_microsecond_postgres,
);
conformance!(
    kek_changes_are_audited,
    sqlite: kek_changes_are_audited_sqlite,
    postgres: kek_changes_are_audited_postgres,
);
conformance!(
    kek_audit_details_spell_booleans_alike,
    sqlite: kek_audit_details_spell_booleans_alike_sqlite,
    postgres: kek_audit_details_spell_booleans_alike_postgres,
);
conformance!(
    kek_audit_rows_are_hashed_when_written,
    sqlite: kek_audit_rows_are_hashed_when_written_sqlite,
    postgres: kek_audit_rows_are_hashed_when_written_postgres,
);
conformance!(
    console_users_grants_and_logins_round_trip,
    sqlite: console_users_grants_and_logins_round_trip_sqlite,
    postgres: console_users_grants_and_logins_round_trip_postgres,
);

// ---------------------------------------------------------------------------------------------
// Building index rows the way the store actor does.

const DEK: [u8; 16] = [0xd0; 16];
const S1: [u8; 16] = [0x11; 16];
const S2: [u8; 16] = [0x22; 16];
/// Where a test segment's first chunk starts (after its header).
const SEGMENT_HEADER: u64 = 64;

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

// ---------------------------------------------------------------------------------------------
// The segment index.

/// Index rows written for two segments are found by the console's queries with the values
/// written: the session's summary and streams, every chunk's place, frame picks, stream
/// positions with their dropped ranges, digests.
async fn segment_index_reads_back(m: &Metadata) {
    let a = "ts-01";
    let t0 = now_us();
    let first = segment(
        1,
        vec![
            ch(a, S1, 0, 0, 1_000_000),
            ch(a, S1, 0, 1, 1_100_000),
            ChunkRow {
                flags: FLAG_CHECKPOINT | INDEX_EMPTY,
                len: 16,
                ..ch(a, S1, 0, 2, 1_200_000)
            },
            ch(a, S1, 0, 3, 1_300_000),
            ch(a, S1, 1, 0, 1_050_000),
            ch("vdi-1", S2, 0, 0, 900_000),
        ],
    );
    let second = segment(
        2,
        vec![
            // A gap record: seq 4 ..= 6 were dropped.
            ChunkRow {
                flags: FLAG_GAP,
                len: 40,
                gap_first: Some(4),
                ..ch(a, S1, 0, 7, 1_400_000)
            },
            ch(a, S1, 1, 1, 1_450_000),
            ChunkRow {
                flags: FLAG_FINAL | INDEX_EMPTY,
                len: 16,
                ..ch(a, S1, 0, 8, 1_500_000)
            },
        ],
    );
    assert_eq!(m.commit_segment(first.clone()).await.unwrap(), vec![]);
    assert_eq!(m.commit_segment(second.clone()).await.unwrap(), vec![]);
    let t1 = now_us();

    let ts01 = SessionSummary {
        agent: a.into(),
        session: S1,
        first_capture_us: 1_000_000,
        last_capture_us: 1_500_000,
        chunks: 8,
        // 100 + 101 + 16 + 103 + 40 + 16 on stream 0, 100 + 101 on stream 1.
        bytes: 577,
        gaps: 1,
        updated_us: 0,
        encrypted: None,
        streams: vec![
            StreamState {
                stream: 0,
                kind: 1,
                next_seq: 9,
                final_seq: Some(8),
            },
            StreamState {
                stream: 1,
                kind: 2,
                next_seq: 2,
                final_seq: None,
            },
        ],
    };
    let vdi = SessionSummary {
        agent: "vdi-1".into(),
        session: S2,
        first_capture_us: 900_000,
        last_capture_us: 900_000,
        chunks: 1,
        bytes: 100,
        gaps: 0,
        updated_us: 0,
        encrypted: None,
        streams: vec![StreamState {
            stream: 0,
            kind: 1,
            next_seq: 1,
            final_seq: None,
        }],
    };
    let all = SessionQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        settled(m.sessions(all).await.unwrap(), t0, t1),
        vec![ts01.clone(), vdi.clone()]
    );
    let one = m
        .session(a, S1)
        .await
        .unwrap()
        .map(|s| settled(vec![s], t0, t1));
    assert_eq!(one, Some(vec![ts01]));
    assert_eq!(
        m.session("vdi-1", S1).await.unwrap(),
        None,
        "a session under another agent is not found"
    );
    assert_eq!(m.session(a, sid(9)).await.unwrap(), None);
    assert_eq!(m.session_agents(S1).await.unwrap(), vec![a.to_owned()]);
    assert_eq!(
        m.session_agents(sid(9)).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        m.recorded_agents(None).await.unwrap(),
        vec![
            (a.to_owned(), 1, 1_500_000),
            ("vdi-1".to_owned(), 1, 900_000)
        ]
    );

    // Chunk places: by stream then seq, from a seq, a stream, a limit.
    let stream0 = [
        loc(&first, 0),
        loc(&first, 1),
        loc(&first, 2),
        loc(&first, 3),
        loc(&second, 0),
        loc(&second, 2),
    ];
    let stream1 = vec![loc(&first, 4), loc(&second, 1)];
    let everything: Vec<ChunkLocation> = stream0.iter().chain(&stream1).cloned().collect();
    assert_eq!(
        m.chunk_locations(a, S1, None, 0, 100).await.unwrap(),
        everything
    );
    assert_eq!(
        m.chunk_locations(a, S1, Some(0), 2, 3).await.unwrap(),
        stream0[2..5].to_vec()
    );
    assert_eq!(
        m.chunk_locations(a, S1, Some(1), 0, 100).await.unwrap(),
        stream1
    );
    assert_eq!(
        seqs(&m.chunk_locations(a, S1, None, 1, 4).await.unwrap()),
        vec![(0, 1), (0, 2), (0, 3), (0, 7)]
    );
    assert_eq!(
        m.chunk_locations("vdi-1", S1, None, 0, 100).await.unwrap(),
        vec![]
    );

    // Frame picks leave out gap records and empty chunks.
    assert_eq!(
        m.frame_picks(a, S1, 0, None, None, 1).await.unwrap(),
        vec![loc(&first, 3)],
        "the newest frame"
    );
    assert_eq!(
        seqs(
            &m.frame_picks(a, S1, 0, Some(1_000_000), Some(1_399_999), 4)
                .await
                .unwrap()
        ),
        vec![(0, 0), (0, 1), (0, 3)],
        "the newest frame of each quarter"
    );
    assert_eq!(
        seqs(
            &m.frame_picks(a, S1, 0, Some(1_000_000), Some(1_399_999), 2)
                .await
                .unwrap()
        ),
        vec![(0, 1), (0, 3)],
        "the newest frame of each half"
    );
    assert_eq!(
        m.frame_picks(a, S1, 1, None, Some(1_000_000), 1)
            .await
            .unwrap(),
        vec![],
        "nothing captured that early"
    );

    // Stream positions and dropped ranges, digests.
    assert_eq!(
        m.stream(&agent(a), SessionId(S1), StreamId(0))
            .await
            .unwrap(),
        Some(StreamRow {
            kind: 1,
            next_seq: 9,
            final_seq: Some(8),
            dropped: vec![(4, 6)],
        })
    );
    assert_eq!(
        m.stream(&agent(a), SessionId(S1), StreamId(1))
            .await
            .unwrap(),
        Some(StreamRow {
            kind: 2,
            next_seq: 2,
            final_seq: None,
            dropped: vec![],
        })
    );
    assert_eq!(
        m.stream(&agent(a), SessionId(S1), StreamId(5))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        m.chunk_digest(&agent(a), SessionId(S1), StreamId(0), 3)
            .await
            .unwrap(),
        Some(first.chunks[3].digest)
    );
    assert_eq!(
        m.chunk_digest(&agent(a), SessionId(S1), StreamId(0), 5)
            .await
            .unwrap(),
        None,
        "a dropped seq has no digest"
    );

    assert_eq!(count(m, Table::Segments).await, 2);
    assert_eq!(count(m, Table::Chunks).await, 9);
    assert_eq!(count(m, Table::Streams).await, 3);
    assert_eq!(count(m, Table::RecordingSession).await, 2);
}

/// Session pages: newest last capture first, ties by agent then session (both descending, byte
/// order), each page continued from the last row's cursor; filters by agent, time overlap and
/// reviewer patterns (`*` only; `_` literal; case-sensitive).
async fn session_pages_order_filter_and_continue(m: &Metadata) {
    // (agent, session, first capture, last capture)
    let sessions: [(&str, u8, i64, i64); 7] = [
        ("ts-01", 1, 100, 500),
        ("ts-02", 2, 300, 500),
        ("ts-02", 3, 50, 500),
        ("vdi-1", 4, 600, 700),
        ("TS-03", 5, 10, 20),
        ("ts_04", 6, 800, 900),
        ("tsx04", 7, 150, 160),
    ];
    let chunks = sessions
        .iter()
        .flat_map(|&(a, s, first, last)| [ch(a, sid(s), 0, 0, first), ch(a, sid(s), 0, 1, last)])
        .collect();
    m.commit_segment(segment(1, chunks)).await.unwrap();
    let k = |a: &str, s: u8| (a.to_owned(), s);

    let page = |limit: u32, allowed: Option<Vec<&str>>| {
        let allowed = allowed.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
        async move {
            let mut pages = Vec::new();
            let mut before = None;
            for _ in 0..10 {
                let rows = m
                    .sessions(SessionQuery {
                        allowed: allowed.clone(),
                        before: before.clone(),
                        limit,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let Some(last) = rows.last() else { break };
                before = Some((last.last_capture_us, last.agent.clone(), last.session));
                pages.push(keys(&rows));
            }
            pages
        }
    };
    assert_eq!(
        page(2, None).await,
        vec![
            vec![k("ts_04", 6), k("vdi-1", 4)],
            vec![k("ts-02", 3), k("ts-02", 2)],
            vec![k("ts-01", 1), k("tsx04", 7)],
            vec![k("TS-03", 5)],
        ]
    );
    assert_eq!(
        page(1, Some(vec!["ts-*"])).await,
        vec![
            vec![k("ts-02", 3)],
            vec![k("ts-02", 2)],
            vec![k("ts-01", 1)]
        ],
        "a reviewer's pages"
    );

    let list = |q: SessionQuery| async move { keys(&m.sessions(q).await.unwrap()) };
    let q = |agent: Option<&str>, since: Option<i64>, until: Option<i64>| SessionQuery {
        agent: agent.map(str::to_owned),
        since_us: since,
        until_us: until,
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        list(q(Some("ts-02"), None, None)).await,
        vec![k("ts-02", 3), k("ts-02", 2)]
    );
    assert_eq!(
        list(q(None, Some(400), Some(650))).await,
        vec![k("vdi-1", 4), k("ts-02", 3), k("ts-02", 2), k("ts-01", 1)],
        "sessions overlapping [400, 650]"
    );
    assert_eq!(
        list(q(None, Some(700), None)).await,
        vec![k("ts_04", 6), k("vdi-1", 4)]
    );
    assert_eq!(list(q(None, None, Some(10))).await, vec![k("TS-03", 5)]);
    assert_eq!(list(q(Some("ts-02"), Some(501), None)).await, vec![]);

    let allowed = |patterns: &[&str]| SessionQuery {
        allowed: Some(patterns.iter().map(|p| p.to_string()).collect()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        list(allowed(&["ts_*"])).await,
        vec![k("ts_04", 6)],
        "`_` is literal"
    );
    assert_eq!(
        list(allowed(&["*-0*", "vdi-1"])).await,
        vec![
            k("vdi-1", 4),
            k("ts-02", 3),
            k("ts-02", 2),
            k("ts-01", 1),
            k("TS-03", 5)
        ]
    );
    assert_eq!(
        list(allowed(&["ts-0*"])).await,
        vec![k("ts-02", 3), k("ts-02", 2), k("ts-01", 1)],
        "patterns are case-sensitive"
    );
    assert_eq!(list(allowed(&["vdi"])).await, vec![], "no `*`: exact");
    assert_eq!(list(allowed(&[])).await, vec![], "no grant, nothing");

    assert_eq!(
        m.recorded_agents(None).await.unwrap(),
        vec![
            ("TS-03".to_owned(), 1, 20),
            ("ts-01".to_owned(), 1, 500),
            ("ts-02".to_owned(), 2, 500),
            ("ts_04".to_owned(), 1, 900),
            ("tsx04".to_owned(), 1, 160),
            ("vdi-1".to_owned(), 1, 700),
        ],
        "by agent, in byte order"
    );
    assert_eq!(
        m.recorded_agents(Some(vec!["ts-*".into()])).await.unwrap(),
        vec![("ts-01".to_owned(), 1, 500), ("ts-02".to_owned(), 2, 500)]
    );
    assert_eq!(m.recorded_agents(Some(vec![])).await.unwrap(), vec![]);
}

/// A segment committed again changes nothing; a chunk already indexed keeps its first row
/// (digest, place, count) whatever a later segment or a second row in the same commit says;
/// stream positions only move forward (in u64 order) and the first final seq stays.
async fn repeated_and_conflicting_index_writes_keep_the_first(m: &Metadata) {
    let a = "ts-01";
    let ta = agent(a);
    let at = |seq: u64| m.chunk_digest(&ta, SessionId(S1), StreamId(0), seq);
    let one = segment(1, vec![ch(a, S1, 0, 0, 1_000), ch(a, S1, 0, 1, 2_000)]);
    m.commit_segment(one.clone()).await.unwrap();
    let before = m.session(a, S1).await.unwrap().expect("indexed");
    assert_eq!((before.chunks, before.bytes), (2, 201));

    assert_eq!(
        m.commit_segment(one.clone()).await.unwrap(),
        vec![],
        "a retried commit"
    );
    assert_eq!(
        m.session(a, S1).await.unwrap(),
        Some(before.clone()),
        "nothing moved, not even updated_us"
    );
    assert_eq!(count(m, Table::Segments).await, 1);
    assert_eq!(count(m, Table::Chunks).await, 2);

    // Another segment with other bytes for seq 1 (and a new seq 2).
    let conflicting = ChunkRow {
        digest: [0xee; 32],
        len: 999,
        ..ch(a, S1, 0, 1, 9_000)
    };
    let two = segment(2, vec![conflicting, ch(a, S1, 0, 2, 3_000)]);
    m.commit_segment(two.clone()).await.unwrap();
    assert_eq!(at(1).await.unwrap(), Some(one.chunks[1].digest));
    assert_eq!(
        m.chunk_locations(a, S1, Some(0), 0, 10).await.unwrap(),
        vec![loc(&one, 0), loc(&one, 1), loc(&two, 1)]
    );
    let s = m.session(a, S1).await.unwrap().unwrap();
    assert_eq!(
        (s.chunks, s.bytes, s.first_capture_us, s.last_capture_us),
        (3, 303, 1_000, 3_000),
        "the refused copy is not counted"
    );
    assert_eq!(count(m, Table::Segments).await, 2);

    // Two rows for seq 3 in one commit: the first is kept.
    let three = segment(
        3,
        vec![
            ch(a, S1, 0, 3, 4_000),
            ChunkRow {
                digest: [0xdd; 32],
                ..ch(a, S1, 0, 3, 4_500)
            },
        ],
    );
    m.commit_segment(three.clone()).await.unwrap();
    assert_eq!(at(3).await.unwrap(), Some(three.chunks[0].digest));
    let s = m.session(a, S1).await.unwrap().unwrap();
    assert_eq!(
        (s.chunks, s.bytes, s.last_capture_us),
        (4, 406, 4_000),
        "one of the two counted"
    );
    assert_eq!(count(m, Table::Chunks).await, 4);

    // Positions: a final chunk, then a late resend claiming another final.
    m.commit_segment(segment(
        4,
        vec![ChunkRow {
            flags: FLAG_FINAL,
            ..ch(a, S1, 0, 5, 6_000)
        }],
    ))
    .await
    .unwrap();
    let mut late = segment(5, vec![ch(a, S1, 0, 4, 5_000)]);
    late.streams[0].final_seq = Some(9);
    m.commit_segment(late).await.unwrap();
    let st = m
        .stream(&agent(a), SessionId(S1), StreamId(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (st.next_seq, st.final_seq),
        (6, Some(5)),
        "next only grows, the first final stays"
    );

    // Past i64::MAX the order is still u64's.
    let high = u64::MAX - 1;
    let top = segment(6, vec![ch(a, S1, 7, high, 7_000)]);
    m.commit_segment(top.clone()).await.unwrap();
    m.commit_segment(segment(7, vec![ch(a, S1, 7, 2, 7_500)]))
        .await
        .unwrap();
    assert_eq!(
        m.stream(&agent(a), SessionId(S1), StreamId(7))
            .await
            .unwrap()
            .map(|s| s.next_seq),
        Some(u64::MAX)
    );
    assert_eq!(
        m.chunk_digest(&agent(a), SessionId(S1), StreamId(7), high)
            .await
            .unwrap(),
        Some(top.chunks[0].digest)
    );
}

/// `SegmentCommit::streams` may name a stream twice (nothing in the API says otherwise): the
/// commit goes in and the stream ends at the furthest position, as two commits would leave it.
async fn a_commit_may_move_one_stream_twice(m: &Metadata) {
    let a = "ts-01";
    let mut commit = segment(1, vec![ch(a, S1, 0, 0, 1_000), ch(a, S1, 0, 4, 2_000)]);
    let earlier = StreamUpdate {
        next_seq: 3,
        ..commit.streams[0].clone()
    };
    commit.streams.insert(0, earlier);
    assert_eq!(m.commit_segment(commit).await.unwrap(), vec![]);
    assert_eq!(
        m.stream(&agent(a), SessionId(S1), StreamId(0))
            .await
            .unwrap()
            .map(|s| s.next_seq),
        Some(5)
    );
    assert_eq!(count(m, Table::Chunks).await, 2);
}

// ---------------------------------------------------------------------------------------------
// Keys.

fn kek_id(n: u8) -> KekId {
    KekId([n; 32])
}

fn dek_record(n: u8, kek: KekId, agent_name: &str) -> DekRecord {
    DekRecord {
        dek_id: DekId([n; 16]),
        kek_id: kek,
        agent_session: SessionId([n ^ 0x55; 16]),
        created_us: 1_700_000_000_000_000 + i64::from(n),
        agent: agent(agent_name),
        wrapped: vec![n; 256],
        signed: None,
    }
}

/// KEK rows as registered (ids in order, fingerprints set once, retirement noted once on
/// inactive rows only); DEK records stored once per id (the first kept), found by id, owner and
/// KEK, counted in the last minute; unknown ones absent. A session's `encrypted` follows its
/// newest DEK's KEK.
async fn keks_and_deks_read_back(m: &Metadata) {
    assert_eq!(m.keks().await.unwrap(), vec![]);
    m.insert_kek(true, true, "/k/a.crt", "/k/a.pem")
        .await
        .unwrap();
    m.insert_kek(false, false, "/k/b.crt", "/k/b.pem")
        .await
        .unwrap();
    let row = |id: i64, active: bool, f: &str| KekRow {
        id,
        active,
        priv_encrypted: active,
        pub_datafile: format!("/k/{f}.crt"),
        priv_datafile: Some(format!("/k/{f}.pem")),
        fingerprint: None,
        agent_id: None,
        retired_us: None,
    };
    let (fa, fb) = (kek_id(0xaa).to_string(), kek_id(0xbb).to_string());
    let mut want = vec![row(1, true, "a"), row(2, false, "b")];
    assert_eq!(m.keks().await.unwrap(), want);

    m.set_kek_fingerprint(1, &fa).await.unwrap();
    m.set_kek_fingerprint(2, &fb).await.unwrap();
    m.set_kek_fingerprint(99, &fa).await.unwrap();
    want[0].fingerprint = Some(fa.clone());
    want[1].fingerprint = Some(fb.clone());
    assert_eq!(m.keks().await.unwrap(), want);

    let t0 = now_us();
    m.mark_kek_retired(1).await.unwrap();
    m.mark_kek_retired(2).await.unwrap();
    let t1 = now_us();
    let keks = m.keks().await.unwrap();
    assert_eq!(keks[0].retired_us, None, "an active KEK is not retired");
    let retired = keks[1]
        .retired_us
        .expect("the inactive KEK's retirement is noted");
    // SQLite keeps the time to the millisecond.
    assert!(
        (t0 - 1_000..=t1).contains(&retired),
        "retired at {retired}, not within [{t0}, {t1}]"
    );
    m.mark_kek_retired(2).await.unwrap();
    want[1].retired_us = Some(retired);
    assert_eq!(m.keks().await.unwrap(), want, "retired once, the time kept");

    let (ka, kb) = (kek_id(0xaa), kek_id(0xbb));
    let r1 = dek_record(1, ka, "ts-01");
    let r2 = dek_record(2, ka, "ts-02");
    let r3 = dek_record(3, kb, "ts-01");
    let intruder = DekRecord {
        wrapped: vec![0x77; 256],
        ..dek_record(1, kb, "ts-09")
    };
    m.insert_deks(vec![
        (r1.clone(), "deks/1".into()),
        (r2.clone(), "deks/2".into()),
    ])
    .await
    .unwrap();
    m.insert_deks(vec![
        (r1.clone(), "deks/1".into()),
        (r3.clone(), "deks/3".into()),
    ])
    .await
    .unwrap();
    m.insert_deks(vec![(intruder, "deks/x".into())])
        .await
        .unwrap();
    m.insert_deks(vec![]).await.unwrap();
    assert_eq!(count(m, Table::EncryptionDek).await, 3);

    assert_eq!(
        m.dek_record([1; 16]).await.unwrap(),
        Some(("ts-01".to_owned(), r1.encode())),
        "the first record under an id is kept"
    );
    assert_eq!(
        m.dek_record([3; 16]).await.unwrap(),
        Some(("ts-01".to_owned(), r3.encode()))
    );
    let (_, bytes) = m.dek_record([2; 16]).await.unwrap().unwrap();
    assert_eq!(DekRecord::decode(&bytes).unwrap(), r2);
    assert_eq!(m.dek_record([9; 16]).await.unwrap(), None);

    assert_eq!(
        m.dek_owners(vec![[1; 16], [2; 16], [3; 16], [9; 16]])
            .await
            .unwrap(),
        HashMap::from([
            ([1; 16], "ts-01".to_owned()),
            ([2; 16], "ts-02".to_owned()),
            ([3; 16], "ts-01".to_owned()),
        ])
    );
    assert_eq!(m.dek_owners(vec![]).await.unwrap(), HashMap::new());

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(m.kek_agents(&fa).await.unwrap()),
        vec!["ts-01".to_owned(), "ts-02".to_owned()]
    );
    assert_eq!(m.kek_agents(&fb).await.unwrap(), vec!["ts-01".to_owned()]);
    assert_eq!(
        m.kek_agents(&kek_id(0xcc).to_string()).await.unwrap(),
        Vec::<String>::new()
    );
    let mut recent = m.deks_in_last_minute().await.unwrap();
    recent.sort();
    assert_eq!(recent, vec![("ts-01".into(), 2), ("ts-02".into(), 1)]);

    // `encrypted`: the newest DEK's KEK holds an encrypted private key (A), a plain one (B),
    // or the DEK is unknown.
    let under = |s: [u8; 16], dek: [u8; 16], at: i64| ChunkRow {
        dek_id: dek,
        ..ch("ts-01", s, 0, 0, at)
    };
    m.commit_segment(segment(
        1,
        vec![
            under(sid(1), [1; 16], 10),
            under(sid(2), [3; 16], 20),
            under(sid(3), [9; 16], 30),
        ],
    ))
    .await
    .unwrap();
    let flag = |s: [u8; 16]| async move { m.session("ts-01", s).await.unwrap().unwrap().encrypted };
    assert_eq!(flag(sid(1)).await, Some(true));
    assert_eq!(flag(sid(2)).await, Some(false));
    assert_eq!(flag(sid(3)).await, None);
}

// ---------------------------------------------------------------------------------------------
// Agent access.

fn fingerprint(n: u8) -> String {
    format!("sha256:{}", hex::encode([n; 32]))
}

fn credential(n: u8, agent_name: &str) -> Credential {
    Credential {
        fingerprint: fingerprint(n),
        agent: agent_name.into(),
        issued_us: 1_000 * i64::from(n),
        not_after_us: 9_000,
        revoked_us: None,
        revoked_reason: None,
    }
}

/// Access rows sorted (neither backend promises an order), their times checked to be in
/// `[t0, t1]` and replaced by 1.
fn settle_access(rows: AccessRows, t0: i64, t1: i64) -> (Vec<Credential>, Vec<AgentAccount>) {
    let within = |t: i64| {
        assert!((t0..=t1).contains(&t), "{t} not within [{t0}, {t1}]");
        1
    };
    let mut creds = rows.credentials;
    creds.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    for c in &mut creds {
        c.revoked_us = c.revoked_us.map(within);
    }
    let mut accounts = rows.accounts;
    accounts.sort_by(|a, b| a.agent.cmp(&b.agent));
    for a in &mut accounts {
        a.disabled_us = a.disabled_us.map(within);
    }
    (creds, accounts)
}

/// Issue (superseding earlier certificates), revoke, disable and enable read back the same:
/// outcomes, the rows, and each change's audit row; a certificate issued twice is refused and
/// changes nothing.
async fn access_changes_read_back(m: &Metadata) {
    let t0 = now_us();
    let change = |c: AccessChange| async move { m.change_access(c, "ops").await };
    let outcome = |revoked: &[u8], changed: bool| AccessOutcome {
        revoked: revoked.iter().map(|n| fingerprint(*n)).collect(),
        changed,
    };
    let revoke = |agent: &str| AccessChange::Revoke {
        agent: agent.into(),
        reason: "laptop lost".into(),
    };
    let disable = |agent: &str, disabled: bool| AccessChange::Disable {
        agent: agent.into(),
        disabled,
    };

    assert_eq!(
        change(AccessChange::Issue(credential(1, "ts-01")))
            .await
            .unwrap(),
        outcome(&[], true)
    );
    assert_eq!(
        change(AccessChange::Issue(credential(2, "ts-01")))
            .await
            .unwrap(),
        outcome(&[1], true),
        "the earlier certificate is superseded"
    );
    assert_eq!(
        change(AccessChange::Issue(credential(3, "ts-02")))
            .await
            .unwrap(),
        outcome(&[], true)
    );
    let snapshot = m.access_rows().await.unwrap();
    let audit_rows = count(m, Table::AuditLog).await;
    assert!(
        change(AccessChange::Issue(credential(1, "ts-01")))
            .await
            .is_err(),
        "a certificate issued twice is refused"
    );
    assert_eq!(
        settle_access(m.access_rows().await.unwrap(), t0, now_us()),
        settle_access(snapshot, t0, now_us()),
        "the refused issue changed nothing"
    );
    assert_eq!(count(m, Table::AuditLog).await, audit_rows, "nor audited");

    assert_eq!(change(revoke("ts-01")).await.unwrap(), outcome(&[2], true));
    assert_eq!(change(revoke("ts-01")).await.unwrap(), outcome(&[], true));
    assert_eq!(
        change(disable("ts-02", true)).await.unwrap(),
        outcome(&[], true)
    );
    let disabled_at = |rows: AccessRows| {
        rows.accounts
            .into_iter()
            .find(|a| a.agent == "ts-02")
            .and_then(|a| a.disabled_us)
    };
    let first = disabled_at(m.access_rows().await.unwrap());
    assert!(first.is_some());
    assert_eq!(
        change(disable("ts-02", true)).await.unwrap(),
        outcome(&[], false)
    );
    assert_eq!(
        disabled_at(m.access_rows().await.unwrap()),
        first,
        "disabled again: the first time is kept"
    );
    assert_eq!(
        change(disable("ts-03", true)).await.unwrap(),
        outcome(&[], true),
        "an agent never enrolled can be disabled"
    );
    assert_eq!(
        change(disable("ts-02", false)).await.unwrap(),
        outcome(&[], true)
    );
    assert_eq!(
        change(disable("ts-02", false)).await.unwrap(),
        outcome(&[], false)
    );
    assert_eq!(
        change(disable("ts-04", false)).await.unwrap(),
        outcome(&[], false)
    );
    let t1 = now_us();

    let revoked = |n: u8, agent: &str, reason: &str| Credential {
        revoked_us: Some(1),
        revoked_reason: Some(reason.into()),
        ..credential(n, agent)
    };
    let account = |agent: &str, disabled: bool, registered_only: bool| AgentAccount {
        agent: agent.into(),
        disabled_us: disabled.then_some(1),
        registered_only,
    };
    assert_eq!(
        settle_access(m.access_rows().await.unwrap(), t0, t1),
        (
            vec![
                revoked(1, "ts-01", "superseded by a later certificate"),
                revoked(2, "ts-01", "laptop lost"),
                credential(3, "ts-02"),
            ],
            vec![
                account("ts-01", false, true),
                account("ts-02", false, true),
                account("ts-03", true, false),
                account("ts-04", false, false),
            ]
        )
    );

    let (f1, f2, f3) = (fingerprint(1), fingerprint(2), fingerprint(3));
    let mut audited = m
        .audit_page(AuditQuery {
            actor: Some("ops".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    audited.reverse();
    let audited: Vec<(String, String)> =
        audited.into_iter().map(|r| (r.action, r.detail)).collect();
    let row = |action: &str, detail: String| (action.to_owned(), detail);
    assert_eq!(
        audited,
        vec![
            row(
                "agent_certificate_issued",
                format!("agent=ts-01 certificate={f1} not_after_us=9000 superseded=[]")
            ),
            row(
                "agent_certificate_issued",
                format!("agent=ts-01 certificate={f2} not_after_us=9000 superseded=[{f1}]")
            ),
            row(
                "agent_certificate_issued",
                format!("agent=ts-02 certificate={f3} not_after_us=9000 superseded=[]")
            ),
            row(
                "agent_revoked",
                format!("agent=ts-01 reason=\"laptop lost\" revoked=[{f2}]")
            ),
            row(
                "agent_revoked",
                "agent=ts-01 reason=\"laptop lost\" revoked=[]".into()
            ),
            row(
                "agent_disabled",
                "agent=ts-02 disabled=true changed=true".into()
            ),
            row(
                "agent_disabled",
                "agent=ts-02 disabled=true changed=false".into()
            ),
            row(
                "agent_disabled",
                "agent=ts-03 disabled=true changed=true".into()
            ),
            row(
                "agent_enabled",
                "agent=ts-02 disabled=false changed=true".into()
            ),
            row(
                "agent_enabled",
                "agent=ts-02 disabled=false changed=false".into()
            ),
            row(
                "agent_enabled",
                "agent=ts-04 disabled=false changed=false".into()
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Leases.

/// PostgreSQL: each take raises the agent's epoch; a commit fenced with an older epoch indexes
/// nothing of that agent (and names it), one with the current epoch or of an agent without a
/// lease indexes. SQLite is one node by design: no leases, epoch 0, nothing fenced.
async fn leases_raise_epochs_and_fence_stale_commits(m: &Metadata) {
    let leases = match m.kind() {
        "postgresql" => true,
        "sqlite" => false,
        other => panic!("unknown backend {other}"),
    };
    let (a, b, c) = (agent("ts-01"), agent("ts-02"), agent("ts-03"));
    let t0 = now_us();
    let epochs = [
        m.take_lease(&a, "node-1").await.unwrap(),
        m.take_lease(&a, "node-2").await.unwrap(),
        m.take_lease(&b, "node-1").await.unwrap(),
    ];
    let t1 = now_us();
    assert_eq!(epochs, if leases { [1, 2, 1] } else { [0, 0, 0] });
    let held: Vec<(String, i64, String)> = m
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|(agent, epoch, node, since)| {
            assert!((t0..=t1).contains(&since), "lease since {since}");
            (agent, epoch, node)
        })
        .collect();
    let want: Vec<(String, i64, String)> = if leases {
        vec![
            ("ts-01".into(), 2, "node-2".into()),
            ("ts-02".into(), 1, "node-1".into()),
        ]
    } else {
        vec![]
    };
    assert_eq!(held, want);

    // ts-01 fenced with the epoch node-2 took over from; ts-02 current; ts-03 holds no lease.
    let mut stale = segment(
        1,
        vec![
            ch("ts-01", S1, 0, 0, 1_000),
            ch("ts-02", S1, 0, 0, 1_000),
            ch("ts-03", S1, 0, 0, 1_000),
        ],
    );
    stale.fences = vec![(a.clone(), 1), (b.clone(), 1), (c.clone(), 1)];
    let refused = m.commit_segment(stale).await.unwrap();
    assert_eq!(refused, if leases { vec![a.clone()] } else { vec![] });
    // Whether `x`'s chunk `seq` is indexed, with its stream and session rows.
    let indexed = |x: &AgentId, seq: u64| {
        let x = x.clone();
        async move {
            let digest = m
                .chunk_digest(&x, SessionId(S1), StreamId(0), seq)
                .await
                .unwrap()
                .is_some();
            let stream = m
                .stream(&x, SessionId(S1), StreamId(0))
                .await
                .unwrap()
                .is_some();
            let session = m.session(x.as_str(), S1).await.unwrap().is_some();
            assert_eq!((digest, stream), (session, session), "{x:?}");
            session
        }
    };
    assert_eq!(
        [
            indexed(&a, 0).await,
            indexed(&b, 0).await,
            indexed(&c, 0).await
        ],
        [!leases, true, true]
    );

    // The current holder's commit goes in.
    let mut current = segment(2, vec![ch("ts-01", S1, 0, 1, 2_000)]);
    current.fences = vec![(a.clone(), epochs[1])];
    assert_eq!(m.commit_segment(current).await.unwrap(), vec![]);
    assert!(indexed(&a, 1).await);
    assert_eq!(
        m.session("ts-01", S1).await.unwrap().unwrap().chunks,
        if leases { 1 } else { 2 }
    );
}

// ---------------------------------------------------------------------------------------------
// The audit log.

/// What a chain row says, without its hashes and time.
fn said(r: &sealstream::audit::ChainRow) -> (i64, Option<i64>, &str, &str, &str, Option<&str>) {
    (
        r.id,
        r.chain_seq,
        &r.actor,
        &r.action,
        &r.detail,
        r.address.as_deref(),
    )
}

/// Rows written every way the API writes them chain in order and verify; the head is the last
/// row's; and each kind of tampering with the rows read back (an edit, a deleted row, a changed
/// time or address, two rows swapped) is found, in the same words on both.
async fn audit_chain_verifies_and_shows_tampering(m: &Metadata) {
    assert_eq!(m.audit_head().await.unwrap(), None);
    let empty = sealstream::audit::verify_chain(&m.audit_chain_rows().await.unwrap());
    assert_eq!((empty.rows, empty.head, empty.problems.len()), (0, None, 0));

    let t0 = now_us();
    m.audit("ann", "login", "result=ok").await.unwrap();
    m.audit_from("ann", "view_session", "agent=ts-01", "10.0.0.1")
        .await
        .unwrap();
    let bob = ConsoleUser {
        name: "bob".into(),
        role: Role::Reviewer,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        agents: vec!["ts-*".into()],
        created_us: 5,
        disabled_us: None,
    };
    assert!(
        m.put_console_user(bob, true, "ann", "user_add")
            .await
            .unwrap()
    );
    m.change_access(
        AccessChange::Disable {
            agent: "ts-09".into(),
            disabled: true,
        },
        "ops",
    )
    .await
    .unwrap();
    m.audit("ann", "export", "agent=ts-01 session=x")
        .await
        .unwrap();
    let t1 = now_us();

    let rows = m.audit_chain_rows().await.unwrap();
    assert_eq!(
        rows.iter().map(said).collect::<Vec<_>>(),
        vec![
            (1, Some(1), "ann", "login", "result=ok", None),
            (
                2,
                Some(2),
                "ann",
                "view_session",
                "agent=ts-01",
                Some("10.0.0.1")
            ),
            (
                3,
                Some(3),
                "ann",
                "user_add",
                "user=bob role=reviewer agents=[ts-*] disabled=false",
                None
            ),
            (
                4,
                Some(4),
                "ops",
                "agent_disabled",
                "agent=ts-09 disabled=true changed=true",
                None
            ),
            (5, Some(5), "ann", "export", "agent=ts-01 session=x", None),
        ]
    );
    let times: Vec<i64> = rows.iter().map(|r| r.at_us.expect("timed")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // SQLite's clock has milliseconds.
    assert!(
        times.iter().all(|t| (t0 - 1_000..=t1).contains(t)),
        "{times:?} not within [{t0}, {t1}]"
    );
    assert_eq!(rows[0].prev_hash.as_deref(), Some(&[0u8; 32][..]));
    for w in rows.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].row_hash, "row {} follows", w[1].id);
    }
    let report = sealstream::audit::verify_chain(&rows);
    let last = rows[4].row_hash.clone().expect("hashed");
    assert_eq!(
        (report.rows, report.problems.clone(), report.unhashed_tail),
        (5, vec![], 0)
    );
    assert_eq!(report.head, Some((5, hex::encode(&last))));
    assert_eq!(m.audit_head().await.unwrap(), Some((5, last)));

    let tampered = |f: &dyn Fn(&mut Vec<sealstream::audit::ChainRow>)| {
        let mut copy = rows.clone();
        f(&mut copy);
        sealstream::audit::verify_chain(&copy).problems
    };
    let edited = |seq: i64, what: &str| {
        format!("chain row {seq} ({what}) was edited: its hash does not match its contents")
    };
    let follows = |seq: i64, id: i64| {
        format!(
            "chain row {seq} (id {id}) does not follow the row before it: a row was inserted, removed or reordered here"
        )
    };
    assert_eq!(
        tampered(&|r| r[1].detail = "agent=ts-02".into()),
        vec![edited(2, "id 2, view_session \"ann\"")]
    );
    assert_eq!(
        tampered(&|r| {
            r.remove(2);
        }),
        vec!["chain row 3 is missing: deleted".to_owned()]
    );
    assert_eq!(
        tampered(&|r| *r[3].at_us.as_mut().unwrap() += 1),
        vec![edited(4, "id 4, agent_disabled \"ops\"")]
    );
    assert_eq!(
        tampered(&|r| r[0].address = Some("10.9.9.9".into())),
        vec![edited(1, "id 1, login \"ann\"")]
    );
    assert_eq!(
        tampered(&|r| {
            r[1].chain_seq = Some(3);
            r[2].chain_seq = Some(2);
        }),
        vec![
            follows(2, 3),
            edited(2, "id 3, user_add \"ann\""),
            follows(3, 2),
            edited(3, "id 2, view_session \"ann\""),
            follows(4, 4),
        ]
    );
}

/// Audit pages: newest first, older pages below an id, newer pages above one (still newest
/// first), filters by actor, action and time, all alike.
async fn audit_pages_filter_and_continue(m: &Metadata) {
    for i in 0..6i64 {
        let actor = if i % 2 == 0 { "ann" } else { "bob" };
        let action = if i < 3 { "login" } else { "view_session" };
        m.audit_from(actor, action, &format!("n={i}"), &format!("10.0.0.{i}"))
            .await
            .unwrap();
        // Distinct times even on SQLite's millisecond clock.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    m.audit("ops", "export", "n=6").await.unwrap();

    let full = |id: i64| {
        let i = id - 1;
        let (actor, action, address) = match id {
            7 => ("ops", "export", None),
            _ => (
                if i % 2 == 0 { "ann" } else { "bob" },
                if i < 3 { "login" } else { "view_session" },
                Some(format!("10.0.0.{i}")),
            ),
        };
        (
            id,
            actor.to_owned(),
            action.to_owned(),
            format!("n={i}"),
            address,
        )
    };
    type Seen = (i64, String, String, String, Option<String>);
    let seen = |v: Vec<AuditRow>| -> Vec<Seen> {
        v.into_iter()
            .map(|r| (r.id, r.actor, r.action, r.detail, r.address))
            .collect()
    };
    let ids = |v: Vec<AuditRow>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        seen(m.audit_rows(None, 3).await.unwrap()),
        [7, 6, 5].map(full).to_vec()
    );
    assert_eq!(
        seen(m.audit_rows(Some(5), 10).await.unwrap()),
        [4, 3, 2, 1].map(full).to_vec()
    );
    let page = |q: AuditQuery| async move { ids(m.audit_page(q).await.unwrap()) };
    let q = AuditQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        page(AuditQuery {
            after: Some(2),
            limit: 2,
            ..q.clone()
        })
        .await,
        vec![4, 3],
        "the newer page right above id 2"
    );
    assert_eq!(
        page(AuditQuery {
            before: Some(6),
            after: Some(2),
            ..q.clone()
        })
        .await,
        vec![5, 4, 3],
        "between two ids"
    );
    assert_eq!(
        page(AuditQuery {
            actor: Some("ann".into()),
            ..q.clone()
        })
        .await,
        vec![5, 3, 1]
    );
    assert_eq!(
        page(AuditQuery {
            action: Some("login".into()),
            ..q.clone()
        })
        .await,
        vec![3, 2, 1]
    );
    assert_eq!(
        page(AuditQuery {
            actor: Some("bob".into()),
            action: Some("view_session".into()),
            ..q.clone()
        })
        .await,
        vec![6, 4]
    );
    assert_eq!(
        page(AuditQuery {
            actor: Some("nobody".into()),
            ..q.clone()
        })
        .await,
        Vec::<i64>::new()
    );
    let at: HashMap<i64, i64> = m
        .audit_chain_rows()
        .await
        .unwrap()
        .iter()
        .map(|r| (r.id, r.at_us.unwrap()))
        .collect();
    assert_eq!(
        page(AuditQuery {
            since_us: Some(at[&3]),
            until_us: Some(at[&5]),
            ..q.clone()
        })
        .await,
        vec![5, 4, 3],
        "both ends included"
    );
    assert_eq!(
        page(AuditQuery {
            since_us: Some(at[&6]),
            action: Some("view_session".into()),
            ..q.clone()
        })
        .await,
        vec![6]
    );
}

/// Each audit row's time as the console shows it is the chained time, to the microsecond.
async fn audit_times_show_the_chained_microsecond(m: &Metadata) {
    for i in 0..20 {
        m.audit("ann", "login", &format!("n={i}")).await.unwrap();
    }
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let want: Vec<(i64, String)> = m
        .audit_chain_rows()
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|r| {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(r.at_us.unwrap()) * 1000,
            )
            .unwrap();
            (r.id, at.format(&format).unwrap())
        })
        .collect();
    let shown: Vec<(i64, String)> = m
        .audit_rows(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.at))
        .collect();
    assert_eq!(shown, want);
}

/// The KEK writes a backend makes on its own: registering, a fingerprint set, a retirement.
async fn kek_writes(m: &Metadata) {
    m.insert_kek(true, true, "/k/a.crt", "/k/a.pem")
        .await
        .unwrap();
    m.insert_kek(false, false, "/k/b.crt", "/k/b.pem")
        .await
        .unwrap();
    let fa = kek_id(0xaa).to_string();
    m.set_kek_fingerprint(1, &fa).await.unwrap();
    // Neither changes a row: no audit row.
    m.set_kek_fingerprint(1, &fa).await.unwrap();
    m.mark_kek_retired(1).await.unwrap();
    m.mark_kek_retired(2).await.unwrap();
    m.mark_kek_retired(2).await.unwrap();
}

/// Every KEK change is audited by the database (the how-to's INSERT included), and the rows
/// join the chain. The trigger's actor is `database` on SQLite and `database:<role>` on
/// PostgreSQL by design; how the `active=` field is spelled is the next check's.
async fn kek_changes_are_audited(m: &Metadata) {
    kek_writes(m).await;
    let rows = m.audit_chain_rows().await.unwrap();
    let fa = kek_id(0xaa).to_string();
    let actor = match m.kind() {
        "postgresql" => "database:postgres",
        _ => "database",
    };
    let without_active = |detail: &str| {
        detail
            .split(' ')
            .filter(|w| !w.starts_with("active="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        rows.iter()
            .map(|r| (
                r.actor.as_str(),
                r.action.as_str(),
                without_active(&r.detail)
            ))
            .collect::<Vec<_>>(),
        vec![
            (
                actor,
                "kek_insert",
                "id=1 fingerprint=- pub_datafile=/k/a.crt priv_datafile=/k/a.pem".to_owned()
            ),
            (
                actor,
                "kek_insert",
                "id=2 fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem".to_owned()
            ),
            (
                actor,
                "kek_update",
                format!("id=1 fingerprint={fa} pub_datafile=/k/a.crt priv_datafile=/k/a.pem")
            ),
            (
                actor,
                "kek_update",
                "id=2 fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem".to_owned()
            ),
        ]
    );
    // Reading the head chains whatever is pending (SQLite hashes rows outside SQL).
    let head = m.audit_head().await.unwrap();
    let rows = m.audit_chain_rows().await.unwrap();
    let report = sealstream::audit::verify_chain(&rows);
    assert_eq!(
        (report.problems, report.unhashed_tail, head.map(|h| h.0)),
        (vec![], 0, Some(4))
    );
}

/// The KEK trigger's details are the same text on both backends.
async fn kek_audit_details_spell_booleans_alike(m: &Metadata) {
    kek_writes(m).await;
    let fa = kek_id(0xaa).to_string();
    let details: Vec<String> = m
        .audit_chain_rows()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.detail)
        .collect();
    assert_eq!(
        details,
        vec![
            "id=1 active=true fingerprint=- pub_datafile=/k/a.crt priv_datafile=/k/a.pem"
                .to_owned(),
            "id=2 active=false fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem"
                .to_owned(),
            format!(
                "id=1 active=true fingerprint={fa} pub_datafile=/k/a.crt priv_datafile=/k/a.pem"
            ),
            "id=2 active=false fingerprint=- pub_datafile=/k/b.crt priv_datafile=/k/b.pem"
                .to_owned(),
        ]
    );
}

/// An audit row the API's own KEK calls cause is in the hashed chain as soon as the call
/// returns, as every other audit write's is.
async fn kek_audit_rows_are_hashed_when_written(m: &Metadata) {
    kek_writes(m).await;
    let report = sealstream::audit::verify_chain(&m.audit_chain_rows().await.unwrap());
    assert_eq!(
        (report.rows, report.problems, report.unhashed_tail),
        (4, vec![], 0)
    );
}

// ---------------------------------------------------------------------------------------------
// Console users, grants and logins.

fn user(name: &str, role: Role, agents: &[&str], created_us: i64) -> ConsoleUser {
    ConsoleUser {
        name: name.into(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        agents: agents.iter().map(|a| a.to_string()).collect(),
        created_us,
        disabled_us: None,
    }
}

fn login(token: u8, user: &str, at: i64) -> Login {
    Login {
        token_sha256: [token; 32],
        user: user.into(),
        csrf: format!("csrf-{token}"),
        address: format!("10.0.0.{token}"),
        created_us: at,
        last_seen_us: at,
    }
}

/// Accounts round trip (a name taken is refused with `new_only`; an update keeps the creation
/// time; disabling ends the user's logins); a reviewer's grants, read back, select the same
/// sessions; logins are kept while used, end when idle (and sweep every idle one), on logout.
async fn console_users_grants_and_logins_round_trip(m: &Metadata) {
    assert_eq!(m.console_users().await.unwrap(), vec![]);
    assert_eq!(m.console_user("ann").await.unwrap(), None);
    let ann = user("ann", Role::Admin, &[], 1_000);
    let bob = user("bob", Role::Reviewer, &["ts-*", "vdi_1", "eu-*-7"], 2_000);
    assert!(
        m.put_console_user(ann.clone(), true, "cli", "user_add")
            .await
            .unwrap()
    );
    assert!(
        !m.put_console_user(
            user("ann", Role::Reviewer, &["x"], 3),
            true,
            "cli",
            "user_add"
        )
        .await
        .unwrap(),
        "a name taken"
    );
    assert!(
        m.put_console_user(bob.clone(), true, "cli", "user_add")
            .await
            .unwrap()
    );
    assert_eq!(m.console_user("bob").await.unwrap(), Some(bob.clone()));
    assert_eq!(
        m.console_users().await.unwrap(),
        vec![ann.clone(), bob.clone()]
    );

    // The grants as read back choose the sessions a reviewer sees.
    let granted = m.console_user("bob").await.unwrap().unwrap().agents;
    let chunks = ["ts-01", "vdi_1", "vdiX1", "eu-west-7", "eu-7", "TS-01"]
        .iter()
        .enumerate()
        .map(|(i, a)| ch(a, S1, 0, 0, 100 * (i as i64 + 1)))
        .collect();
    m.commit_segment(segment(1, chunks)).await.unwrap();
    let seen: Vec<String> = m
        .sessions(SessionQuery {
            allowed: Some(granted.clone()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.agent)
        .collect();
    assert_eq!(seen, vec!["eu-west-7", "vdi_1", "ts-01"]);
    let agents: Vec<String> = m
        .recorded_agents(Some(granted))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(agents, vec!["eu-west-7", "ts-01", "vdi_1"]);

    // Logins.
    for l in [login(1, "bob", 10_000), login(2, "ann", 10_000)] {
        m.insert_login(l).await.unwrap();
    }
    assert!(
        m.insert_login(login(1, "bob", 10_000)).await.is_err(),
        "a token is one login"
    );
    assert_eq!(
        m.touch_login([1; 32], 10_500, 1_000).await.unwrap(),
        Some(Login {
            last_seen_us: 10_500,
            ..login(1, "bob", 10_000)
        })
    );
    assert_eq!(
        m.touch_login([1; 32], 11_400, 1_000)
            .await
            .unwrap()
            .map(|l| l.last_seen_us),
        Some(11_400),
        "used within the idle time"
    );
    assert_eq!(
        m.touch_login([1; 32], 20_000, 1_000).await.unwrap(),
        None,
        "idle too long"
    );
    assert_eq!(
        count(m, Table::ConsoleLogin).await,
        0,
        "every idle login is swept"
    );
    assert_eq!(m.touch_login([2; 32], 10_600, 1_000).await.unwrap(), None);

    m.insert_login(login(3, "bob", 30_000)).await.unwrap();
    m.insert_login(login(4, "ann", 30_000)).await.unwrap();
    let disabled = ConsoleUser {
        role: Role::Admin,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$new".into(),
        agents: vec!["*".into()],
        created_us: 9_999,
        disabled_us: Some(31_000),
        ..bob.clone()
    };
    assert!(
        m.put_console_user(disabled.clone(), false, "cli", "user_disable")
            .await
            .unwrap()
    );
    assert_eq!(
        m.console_user("bob").await.unwrap(),
        Some(ConsoleUser {
            created_us: 2_000,
            ..disabled
        }),
        "replaced, the creation time kept"
    );
    assert_eq!(
        m.touch_login([3; 32], 30_001, 1_000).await.unwrap(),
        None,
        "a disabled user's logins end"
    );
    assert!(
        m.touch_login([4; 32], 30_001, 1_000)
            .await
            .unwrap()
            .is_some()
    );
    m.delete_login([4; 32]).await.unwrap();
    m.delete_login([5; 32]).await.unwrap();
    assert_eq!(m.touch_login([4; 32], 30_002, 1_000).await.unwrap(), None);
    assert_eq!(count(m, Table::ConsoleLogin).await, 0);

    let mut audited = m
        .audit_page(AuditQuery {
            actor: Some("cli".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    audited.reverse();
    assert_eq!(
        audited
            .into_iter()
            .map(|r| (r.action, r.detail))
            .collect::<Vec<_>>(),
        vec![
            (
                "user_add".to_owned(),
                "user=ann role=admin agents=[] disabled=false".to_owned()
            ),
            (
                "user_add".to_owned(),
                "user=bob role=reviewer agents=[ts-*,vdi_1,eu-*-7] disabled=false".to_owned()
            ),
            (
                "user_disable".to_owned(),
                "user=bob role=admin agents=[*] disabled=true".to_owned()
            ),
        ],
        "one row per change made, none for the name refused"
    );
}
