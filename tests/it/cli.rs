//! The `sealstream` binary driven as a user would: keys made by openssl, sealing sample files,
//! exporting them back with the passphrase, and every refusal with its message and exit code.

use std::path::Path;

use crate::common::*;
use assert_cmd::Command;
use predicates::prelude::*;

fn sealstream(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("sealstream").unwrap();
    cmd.current_dir(dir).env_remove("SEALSTREAM_PASSPHRASE");
    cmd
}

fn samples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// `sealstream seal` under publickey.crt into `d/store`, what to seal still to be added.
fn seal(d: &Path) -> Command {
    let mut cmd = sealstream(d);
    cmd.args(["seal", "--kek", "publickey.crt", "--store", "store"]);
    cmd
}

/// `sealstream seal` of the bundled samples as agent `agent` into `d/store`.
fn seal_samples(d: &Path, agent: &str) -> assert_cmd::assert::Assert {
    seal(d).args(["--agent-id", agent]).arg(samples()).assert()
}

/// `sealstream export` of `d/store` into `d/out` with `key`, and `pass` unless it is empty;
/// more arguments may be added.
fn export_cmd(d: &Path, out: &str, key: &str, pass: &str) -> Command {
    let mut cmd = sealstream(d);
    cmd.args(["export", "--store", "store", "--out", out, "--key", key]);
    if !pass.is_empty() {
        cmd.args(["--passphrase-file", pass]);
    }
    cmd
}

fn export(d: &Path, out: &str, key: &str, pass: &str) -> assert_cmd::assert::Assert {
    export_cmd(d, out, key, pass).assert()
}

/// `sealstream args` in `d` exits 1, saying `says` on stderr.
fn fails(d: &Path, args: &[&str], says: &str) {
    sealstream(d)
        .args(args)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(says));
}

/// A how-to key pair: `openssl genrsa -aes256` and `openssl rsa -pubout` into publickey.crt.
fn howto_keys(d: &Path) {
    genrsa(d, "keypair.pem", 2048, &["-aes256"]);
    pubout(d, "keypair.pem", "publickey.crt", true);
    pass_file(d);
}

/// A temporary directory holding the how-to key pair and pass.txt.
fn howto_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    howto_keys(dir.path());
    dir
}

#[test]
fn fingerprint_prints_what_openssl_computes() {
    let dir = howto_dir();
    let d = dir.path();
    let expected = openssl_fingerprint(d, "publickey.crt");
    sealstream(d)
        .args(["keys", "fingerprint", "publickey.crt"])
        .assert()
        .success()
        .stdout(format!("{expected}\n"));
}

#[test]
fn check_reads_the_passphrase_from_file_env_and_refuses_wrong_ones() {
    let dir = howto_dir();
    let d = dir.path();
    let expected = openssl_fingerprint(d, "publickey.crt");
    sealstream(d)
        .args([
            "keys",
            "check",
            "keypair.pem",
            "--public",
            "publickey.crt",
            "--passphrase-file",
            "pass.txt",
        ])
        .assert()
        .success()
        .stdout(format!("{expected}\n"))
        .stderr(predicate::str::contains("publickey.crt: matches"));
    sealstream(d)
        .args(["keys", "check", "keypair.pem"])
        .env("SEALSTREAM_PASSPHRASE", PASS)
        .assert()
        .success()
        .stdout(format!("{expected}\n"));
    std::fs::write(d.join("wrong.txt"), "nope nope\n").unwrap();
    fails(
        d,
        &[
            "keys",
            "check",
            "keypair.pem",
            "--passphrase-file",
            "wrong.txt",
        ],
        "keypair.pem: wrong passphrase",
    );
    // No passphrase anywhere and no terminal: says how to give one.
    fails(d, &["keys", "check", "keypair.pem"], "--passphrase-file");
}

#[test]
fn check_says_when_the_public_key_does_not_match() {
    let dir = howto_dir();
    let d = dir.path();
    genrsa(d, "other.pem", 2048, &[]);
    pubout(d, "other.pem", "other.crt", false);
    fails(
        d,
        &[
            "keys",
            "check",
            "keypair.pem",
            "--public",
            "other.crt",
            "--passphrase-file",
            "pass.txt",
        ],
        "does not match",
    );
}

#[test]
fn bad_key_files_exit_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.crt"), "").unwrap();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    genrsa(d, "small.pem", 1024, &[]);
    fails(
        d,
        &["keys", "fingerprint", "empty.crt"],
        "empty.crt: file is empty",
    );
    fails(d, &["keys", "check", "ec.pem"], "ec.pem: is an EC key");
    fails(
        d,
        &["keys", "check", "small.pem"],
        "small.pem: RSA key of 1024 bits is too small",
    );
}

#[test]
fn generate_writes_a_pair_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pass_file(d);
    let out = sealstream(d)
        .args([
            "keys",
            "generate",
            "--out",
            "kek",
            "--passphrase-file",
            "pass.txt",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let id = String::from_utf8(out).unwrap();
    openssl(
        d,
        &[
            "rsa",
            "-in",
            "kek/keypair.pem",
            "-passin",
            "file:pass.txt",
            "-check",
            "-noout",
        ],
    );
    assert_eq!(id.trim(), openssl_fingerprint(d, "kek/publickey.crt"));
    fails(
        d,
        &[
            "keys",
            "generate",
            "--out",
            "kek",
            "--passphrase-file",
            "pass.txt",
        ],
        "already exists",
    );
}

/// Files under `root`, relative path -> bytes.
fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn seal_then_export_gives_back_every_byte_and_the_store_holds_no_plaintext() {
    let dir = howto_dir();
    let d = dir.path();
    let session = seal_samples(d, "TS-01 (Büro)")
        .success()
        .stderr(predicate::str::contains("3 frames, 39 keystroke events"))
        .get_output()
        .stdout
        .clone();
    let session = String::from_utf8(session).unwrap().trim().to_owned();

    // No plaintext anywhere in the store: neither image bytes nor typed text.
    let stored = tree(&d.join("store"));
    assert!(
        stored.keys().any(|k| k.ends_with(".dek")) && stored.keys().any(|k| k.ends_with(".seg"))
    );
    let png = std::fs::read(samples().join("screen-001.png")).unwrap();
    for (name, bytes) in &stored {
        assert!(
            !bytes.windows(9).any(|w| w == b"\"key\":\"q\""),
            "typed text in {name}"
        );
        assert!(
            !bytes.windows(64).any(|w| w == &png[1000..1064]),
            "image bytes in {name}"
        );
    }

    export(d, "out", "keypair.pem", "pass.txt")
        .success()
        .stdout(
            predicate::str::contains("frames): 3 chunks").and(predicate::str::contains("complete")),
        )
        .stdout(predicate::str::contains("verification passed"));
    let agent_dir = std::fs::read_dir(d.join("out"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.is_dir().then_some(p)
        })
        .next()
        .unwrap();
    let session_dir = agent_dir.join(&session);
    for f in ["screen-000.png", "screen-001.png", "screen-002.png"] {
        assert_eq!(
            std::fs::read(session_dir.join("frames").join(f)).unwrap(),
            std::fs::read(samples().join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read(session_dir.join("keystrokes.jsonl")).unwrap(),
        std::fs::read(samples().join("keystrokes.jsonl")).unwrap()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["streams"].as_array().unwrap().len(), 2);
}

#[test]
fn export_of_one_session_leaves_the_others_out() {
    let dir = howto_dir();
    let d = dir.path();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let out = seal(d)
            .args(["--agent-id", "vdi-1"])
            .arg(samples().join("keystrokes.jsonl"))
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        sessions.push(String::from_utf8(out).unwrap().trim().to_owned());
    }
    export_cmd(d, "out", "keypair.pem", "pass.txt")
        .args(["--session", &sessions[1]])
        .assert()
        .success();
    assert!(
        d.join("out/vdi-1")
            .join(&sessions[1])
            .join("keystrokes.jsonl")
            .exists()
    );
    assert!(!d.join("out/vdi-1").join(&sessions[0]).exists());
}

#[test]
fn export_refuses_a_wrong_passphrase_and_reports_a_missing_key() {
    let dir = howto_dir();
    let d = dir.path();
    seal_samples(d, "a").success();
    std::fs::write(d.join("wrong.txt"), "wrong one\n").unwrap();
    export(d, "out", "keypair.pem", "wrong.txt")
        .code(1)
        .stderr(predicate::str::contains("wrong passphrase"));
    assert!(
        !d.join("out").exists(),
        "nothing is written before the key opens"
    );
    genrsa(d, "other.pem", 2048, &[]);
    export(d, "out2", "other.pem", "").code(4).stdout(
        predicate::str::contains("NOT DECRYPTED")
            .and(predicate::str::contains("no private key given for KEK"))
            .and(predicate::str::contains("verification INCOMPLETE")),
    );
}

#[test]
fn a_corrupted_segment_fails_the_export() {
    let dir = howto_dir();
    let d = dir.path();
    seal_samples(d, "a").success();
    let seg = tree(&d.join("store"))
        .into_keys()
        .find(|k| k.ends_with(".seg"))
        .unwrap();
    let path = d.join("store").join(seg);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[500] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    export(d, "out", "keypair.pem", "pass.txt").code(3).stdout(
        predicate::str::contains("DAMAGED OBJECT")
            .and(predicate::str::contains("checksum mismatch")),
    );
}

#[test]
fn seal_refuses_unknown_files_and_bad_agent_ids() {
    let dir = howto_dir();
    let d = dir.path();
    std::fs::write(d.join("notes.txt"), "hi").unwrap();
    seal(d)
        .arg("notes.txt")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("notes.txt: not an image"));
    seal_samples(d, &"x".repeat(65))
        .code(1)
        .stderr(predicate::str::contains("65 characters"));
    std::fs::write(d.join("bad.jsonl"), "{\"k\":1}\nnot json\n").unwrap();
    seal(d)
        .arg("bad.jsonl")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.jsonl: line 2"));
    sealstream(d)
        .args(["seal", "--kek", "keypair.pem", "--store", "store"])
        .arg(samples())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("holds a private key"));
}

#[test]
fn quickstart_runs_the_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    sealstream(dir.path())
        .args(["quickstart", "--users", "3", "--seconds", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "6. verified: 3 sessions, 6 complete streams",
        ))
        .stdout(predicate::str::contains("ciphertext only"))
        .stdout(predicate::str::contains(
            "every stream signed by its agent to its end",
        ));
}

/// An agent that flooded the store with DEK records (the attack review saw 1,700 a second)
/// costs an export of another agent's session nothing: export reads only the records the
/// exported chunks name, and never the others; it checks their names from the listing, as
/// verify does, so an object that is not a DEK record's is damaged for both (issue 22).
#[test]
fn export_reads_only_the_dek_records_its_sessions_name() {
    let dir = howto_dir();
    let d = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = sealstream::storage::open_local(&d.join("store")).unwrap();
        let kek = sealstream::keys::load_public_key(&d.join("publickey.crt")).unwrap();
        let flooder = sealstream::protocol::AgentId::new("flooder").unwrap();
        for _ in 0..300 {
            let r = sealstream::recorder::Recorder::new(flooder.clone(), &kek);
            sealstream::recorder::store_recording(store.as_ref(), r.dek_record(), &[])
                .await
                .unwrap();
        }
        // A damaged record of the flooder's under a record's name: only reading it would tell.
        let junk = sealstream::storage::paths::dek_record(
            &flooder,
            sealstream::protocol::DekId([0x5a; 16]),
        );
        sealstream::storage::put_new(store.as_ref(), &junk, bytes::Bytes::from_static(b"junk"))
            .await
            .unwrap();
    });
    let session = String::from_utf8(
        seal_samples(d, "vdi-2")
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap()
    .trim()
    .to_owned();
    export_cmd(d, "out", "keypair.pem", "pass.txt")
        .args(["--session", &session])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 DEK record(s)"));
    sealstream(d)
        .args(["verify", "--store", "store"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 DEK record(s)"));
    // An object under v1/deks/ whose name is not a record's: damaged from the listing alone,
    // by export (which once never listed) and verify alike.
    let odd = d.join("store/v1/deks/flooder/not-a-record");
    std::fs::create_dir_all(odd.parent().unwrap()).unwrap();
    std::fs::write(&odd, b"junk").unwrap();
    let mut verify = sealstream(d);
    verify.args(["verify", "--store", "store"]);
    for mut cmd in [export_cmd(d, "out2", "keypair.pem", "pass.txt"), verify] {
        cmd.assert().code(3).stdout(predicate::str::contains(
            "v1/deks/flooder/not-a-record: not a DEK record's key",
        ));
    }
}

/// `keys convert` turns every key form the console's WebCrypto cannot open (the traditional
/// `Proc-Type` form with DES-EDE3, PKCS#8 with scrypt) into openssl 3's default form: same
/// KEK, same passphrase unless a new one is given, and openssl reads the result.
#[test]
fn keys_convert_writes_the_form_browsers_open() {
    let dir = howto_dir();
    let d = dir.path();
    let want = openssl_fingerprint(d, "publickey.crt");
    genrsa(d, "trad.pem", 2048, &["-traditional", "-des3"]);
    let pass = format!("pass:{PASS}");
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-scrypt",
            "-in",
            "keypair.pem",
            "-passin",
            &pass,
            "-passout",
            &pass,
            "-out",
            "scrypt.pem",
        ],
    );
    for (input, out) in [
        ("scrypt.pem", "converted.pem"),
        ("trad.pem", "trad-converted.pem"),
    ] {
        sealstream(d)
            .args([
                "keys",
                "convert",
                "--in",
                input,
                "--out",
                out,
                "--passphrase-file",
                "pass.txt",
            ])
            .assert()
            .success()
            .stderr(predicate::str::contains("PBKDF2-SHA256"));
        let text = std::fs::read_to_string(d.join(out)).unwrap();
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{text}"
        );
        let info = openssl(d, &["asn1parse", "-in", out]);
        let info = String::from_utf8_lossy(&info);
        assert!(
            info.contains("PBES2")
                && info.contains("aes-256-cbc")
                && info.contains("hmacWithSHA256"),
            "{info}"
        );
        openssl(d, &["pkey", "-in", out, "-passin", &pass, "-noout"]);
    }
    sealstream(d)
        .args([
            "keys",
            "check",
            "converted.pem",
            "--public",
            "publickey.crt",
            "--passphrase-file",
            "pass.txt",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(want));
    // Never over an existing file; a new passphrase when asked for.
    sealstream(d)
        .args([
            "keys",
            "convert",
            "--in",
            "trad.pem",
            "--out",
            "converted.pem",
            "--passphrase-file",
            "pass.txt",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("converted.pem"));
    std::fs::write(d.join("new.txt"), "a new passphrase\n").unwrap();
    sealstream(d)
        .args([
            "keys",
            "convert",
            "--in",
            "trad.pem",
            "--out",
            "renewed.pem",
            "--passphrase-file",
            "pass.txt",
            "--new-passphrase-file",
            "new.txt",
        ])
        .assert()
        .success();
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "renewed.pem",
            "-passin",
            "pass:a new passphrase",
            "-noout",
        ],
    );
}

/// Console accounts from the command line: added with an argon2id hash (never the password),
/// listed, disabled, enabled, granted, given a new password (the console then takes the new
/// one and refuses the old); a taken name or a short password is refused with words that say
/// so; every change is in the audit log.
#[test]
fn users_are_added_listed_disabled_and_granted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let console = crate::common::agents::free_tcp();
    std::fs::write(
        d.join("serve.toml"),
        format!("data_dir = \"state\"\n[console]\nlisten = \"{console}\"\n"),
    )
    .unwrap();
    std::fs::write(d.join("pw.txt"), "a long enough password\n").unwrap();
    std::fs::write(d.join("new-pw.txt"), "another long password\n").unwrap();
    std::fs::write(d.join("short.txt"), "short\n").unwrap();
    let users = |args: &[&str]| {
        let mut c = sealstream(d);
        c.arg("users").args(args).args(["--config", "serve.toml"]);
        c.assert()
    };
    users(&["add", "ann", "--role", "admin", "--password-file", "pw.txt"]).success();
    users(&[
        "add",
        "rita",
        "--role",
        "reviewer",
        "--agents",
        "ts-*",
        "--agents",
        "vdi-7",
        "--password-file",
        "pw.txt",
    ])
    .success();
    users(&["add", "ann", "--role", "admin", "--password-file", "pw.txt"])
        .failure()
        .stderr(predicate::str::contains("exists already"));
    users(&[
        "add",
        "sam",
        "--role",
        "reviewer",
        "--password-file",
        "short.txt",
    ])
    .failure()
    .stderr(predicate::str::contains("too short"));
    users(&["add", "sam", "--role", "boss", "--password-file", "pw.txt"]).failure();
    users(&["list"])
        .success()
        .stdout(predicate::str::is_match(r"rita\s+reviewer\s+active\s+ts-\*,vdi-7").unwrap())
        .stdout(predicate::str::is_match(r"ann\s+admin\s+active\s+\(all\)").unwrap());
    users(&["disable", "rita"]).success();
    users(&["list"])
        .success()
        .stdout(predicate::str::is_match(r"rita\s+reviewer\s+disabled").unwrap());
    users(&["enable", "rita"]).success();
    users(&["grant", "rita", "--agents", "eu-*"]).success();
    users(&["passwd", "rita", "--password-file", "new-pw.txt"]).success();
    users(&["list"])
        .success()
        .stdout(predicate::str::is_match(r"rita\s+reviewer\s+active\s+eu-\*").unwrap());
    // `sealstream console` on the same config: rita logs in with her new password only; ann's
    // is untouched.
    let logins = console_logins(
        d,
        console,
        &[
            ("rita", "a long enough password"),
            ("rita", "another long password"),
            ("ann", "a long enough password"),
        ],
    );
    assert_eq!(logins, [401, 200, 200], "old, new, other user");
    users(&["disable", "nobody"])
        .failure()
        .stderr(predicate::str::contains("no console user named"));
    let db = rusqlite::Connection::open(d.join("state/sealstream.db")).unwrap();
    let hash: String = db
        .query_row(
            "SELECT password_hash FROM console_user WHERE name = 'ann'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("a long enough password"));
    let actions: Vec<String> = db
        .prepare("SELECT action FROM audit_log ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for a in [
        "user_add",
        "user_disable",
        "user_enable",
        "user_grant",
        "user_passwd",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

/// Run `sealstream console --config serve.toml` in `d` (listening on `addr`) and return the
/// HTTP status of a console login with each (user, password), in order.
fn console_logins(d: &Path, addr: std::net::SocketAddr, logins: &[(&str, &str)]) -> Vec<u16> {
    use std::io::{BufRead, BufReader};
    /// Ends the console when the test ends, passed or not.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Running(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("sealstream"))
            .current_dir(d)
            .args(["console", "--config", "serve.toml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let up = line.contains("sealstream review console on");
        said.push(line);
        if up {
            break;
        }
    }
    // Keep reading what it says, so its stderr never breaks.
    std::thread::spawn(move || stderr.for_each(drop));
    assert!(
        said.last()
            .is_some_and(|l| l.contains("sealstream review console on")),
        "the console did not start: {said:?}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        for (user, password) in logins {
            let mut http = crate::common::console::Http::new(addr);
            out.push(http.login(user, password).await.status);
        }
        out
    })
}

/// `quickstart --serve` keeps the server and the console running after the round trip, with
/// a demo reviewer whose password is in a 0600 file; the console answers and the login works.
#[test]
fn quickstart_serve_keeps_the_console_running_with_a_demo_reviewer() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("sealstream"))
        .current_dir(dir.path())
        .args([
            "quickstart",
            "--users",
            "2",
            "--seconds",
            "2",
            "--serve",
            "--console-listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut password_file = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("log in as demo, password in ") {
            password_file = Some(std::path::PathBuf::from(rest));
            break;
        }
    }
    let password_file = password_file.expect("quickstart --serve prints where the login is");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let password = std::fs::read_to_string(&password_file).unwrap();
    let body = serde_json::json!({ "user": "demo", "password": password.trim_end() }).to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let http = crate::common::console::Http::new(format!("127.0.0.1:{port}").parse().unwrap());
        http.request("POST", "/api/login", Some(&body)).await.status
    });
    assert_eq!(status, 200);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(
        child.wait().unwrap().success(),
        "Ctrl-C ends quickstart --serve cleanly"
    );
}
