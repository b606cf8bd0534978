//! The tamper-evident audit log, on SQLite and PostgreSQL: rows written by the server, by the
//! console's account changes and by the how-to's KEK insert enter the hash chain; the server
//! signs checkpoints into the store and a file; `sealstream audit verify` finds an edited,
//! deleted, inserted or reordered row, and (with a checkpoint kept elsewhere) rows cut from
//! the end; `export --config` writes its audit row first and refuses without one.

use std::path::Path;
use std::time::Duration;

use crate::common::server::{Backend, Env};
use assert_cmd::Command;
use sealstream::metadata::review::Role;

fn cli(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("sealstream")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .assert()
}

fn out(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// Run SQL against the server's database, as an attacker with database access would.
async fn tamper(env: &Env, sql: &str) {
    if env.cfg.database_url.is_empty() {
        let c = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
        c.execute_batch(sql).unwrap();
    } else {
        let (client, conn) = tokio_postgres::connect(&env.cfg.database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.expect(sql);
        drop(client);
        let _ = task.await;
    }
}

async fn the_audit_chain_shows_every_kind_of_tampering(backend: Backend) {
    let mut env = Env::start_tuned(backend, true, |c| c.audit_checkpoint_ms = 100).await;
    let md = env.server().metadata.clone();
    crate::common::console::add_user(&md, "ann", Role::Admin, &[], "a long enough password").await;
    crate::common::console::add_user(
        &md,
        "bob",
        Role::Reviewer,
        &["ts-*"],
        "another long password",
    )
    .await;
    // The how-to's KEK insert, run by another program (psql, the sqlite3 shell): audited and
    // chained all the same (on SQLite, hashed at the server's next audit write).
    tamper(
        &env,
        "insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile) \
         values (false, true, '/etc/sealstream/other.crt', '/etc/sealstream/other.pem')",
    )
    .await;
    for i in 0..4 {
        md.audit("ann", "view_session", &format!("session {i}"))
            .await
            .unwrap();
    }
    let rows = md.audit_chain_rows().await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert!(
        actions.contains(&"kek_insert"),
        "the how-to's KEK insert is audited: {actions:?}"
    );
    assert!(actions.iter().filter(|a| **a == "view_session").count() == 4);
    assert!(
        rows.iter()
            .any(|r| r.action == "kek_insert" && r.detail.contains("other.crt")),
        "a KEK inserted outside sealstream is audited"
    );
    let chain = sealstream::audit::verify_chain(&rows);
    assert!(
        chain.problems.is_empty() && chain.unhashed_tail == 0,
        "{:?}",
        chain.problems
    );
    let head = rows.iter().filter_map(|r| r.chain_seq).max().unwrap();
    // The server signs the head within its interval.
    let latest = env.cfg.data_dir.join("audit/checkpoint.json");
    let mut signed = 0;
    for _ in 0..100 {
        if let Ok(cps) = sealstream::audit::read_checkpoints(&latest) {
            signed = cps[0].chain_seq;
            if signed == head {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(signed, head, "a checkpoint of the head was written");
    if let Some(s) = env.server.take() {
        s.shutdown().await;
    }
    let d = env.dir.path().to_owned();
    let toml = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\n",
        env.cfg.data_dir.display().to_string(),
        env.cfg.database_url
    );
    std::fs::write(d.join("serve.toml"), toml).unwrap();
    std::fs::copy(&latest, d.join("shipped.json")).unwrap();

    let a = cli(&d, &["audit", "verify", "--config", "serve.toml"]).code(0);
    assert!(out(&a).contains("audit verify passed"), "{}", out(&a));
    assert!(
        out(&a).contains(": matches"),
        "store checkpoints checked: {}",
        out(&a)
    );
    cli(
        &d,
        &[
            "audit",
            "verify",
            "--config",
            "serve.toml",
            "--checkpoint",
            "shipped.json",
        ],
    )
    .code(0);

    // An export given --config is audited first.
    let store = env.cfg.store_dir();
    std::fs::create_dir_all(&store).unwrap();
    cli(
        &d,
        &[
            "export",
            "--store",
            store.to_str().unwrap(),
            "--out",
            "x",
            "--key",
            "keypair.pem",
            "--passphrase-file",
            "pass.txt",
            "--config",
            "serve.toml",
        ],
    )
    .code(0);
    let rows = sealstream::metadata::Metadata::open(&env.cfg.database_url, &env.cfg.sqlite_path())
        .await
        .unwrap()
        .audit_chain_rows()
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|r| r.action == "export" && r.actor.starts_with("cli:"))
    );
    let head = rows.iter().filter_map(|r| r.chain_seq).max().unwrap();

    // Rows cut from the end, with the store's checkpoints removed too: the chain alone is
    // consistent; the checkpoint kept elsewhere is not fooled.
    tamper(
        &env,
        &format!("DELETE FROM audit_log WHERE chain_seq >= {}", head - 1),
    )
    .await;
    std::fs::remove_dir_all(store.join("v1/audit")).unwrap();
    let a = cli(&d, &["audit", "verify", "--config", "serve.toml"]).code(0);
    assert!(
        out(&a).contains("only as safe as the database"),
        "{}",
        out(&a)
    );
    let a = cli(
        &d,
        &[
            "audit",
            "verify",
            "--config",
            "serve.toml",
            "--checkpoint",
            "shipped.json",
        ],
    )
    .code(3);
    assert!(
        out(&a).contains("rows were deleted from the end"),
        "{}",
        out(&a)
    );

    // Edited, deleted, inserted around the trigger, reordered: each named.
    tamper(
        &env,
        "UPDATE audit_log SET detail = 'nothing to see' WHERE chain_seq = 2",
    )
    .await;
    let a = cli(&d, &["audit", "verify", "--config", "serve.toml"]).code(3);
    assert!(out(&a).contains("chain row 2 (id"), "{}", out(&a));
    assert!(out(&a).contains("was edited"), "{}", out(&a));
    tamper(&env, "DELETE FROM audit_log WHERE chain_seq = 4").await;
    let a = cli(&d, &["audit", "verify", "--config", "serve.toml"]).code(3);
    assert!(
        out(&a).contains("chain row 4 is missing: deleted"),
        "{}",
        out(&a)
    );
    let bypass = if backend == Backend::Sqlite {
        "DROP TRIGGER audit_log_chain; INSERT INTO audit_log (actor, action, detail) VALUES ('mallory', 'view_session', 'covering tracks')"
    } else {
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_chain; INSERT INTO audit_log (actor, action, detail) VALUES ('mallory', 'view_session', 'covering tracks')"
    };
    tamper(&env, bypass).await;
    let a = cli(&d, &["audit", "verify", "--config", "serve.toml"]).code(3);
    assert!(out(&a).contains("outside the chain"), "{}", out(&a));
    tamper(
        &env,
        "UPDATE audit_log SET chain_seq = -1 WHERE chain_seq = 5; \
         UPDATE audit_log SET chain_seq = 5 WHERE chain_seq = 6; \
         UPDATE audit_log SET chain_seq = 6 WHERE chain_seq = -1;",
    )
    .await;
    let a = cli(&d, &["audit", "verify", "--config", "serve.toml"]).code(3);
    assert!(out(&a).contains("reordered"), "{}", out(&a));

    // Fail-closed: an export whose audit row cannot be written does not happen.
    std::fs::write(
        d.join("broken.toml"),
        format!(
            "data_dir = {:?}\ndatabase_url = \"postgres://postgres@127.0.0.1:1/nowhere\"\n",
            env.cfg.data_dir.display().to_string()
        ),
    )
    .unwrap();
    let a = cli(
        &d,
        &[
            "export",
            "--store",
            store.to_str().unwrap(),
            "--out",
            "y",
            "--key",
            "keypair.pem",
            "--passphrase-file",
            "pass.txt",
            "--config",
            "broken.toml",
        ],
    )
    .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("nothing was exported"), "{err}");
    assert!(!d.join("y").exists());
    env.stop().await;
}

#[actix_rt::test]
async fn the_audit_chain_shows_every_kind_of_tampering_on_sqlite() {
    the_audit_chain_shows_every_kind_of_tampering(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn the_audit_chain_shows_every_kind_of_tampering_on_postgres() {
    the_audit_chain_shows_every_kind_of_tampering(Backend::Postgres).await;
}

#[test]
fn an_export_without_config_signs_a_receipt_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::genrsa(d, "keypair.pem", 2048, &["-aes256"]);
    crate::common::pubout(d, "keypair.pem", "publickey.crt", true);
    crate::common::pass_file(d);
    std::fs::create_dir_all(d.join("frames")).unwrap();
    std::fs::write(d.join("frames/a.png"), b"not really a png").unwrap();
    std::fs::write(d.join("frames/b.png"), vec![7u8; 300_000]).unwrap();
    std::fs::write(
        d.join("frames/keys.jsonl"),
        "{\"t\":1,\"text\":\"ls\"}\n{\"t\":2,\"text\":\"[Enter]\"}\n",
    )
    .unwrap();
    cli(
        d,
        &[
            "seal",
            "--kek",
            "publickey.crt",
            "--agent-id",
            "ts-1",
            "--store",
            "store",
            "frames",
        ],
    )
    .success();
    cli(
        d,
        &[
            "export",
            "--store",
            "store",
            "--out",
            "out",
            "--key",
            "keypair.pem",
            "--passphrase-file",
            "pass.txt",
        ],
    )
    .code(0);
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out/receipt.json")).unwrap()).unwrap();
    let files = receipt["files"].as_array().unwrap();
    // Every file relative to the output directory, with its stream's verdict (issue 22).
    let frame = files
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("a.png"))
        .unwrap();
    assert!(
        frame["path"].as_str().unwrap().starts_with("ts-1/"),
        "{receipt}"
    );
    assert_eq!(frame["verdict"], "ok");
    let sha = <sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(d.join("out").join(frame["path"].as_str().unwrap())).unwrap(),
    );
    assert_eq!(frame["sha256"], hex::encode(sha));
    assert!(files.iter().any(|f| f["path"] == "report.json"));
    // Every file's digest is that of the file as it lies in the output (frames and keystrokes
    // are hashed as they are written, not read back).
    assert_eq!(
        files.len(),
        4,
        "two frames, the keystrokes, report.json: {receipt}"
    );
    for f in files {
        let path = f["path"].as_str().unwrap();
        let sha = <sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(d.join("out").join(path)).unwrap(),
        );
        assert_eq!(f["sha256"], hex::encode(sha), "{path}");
    }
    // What docs/format.md tells a reader to run, with the salt length it gives (32 bytes).
    let openssl_verifies = || {
        std::process::Command::new("openssl")
            .current_dir(d)
            .args([
                "dgst",
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
                "-sigopt",
                "rsa_mgf1_md:sha256",
                "-verify",
                "publickey.crt",
                "-signature",
                "out/receipt.sig",
                "out/receipt.json",
            ])
            .status()
            .unwrap()
            .success()
    };
    assert!(openssl_verifies());
    // An edited receipt does not verify.
    let mut text = std::fs::read(d.join("out/receipt.json")).unwrap();
    let n = text.len();
    text[n - 3] ^= 1;
    std::fs::write(d.join("out/receipt.json"), text).unwrap();
    assert!(!openssl_verifies());
}

#[actix_rt::test]
async fn an_export_with_config_knows_a_stream_still_recording() {
    use sealstream::protocol::uplink::MSG_CHUNK;
    use sealstream::protocol::{Kind, SessionId, StreamId};
    let env = Env::start(Backend::Sqlite, true).await;
    let (_ep, _conn, mut s, rec) = env.registered("live-1").await;
    let mut frames = rec.open_stream(SessionId::random(), StreamId(0), Kind::Frame);
    let frame = sealstream::protocol::payload::Frame {
        name: "a.png",
        image: b"a frame",
    }
    .encode();
    let c0 = frames
        .seal(&frame, sealstream::crypto::now_us(), false)
        .unwrap();
    s.send(MSG_CHUNK, c0.bytes()).await.unwrap();
    assert_eq!(s.response().await.unwrap().outcome, Ok(()));
    let d = env.dir.path().to_owned();
    std::fs::write(
        d.join("serve.toml"),
        format!("data_dir = {:?}\n", env.cfg.data_dir.display().to_string()),
    )
    .unwrap();
    let store = env.cfg.store_dir();
    let base = [
        "export",
        "--store",
        store.to_str().unwrap(),
        "--key",
        "keypair.pem",
        "--passphrase-file",
        "pass.txt",
        "--out",
    ];
    // Without the server's word, a stream without its final chunk is incomplete (exit 7) ...
    let a = cli(&d, &[&base[..], &["out1"]].concat()).code(7);
    assert!(
        out(&a).contains("INCOMPLETE (no final chunk)"),
        "{}",
        out(&a)
    );
    // ... and with it, it is still being recorded.
    let a = cli(
        &d,
        &[&base[..], &["out2", "--config", "serve.toml"]].concat(),
    )
    .code(0);
    assert!(
        out(&a).contains("still recording, as the server's index says"),
        "{}",
        out(&a)
    );
    // Still recording waives the missing final chunk, never a missing signature: this stream
    // is unsigned (version 1), so against the agent CA it is still refused.
    let ca = env.cfg.data_dir.join("pki/ca.crt");
    let a = cli(
        &d,
        &[
            &base[..],
            &[
                "out3",
                "--config",
                "serve.toml",
                "--agent-ca",
                ca.to_str().unwrap(),
            ],
        ]
        .concat(),
    )
    .code(7);
    assert!(out(&a).contains("UNSIGNED"), "{}", out(&a));
    env.stop().await;
}

/// `serve` with `verify_interval_ms` verifies the store in the background, signatures checked
/// against its own agent CA, and says so in its metrics; a corrupted segment shows there.
#[actix_rt::test]
async fn the_server_verifies_its_store_in_the_background() {
    use crate::common::child::{ChildEnv, metric};
    // A server of this test's own: the verify gauges are set by its verifier only.
    let env = ChildEnv::start(Backend::Sqlite, &[("verify_interval_ms", "200")]).await;
    let cfg = env.enroll("verified");
    let r = crate::common::agents::run_agent(
        cfg,
        sealstream::agent::synthetic::SyntheticSpec {
            users: 1,
            duration: Duration::from_millis(600),
            frame_size: 4096,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.unacked, 0);
    let ok = r#"sealstream_store_verify_streams{verdict="ok"}"#;
    let last = env.wait_metric(ok, 2.0).await;
    assert_eq!(
        metric(&last, ok),
        2.0,
        "both streams of the session complete and signed: {last}"
    );
    for verdict in [
        "unproven",
        "incomplete",
        "unsigned",
        "no_dek_record",
        "tampered",
    ] {
        let series = format!("sealstream_store_verify_streams{{verdict=\"{verdict}\"}}");
        assert_eq!(metric(&last, &series), 0.0, "{verdict}: {last}");
    }
    assert_eq!(
        metric(&last, "sealstream_store_verify_damaged_objects"),
        0.0
    );
    // It read every byte of this server's segments.
    let segments = crate::common::walk(&env.cfg.store_dir().join("v1/segments"));
    let size: u64 = segments
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        metric(&last, "sealstream_store_verify_bytes"),
        size as f64,
        "{last}"
    );
    // Corrupt one stored segment: the next run says so.
    let seg = segments[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();
    let last = env
        .wait_metric("sealstream_store_verify_damaged_objects", 1.0)
        .await;
    assert_eq!(
        metric(&last, "sealstream_store_verify_damaged_objects"),
        1.0,
        "{last}"
    );
    env.stop().await;
}
