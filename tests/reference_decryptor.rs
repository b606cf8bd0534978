//! docs/format.md is enough to decrypt a store: the independent Python decryptor in
//! tools/reference_decrypt.py (written from the spec alone) opens what `sealstream seal` wrote,
//! under a traditional-format openssl key, and gets the original bytes back.

mod common;

use std::path::Path;
use std::process::Command;

use assert_cmd::Command as Cmd;
use common::*;

#[test]
fn the_python_reference_decryptor_reads_our_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    genrsa(d, "k.pem", 2048, &["-traditional", "-aes256"]);
    pubout(d, "k.pem", "k.crt", true);
    pass_file(d);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    Cmd::cargo_bin("sealstream")
        .unwrap()
        .current_dir(d)
        .args([
            "seal",
            "--kek",
            "k.crt",
            "--store",
            "store",
            "--agent-id",
            "ref",
        ])
        .arg(&samples)
        .assert()
        .success();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_decrypt.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["store", "k.pem", "pass.txt", "out"])
        .current_dir(d)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "reference decryptor failed (needs `pip install cryptography`): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("complete").count(), 2, "{stdout}");
    let session = std::fs::read_dir(d.join("out"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(session.join("1/keystrokes.jsonl")).unwrap(),
        std::fs::read(samples.join("keystrokes.jsonl")).unwrap()
    );
    for (i, f) in ["screen-000.png", "screen-001.png", "screen-002.png"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            std::fs::read(session.join(format!("0/{i:08}-{f}"))).unwrap(),
            std::fs::read(samples.join(f)).unwrap()
        );
    }
}

/// Format version 2: the reference decryptor checks the published signed vectors (stored as a
/// real store) against their agent CA, decrypts them, and refuses each signed negative vector;
/// `sealstream verify` agrees with it on every one.
#[test]
fn the_python_reference_decryptor_checks_signatures_as_sealstream_does() {
    use bytes::Bytes;
    use sealstream::protocol::{DekRecord, SealedChunk};
    let vectors_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir.join("vectors.json")).unwrap()).unwrap();
    let s = &v["signed"];
    let unhex = |x: &serde_json::Value| hex::decode(x.as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), s["agent_ca"].as_str().unwrap()).unwrap();
    let write_store = |name: &str, record: &[u8], chunks: Vec<Vec<u8>>| {
        let store = sealstream::storage::open_local(&d.join(name)).unwrap();
        let record = DekRecord::decode(record).unwrap();
        let chunks: Vec<SealedChunk> = chunks
            .into_iter()
            .map(|c| SealedChunk::decode(Bytes::from(c)).unwrap())
            .collect();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(sealstream::recorder::store_recording(
                store.as_ref(),
                &record,
                &chunks,
            ))
            .unwrap();
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_decrypt.py");
    let python = |args: &[&str]| {
        Command::new("python3")
            .arg(&script)
            .args(args)
            .current_dir(d)
            .output()
            .expect("python3 is installed")
    };
    let ours = |store: &str| {
        Cmd::cargo_bin("sealstream")
            .unwrap()
            .current_dir(d)
            .args(["verify", "--store", store, "--agent-ca", "ca.pem"])
            .output()
            .unwrap()
    };
    let good: Vec<Vec<u8>> = s["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| unhex(&c["sealed"]))
        .collect();
    write_store("good", &unhex(&s["dek_record"]), good);
    let out = python(&["--verify", "good", "--agent-ca", "ca.pem"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("signed by sha256:") && text.contains("up to checkpoint 2"),
        "{text}"
    );
    assert_eq!(ours("good").status.code(), Some(0));
    // Decrypting too, with the vectors' KEK.
    let out = python(&[
        "good",
        vectors_dir.join("kek.pem").to_str().unwrap(),
        vectors_dir.join("passphrase.txt").to_str().unwrap(),
        "out",
        "--agent-ca",
        "ca.pem",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, n) in s["negative"].as_array().unwrap().iter().enumerate() {
        let name = format!("neg{i}");
        let record = n.get("dek_record").unwrap_or(&s["dek_record"]);
        write_store(
            &name,
            &unhex(record),
            n["stream"].as_array().unwrap().iter().map(unhex).collect(),
        );
        let out = python(&["--verify", &name, "--agent-ca", "ca.pem"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            n["name"],
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(ours(&name).status.code(), Some(3), "{}", n["name"]);
    }
}
