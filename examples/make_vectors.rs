//! Writes `tests/vectors/vectors.json` from `tests/vectors/kek.pem`: a fixed DEK wrapped under
//! the KEK, plaintext frames and keystroke batches with their sealed bytes, and negative
//! vectors. Sealing is deterministic given the DEK, so only the RSA-OAEP wrap (randomised)
//! changes when this is run again; the `signed` and `readers` sections (format version 2) get
//! new keys each run. Run: `cargo run --example make_vectors`.

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
        "readers": readers::section(&public),
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

/// Whole stores and the verdicts every reader gives them (issue 22): each case is a set of
/// objects (key and bytes), read with and without the section's agent CA pinned, and what
/// `verify`, `export` (and so `tools/reference_decrypt.py` and the console) must say of it:
/// the store's outcome and exit codes, and each stream's verdict, proof and files. The
/// expectations are written here by hand, from docs/format.md, not taken from a reader.
mod readers {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use bytes::Bytes;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use sealstream::crypto::sign::{self, AgentSigner};
    use sealstream::crypto::{Checkpoints, Dek, StreamSealer};
    use sealstream::keys;
    use sealstream::protocol::dek_record::DekSignature;
    use sealstream::protocol::payload::Frame;
    use sealstream::protocol::{
        AgentId, ChunkHeader, DekId, DekRecord, Kind, SealedChunk, Segment, SessionId, StreamId,
    };
    use sealstream::storage::paths;
    use serde_json::{Value, json};

    const AGENT: &str = "vector-agent";
    /// 2026-11-27T10:00:00Z: records are made then, chunks captured from then on.
    const T0: i64 = 1_795_773_600_000_000;
    const SECOND: i64 = 1_000_000;

    /// The section's agent CA and one agent key, with certificates of that key in the shapes
    /// the cases need.
    struct Pki {
        ca_pem: String,
        issuer: Issuer<'static, KeyPair>,
        agent_key: KeyPair,
        signer: Arc<AgentSigner>,
    }

    impl Pki {
        fn new() -> Self {
            let ca_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "vector readers agent CA");
            ca.distinguished_name = dn;
            ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
            ca.not_after = rcgen::date_time_ymd(2124, 1, 1);
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let ca_pem = ca_cert.pem();
            let issuer = Issuer::from_ca_cert_der(ca_cert.der(), ca_key).unwrap();
            let agent_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let mut pki = Pki {
                ca_pem,
                issuer,
                agent_key,
                signer: Arc::new(dummy_signer()),
            };
            let plain = pki.cert(|_| {});
            let cert = CertificateDer::from(plain);
            let key =
                PrivateKeyDer::from_pem_slice(pki.agent_key.serialize_pem().as_bytes()).unwrap();
            pki.signer = Arc::new(AgentSigner::new(&cert, &key).unwrap());
            pki
        }

        /// A certificate of the agent key for `AGENT`, issued by the CA: clientAuth, valid
        /// 2024 to 2124, unless `shape` changes it.
        fn cert(&self, shape: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, AGENT);
            p.distinguished_name = dn;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.not_before = rcgen::date_time_ymd(2024, 1, 1);
            p.not_after = rcgen::date_time_ymd(2124, 1, 1);
            shape(&mut p);
            p.signed_by(&self.agent_key, &self.issuer)
                .unwrap()
                .der()
                .to_vec()
        }
    }

    /// A throwaway signer, replaced as soon as the agent's certificate exists.
    fn dummy_signer() -> AgentSigner {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        AgentSigner::new(
            cert.der(),
            &PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// One case's recording: its DEK, record and session.
    struct Rec {
        n: u8,
        dek: Dek,
        record: DekRecord,
        session: SessionId,
    }

    impl Rec {
        /// A version-1 record (nothing signed) for case `n`, made at `created_us`.
        fn unsigned(kek: &keys::PublicKeyFile, n: u8, created_us: i64) -> Self {
            let id: [u8; 16] = format!("reader-dek-{n:05}")
                .into_bytes()
                .try_into()
                .unwrap();
            let dek = Dek::from_bytes(DekId(id), [n; 32]);
            let record = dek.wrap(
                &kek.key,
                kek.kek_id,
                AgentId::new(AGENT).unwrap(),
                SessionId([0xa5; 16]),
                created_us,
            );
            let mut s = [
                0x22, 0x22, 0x22, 0x22, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0,
            ];
            s[15] = n;
            Rec {
                n,
                dek,
                record,
                session: SessionId(s),
            }
        }

        /// A version-2 record carrying `cert` (a certificate of the agent key), signed by the
        /// agent key over exactly what format.md says.
        fn signed(
            kek: &keys::PublicKeyFile,
            n: u8,
            created_us: i64,
            pki: &Pki,
            cert: Vec<u8>,
        ) -> Self {
            let mut r = Self::unsigned(kek, n, created_us);
            let message = [sign::DEK_CONTEXT, &r.record.signed_bytes(&cert)].concat();
            let (scheme, signature) = pki.signer.sign(&message).unwrap();
            r.record.signed = Some(DekSignature {
                cert,
                scheme,
                signature,
            });
            r
        }

        fn sealer(&self, kind: Kind, pki: Option<&Pki>) -> StreamSealer {
            let s = StreamSealer::new(
                &self.dek,
                AgentId::new(AGENT).unwrap(),
                self.session,
                StreamId(u32::from(kind == Kind::Keystrokes)),
                kind,
            );
            match pki {
                Some(p) => s.signed_by(
                    p.signer.clone(),
                    Checkpoints {
                        every_chunks: 2,
                        every: std::time::Duration::from_secs(1 << 30),
                    },
                ),
                None => s,
            }
        }

        fn session(&self) -> String {
            self.session.to_string()
        }

        /// The store: the record under its key and the chunks in one segment.
        fn objects(&self, chunks: &[SealedChunk]) -> BTreeMap<String, Vec<u8>> {
            let mut out = BTreeMap::new();
            out.insert(self.record_key(), self.record.encode());
            let (key, bytes) = self.segment(chunks);
            out.insert(key, bytes);
            out
        }

        fn record_key(&self) -> String {
            paths::dek_record(&self.record.agent, self.record.dek_id).to_string()
        }

        fn segment(&self, chunks: &[SealedChunk]) -> (String, Vec<u8>) {
            let created = T0 + i64::from(self.n);
            let mut id = [self.n; 16];
            id[..8].copy_from_slice(&created.to_be_bytes());
            let (bytes, _) = Segment::encode(id, created, chunks);
            (paths::segment(created, &id).to_string(), bytes.to_vec())
        }
    }

    fn frame(i: u64) -> Vec<u8> {
        Frame {
            name: &format!("screen-{i:03}.png"),
            image: format!("frame {i}").as_bytes(),
        }
        .encode()
    }

    /// `n` frames captured a second apart and, if `end`, an empty final chunk.
    fn frames(s: &mut StreamSealer, n: u64, end: bool) -> Vec<SealedChunk> {
        let mut out: Vec<SealedChunk> = (0..n)
            .map(|i| s.seal(&frame(i), T0 + i as i64 * SECOND, false).unwrap())
            .collect();
        if end {
            out.push(s.seal(&[], T0 + n as i64 * SECOND, true).unwrap());
        }
        out
    }

    /// A version-2 chunk sealed from the DEK alone (a KEK holder's): no checkpoint, as only
    /// the agent's key could sign one. Sealed by hand, from format.md's "Stream key" and
    /// "Nonce".
    fn sealed_by_kek_holder(
        rec: &Rec,
        kind: Kind,
        seq: u64,
        last: bool,
        plain: &[u8],
    ) -> SealedChunk {
        use hkdf::Hkdf;
        let agent = AgentId::new(AGENT).unwrap();
        let stream = StreamId(u32::from(kind == Kind::Keystrokes));
        let mut info = b"sealstream/1 stream".to_vec();
        info.extend_from_slice(&rec.session.0);
        info.extend_from_slice(&stream.0.to_be_bytes());
        info.push(kind.code());
        info.extend_from_slice(&(AGENT.len() as u16).to_be_bytes());
        info.extend_from_slice(AGENT.as_bytes());
        let hk = Hkdf::<sha2::Sha256>::new(Some(&rec.dek.id().0), rec.dek.dangerous_bytes());
        let mut key = [0u8; 32];
        hk.expand(&info, &mut key).unwrap();
        let header = ChunkHeader {
            version: 2,
            checkpoint: false,
            kind,
            last,
            gap: false,
            dek_id: rec.dek.id(),
            session: rec.session,
            stream,
            seq,
            capture_time_us: T0 + seq as i64 * SECOND,
            agent,
        };
        let aad = header.encode(plain.len() + 16);
        let mut nonce = [0u8; 12];
        nonce[3..11].copy_from_slice(&seq.to_be_bytes());
        nonce[11] = u8::from(last);
        let ct = aes_gcm::Aes256Gcm::new_from_slice(&key)
            .unwrap()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap();
        SealedChunk::decode(Bytes::from([aad, ct].concat())).unwrap()
    }

    /// What one reader mode (with or without the CA) says of one stream.
    struct Says {
        verdict: &'static str,
        export_verdict: &'static str,
        proof: &'static str,
        /// Files export writes, relative to its output directory.
        files: Vec<String>,
        detail: Option<&'static str>,
    }

    fn says(verdict: &'static str, export_verdict: &'static str, proof: &'static str) -> Says {
        Says {
            verdict,
            export_verdict,
            proof,
            files: Vec::new(),
            detail: None,
        }
    }

    impl Says {
        /// Files of a stream whose verdict is ok go under `<agent>/<session>/`; any other
        /// stream's under `@quarantine/<agent>/<session>/`.
        fn files(mut self, rec: &Rec, names: &[&str]) -> Self {
            let base = if self.export_verdict == "ok" {
                format!("{AGENT}/{}", rec.session())
            } else {
                format!("@quarantine/{AGENT}/{}", rec.session())
            };
            self.files = names.iter().map(|n| format!("{base}/{n}")).collect();
            self
        }

        fn detail(mut self, d: &'static str) -> Self {
            self.detail = Some(d);
            self
        }

        fn json(&self) -> Value {
            let mut v = json!({
                "verdict": self.verdict,
                "export_verdict": self.export_verdict,
                "proof": self.proof,
                "files": self.files,
            });
            if let Some(d) = self.detail {
                v["detail"] = json!(d);
            }
            v
        }
    }

    /// The store's outcome and exit codes in one mode.
    fn store(
        outcome: &str,
        exit: u8,
        allow: u8,
        export_outcome: &str,
        export_exit: u8,
        export_allow: u8,
    ) -> Value {
        json!({
            "verify": {"outcome": outcome, "exit": exit, "exit_allow_incomplete": allow},
            "export": {"outcome": export_outcome, "exit": export_exit, "exit_allow_incomplete": export_allow},
        })
    }

    struct Case {
        name: &'static str,
        point: u8,
        about: &'static str,
        objects: BTreeMap<String, Vec<u8>>,
        /// For the console, which is served one stream's record and chunks: a stream-level case.
        console: Option<(Vec<u8>, Vec<SealedChunk>)>,
        without_ca: Value,
        with_ca: Value,
        /// (session, stream id, kind, chunks, first and last capture, without CA, with CA,
        /// malformed chunks)
        streams: Vec<StreamSays>,
    }

    struct StreamSays {
        session: String,
        stream: u32,
        kind: &'static str,
        chunks: u64,
        capture: (i64, i64),
        without_ca: Says,
        with_ca: Says,
        malformed_chunks: Vec<u64>,
    }

    impl Case {
        fn json(&self) -> Value {
            let objects: BTreeMap<&String, String> = self
                .objects
                .iter()
                .map(|(k, v)| (k, hex::encode(v)))
                .collect();
            let streams: Vec<Value> = self
                .streams
                .iter()
                .map(|s| {
                    json!({
                        "agent": AGENT,
                        "session": s.session,
                        "stream": s.stream,
                        "kind": s.kind,
                        "chunks": s.chunks,
                        "first_capture_us": s.capture.0,
                        "last_capture_us": s.capture.1,
                        "malformed_chunks": s.malformed_chunks,
                        "without_ca": s.without_ca.json(),
                        "with_ca": s.with_ca.json(),
                    })
                })
                .collect();
            let mut v = json!({
                "name": self.name,
                "point": self.point,
                "about": self.about,
                "objects": objects,
                "without_ca": self.without_ca,
                "with_ca": self.with_ca,
                "streams": streams,
            });
            if let Some((record, chunks)) = &self.console {
                v["dek_record"] = json!(hex::encode(record));
                v["stream"] = json!(
                    chunks
                        .iter()
                        .map(|c| hex::encode(c.bytes()))
                        .collect::<Vec<_>>()
                );
            }
            v
        }
    }

    fn ok_store() -> Value {
        store("ok", 0, 0, "ok", 0, 0)
    }

    fn stream(
        rec: &Rec,
        kind: Kind,
        chunks: &[SealedChunk],
        without_ca: Says,
        with_ca: Says,
    ) -> StreamSays {
        let times = chunks.iter().map(|c| c.header.capture_time_us);
        StreamSays {
            session: rec.session(),
            stream: u32::from(kind == Kind::Keystrokes),
            kind: kind.name(),
            chunks: chunks.len() as u64,
            capture: (times.clone().min().unwrap(), times.max().unwrap()),
            without_ca,
            with_ca,
            malformed_chunks: Vec::new(),
        }
    }

    pub fn section(kek: &keys::PublicKeyFile) -> Value {
        let pki = Pki::new();
        let plain_cert = || pki.cert(|_| {});
        let mut cases = Vec::new();
        let two_frames = ["frames/screen-000.png", "frames/screen-001.png"];

        // 1. Staging files: `#` anywhere in a key.
        {
            let rec = Rec::signed(kek, 1, T0, &pki, plain_cert());
            let chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 2, true);
            let mut objects = rec.objects(&chunks);
            let (seg_key, seg) = rec.segment(&chunks);
            let day = seg_key.rsplit_once('/').unwrap().0.to_owned();
            objects.insert(format!("{seg_key}#partial"), seg[..100].to_vec());
            objects.insert(format!("{day}/x#y.seg"), seg.clone());
            objects.insert(
                format!("{}#tmp", rec.record_key()),
                b"half a record".to_vec(),
            );
            objects.insert(
                format!(
                    "v1/deks/{}#tmp/{}.dek",
                    hex::encode(AGENT),
                    rec.record.dek_id
                ),
                rec.record.encode(),
            );
            let ok = || says("ok", "ok", "signed").files(&rec, &two_frames);
            cases.push(Case {
                name: "staging files (a name with #) are not objects",
                point: 1,
                about: "an interrupted write `<key>#partial`, `x#y.seg`, a record's `.dek#tmp` and a folder with `#`: every reader skips them",
                objects,
                console: None,
                without_ca: ok_store(),
                with_ca: ok_store(),
                streams: vec![stream(&rec, Kind::Frame, &chunks, ok(), ok())],
            });
        }

        // 2. DEK records: names checked from the listing, records read when a chunk names them.
        {
            let rec = Rec::signed(kek, 2, T0, &pki, plain_cert());
            let chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 2, true);
            let mut objects = rec.objects(&chunks);
            let bytes = objects.remove(&rec.record_key()).unwrap();
            objects.insert(
                format!("v1/deks/{}/{}.dek", hex::encode(AGENT), "0f".repeat(16)),
                bytes,
            );
            let s = || says("no_dek_record", "no_dek_record", "invalid");
            cases.push(Case {
                name: "a DEK record moved to another record's name",
                point: 2,
                about: "the chunks' record is not at its key (the object at the other name is not read: no chunk names it)",
                objects,
                console: None,
                without_ca: store("no_dek_record", 6, 6, "no_dek_record", 6, 6),
                with_ca: store("no_dek_record", 6, 6, "no_dek_record", 6, 6),
                streams: vec![stream(&rec, Kind::Frame, &chunks, s(), s())],
            });
        }
        {
            let rec = Rec::signed(kek, 3, T0, &pki, plain_cert());
            let chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 2, true);
            let mut objects = rec.objects(&chunks);
            objects.insert(
                format!("v1/deks/{}/garbage.dek", hex::encode(AGENT)),
                b"not a DEK record".to_vec(),
            );
            let ok = || says("ok", "ok", "signed").files(&rec, &two_frames);
            let damaged = store("tampered", 3, 3, "tampered", 3, 3);
            cases.push(Case {
                name: "an object under v1/deks/ whose key is not a DEK record's",
                point: 2,
                about: "`v1/deks/<agent hex>/garbage.dek`: damaged from its name alone (not read), by verify and export alike",
                objects,
                console: None,
                without_ca: damaged.clone(),
                with_ca: damaged,
                streams: vec![stream(&rec, Kind::Frame, &chunks, ok(), ok())],
            });
        }
        {
            let rec = Rec::signed(kek, 4, T0, &pki, plain_cert());
            let chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 2, true);
            let mut objects = rec.objects(&chunks);
            objects.insert(
                format!("v1/deks/{}/{}.dek", hex::encode(AGENT), "1e".repeat(16)),
                b"not a DEK record".to_vec(),
            );
            let ok = || says("ok", "ok", "signed").files(&rec, &two_frames);
            cases.push(Case {
                name: "garbage under a DEK record's name that no chunk names",
                point: 2,
                about: "a well-formed key no chunk names is not read, by verify and export alike",
                objects,
                console: None,
                without_ca: ok_store(),
                with_ca: ok_store(),
                streams: vec![stream(&rec, Kind::Frame, &chunks, ok(), ok())],
            });
        }
        {
            let rec = Rec::signed(kek, 5, T0, &pki, plain_cert());
            let chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 2, true);
            let mut objects = rec.objects(&chunks);
            objects.insert(rec.record_key(), b"not a DEK record".to_vec());
            let s = || says("no_dek_record", "no_dek_record", "invalid");
            let damaged = store("tampered", 3, 3, "tampered", 3, 3);
            cases.push(Case {
                name: "garbage under the name the chunks' record has",
                point: 2,
                about: "read (the chunks name it), damaged: the store is tampered and the stream has no DEK record",
                objects,
                console: None,
                without_ca: damaged.clone(),
                with_ca: damaged,
                streams: vec![stream(&rec, Kind::Frame, &chunks, s(), s())],
            });
        }

        // 3. A complete version-2 stream with an unproven tail: 0 without a pinned CA.
        {
            let rec = Rec::signed(kek, 6, T0, &pki, plain_cert());
            let mut chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 2, false);
            assert!(chunks[1].header.checkpoint);
            chunks.push(sealed_by_kek_holder(&rec, Kind::Frame, 2, true, &[]));
            cases.push(Case {
                name: "a complete signed stream whose final chunk no checkpoint proves",
                point: 3,
                about: "nothing pinned, nothing to prove against: exit 0 like version 1; with the CA pinned, unproven (exit 7, --allow-incomplete 0)",
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: ok_store(),
                with_ca: store("unproven", 7, 0, "unproven", 7, 0),
                streams: vec![stream(
                    &rec,
                    Kind::Frame,
                    &chunks,
                    says("ok", "ok", "signed").files(&rec, &two_frames),
                    says("unproven", "unproven", "signed").files(&rec, &two_frames),
                )],
            });
        }

        // 4. --allow-incomplete never waives an unsigned stream when a CA is pinned.
        {
            let rec = Rec::unsigned(kek, 7, T0);
            let chunks = frames(&mut rec.sealer(Kind::Frame, None), 2, true);
            cases.push(Case {
                name: "an unsigned recording in the agent's name (sealed from the public KEK alone)",
                point: 4,
                about: "with the CA pinned: unsigned, exit 7 even with --allow-incomplete; without: ok",
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: ok_store(),
                with_ca: store("unsigned", 7, 7, "unsigned", 7, 7),
                streams: vec![stream(
                    &rec,
                    Kind::Frame,
                    &chunks,
                    says("ok", "ok", "unsigned").files(&rec, &two_frames),
                    says("unsigned", "unsigned", "unsigned").files(&rec, &two_frames),
                )],
            });
        }
        {
            let rec = Rec::signed(kek, 8, T0, &pki, plain_cert());
            let chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 3, false);
            let names = [
                "frames/screen-000.png",
                "frames/screen-001.png",
                "frames/screen-002.png",
            ];
            let s = || says("incomplete", "incomplete", "signed").files(&rec, &names);
            let cut = store("incomplete", 7, 0, "incomplete", 7, 0);
            cases.push(Case {
                name: "a signed stream cut after its checkpoint",
                point: 4,
                about: "--allow-incomplete waives a missing final chunk and an unproven tail of a signed stream",
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: cut.clone(),
                with_ca: cut,
                streams: vec![stream(&rec, Kind::Frame, &chunks, s(), s())],
            });
        }

        // 5. Plaintext of a stream that is not ok goes to the quarantine.
        {
            let rec = Rec::signed(kek, 9, T0, &pki, plain_cert());
            let mut chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 4, true);
            chunks.remove(2);
            let names = [
                "frames/screen-000.png",
                "frames/screen-001.png",
                "frames/screen-003.png",
            ];
            let s = || {
                says("tampered", "tampered", "invalid")
                    .files(&rec, &names)
                    .detail("chunk 2 is missing")
            };
            let t = store("tampered", 3, 3, "tampered", 3, 3);
            cases.push(Case {
                name: "a tampered stream's authentic chunks",
                point: 5,
                about: "chunk 2 removed: the frames that open are written under @quarantine/, never beside ok files",
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: t.clone(),
                with_ca: t,
                streams: vec![stream(&rec, Kind::Frame, &chunks, s(), s())],
            });
        }

        // 6. Keystroke lines: RFC 8259 objects, nesting depth at most 128, any escape, any number.
        {
            let rec = Rec::signed(kek, 10, T0, &pki, plain_cert());
            let mut s = rec.sealer(Kind::Keystrokes, Some(&pki));
            let deep = format!("{{\"a\":{}{}}}", "[".repeat(127), "]".repeat(127));
            let big = "9".repeat(400);
            let lines = [
                deep,
                r#"{"lone":"\ud800","pair":"\ud83d\ude00"}"#.to_owned(),
                r#"{"n":1e400,"m":-0.0e-99999}"#.to_owned(),
                format!("{{\"big\":{big},\"frac\":0.{big}}}"),
                r#"{"d":1,"d":2}"#.to_owned(),
                r#"{"s":"\u0000\"\\\/\b\f\n\r\t","":[]}"#.to_owned(),
                "\t {\"ws\":[ true , false , null ]} \r".to_owned(),
            ];
            let batch: Vec<u8> = lines
                .iter()
                .flat_map(|l| [l.as_bytes(), b"\n"].concat())
                .collect();
            let chunks = vec![s.seal(&batch, T0, true).unwrap()];
            let ok = || says("ok", "ok", "signed").files(&rec, &["keystrokes.jsonl"]);
            cases.push(Case {
                name: "keystroke lines at the limits are accepted",
                point: 6,
                about: "128 levels of nesting, a lone surrogate escape, 1e400, a 400-digit integer, a repeated name, whitespace around the object",
                objects: rec.objects(&chunks),
                console: None,
                without_ca: ok_store(),
                with_ca: ok_store(),
                streams: vec![stream(&rec, Kind::Keystrokes, &chunks, ok(), ok())],
            });
        }
        {
            let rec = Rec::signed(kek, 11, T0, &pki, plain_cert());
            let mut s = rec.sealer(Kind::Keystrokes, Some(&pki));
            let bad: Vec<Vec<u8>> = vec![
                format!("{{\"a\":{}{}}}", "[".repeat(128), "]".repeat(128)).into_bytes(),
                br#"{"n":NaN}"#.to_vec(),
                b"\xef\xbb\xbf{\"bom\":1}".to_vec(),
                b"[1]".to_vec(),
                b"{\"s\":\"\xed\xa0\x80\"}".to_vec(),
                br#"{"a":1,}"#.to_vec(),
                b"{\"t\":\"\t\"}".to_vec(),
                br#"{"n":01}"#.to_vec(),
                b"".to_vec(),
            ];
            let mut chunks: Vec<SealedChunk> = bad
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    s.seal(&[l.as_slice(), b"\n"].concat(), T0 + i as i64, false)
                        .unwrap()
                })
                .collect();
            let n = chunks.len() as i64;
            chunks.push(s.seal(b"{\"good\":1}\n", T0 + n, false).unwrap());
            chunks.push(s.seal(&[], T0 + n + 1, true).unwrap());
            let without = says("ok", "malformed", "signed").files(&rec, &["keystrokes.jsonl"]);
            let with = says("ok", "malformed", "signed").files(&rec, &["keystrokes.jsonl"]);
            let mut st = stream(&rec, Kind::Keystrokes, &chunks, without, with);
            st.malformed_chunks = (0..bad.len() as u64).collect();
            let m = store("ok", 0, 0, "malformed", 5, 5);
            cases.push(Case {
                name: "keystroke lines that are not what format.md allows",
                point: 6,
                about: "129 levels, NaN, a byte order mark, an array, a surrogate encoded in UTF-8, a trailing comma, a raw tab in a string, a leading zero, an empty line: each chunk malformed; the good line goes to the quarantine",
                objects: rec.objects(&chunks),
                console: None,
                without_ca: m.clone(),
                with_ca: m,
                streams: vec![st],
            });
        }

        // 7. Agent certificates.
        let cert_case = |n: u8,
                         name: &'static str,
                         about: &'static str,
                         created: i64,
                         cert: Vec<u8>,
                         refused: Option<&'static str>,
                         unpinned_refused: bool| {
            let rec = Rec::signed(kek, n, created, &pki, cert);
            let chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 2, true);
            let good = || says("ok", "ok", "signed").files(&rec, &two_frames);
            let bad = |d| {
                says("tampered", "tampered", "invalid")
                    .files(&rec, &two_frames)
                    .detail(d)
            };
            let t = store("tampered", 3, 3, "tampered", 3, 3);
            let (with_ca, with_store) = match refused {
                Some(d) => (bad(d), t.clone()),
                None => (good(), ok_store()),
            };
            let (without_ca, without_store) = match (refused, unpinned_refused) {
                (Some(d), true) => (bad(d), t),
                _ => (good(), ok_store()),
            };
            Case {
                name,
                point: 7,
                about,
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: without_store,
                with_ca: with_store,
                streams: vec![stream(&rec, Kind::Frame, &chunks, without_ca, with_ca)],
            }
        };
        let critical = pki.cert(|p| {
            let mut e =
                CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 22], vec![0x05, 0x00]);
            e.set_criticality(true);
            p.custom_extensions.push(e);
        });
        cases.push(cert_case(
            12,
            "an agent certificate with an unknown critical extension",
            "refused as a certificate, with or without a pinned CA (the record's signature cannot be checked with it)",
            T0,
            critical,
            Some("UnsupportedCriticalExtension"),
            true,
        ));
        cases.push(cert_case(
            13,
            "an agent certificate with CA:TRUE",
            "a CA certificate is not an agent certificate (checked against the pinned CA)",
            T0,
            pki.cert(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
            Some("CaUsedAsEndEntity"),
            false,
        ));
        let expiring = || {
            pki.cert(|p| {
                p.not_after = time::OffsetDateTime::from_unix_timestamp(T0 / SECOND).unwrap();
            })
        };
        cases.push(cert_case(
            14,
            "a DEK record made half a second after its certificate's notAfter",
            "created_us is compared in microseconds with notAfter (whole seconds): T0 + 0.5 s > T0",
            T0 + SECOND / 2,
            expiring(),
            Some("CertExpired"),
            false,
        ));
        cases.push(cert_case(
            15,
            "a DEK record made at its certificate's notAfter exactly",
            "notAfter is inclusive: created_us = notAfter × 10^6 is valid",
            T0,
            expiring(),
            None,
            false,
        ));
        cases.push(cert_case(
            16,
            "an agent certificate without an extended key usage extension",
            "no extended key usage: any usage, client authentication included",
            T0,
            pki.cert(|p| p.extended_key_usages.clear()),
            None,
            false,
        ));
        cases.push(cert_case(
            17,
            "an agent certificate for server authentication only",
            "an extended key usage without clientAuth is refused",
            T0,
            pki.cert(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
            Some("RequiredEkuNotFound"),
            false,
        ));

        // 8. Report fields.
        {
            let rec = Rec::signed(kek, 18, T0, &pki, plain_cert());
            let mut chunks = frames(&mut rec.sealer(Kind::Frame, Some(&pki)), 4, true);
            assert!(chunks[1].header.checkpoint && chunks[3].header.checkpoint);
            let mut b = chunks[1].bytes().to_vec();
            let last = b.len() - 1;
            b[last] ^= 0x01; // the signature's last byte: the chain (over cores) is intact
            chunks[1] = SealedChunk::decode(Bytes::from(b)).unwrap();
            let names = [
                "frames/screen-000.png",
                "frames/screen-001.png",
                "frames/screen-002.png",
                "frames/screen-003.png",
            ];
            let s = || {
                says("tampered", "tampered", "invalid")
                    .files(&rec, &names)
                    .detail("checkpoint at chunk 1: the signature does not verify")
            };
            let t = store("tampered", 3, 3, "tampered", 3, 3);
            cases.push(Case {
                name: "a checkpoint whose signature does not verify, before valid ones",
                point: 8,
                about: "the proof is invalid (not \"signed, 0 unproven\") when any checkpoint's signature fails",
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: t.clone(),
                with_ca: t,
                streams: vec![stream(&rec, Kind::Frame, &chunks, s(), s())],
            });
        }
        {
            let rec = Rec::signed(kek, 19, T0, &pki, plain_cert());
            let mut s = rec.sealer(Kind::Frame, Some(&pki));
            let chunks = vec![
                s.seal(&frame(0), T0 + 5 * SECOND, false).unwrap(),
                s.seal(&frame(1), T0 + SECOND, false).unwrap(),
                s.seal(&[], T0 + 3 * SECOND, true).unwrap(),
            ];
            let ok = || says("ok", "ok", "signed").files(&rec, &two_frames);
            let st = stream(&rec, Kind::Frame, &chunks, ok(), ok());
            assert_eq!(st.capture, (T0 + SECOND, T0 + 5 * SECOND));
            cases.push(Case {
                name: "capture times out of sequence order",
                point: 8,
                about: "first_capture_us and last_capture_us are the earliest and latest capture time of the chunks present",
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: ok_store(),
                with_ca: ok_store(),
                streams: vec![st],
            });
        }
        {
            let rec = Rec::signed(kek, 20, T0, &pki, plain_cert());
            let mut s = rec.sealer(Kind::Keystrokes, Some(&pki));
            let chunks = vec![s.seal(&[], T0, true).unwrap()];
            let ok = || says("ok", "ok", "signed");
            cases.push(Case {
                name: "a keystroke stream without events",
                point: 8,
                about: "a stream with no event (or frame) writes no file: `files` is empty",
                objects: rec.objects(&chunks),
                console: Some((rec.record.encode(), chunks.clone())),
                without_ca: ok_store(),
                with_ca: ok_store(),
                streams: vec![stream(&rec, Kind::Keystrokes, &chunks, ok(), ok())],
            });
        }

        json!({
            "about": "issue 22: whole stores (objects by key, bytes in hex; a key may hold `#`) and what every reader says of them, with the section's agent CA pinned (with_ca) and without (without_ca): the store's outcome and exit codes from verify and export (with and without --allow-incomplete), and each stream's verdict, export verdict, proof and the files export writes (relative to its output directory). Export decrypts with tests/vectors/kek.pem. Cases with dek_record and stream are single streams the console's proof checks too.",
            "agent": AGENT,
            "agent_ca": pki.ca_pem,
            "cases": cases.iter().map(Case::json).collect::<Vec<_>>(),
        })
    }
}
