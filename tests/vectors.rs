//! The published test vectors (tests/vectors/vectors.json): the DEK record unwraps to the DEK,
//! every sealed chunk opens to its plaintext and re-sealing gives the same bytes, and every
//! negative vector is refused with the right verdict. The wrapped DEK is also unwrapped by the
//! openssl CLI, from the parameters docs/format.md gives.

mod common;

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
    let out = common::openssl(
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
/// Written once with `SEALSTREAM_WRITE_VECTORS=1 cargo test --test vectors -- --ignored
/// write_signed_vectors`; every other run checks them.
mod signed {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use sealstream::crypto::Checkpoints;
    use sealstream::crypto::sign::{self, AgentCa, AgentSigner};
    use sealstream::inspect::{self, Verdict};
    use sealstream::protocol::payload::Frame;
    use sealstream::protocol::{AgentId, Kind, SessionId, StreamId};
    use std::sync::Arc;

    const AGENT: &str = "vector-agent";

    fn ed25519_ca_and_agent() -> (String, String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "vector agent CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_der(ca_cert.der(), &ca_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, AGENT);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    fn signer(cert_pem: &str, key_pem: &str) -> Arc<AgentSigner> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        Arc::new(AgentSigner::new(&cert, &key).unwrap())
    }

    fn stream(dek: &Dek, who: Option<&Arc<AgentSigner>>) -> Vec<SealedChunk> {
        let s = StreamSealer::new(
            dek,
            AgentId::new(AGENT).unwrap(),
            SessionId([0x5e; 16]),
            StreamId(0),
            Kind::Frame,
        );
        let mut s = match who {
            Some(w) => s.signed_by(
                w.clone(),
                Checkpoints {
                    every_chunks: 2,
                    every: std::time::Duration::from_secs(1 << 30),
                },
            ),
            None => s,
        };
        let t = 1_795_773_600_000_000;
        let f0 = Frame {
            name: "screen-000.png",
            image: b"first frame",
        }
        .encode();
        let f1 = Frame {
            name: "screen-001.png",
            image: b"second frame",
        }
        .encode();
        vec![
            s.seal(&f0, t, false).unwrap(),
            s.seal(&f1, t + 1_000_000, false).unwrap(),
            s.seal(&[], t + 2_000_000, true).unwrap(),
        ]
    }

    #[test]
    #[ignore = "writes tests/vectors/vectors.json's signed section (made once; the tests below check it)"]
    fn write_signed_vectors() {
        assert!(
            std::env::var_os("SEALSTREAM_WRITE_VECTORS").is_some(),
            "set SEALSTREAM_WRITE_VECTORS=1 to rewrite the published vectors"
        );
        let mut v = vectors();
        let (ca, cert, key) = ed25519_ca_and_agent();
        let (rogue_ca, rogue_cert, rogue_key) = ed25519_ca_and_agent();
        let _ = rogue_ca;
        let agent = signer(&cert, &key);
        let rogue = signer(&rogue_cert, &rogue_key);
        let kek = keys::load_public_key(&dir().join("kek.crt")).unwrap();
        let dek = Dek::generate();
        let mut record = dek.wrap(
            &kek.key,
            kek.kek_id,
            AgentId::new(AGENT).unwrap(),
            SessionId([0xa5; 16]),
            1_795_773_600_000_000,
        );
        agent.sign_dek_record(&mut record).unwrap();
        let chunks = stream(&dek, Some(&agent));
        let mut head = sign::CHAIN_START;
        let mut listed = Vec::new();
        for c in &chunks {
            head = sign::chain_next(&head, c.core());
            let plain = StreamKey::for_chunk(&dek, &c.header).open(c).unwrap();
            listed.push(serde_json::json!({
                "seq": c.header.seq,
                "checkpoint": c.header.checkpoint,
                "final": c.header.last,
                "plaintext": hex::encode(&plain[..]),
                "core_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(c.core())),
                "chain_head": hex::encode(head),
                "sealed": hex::encode(c.bytes()),
            }));
        }
        // Negative: the last checkpoint re-signed by another agent's key.
        let mut resigned = chunks[2].core().to_vec();
        let (scheme, sig) = rogue.sign(&sign::checkpoint_message(&head)).unwrap();
        resigned.extend_from_slice(&scheme.to_be_bytes());
        resigned.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        resigned.extend_from_slice(&sig);
        // Negative: the same recording signed by an agent of another CA.
        let mut rogue_record = dek.wrap(
            &kek.key,
            kek.kek_id,
            AgentId::new(AGENT).unwrap(),
            SessionId([0xa5; 16]),
            1_795_773_600_000_000,
        );
        rogue.sign_dek_record(&mut rogue_record).unwrap();
        let rogue_chunks = stream(&dek, Some(&rogue));
        let hexes = |cs: &[SealedChunk]| -> Vec<String> {
            cs.iter().map(|c| hex::encode(c.bytes())).collect()
        };
        let unsigned = stream(&dek, None);
        v["signed"] = serde_json::json!({
            "about": "format version 2: agent signatures (docs/format.md \"Agent signatures\"); Ed25519, so the signatures are deterministic",
            "agent": AGENT,
            "agent_ca": ca,
            "agent_cert": cert,
            "agent_key": key,
            "dek": hex::encode(dek.dangerous_bytes()),
            "dek_id": dek.id().to_string(),
            "dek_record": hex::encode(record.encode()),
            "chunks": listed,
            "negative": [
                {"name": "checkpoint signed by another agent's key", "expect": "tampered",
                 "detail": "checkpoint at chunk 2: the signature does not verify",
                 "stream": [hex::encode(chunks[0].bytes()), hex::encode(chunks[1].bytes()), hex::encode(&resigned)]},
                {"name": "recording signed by an agent certificate of another CA", "expect": "tampered",
                 "detail": "not issued by the pinned agent CA",
                 "dek_record": hex::encode(rogue_record.encode()), "stream": hexes(&rogue_chunks)},
                {"name": "chunk removed before a checkpoint", "expect": "tampered",
                 "detail": "chunk 1 is missing",
                 "stream": [hex::encode(chunks[0].bytes()), hex::encode(chunks[2].bytes())]},
                {"name": "version-1 chunks under the agent's signed DEK (sealed by a KEK holder)", "expect": "tampered",
                 "detail": "unsigned (version 1) chunks under DEK", "stream": hexes(&unsigned)},
            ],
        });
        v["about"] = "sealstream format test vectors (versions 1 and 2; the signed section is version 2); see docs/format.md".into();
        let text = serde_json::to_string_pretty(&v).unwrap();
        std::fs::write(dir().join("vectors.json"), text + "\n").unwrap();
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
