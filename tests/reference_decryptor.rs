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
