//! Writes `tests/vectors/vectors.json` from `tests/vectors/kek.pem`: a fixed DEK wrapped under
//! the KEK, plaintext frames and keystroke batches with their sealed bytes, and negative
//! vectors. Sealing is deterministic given the DEK, so only the RSA-OAEP wrap (randomised)
//! changes when this is run again. Run: `cargo run --example make_vectors`.

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
        "about": "sealstream format v1 test vectors; see docs/format.md",
        "kek_private": "kek.pem",
        "kek_public": "kek.crt",
        "passphrase_file": "passphrase.txt",
        "kek_id": public.kek_id.to_string(),
        "dek": hex::encode(DEK),
        "dek_id": hex::encode(DEK_ID),
        "dek_record": hex::encode(record.encode()),
        "chunks": positive,
        "negative": negative,
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
