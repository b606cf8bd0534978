//! Leases and fenced commits.

use super::*;

conformance!(
    leases_raise_epochs_and_fence_stale_commits,
    sqlite: leases_raise_epochs_and_fence_stale_commits_sqlite,
    postgres: leases_raise_epochs_and_fence_stale_commits_postgres,
);

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
        .map(|l| {
            assert!(
                (t0..=t1).contains(&l.since_us),
                "lease since {}",
                l.since_us
            );
            (l.agent, l.epoch, l.node)
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
