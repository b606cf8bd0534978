use super::*;

async fn ciphertext_by_byte_range(backend: Backend) {
    let (env, reports) = recorded(backend).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let key = env.private_key();
    let ts = &reports[0];
    for s in &ts.sessions {
        let session_hex = hex::encode(s.session.0);
        let base = format!(
            "/api/agents/{}/sessions/{session_hex}",
            hex::encode("ts-01")
        );
        let index = ann.get(&format!("{base}/index?stream=0")).await.json();
        let rows = index["chunks"].as_array().unwrap();
        // One row per frame, and the empty chunk that ends a synthetic stream.
        assert!(
            rows.len() == s.frames.len() || rows.len() == s.frames.len() + 1,
            "{index}"
        );
        // Fetch a few at a time, as the page does; every chunk's bytes are what the index
        // digest says and open under the DEK to the frame the agent recorded.
        let mut seq = 0u64;
        let mut opened = 0;
        while (seq as usize) < rows.len() {
            let r = ann
                .get(&format!("{base}/streams/0/chunks?from_seq={seq}&count=3"))
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            let mut buf = &r.body[..];
            while !buf.is_empty() {
                let (chunk, used) = SealedChunk::decode_prefix(buf).unwrap();
                assert_eq!(chunk.header.seq, seq);
                assert_eq!(chunk.header.session, SessionId(s.session.0));
                let digest = env
                    .server()
                    .metadata
                    .chunk_digest(
                        &AgentId::new("ts-01").unwrap(),
                        SessionId(s.session.0),
                        StreamId(0),
                        seq,
                    )
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(Sha256::digest(&buf[..used]).as_slice(), digest);
                let dek_hex = hex::encode(chunk.header.dek_id.0);
                let rec = ann.get(&format!("/api/deks/{dek_hex}")).await;
                let record = DekRecord::decode(&rec.body).unwrap();
                let dek = Dek::unwrap(&record, &key.key, key.kek_id).unwrap();
                let plain = StreamKey::for_chunk(&dek, &chunk.header)
                    .open(&chunk)
                    .unwrap();
                if plain.is_empty() {
                    assert!(chunk.header.last && seq as usize == s.frames.len());
                    buf = &buf[used..];
                    seq += 1;
                    continue;
                }
                let frame = sealstream::protocol::payload::Frame::decode(&plain).unwrap();
                let (name, sha) = &s.frames[seq as usize];
                assert_eq!(frame.name, name);
                assert_eq!(Sha256::digest(frame.image).as_slice(), sha);
                opened += 1;
                buf = &buf[used..];
                seq += 1;
            }
        }
        assert_eq!(opened, s.frames.len());
    }
    // The audit names the session and the range of each ciphertext fetch.
    let rows = actions(&env).await;
    assert!(
        rows.iter()
            .any(|r| r.1 == "fetch_ciphertext" && r.2.contains("seq=0..=2"))
    );
    console.stop().await;
    env.stop().await;
}

crate::common::on_both_backends!(
    ciphertext_by_byte_range,
    sqlite: ciphertext_is_served_as_single_chunks_that_open_to_the_recording_sqlite,
    postgres: ciphertext_is_served_as_single_chunks_that_open_to_the_recording_postgres,
);

/// The console serves a KEK's files only when they are what they claim: the public key must
/// have the KEK's id and the private key file must be one PEM private key, so a path pointing
/// elsewhere does not make the console a file reader.
#[actix_rt::test]
async fn key_files_are_served_only_when_they_are_key_files() {
    let (env, _) = recorded(Backend::Sqlite).await;
    let d = env.dir.path();
    crate::common::genrsa(d, "other.pem", 2048, &["-aes256"]);
    let other_pub = crate::common::pubout(d, "other.pem", "other.crt", true);
    std::fs::write(d.join("not-a-key.txt"), "db_password=hunter2\n").unwrap();
    let md = &env.server().metadata;
    insert_kek(md, &other_pub, &d.join("not-a-key.txt")).await;
    env.server().reload_keks().await;
    // An agent's DEK under it, so that the console would serve its key file at all.
    let mut other = env.enroll("ts-02");
    other.kek = other_pub.clone();
    run_agent(other, spec(1, 0.3)).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let keks = ann.get("/api/keks").await.json();
    let ids: Vec<String> = keks
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kek_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{keks}");
    let good = crate::common::openssl_fingerprint(d, "publickey.crt");
    let bad = crate::common::openssl_fingerprint(d, "other.crt");
    let r = ann.get(&format!("/api/keks/{good}/private")).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let r = ann.get(&format!("/api/keks/{good}/public")).await;
    assert_eq!(r.status, 200);
    let r = ann.get(&format!("/api/keks/{bad}/private")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(!String::from_utf8_lossy(&r.body).contains("hunter2"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a PEM private key")
    );
    console.stop().await;
    env.stop().await;
}

/// A KEK's private key file is an offline passphrase-guessing target: a reviewer gets it only
/// for a KEK that wraps a DEK of an agent they are granted, whatever the KEK is bound to (the
/// how-to's insert binds it to none); every fetch and every refusal is audited.
async fn private_key_files_follow_the_grant(backend: Backend) {
    let env = Env::start(backend, true).await;
    let d = env.dir.path();
    crate::common::genrsa(d, "team-b.pem", 2048, &["-aes256"]);
    let team_b_pub = crate::common::pubout(d, "team-b.pem", "team-b.crt", true);
    crate::common::genrsa(d, "unused.pem", 2048, &["-aes256"]);
    let unused_pub = crate::common::pubout(d, "unused.pem", "unused.crt", true);
    let md = &env.server().metadata;
    for (public, private) in [(&team_b_pub, "team-b.pem"), (&unused_pub, "unused.pem")] {
        insert_kek(md, public, &d.join(private)).await;
    }
    env.server().reload_keks().await;
    run_agent(env.enroll("ts-01"), spec(1, 0.5)).await;
    let mut vdi = env.enroll("vdi-01");
    vdi.kek = team_b_pub.clone();
    run_agent(vdi, spec(1, 0.5)).await;
    add_user(md, "ann", Role::Admin, &[], ANN).await;
    add_user(md, "rita", Role::Reviewer, &["ts-*"], RITA).await;

    let team_a = crate::common::openssl_fingerprint(d, "publickey.crt");
    let team_b = crate::common::openssl_fingerprint(d, "team-b.crt");
    let unused = crate::common::openssl_fingerprint(d, "unused.crt");
    let console = start(&env, |_| {}).await;
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let listed = rita.get("/api/keks").await.json();
    let private_file = |kek: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kek_id"] == kek)
            .map(|k| k["private_file"].as_bool().unwrap())
    };
    assert_eq!(private_file(&team_a), Some(true), "{listed}");
    assert_eq!(private_file(&team_b), Some(false), "{listed}");
    assert_eq!(private_file(&unused), Some(false), "{listed}");

    let r = rita.get(&format!("/api/keks/{team_a}/private")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, std::fs::read(d.join("keypair.pem")).unwrap());
    for kek in [&team_b, &unused] {
        let r = rita.get(&format!("/api/keks/{kek}/private")).await;
        assert_eq!(r.status, 404, "{kek}: {r:?}");
        assert!(!String::from_utf8_lossy(&r.body).contains("PRIVATE KEY"));
        // The public key is no secret: still served.
        assert_eq!(
            rita.get(&format!("/api/keks/{kek}/public")).await.status,
            200
        );
    }
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let r = ann.get(&format!("/api/keks/{team_b}/private")).await;
    assert_eq!(r.status, 200, "an admin sees every agent: {r:?}");
    assert_eq!(r.body, std::fs::read(d.join("team-b.pem")).unwrap());

    let rows = actions(&env).await;
    let has = |actor: &str, action: &str, detail: String| {
        rows.iter()
            .any(|(a, act, det, _)| a == actor && act == action && *det == detail)
    };
    assert!(
        has(
            "rita",
            "fetch_key_file",
            format!("kek={team_a} file=private")
        ),
        "{rows:?}"
    );
    assert!(
        has("rita", "denied", format!("kek={team_b} file=private")),
        "{rows:?}"
    );
    assert!(
        has("rita", "denied", format!("kek={unused} file=private")),
        "{rows:?}"
    );
    assert!(
        has(
            "ann",
            "fetch_key_file",
            format!("kek={team_b} file=private")
        ),
        "{rows:?}"
    );
    console.stop().await;
    env.stop().await;
}

crate::common::on_both_backends!(
    private_key_files_follow_the_grant,
    sqlite: private_key_files_follow_the_grant_sqlite,
    postgres: private_key_files_follow_the_grant_postgres,
);
