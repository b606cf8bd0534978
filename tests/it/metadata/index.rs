//! The segment index: what the console reads back from index writes.

use super::*;

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
        vec![recorded(a, 1, 1_500_000), recorded("vdi-1", 1, 900_000)]
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
            recorded("TS-03", 1, 20),
            recorded("ts-01", 1, 500),
            recorded("ts-02", 2, 500),
            recorded("ts_04", 1, 900),
            recorded("tsx04", 1, 160),
            recorded("vdi-1", 1, 700),
        ],
        "by agent, in byte order"
    );
    assert_eq!(
        m.recorded_agents(Some(vec!["ts-*".into()])).await.unwrap(),
        vec![recorded("ts-01", 1, 500), recorded("ts-02", 2, 500)]
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
