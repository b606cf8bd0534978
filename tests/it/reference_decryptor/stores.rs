use super::*;

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
            Some(3),
            "{}: {}",
            n["name"],
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(ours(&name).status.code(), Some(3), "{}", n["name"]);
    }
}

/// The `readers` section of the vectors (issue 22): the Python reader, written from the spec,
/// gives every whole-store case, with the agent CA pinned and without, verifying and
/// decrypting, with and without --allow-incomplete, the exit code, outcome, verdicts, proofs,
/// capture times and malformed chunks the case gives, and puts a stream's files in the
/// quarantine exactly when `sealstream export` does (tests/it/vectors.rs holds sealstream to the
/// same case).
#[test]
fn the_python_reference_decryptor_gives_every_reader_case_its_verdicts() {
    let vectors_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir.join("vectors.json")).unwrap()).unwrap();
    let section = &v["readers"];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), section["agent_ca"].as_str().unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/reference_decrypt.py");
    let (key, pass) = (
        vectors_dir.join("kek.pem"),
        vectors_dir.join("passphrase.txt"),
    );
    let mut wrong = Vec::new();
    for (i, case) in section["cases"].as_array().unwrap().iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let store = format!("store-{i}");
        for (k, hex_bytes) in case["objects"].as_object().unwrap() {
            let path = d.join(&store).join(k);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, hex::decode(hex_bytes.as_str().unwrap()).unwrap()).unwrap();
        }
        for mode in ["without_ca", "with_ca"] {
            for decrypt in [false, true] {
                for allow in [false, true] {
                    let tag = format!("{i}-{mode}-{decrypt}-{allow}");
                    let json_path = format!("{tag}.json");
                    let mut args: Vec<String> = Vec::new();
                    if mode == "with_ca" {
                        args.extend(["--agent-ca".into(), "ca.pem".into()]);
                    }
                    if allow {
                        args.push("--allow-incomplete".into());
                    }
                    args.extend(["--json".into(), json_path.clone()]);
                    if decrypt {
                        args.extend([
                            store.clone(),
                            key.display().to_string(),
                            pass.display().to_string(),
                            format!("out-{tag}"),
                        ]);
                    } else {
                        args.extend(["--verify".into(), store.clone()]);
                    }
                    let out = Command::new("python3")
                        .arg(&script)
                        .args(&args)
                        .current_dir(d)
                        .output()
                        .expect("python3 is installed");
                    let what = format!(
                        "{name} ({mode}, {}{})",
                        if decrypt { "decrypting" } else { "verifying" },
                        if allow { ", --allow-incomplete" } else { "" }
                    );
                    let want = &case[mode][if decrypt { "export" } else { "verify" }];
                    let code = if allow {
                        "exit_allow_incomplete"
                    } else {
                        "exit"
                    };
                    if out.status.code() != want[code].as_i64().map(|c| c as i32) {
                        wrong.push(format!(
                            "{what}: exit {:?}, want {}: {}{}",
                            out.status.code(),
                            want[code],
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                    let Ok(got) = std::fs::read(d.join(&json_path))
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            serde_json::from_slice::<serde_json::Value>(&b)
                                .map_err(|e| e.to_string())
                        })
                    else {
                        wrong.push(format!("{what}: no JSON report"));
                        continue;
                    };
                    if got["outcome"] != want["outcome"] {
                        wrong.push(format!(
                            "{what}: outcome {}, want {}",
                            got["outcome"], want["outcome"]
                        ));
                    }
                    for s in case["streams"].as_array().unwrap() {
                        let Some(g) =
                            got["streams"].as_array().unwrap().iter().find(|g| {
                                g["session"] == s["session"] && g["stream"] == s["stream"]
                            })
                        else {
                            wrong.push(format!("{what}: stream {} not reported", s["session"]));
                            continue;
                        };
                        let says = &s[mode];
                        let verdict = &says[if decrypt { "export_verdict" } else { "verdict" }];
                        let mut fields = vec![
                            ("verdict", &g["verdict"], verdict),
                            ("proof", &g["proof"], &says["proof"]),
                            ("chunks", &g["chunks"], &s["chunks"]),
                            (
                                "first_capture_us",
                                &g["first_capture_us"],
                                &s["first_capture_us"],
                            ),
                            (
                                "last_capture_us",
                                &g["last_capture_us"],
                                &s["last_capture_us"],
                            ),
                        ];
                        if decrypt {
                            fields.push((
                                "malformed_chunks",
                                &g["malformed_chunks"],
                                &s["malformed_chunks"],
                            ));
                        }
                        for (field, got, want) in fields {
                            if got != want {
                                wrong.push(format!("{what}: {field} {got}, want {want}"));
                            }
                        }
                        if decrypt {
                            // The same number of files, quarantined exactly when export's are.
                            let placement = |files: &serde_json::Value| {
                                let files = files.as_array().unwrap();
                                let quarantined = files
                                    .iter()
                                    .filter(|f| f.as_str().unwrap().starts_with("@quarantine/"))
                                    .count();
                                (files.len(), quarantined)
                            };
                            if placement(&g["files"]) != placement(&says["files"]) {
                                wrong.push(format!(
                                    "{what}: files {}, export writes {}",
                                    g["files"], says["files"]
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
