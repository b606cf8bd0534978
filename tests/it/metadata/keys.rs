//! KEK and DEK records.

use super::*;

conformance!(
    keks_and_deks_read_back,
    sqlite: keks_and_deks_read_back_sqlite,
    postgres: keks_and_deks_read_back_postgres,
);

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
