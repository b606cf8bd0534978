//! Writes `tests/vectors/vectors.json` from `tests/vectors/kek.pem`: a fixed DEK wrapped under
//! the KEK, plaintext frames and keystroke batches with their sealed bytes, and negative
//! vectors. Sealing is deterministic given the DEK, so only the RSA-OAEP wrap (randomised)
//! changes when this is run again; the `signed` section (format version 2) gets new keys each
//! run. Run: `cargo run --example make_vectors`.

use std::path::Path;

use sealstream::crypto::{Dek, StreamSealer};
use sealstream::keys::{self, Passphrase};
use sealstream::protocol::payload::Frame;
use sealstream::protocol::{AgentId, DekId, Kind, SealedChunk, SessionId, StreamId};
use serde_json::{Value, json};

const DEK: [u8; 32] = *b"sealstream test vector DEK bytes";
const DEK_ID: [u8; 16] = *b"vector-dek-id-01";
const SESSION: [u8; 16] = [
    0x5e, 0x55, 0x10, 0x00, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 1,
];
const OTHER_SESSION: [u8; 16] = [
    0x5e, 0x55, 0x10, 0x00, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 2,
];
const T0: i64 = 1_795_773_600_000_000;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let pass = std::fs::read_to_string(dir.join("passphrase.txt")).unwrap();
    let private = keys::load_private_key(&dir.join("kek.pem"), || {
        Ok(Passphrase::new(
            pass.trim_end_matches('\n').as_bytes().to_vec(),
        ))
    })
    .unwrap();
    let public = keys::load_public_key(&dir.join("kek.crt")).unwrap();
    let agent = AgentId::new("vector-agent").unwrap();
    let dek = Dek::from_bytes(DekId(DEK_ID), DEK);
    let record = dek.wrap(
        &public.key,
        public.kek_id,
        agent.clone(),
        SessionId([0xa5; 16]),
        T0,
    );
    assert_eq!(private.kek_id, public.kek_id);

    let session = SessionId(SESSION);
    let frames: Vec<Vec<u8>> = vec![
        Frame {
            name: "frame-0.png",
            image: b"\x89PNG\r\n\x1a\nnot really an image 0",
        }
        .encode(),
        Frame {
            name: "frame-1.png",
            image: b"\x89PNG\r\n\x1a\nnot really an image 1",
        }
        .encode(),
        Frame {
            name: "frame-2.png",
            image: b"\x89PNG\r\n\x1a\nnot really an image 2",
        }
        .encode(),
    ];
    let batches: Vec<Vec<u8>> = vec![
        b"{\"ts\":1,\"key\":\"h\"}\n{\"ts\":2,\"key\":\"i\",\"mods\":[]}\n".to_vec(),
        b"{\"ts\":3,\"key\":\"Enter\",\"window\":\"cmd.exe\"}\n".to_vec(),
    ];
    let mut chunks: Vec<(SealedChunk, Vec<u8>)> = Vec::new();
    let mut fs = StreamSealer::new(&dek, agent.clone(), session, StreamId(0), Kind::Frame);
    for (i, p) in frames.iter().enumerate() {
        chunks.push((
            fs.seal(p, T0 + i as i64 * 1_000_000, i == frames.len() - 1)
                .unwrap(),
            p.clone(),
        ));
    }
    let mut ks = StreamSealer::new(&dek, agent.clone(), session, StreamId(1), Kind::Keystrokes);
    for (i, p) in batches.iter().enumerate() {
        chunks.push((
            ks.seal(p, T0 + i as i64 * 2_000_000, i == batches.len() - 1)
                .unwrap(),
            p.clone(),
        ));
    }
    // A chunk from another session with the same sequence number (1), to splice.
    let mut other = StreamSealer::new(
        &dek,
        agent.clone(),
        SessionId(OTHER_SESSION),
        StreamId(0),
        Kind::Frame,
    );
    other.seal(&frames[0], T0, false).unwrap();
    let foreign = other.seal(&frames[1], T0, false).unwrap();

    let positive: Vec<Value> = chunks
        .iter()
        .map(|(c, p)| {
            json!({
                "agent": c.header.agent.as_str(),
                "session": c.header.session.to_string(),
                "stream": c.header.stream.0,
                "kind": c.header.kind.name(),
                "seq": c.header.seq,
                "final": c.header.last,
                "capture_time_us": c.header.capture_time_us,
                "plaintext": hex::encode(p),
                "sealed": hex::encode(c.bytes()),
            })
        })
        .collect();

    let f = |i: usize| chunks[i].0.bytes().to_vec();
    let mut flipped = f(1);
    let n = flipped.len();
    flipped[n - 1] ^= 0x01;
    // Swap the sequence numbers of frames 0 and 1 (bytes 44..52 of the header).
    let (mut s0, mut s1) = (f(0), f(1));
    let seq0: [u8; 8] = s0[44..52].try_into().unwrap();
    let seq1: [u8; 8] = s1[44..52].try_into().unwrap();
    s0[44..52].copy_from_slice(&seq1);
    s1[44..52].copy_from_slice(&seq0);
    // Splice: the other session's chunk relabelled as this session's frame 1.
    let mut spliced = foreign.bytes().to_vec();
    spliced[24..40].copy_from_slice(&SESSION);
    let negative = vec![
        json!({"name": "flipped-tag", "stream": [hex::encode(f(0)), hex::encode(&flipped), hex::encode(f(2))],
               "expect": "tampered", "detail": "chunk 1 of stream 0: authentication failed"}),
        json!({"name": "swapped-sequence-numbers", "stream": [hex::encode(&s1), hex::encode(&s0), hex::encode(f(2))],
               "expect": "tampered", "detail": "chunk 0 of stream 0: authentication failed"}),
        json!({"name": "spliced-from-another-stream", "stream": [hex::encode(f(0)), hex::encode(&spliced), hex::encode(f(2))],
               "expect": "tampered", "detail": "chunk 1 of stream 0: authentication failed"}),
        json!({"name": "cut-before-final-chunk", "stream": [hex::encode(f(0)), hex::encode(f(1))],
               "expect": "incomplete", "detail": ""}),
        json!({"name": "final-flag-removed", "stream": [hex::encode(f(0)), hex::encode(f(1)), hex::encode(clear_final(&f(2)))],
               "expect": "tampered", "detail": "chunk 2 of stream 0: authentication failed"}),
    ];
    let doc = json!({
        "about": "sealstream format test vectors (versions 1 and 2; the signed section is version 2); see docs/format.md",
        "kek_private": "kek.pem",
        "kek_public": "kek.crt",
        "passphrase_file": "passphrase.txt",
        "kek_id": public.kek_id.to_string(),
        "dek": hex::encode(DEK),
        "dek_id": hex::encode(DEK_ID),
        "dek_record": hex::encode(record.encode()),
        "chunks": positive,
        "negative": negative,
        "signed": signed::signed_section(&public),
    });
    let _ = SealedChunk::decode(chunks[0].0.bytes().clone()).unwrap();
    std::fs::write(
        dir.join("vectors.json"),
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
    println!("wrote {}", dir.join("vectors.json").display());
}

fn clear_final(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[7] &= !0x01;
    b
}

/// Format version 2's vectors (docs/format.md "Agent signatures").
mod signed {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use sealstream::crypto::sign::{self, AgentSigner};
    use sealstream::crypto::{Checkpoints, Dek, StreamKey, StreamSealer};
    use sealstream::keys;
    use sealstream::protocol::payload::Frame;
    use sealstream::protocol::{AgentId, Kind, SealedChunk, SessionId, StreamId};
    use serde_json::Value;

    const AGENT: &str = "vector-agent";

    fn signer(cert_pem: &str, key_pem: &str) -> Arc<AgentSigner> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        Arc::new(AgentSigner::new(&cert, &key).unwrap())
    }

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

    /// The `signed` section (format version 2): an Ed25519 agent CA and agent (Ed25519 signs
    /// deterministically), a signed DEK record under the vector KEK, a stream of three chunks
    /// with its chain heads and checkpoints, and negative vectors.
    pub fn signed_section(kek: &keys::PublicKeyFile) -> Value {
        let (ca, cert, key) = ed25519_ca_and_agent();
        let (rogue_ca, rogue_cert, rogue_key) = ed25519_ca_and_agent();
        let _ = rogue_ca;
        let agent = signer(&cert, &key);
        let rogue = signer(&rogue_cert, &rogue_key);
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
        serde_json::json!({
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
        })
    }
}
