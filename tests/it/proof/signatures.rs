use super::*;

#[test]
fn a_signed_recording_verifies_and_exports_with_its_agent_named() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 9);
    assert_eq!(
        record.signed.as_ref().map(|s| !s.cert.is_empty()),
        Some(true)
    );
    let store = f.store("good", &record, &chunks);

    let a = f.verify(&store, Some("ca/ca.crt")).code(0);
    let out = stdout(&a);
    assert!(out.contains("signed by agent certificate sha256:"), "{out}");
    assert!(out.contains("proven through chunk 9"), "{out}");
    assert!(out.contains("verify passed"), "{out}");

    // JSON report, for a nightly job.
    sealstream(
        f.dir.path(),
        &[
            "verify",
            "--store",
            "good",
            "--agent-ca",
            "ca/ca.crt",
            "--json",
            "report.json",
        ],
    )
    .code(0);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("report.json")).unwrap()).unwrap();
    assert_eq!(json["outcome"], "ok");
    assert_eq!(json["streams"][0]["signature"]["proof"], "signed");
    assert_eq!(json["streams"][0]["signature"]["unproven"], 0);

    let a = f
        .export(&store, "out", &["--agent-ca", "ca/ca.crt"])
        .code(0);
    let out = stdout(&a);
    assert!(out.contains("verification passed: 10 chunk(s) decrypted and authentic, every stream signed by its agent to its end"), "{out}");
    // Without a pinned CA the signature is valid but its signer is not vouched for.
    let a = f.export(&store, "out-unpinned", &[]).code(0);
    assert!(stdout(&a).contains("NOT CHECKED against an agent CA"));
}

#[test]
fn a_recording_forged_with_the_public_kek_is_unsigned_and_refused() {
    let f = Fixture::new();
    // The server operator has the public KEK: an unsigned (version-1) recording in the
    // agent's name decrypts, but nothing shows the agent made it.
    let (record, chunks) = f.record(None, 3);
    let store = f.store("forged", &record, &chunks);
    let a = f.verify(&store, Some("ca/ca.crt")).code(7);
    assert!(stdout(&a).contains("UNSIGNED"), "{}", stdout(&a));
    let a = f
        .export(&store, "out", &["--agent-ca", "ca/ca.crt"])
        .code(7);
    assert!(
        stdout(&a).contains("not proven to their end"),
        "{}",
        stdout(&a)
    );
    // --allow-incomplete waives an unproven tail of a signed stream, never an unsigned stream
    // when a CA is pinned (issue 22): that would let the forgery through.
    let a = f
        .export(
            &store,
            "out2",
            &["--agent-ca", "ca/ca.crt", "--allow-incomplete"],
        )
        .code(7);
    assert!(stdout(&a).contains("UNSIGNED"), "{}", stdout(&a));
    let a = sealstream(
        f.dir.path(),
        &[
            "verify",
            "--store",
            store.to_str().unwrap(),
            "--agent-ca",
            "ca/ca.crt",
            "--allow-incomplete",
        ],
    )
    .code(7);
    assert!(stdout(&a).contains("UNSIGNED"), "{}", stdout(&a));
    // Its frames are not put where the agent's own recordings go: they are quarantined, and the
    // signed receipt says why.
    let frames: Vec<PathBuf> = crate::common::walk(&f.path("out2"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert_eq!(frames.len(), 3);
    for p in &frames {
        let rel = p.strip_prefix(f.path("out2")).unwrap();
        assert!(
            rel.starts_with(format!("@quarantine/{AGENT}")),
            "{}",
            rel.display()
        );
    }
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("out2/receipt.json")).unwrap()).unwrap();
    let listed = receipt["files"].as_array().unwrap();
    assert_eq!(
        listed.iter().filter(|r| r["verdict"] == "unsigned").count(),
        3,
        "{receipt}"
    );
    // Without a pinned CA nothing says which agent should have signed: an unsigned recording is
    // read as version 1 is, and exits 0.
    f.export(&store, "out3", &[]).code(0);
    assert!(
        crate::common::walk(&f.path("out3"))
            .iter()
            .any(|p| p.strip_prefix(f.path("out3")).unwrap().starts_with(AGENT))
    );
}

#[test]
fn a_recording_signed_under_another_ca_is_tampered() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("rogue"), 3);
    let store = f.store("rogue-store", &record, &chunks);
    let a = f.verify(&store, Some("ca/ca.crt")).code(3);
    assert!(
        stdout(&a).contains("not issued by the pinned agent CA"),
        "{}",
        stdout(&a)
    );
    f.export(&store, "out", &["--agent-ca", "ca/ca.crt"])
        .code(3);
}

#[test]
fn a_kek_holder_cannot_alter_reorder_or_cut_a_signed_stream() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 9);
    // The KEK holder unwraps the DEK and seals a new chunk 1 under it (version 2, no
    // checkpoint: it cannot sign). The tag is valid; the chain is not.
    let private = keys::load_private_key(&f.path("keypair.pem"), || {
        Ok(keys::Passphrase::new(
            crate::common::PASS.as_bytes().to_vec(),
        ))
    })
    .unwrap();
    let dek = Dek::unwrap(&record, &private.key, private.kek_id).unwrap();
    let h = &chunks[1].header;
    // A sealer of chunks from 1 on under the agent's DEK (version 2; it cannot sign the
    // agent's checkpoints).
    let sealer_from_1 = || {
        StreamSealer::starting_at(&dek, h.agent.clone(), h.session, h.stream, h.kind, 1).signed_by(
            f.signer("rogue"),
            Checkpoints {
                every_chunks: 1000,
                every: std::time::Duration::from_secs(3600),
            },
        )
    };
    // Verify and export both say the chain the agent signed at chunk 3 no longer holds.
    let refused = |store: &Path, out: &str| {
        let a = f.verify(store, Some("ca/ca.crt")).code(3);
        assert!(
            stdout(&a).contains("checkpoint at chunk 3: the signature does not verify"),
            "{}",
            stdout(&a)
        );
        let a = f.export(store, out, &["--agent-ca", "ca/ca.crt"]).code(3);
        assert!(stdout(&a).contains("TAMPERED"), "{}", stdout(&a));
    };
    let mut forger = sealer_from_1();
    let frame = sealstream::protocol::payload::Frame {
        name: "f001.png",
        image: b"an altered frame",
    }
    .encode();
    let forged = forger.seal(&frame, h.capture_time_us, false).unwrap();
    assert!(!forged.header.checkpoint);
    let mut altered = chunks.clone();
    altered[1] = forged;
    refused(&f.store("altered", &record, &altered), "out");

    // Two frames swapped: the KEK holder re-seals frame 2 as chunk 1 and frame 1 as chunk 2
    // (each tag valid under the DEK, each number in place), but the chain the agent signed
    // at chunk 3 ran through them in the other order.
    let key = sealstream::crypto::StreamKey::derive(&dek, &h.agent, h.session, h.stream, h.kind);
    let (one, two) = (key.open(&chunks[1]).unwrap(), key.open(&chunks[2]).unwrap());
    let mut swapper = sealer_from_1();
    let mut reordered = chunks.clone();
    reordered[1] = swapper
        .seal(&two, chunks[1].header.capture_time_us, false)
        .unwrap();
    reordered[2] = swapper
        .seal(&one, chunks[2].header.capture_time_us, false)
        .unwrap();
    assert_eq!(key.open(&reordered[1]).unwrap(), two, "a valid chunk 1");
    refused(&f.store("reordered", &record, &reordered), "out-reordered");
    // The same chunks merely stored in another order are the recording as sealed: the
    // numbering puts them back, nothing to report.
    let mut shuffled = chunks.clone();
    shuffled.swap(1, 2);
    let store = f.store("shuffled", &record, &shuffled);
    f.verify(&store, Some("ca/ca.crt")).code(0);

    // Removing one is reported.
    let mut cut = chunks.clone();
    cut.remove(2);
    let store = f.store("removed", &record, &cut);
    let a = f.verify(&store, Some("ca/ca.crt")).code(3);
    assert!(stdout(&a).contains("chunk 2 is missing"), "{}", stdout(&a));

    // Cut after a checkpoint: chunks 0..=7 proven by the checkpoint at 7, chunk 8 after it
    // unproven, no final chunk.
    let truncated = &chunks[..9];
    let store = f.store("truncated", &record, truncated);
    let a = f.verify(&store, Some("ca/ca.crt")).code(7);
    let out = stdout(&a);
    assert!(out.contains("INCOMPLETE"), "{out}");
    assert!(
        out.contains("proven through chunk 7; 1 chunk(s) after it UNPROVEN"),
        "{out}"
    );
    let a = f
        .export(&store, "out-cut", &["--agent-ca", "ca/ca.crt"])
        .code(7);
    assert!(stdout(&a).contains("1 chunk(s) after it UNPROVEN"));
    f.export(
        &store,
        "out-cut2",
        &["--agent-ca", "ca/ca.crt", "--allow-incomplete"],
    )
    .code(0);
}

#[test]
fn renamed_moved_and_unknown_objects_are_named_as_such() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 3);

    // A segment renamed (another id) in its folder.
    let store = f.store("renamed", &record, &chunks);
    let seg = segment_of(&store);
    let renamed = seg.with_file_name(format!("{}.seg", "ab".repeat(16)));
    std::fs::rename(&seg, &renamed).unwrap();
    let a = f.verify(&store, Some("ca/ca.crt")).code(3);
    assert!(
        stdout(&a).contains("stored under another name"),
        "{}",
        stdout(&a)
    );
    f.export(&store, "out", &["--agent-ca", "ca/ca.crt"])
        .code(3);

    // A segment moved to another date folder.
    let store = f.store("moved", &record, &chunks);
    let seg = segment_of(&store);
    let day = store.join("v1/segments/2020-01-01");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::rename(&seg, day.join(seg.file_name().unwrap())).unwrap();
    let a = f.verify(&store, None).code(3);
    assert!(stdout(&a).contains("renamed or moved"), "{}", stdout(&a));

    // A chunk of an unknown version inside an intact segment is named by its version, not
    // as a checksum mismatch.
    let mut future = chunks[0].bytes().to_vec();
    future[4] = 9;
    let t = 1_795_773_600_000_000;
    let id = Segment::new_id(t);
    let seg_bytes = {
        let mut b = Segment::encode(id, t, &chunks[1..2]).0.to_vec();
        // Put the version-9 chunk in place of the one there, then fix the checksum the way a
        // writer of a future version would.
        let start = 36;
        let end = b.len() - 32;
        b.splice(start..end, future.iter().copied());
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&future).into();
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, &b[..36]);
        sha2::Digest::update(&mut h, digest);
        let sum: [u8; 32] = sha2::Digest::finalize(h).into();
        let n = b.len();
        b[n - 32..].copy_from_slice(&sum);
        b
    };
    let store = f.path("future");
    let st = storage::open_local(&store).unwrap();
    rt().block_on(storage::put_new(
        st.as_ref(),
        &paths::segment(t, &id),
        Bytes::from(seg_bytes),
    ))
    .unwrap();
    let a = f.verify(&store, None).code(3);
    assert!(
        stdout(&a).contains("unsupported format version 9; this build reads versions 1 and 2"),
        "{}",
        stdout(&a)
    );
}

#[test]
fn a_dek_record_under_another_agents_name_does_not_stand_in_for_the_agents_own() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 3);
    let store = f.store("s", &record, &chunks);
    // Another agent's record with the same DEK id, wrapping another DEK (anyone with the
    // public KEK can write one): the agent's chunks still open under its own record only.
    let other = Recorder::with_dek(
        AgentId::new("bystander").unwrap(),
        &f.kek(),
        Dek::from_bytes(record.dek_id, [0x42; 32]),
    );
    let st = storage::open_local(&store).unwrap();
    rt().block_on(recorder::store_recording(
        st.as_ref(),
        other.dek_record(),
        &[],
    ))
    .unwrap();
    let a = f
        .export(&store, "out", &["--agent-ca", "ca/ca.crt"])
        .code(0);
    assert!(stdout(&a).contains("verification passed"), "{}", stdout(&a));
}

#[test]
fn a_missing_dek_record_and_a_missing_key_each_have_their_own_code() {
    let f = Fixture::new();
    let (record, chunks) = f.record(Some("agent"), 3);
    let store = f.store("nodek", &record, &chunks);
    std::fs::remove_file(store.join(paths::dek_record(&record.agent, record.dek_id).as_ref()))
        .unwrap();
    let a = f.verify(&store, Some("ca/ca.crt")).code(6);
    assert!(stdout(&a).contains("NO DEK RECORD"), "{}", stdout(&a));
    let a = f.export(&store, "out", &[]).code(6);
    assert!(
        stdout(&a).contains("no DEK record in the store"),
        "{}",
        stdout(&a)
    );

    // No key: nothing decrypted, and it does not claim otherwise.
    let store = f.store("nokey", &record, &chunks);
    let a = sealstream(
        f.dir.path(),
        &[
            "export",
            "--store",
            store.to_str().unwrap(),
            "--out",
            "out2",
        ],
    )
    .code(4);
    let out = stdout(&a);
    assert!(
        out.contains("nothing decrypted: no private key given"),
        "{out}"
    );
    assert!(!out.contains("verification passed"), "{out}");
}

#[test]
fn the_server_with_an_offline_ca_cannot_mint_an_agent() {
    let f = Fixture::new();
    let data = f.path("server-data");
    std::fs::create_dir_all(data.join("pki")).unwrap();
    std::fs::copy(f.path("ca/ca.crt"), data.join("pki/ca.crt")).unwrap();
    let pki = sealstream::pki::Pki::open_or_create(&data).unwrap();
    let err = pki
        .issue_agent(&AgentId::new("mallory").unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("sealstream agents csr"), "{err}");
    assert!(!data.join("pki/ca.key").exists());
    // The CSR-signed agent certificate chains to the CA the server trusts.
    let ca = sealstream::crypto::AgentCa::load(&data.join("pki/ca.crt")).unwrap();
    let cert = CertificateDer::from_pem_file(f.path("agent/agent.crt")).unwrap();
    ca.check(
        &cert,
        &AgentId::new(AGENT).unwrap(),
        sealstream::crypto::now_us(),
    )
    .unwrap();
}
