//! The published test vectors (tests/vectors/vectors.json): the DEK record unwraps to the DEK,
//! every sealed chunk opens to its plaintext and re-sealing gives the same bytes, and every
//! negative vector is refused with the right verdict. The wrapped DEK is also unwrapped by the
//! openssl CLI, from the parameters docs/format.md gives.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use object_store::memory::InMemory;
use sealstream::crypto::{Dek, StreamKey, StreamSealer};
use sealstream::export::{self, Status};
use sealstream::keys::{self, Passphrase};
use sealstream::protocol::{DekId, DekRecord, SealedChunk};
use sealstream::recorder;
use sealstream::storage;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn vectors() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("vectors.json")).unwrap()).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn private_key() -> keys::PrivateKeyFile {
    let pass = std::fs::read(dir().join("passphrase.txt")).unwrap();
    let pass = pass.strip_suffix(b"\n").unwrap().to_vec();
    keys::load_private_key(&dir().join("kek.pem"), || Ok(Passphrase::new(pass))).unwrap()
}

fn dek(v: &Value) -> Dek {
    let id: [u8; 16] = unhex(&v["dek_id"]).try_into().unwrap();
    Dek::from_bytes(DekId(id), unhex(&v["dek"]).try_into().unwrap())
}

#[test]
fn the_dek_record_unwraps_to_the_published_dek() {
    let v = vectors();
    let key = private_key();
    assert_eq!(key.kek_id.to_string(), v["kek_id"].as_str().unwrap());
    let record = DekRecord::decode(&unhex(&v["dek_record"])).unwrap();
    let unwrapped = Dek::unwrap(&record, &key.key, key.kek_id).unwrap();
    assert_eq!(unwrapped.dangerous_bytes().to_vec(), unhex(&v["dek"]));
}

#[test]
fn openssl_unwraps_the_dek_with_the_documented_oaep_parameters() {
    let v = vectors();
    let record = DekRecord::decode(&unhex(&v["dek_record"])).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("wrapped.bin"), &record.wrapped).unwrap();
    let kek = dir().join("kek.pem");
    let pass = format!("file:{}", dir().join("passphrase.txt").display());
    let label = format!(
        "rsa_oaep_label:{}",
        hex::encode(sealstream::crypto::OAEP_LABEL)
    );
    let out = crate::common::openssl(
        tmp.path(),
        &[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            kek.to_str().unwrap(),
            "-passin",
            &pass,
            "-in",
            "wrapped.bin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-pkeyopt",
            &label,
        ],
    );
    assert_eq!(out, unhex(&v["dek"]));
}

#[test]
fn every_chunk_opens_to_its_plaintext_and_reseals_identically() {
    let v = vectors();
    let dek = dek(&v);
    let chunks = v["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 5);
    for c in chunks {
        let sealed = SealedChunk::decode(Bytes::from(unhex(&c["sealed"]))).unwrap();
        assert_eq!(sealed.header.seq, c["seq"].as_u64().unwrap());
        assert_eq!(sealed.header.last, c["final"].as_bool().unwrap());
        assert_eq!(
            sealed.header.session.to_string(),
            c["session"].as_str().unwrap()
        );
        let plain = StreamKey::for_chunk(&dek, &sealed.header)
            .open(&sealed)
            .unwrap();
        assert_eq!(plain.to_vec(), unhex(&c["plaintext"]));
        let h = &sealed.header;
        let mut s =
            StreamSealer::starting_at(&dek, h.agent.clone(), h.session, h.stream, h.kind, h.seq);
        let again = s.seal(&plain, h.capture_time_us, h.last).unwrap();
        assert_eq!(
            again.bytes(),
            sealed.bytes(),
            "sealing is deterministic given the DEK"
        );
    }
}

/// Store the DEK record and `chunks` in a fresh store and export it.
async fn export_stream(v: &Value, chunks: Vec<SealedChunk>) -> export::Report {
    let store = InMemory::new();
    let record = DekRecord::decode(&unhex(&v["dek_record"])).unwrap();
    recorder::store_recording(&store, &record, &chunks)
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    export::export(&store, &[private_key()], None, &out.path().join("x"))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_positive_vectors_export_complete() {
    let v = vectors();
    let chunks = v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| SealedChunk::decode(Bytes::from(unhex(&c["sealed"]))).unwrap())
        .collect();
    let report = export_stream(&v, chunks).await;
    assert_eq!(report.streams.len(), 2);
    for s in &report.streams {
        assert_eq!(s.status, Status::Complete, "{s:?}");
    }
}

#[tokio::test]
async fn every_negative_vector_is_refused_with_its_verdict() {
    let v = vectors();
    for n in v["negative"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        let chunks = n["stream"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| SealedChunk::decode(Bytes::from(unhex(c))).unwrap())
            .collect();
        let report = export_stream(&v, chunks).await;
        assert_eq!(report.streams.len(), 1, "{name}");
        let status = &report.streams[0].status;
        match n["expect"].as_str().unwrap() {
            "tampered" => {
                let Status::Tampered(problems) = status else {
                    panic!("{name}: expected tampered, got {status:?}");
                };
                let detail = n["detail"].as_str().unwrap();
                assert!(
                    problems.iter().any(|p| p.contains(detail)),
                    "{name}: {problems:?}"
                );
                assert!(report.tampered());
            }
            "incomplete" => assert_eq!(status, &Status::Incomplete, "{name}"),
            other => panic!("unknown verdict {other}"),
        }
    }
}

#[tokio::test]
async fn duplicates_gaps_and_chunks_after_final_are_reported() {
    let v = vectors();
    let frames: Vec<SealedChunk> = v["chunks"].as_array().unwrap()[..3]
        .iter()
        .map(|c| SealedChunk::decode(Bytes::from(unhex(&c["sealed"]))).unwrap())
        .collect();
    // An identical resend counts once.
    let report = export_stream(
        &v,
        vec![
            frames[0].clone(),
            frames[0].clone(),
            frames[1].clone(),
            frames[2].clone(),
        ],
    )
    .await;
    assert_eq!(report.streams[0].status, Status::Complete);
    assert_eq!(report.streams[0].chunks, 3);
    // A chunk deleted from the middle is tampering, not an incomplete stream.
    let report = export_stream(&v, vec![frames[0].clone(), frames[2].clone()]).await;
    assert!(
        matches!(&report.streams[0].status, Status::Tampered(p) if p.iter().any(|p| p.contains("chunk 1 is missing")))
    );
    // A tampered object store that deleted the DEK record: nothing decrypts, and it says why.
    let store = InMemory::new();
    for (path, bytes) in recorder::build_segments(&frames) {
        storage::put_new(&store, &path, bytes).await.unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let report = export::export(&store, &[private_key()], None, &out.path().join("x"))
        .await
        .unwrap();
    assert!(
        matches!(&report.streams[0].status, Status::NoDekRecord(why) if why.contains("no DEK record"))
    );
}

#[tokio::test]
async fn an_agents_gap_record_is_reported_as_a_gap_and_a_forged_one_as_tampering() {
    use sealstream::protocol::payload::Gap;
    use sealstream::protocol::{AgentId, Kind, SessionId, StreamId};
    let v = vectors();
    let dek = dek(&v);
    let mut s = StreamSealer::new(
        &dek,
        AgentId::new("vector-agent").unwrap(),
        SessionId([7; 16]),
        StreamId(0),
        Kind::Keystrokes,
    );
    let c0 = s.seal(b"{\"k\":0}\n", 10, false).unwrap();
    let _dropped: Vec<_> = (1..3)
        .map(|i| s.seal(b"{\"k\":1}\n", 10 + i, false).unwrap())
        .collect();
    let gap = Gap {
        first_seq: 1,
        last_seq: 2,
        first_capture_us: 11,
        last_capture_us: 12,
        count: 2,
    };
    let g = s.seal_gap(&gap).unwrap();
    assert!(g.header.gap && g.header.seq == 3);
    let last = s.seal(b"{\"k\":4}\n", 14, true).unwrap();

    let report = export_stream(&v, vec![c0.clone(), g.clone(), last.clone()]).await;
    assert_eq!(report.streams[0].status, Status::Complete, "{report:?}");
    assert_eq!(report.streams[0].gaps, vec![gap]);

    // Without the gap record, the same hole is tampering.
    let report = export_stream(&v, vec![c0.clone(), last.clone()]).await;
    assert!(report.tampered());
    // A gap record that does not match the hole (chunk 2 deleted as well) is tampering too.
    let mut s2 = StreamSealer::new(
        &dek,
        AgentId::new("vector-agent").unwrap(),
        SessionId([8; 16]),
        StreamId(0),
        Kind::Keystrokes,
    );
    let d0 = s2.seal(b"{\"k\":0}\n", 10, false).unwrap();
    let _d1 = s2.seal(b"{\"k\":1}\n", 11, false).unwrap();
    let g2 = s2
        .seal_gap(&Gap {
            first_seq: 1,
            last_seq: 1,
            first_capture_us: 11,
            last_capture_us: 11,
            count: 1,
        })
        .unwrap();
    let d3 = s2.seal(b"{\"k\":3}\n", 13, true).unwrap();
    let report = export_stream(&v, vec![d0.clone(), g2.clone(), d3.clone()]).await;
    assert_eq!(report.streams[0].status, Status::Complete);
    let report = export_stream(&v, vec![d0, d3]).await;
    assert!(
        report.tampered(),
        "the store cannot hide a deletion without the agent's key"
    );
}

/// The `signed` section (format version 2): an Ed25519 agent CA and agent, a signed DEK record,
/// a stream of three chunks with its chain heads and checkpoints, and negative vectors.
/// Written by `cargo run --example make_vectors` with the rest of the file; checked here.
mod signed {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use sealstream::crypto::sign::{self, AgentCa, AgentSigner};
    use sealstream::inspect::{self, Verdict};
    use sealstream::protocol::AgentId;
    use std::sync::Arc;

    fn signer(cert_pem: &str, key_pem: &str) -> Arc<AgentSigner> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        Arc::new(AgentSigner::new(&cert, &key).unwrap())
    }

    fn ca(v: &Value) -> AgentCa {
        let der =
            CertificateDer::from_pem_slice(v["agent_ca"].as_str().unwrap().as_bytes()).unwrap();
        AgentCa::from_der(der.into_owned()).unwrap()
    }

    #[test]
    fn the_signed_vectors_verify_link_and_open() {
        let all = vectors();
        let v = &all["signed"];
        let record = DekRecord::decode(&unhex(&v["dek_record"])).unwrap();
        let signed = record.signed.as_ref().expect("a version-2 record");
        sign::verify_dek_record(&record).unwrap();
        let agent = AgentId::new(v["agent"].as_str().unwrap()).unwrap();
        ca(v)
            .check(&signed.cert, &agent, record.created_us)
            .unwrap();
        let key = private_key();
        let dek = Dek::unwrap(&record, &key.key, key.kek_id).unwrap();
        assert_eq!(
            hex::encode(dek.dangerous_bytes()),
            v["dek"].as_str().unwrap()
        );
        let again = signer(
            v["agent_cert"].as_str().unwrap(),
            v["agent_key"].as_str().unwrap(),
        );
        let mut head = sign::CHAIN_START;
        for c in v["chunks"].as_array().unwrap() {
            let chunk = SealedChunk::decode(Bytes::from(unhex(&c["sealed"]))).unwrap();
            assert_eq!(chunk.header.version, 2);
            head = sign::chain_next(&head, chunk.core());
            assert_eq!(hex::encode(head), c["chain_head"].as_str().unwrap());
            assert_eq!(chunk.header.checkpoint, c["checkpoint"].as_bool().unwrap());
            if let Some(sig) = chunk.signature() {
                sign::verify(
                    &signed.cert,
                    sig.scheme,
                    &sign::checkpoint_message(&head),
                    sig.bytes,
                )
                .unwrap();
                // Ed25519 is deterministic: the documented message gives the same signature.
                assert_eq!(
                    again.sign(&sign::checkpoint_message(&head)).unwrap().1,
                    sig.bytes
                );
            }
            let plain = StreamKey::for_chunk(&dek, &chunk.header)
                .open(&chunk)
                .unwrap();
            assert_eq!(hex::encode(&plain[..]), c["plaintext"].as_str().unwrap());
        }
        // The record's signature is deterministic too.
        let mut resigned = record.clone();
        again.sign_dek_record(&mut resigned).unwrap();
        assert_eq!(resigned.encode(), record.encode());
    }

    #[tokio::test]
    async fn every_signed_negative_vector_gets_its_verdict() {
        let all = vectors();
        let v = &all["signed"];
        for n in v["negative"].as_array().unwrap() {
            let name = n["name"].as_str().unwrap();
            let record =
                DekRecord::decode(&unhex(n.get("dek_record").unwrap_or(&v["dek_record"]))).unwrap();
            let chunks: Vec<SealedChunk> = n["stream"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| SealedChunk::decode(Bytes::from(unhex(c))).unwrap())
                .collect();
            let store = InMemory::new();
            recorder::store_recording(&store, &record, &chunks)
                .await
                .unwrap();
            let report = inspect::verify(&store, Some(&ca(v)), |_| {}).await.unwrap();
            let s = &report.streams[0];
            match n["expect"].as_str().unwrap() {
                "tampered" => {
                    assert_eq!(s.verdict, Verdict::Tampered, "{name}: {s:?}");
                    let detail = n["detail"].as_str().unwrap();
                    assert!(
                        s.problems.iter().any(|p| p.contains(detail)),
                        "{name}: {:?}",
                        s.problems
                    );
                }
                "unproven" => assert_eq!(s.verdict, Verdict::Unproven, "{name}: {s:?}"),
                other => panic!("unknown verdict {other}"),
            }
        }
    }
}

/// The `readers` section (issue 22): whole stores, each read by the real `sealstream verify`
/// and `sealstream export`, with the section's agent CA pinned and without, must get the
/// outcome, exit codes, verdicts, proofs, capture times and files the case gives (written
/// from docs/format.md; `tests/it/reference_decryptor/stores.rs` holds the Python reader to
/// the same).
mod readers {
    use super::*;
    use assert_cmd::Command;
    use serde_json::json;

    /// Write a case's objects (a key may hold `#`: written as file names, as a local store
    /// holds them) under `store`.
    pub fn write_store(case: &Value, store: &Path) {
        for (key, bytes) in case["objects"].as_object().unwrap() {
            let path = store.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, unhex(bytes)).unwrap();
        }
    }

    fn run(dir: &Path, args: &[&str]) -> i32 {
        Command::cargo_bin("sealstream")
            .unwrap()
            .current_dir(dir)
            .env_remove("SEALSTREAM_PASSPHRASE")
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
            .unwrap()
    }

    fn json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// The stream of `report` (verify's or export's) with `s`'s session and stream id.
    fn find<'a>(report: &'a Value, s: &Value) -> Option<&'a Value> {
        report["streams"]
            .as_array()?
            .iter()
            .find(|r| r["session"] == s["session"] && r["stream"] == s["stream"])
    }

    #[test]
    fn every_reader_case_gets_its_verdicts_from_verify_and_export() {
        let all = vectors();
        let section = &all["readers"];
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("ca.pem"), section["agent_ca"].as_str().unwrap()).unwrap();
        let key = dir().join("kek.pem");
        let pass = dir().join("passphrase.txt");
        let wrong = std::cell::RefCell::new(Vec::new());
        for (i, case) in section["cases"].as_array().unwrap().iter().enumerate() {
            let name = case["name"].as_str().unwrap();
            let store = d.join(format!("store-{i}"));
            write_store(case, &store);
            let store = store.to_str().unwrap();
            for mode in ["without_ca", "with_ca"] {
                let check = |what: String, got: Value, want: &Value| {
                    if &got != want {
                        wrong
                            .borrow_mut()
                            .push(format!("{name} ({mode}): {what}: got {got}, want {want}"));
                    }
                };
                let expect = &case[mode];
                let ca: Vec<&str> = if mode == "with_ca" {
                    vec!["--agent-ca", "ca.pem"]
                } else {
                    vec![]
                };
                // verify, then verify --allow-incomplete.
                let vjson = format!("verify-{i}-{mode}.json");
                let mut args = vec!["verify", "--store", store, "--json", &vjson];
                args.extend(&ca);
                check(
                    "verify exit".into(),
                    json!(run(d, &args)),
                    &expect["verify"]["exit"],
                );
                args.push("--allow-incomplete");
                check(
                    "verify --allow-incomplete exit".into(),
                    json!(run(d, &args)),
                    &expect["verify"]["exit_allow_incomplete"],
                );
                let verified = json(&d.join(&vjson));
                check(
                    "verify outcome".into(),
                    verified["outcome"].clone(),
                    &expect["verify"]["outcome"],
                );
                // export, then export --allow-incomplete into another directory.
                let out = d.join(format!("out-{i}-{mode}"));
                let out_s = out.to_str().unwrap().to_owned();
                let mut args = vec![
                    "export",
                    "--store",
                    store,
                    "--out",
                    &out_s,
                    "--key",
                    key.to_str().unwrap(),
                    "--passphrase-file",
                    pass.to_str().unwrap(),
                ];
                args.extend(&ca);
                check(
                    "export exit".into(),
                    json!(run(d, &args)),
                    &expect["export"]["exit"],
                );
                let out2 = format!("{out_s}-allow");
                let mut args2 = args.clone();
                args2[4] = &out2;
                args2.push("--allow-incomplete");
                check(
                    "export --allow-incomplete exit".into(),
                    json!(run(d, &args2)),
                    &expect["export"]["exit_allow_incomplete"],
                );
                let exported = json(&out.join("report.json"));
                check(
                    "export outcome".into(),
                    exported["outcome"].clone(),
                    &expect["export"]["outcome"],
                );
                let receipt = json(&out.join("receipt.json"));
                let mut expected_files = Vec::new();
                for s in case["streams"].as_array().unwrap() {
                    let says = &s[mode];
                    let id = format!("stream {}/{}", s["session"], s["stream"]);
                    let (Some(v), Some(e)) = (find(&verified, s), find(&exported, s)) else {
                        wrong
                            .borrow_mut()
                            .push(format!("{name} ({mode}): {id} not reported"));
                        continue;
                    };
                    check(
                        format!("{id} verdict"),
                        v["verdict"].clone(),
                        &says["verdict"],
                    );
                    check(
                        format!("{id} export verdict"),
                        e["verdict"].clone(),
                        &says["export_verdict"],
                    );
                    for (r, who) in [(v, "verify"), (e, "export")] {
                        check(
                            format!("{id} {who} proof"),
                            r["signature"]["proof"].clone(),
                            &says["proof"],
                        );
                        for f in ["first_capture_us", "last_capture_us"] {
                            check(format!("{id} {who} {f}"), r[f].clone(), &s[f]);
                        }
                    }
                    check(format!("{id} chunks"), v["chunks"].clone(), &s["chunks"]);
                    if let Some(detail) = says["detail"].as_str() {
                        let problems = v["problems"].to_string();
                        if !problems.contains(detail) {
                            wrong.borrow_mut().push(format!(
                                "{name} ({mode}): {id}: {detail:?} not in verify's problems {problems}"
                            ));
                        }
                    }
                    let malformed: Vec<Value> = e["detail"]
                        .as_array()
                        .filter(|_| e["status"] == "malformed")
                        .map(|d| {
                            d.iter()
                                .filter_map(|p| {
                                    let p = p.as_str()?.strip_prefix("chunk ")?;
                                    Some(json!(p.split(':').next()?.parse::<u64>().ok()?))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    check(
                        format!("{id} malformed chunks"),
                        json!(malformed),
                        &s["malformed_chunks"],
                    );
                    let mut files: Vec<Value> = e["files"].as_array().cloned().unwrap_or_default();
                    files.sort_by_key(|f| f.to_string());
                    let mut want: Vec<Value> = says["files"].as_array().unwrap().clone();
                    want.sort_by_key(|f| f.to_string());
                    check(format!("{id} files"), json!(files), &json!(want));
                    for f in &want {
                        let f = f.as_str().unwrap();
                        expected_files.push(f.to_owned());
                        let listed = receipt["files"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|r| r["path"] == f);
                        check(
                            format!("{id} receipt verdict of {f}"),
                            listed.map_or(Value::Null, |r| r["verdict"].clone()),
                            &says["export_verdict"],
                        );
                    }
                }
                // Nothing else was written: no file of a stream that is not ok beside ok ones.
                let mut on_disk: Vec<String> = crate::common::walk(&out)
                    .iter()
                    .map(|p| p.strip_prefix(&out).unwrap().to_string_lossy().into_owned())
                    .filter(|p| {
                        !["report.json", "receipt.json", "receipt.sig"].contains(&p.as_str())
                    })
                    .collect();
                on_disk.sort();
                expected_files.sort();
                check(
                    "files on disk".into(),
                    json!(on_disk),
                    &json!(expected_files),
                );
            }
        }
        let wrong = wrong.into_inner();
        assert!(
            wrong.is_empty(),
            "{} disagreements:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}
