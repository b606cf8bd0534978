//! The review console's server side, over real HTTP against the real server's database and
//! store (SQLite and PostgreSQL): logins (argon2id, cookie flags, throttling, CSRF, logout,
//! disabled accounts, idle expiry), grants (a reviewer sees only their agents; anything else
//! is 404 and audited), ciphertext served as single chunks by byte range that open to what
//! the agent recorded, and the audit log written before anything is served (fail-closed).

use crate::common::agents::{run_agent, spec};
use crate::common::console::{Http, add_user, start};
use crate::common::server::{Backend, Env};
use sealstream::crypto::{Dek, StreamKey};
use sealstream::metadata::{Role, now_us};
use sealstream::protocol::{AgentId, DekRecord, SealedChunk, SessionId, StreamId};
use sha2::{Digest, Sha256};

const ANN: &str = "ann-admin-password";
const RITA: &str = "rita-reviewer-password";

async fn recorded(backend: Backend) -> (Env, Vec<sealstream::agent::AgentReport>) {
    let env = Env::start(backend, true).await;
    let mut reports = Vec::new();
    for name in ["ts-01", "vdi-01"] {
        reports.push(run_agent(env.enroll(name), spec(1, 1.0)).await);
    }
    let md = &env.server().metadata;
    add_user(md, "ann", Role::Admin, &[], ANN).await;
    add_user(md, "rita", Role::Reviewer, &["ts-*"], RITA).await;
    (env, reports)
}

async fn actions(env: &Env) -> Vec<(String, String, String, Option<String>)> {
    env.server()
        .metadata
        .audit_rows(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.actor, r.action, r.detail, r.address))
        .collect()
}

async fn logins_grants_and_audit(backend: Backend) {
    let (env, _) = recorded(backend).await;
    let console = start(&env, |c| c.max_failed_logins = 3).await;
    let anon = Http::new(console.addr);

    // The page: our own script only, no framing.
    let page = anon.get("/").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert!(String::from_utf8_lossy(&page.body).contains("/assets/js/app.js"));
    assert_eq!(anon.get("/assets/js/chunk.js").await.status, 200);
    assert_eq!(anon.get("/assets/js/../../Cargo.toml").await.status, 404);

    // Nothing without a login.
    let r = anon.get("/api/sessions").await;
    assert_eq!(r.status, 401, "{r:?}");

    // Wrong password and unknown user: the same answer; the third failure throttles, even
    // the right password then waits.
    let mut rita = Http::new(console.addr);
    for _ in 0..3 {
        let r = rita.login("rita", "not her password").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "wrong user name or password");
    }
    assert_eq!(rita.login("nobody", "whatever").await.status, 401);
    let r = rita.login("rita", RITA).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);

    // Ann logs in: an HttpOnly, SameSite=Strict cookie (not Secure on loopback HTTP).
    let mut ann = Http::new(console.addr);
    let r = ann.login("ann", ANN).await;
    assert_eq!(r.status, 200, "{r:?}");
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert_eq!(r.json()["role"], "admin");
    let all = ann.get("/api/sessions").await.json();
    let agents: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agent"].as_str().unwrap())
        .collect();
    assert!(
        agents.contains(&"ts-01") && agents.contains(&"vdi-01"),
        "{agents:?}"
    );
    for s in all["sessions"].as_array().unwrap() {
        assert_eq!(s["encrypted"], true, "E2EE sessions carry the marker");
        assert_eq!(s["state"], "complete", "{s}");
        assert!(s["chunks"].as_i64().unwrap() > 0 && s["bytes"].as_i64().unwrap() > 0);
    }

    // Rita, granted ts-*, sees ts-01 only; vdi-01's session, index, chunks and DEK are 404.
    // (Throttling is per console process: a second console lets her in at once.)
    drop(rita);
    let console2 = start(&env, |_| {}).await;
    let mut rita = Http::new(console2.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let mine = rita.get("/api/sessions").await.json();
    let seen: Vec<&str> = mine["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agent"].as_str().unwrap())
        .collect();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| *a == "ts-01"),
        "{seen:?}"
    );
    let agents = rita.get("/api/agents").await.json();
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents}");
    let vdi = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["agent"] == "vdi-01")
        .unwrap();
    let base = format!(
        "/api/agents/{}/sessions/{}",
        vdi["agent_hex"].as_str().unwrap(),
        vdi["session"].as_str().unwrap()
    );
    for path in [
        base.clone(),
        format!("{base}/index"),
        format!("{base}/streams/0/chunks?from_seq=0&count=4"),
        "/api/audit".to_owned(),
    ] {
        assert_eq!(rita.get(&path).await.status, 404, "{path}");
    }
    let vdi_index = ann.get(&format!("{base}/index")).await.json();
    let vdi_dek = vdi_index["chunks"][0]["dek_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ann.get(&format!("/api/deks/{vdi_dek}")).await.status, 200);
    assert_eq!(rita.get(&format!("/api/deks/{vdi_dek}")).await.status, 404);
    let rita_filter = rita.get("/api/sessions?agent=vdi-01").await.json();
    assert_eq!(rita_filter["sessions"].as_array().unwrap().len(), 0);

    // State changes need the CSRF token.
    let r = rita.request_with("POST", "/api/logout", None, false).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(rita.request("POST", "/api/logout", None).await.status, 204);
    assert_eq!(rita.get("/api/me").await.status, 401, "logged out");

    // The admin sees the audit log: every login, failure, list and refusal, with an address.
    let audit = ann.get("/api/audit").await.json();
    assert!(audit["rows"].as_array().unwrap().len() > 5, "{audit}");
    let rows = actions(&env).await;
    let has = |actor: &str, action: &str| rows.iter().any(|r| r.0 == actor && r.1 == action);
    assert!(has("rita", "login_failed") && has("rita", "login_throttled"));
    assert!(has("nobody", "login_failed"));
    assert!(has("ann", "login") && has("rita", "login") && has("rita", "logout"));
    assert!(has("ann", "list_sessions") && has("ann", "fetch_dek"));
    let denied: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "rita" && r.1 == "denied")
        .collect();
    assert!(denied.len() >= 5, "{denied:?}");
    assert!(denied.iter().all(|r| r.3.as_deref() == Some("127.0.0.1")));

    // A disabled account is logged out at once and cannot log in.
    let md = &env.server().metadata;
    let mut u = md.console_user("ann").await.unwrap().unwrap();
    u.disabled_us = Some(now_us());
    md.put_console_user(u, false, "test", "user_disable")
        .await
        .unwrap();
    assert_eq!(ann.get("/api/me").await.status, 401);
    assert_eq!(ann.login("ann", ANN).await.status, 401);

    console.stop().await;
    console2.stop().await;
    env.stop().await;
}

#[actix_rt::test]
async fn logins_grants_and_audit_sqlite() {
    logins_grants_and_audit(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn logins_grants_and_audit_postgres() {
    logins_grants_and_audit(Backend::Postgres).await;
}

async fn ciphertext_by_byte_range(backend: Backend) {
    let (env, reports) = recorded(backend).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let key = env.private_key();
    let ts = &reports[0];
    for s in &ts.sessions {
        let session_hex = hex::encode(s.session.0);
        let base = format!(
            "/api/agents/{}/sessions/{session_hex}",
            hex::encode("ts-01")
        );
        let index = ann.get(&format!("{base}/index?stream=0")).await.json();
        let rows = index["chunks"].as_array().unwrap();
        // One row per frame, and the empty chunk that ends a synthetic stream.
        assert!(
            rows.len() == s.frames.len() || rows.len() == s.frames.len() + 1,
            "{index}"
        );
        // Fetch a few at a time, as the page does; every chunk's bytes are what the index
        // digest says and open under the DEK to the frame the agent recorded.
        let mut seq = 0u64;
        let mut opened = 0;
        while (seq as usize) < rows.len() {
            let r = ann
                .get(&format!("{base}/streams/0/chunks?from_seq={seq}&count=3"))
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            let mut buf = &r.body[..];
            while !buf.is_empty() {
                let (chunk, used) = SealedChunk::decode_prefix(buf).unwrap();
                assert_eq!(chunk.header.seq, seq);
                assert_eq!(chunk.header.session, SessionId(s.session.0));
                let digest = env
                    .server()
                    .metadata
                    .chunk_digest(
                        &AgentId::new("ts-01").unwrap(),
                        SessionId(s.session.0),
                        StreamId(0),
                        seq,
                    )
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(Sha256::digest(&buf[..used]).as_slice(), digest);
                let dek_hex = hex::encode(chunk.header.dek_id.0);
                let rec = ann.get(&format!("/api/deks/{dek_hex}")).await;
                let record = DekRecord::decode(&rec.body).unwrap();
                let dek = Dek::unwrap(&record, &key.key, key.kek_id).unwrap();
                let plain = StreamKey::for_chunk(&dek, &chunk.header)
                    .open(&chunk)
                    .unwrap();
                if plain.is_empty() {
                    assert!(chunk.header.last && seq as usize == s.frames.len());
                    buf = &buf[used..];
                    seq += 1;
                    continue;
                }
                let frame = sealstream::protocol::payload::Frame::decode(&plain).unwrap();
                let (name, sha) = &s.frames[seq as usize];
                assert_eq!(frame.name, name);
                assert_eq!(Sha256::digest(frame.image).as_slice(), sha);
                opened += 1;
                buf = &buf[used..];
                seq += 1;
            }
        }
        assert_eq!(opened, s.frames.len());
    }
    // The audit names the session and the range of each ciphertext fetch.
    let rows = actions(&env).await;
    assert!(
        rows.iter()
            .any(|r| r.1 == "fetch_ciphertext" && r.2.contains("seq=0..=2"))
    );
    console.stop().await;
    env.stop().await;
}

#[actix_rt::test]
async fn ciphertext_is_served_as_single_chunks_that_open_to_the_recording_sqlite() {
    ciphertext_by_byte_range(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn ciphertext_is_served_as_single_chunks_that_open_to_the_recording_postgres() {
    ciphertext_by_byte_range(Backend::Postgres).await;
}

/// When the audit row cannot be written, nothing is served.
#[actix_rt::test]
async fn nothing_is_served_when_the_audit_log_cannot_be_written() {
    let (env, _) = recorded(Backend::Sqlite).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    assert_eq!(ann.get("/api/sessions").await.status, 200);
    let db = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
    db.execute_batch("ALTER TABLE audit_log RENAME TO audit_log_away")
        .unwrap();
    let r = ann.get("/api/sessions").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("audit log cannot be written")
    );
    let s = ann.get("/api/agents").await;
    assert_eq!(s.status, 503);
    db.execute_batch("ALTER TABLE audit_log_away RENAME TO audit_log")
        .unwrap();
    assert_eq!(ann.get("/api/sessions").await.status, 200);
    console.stop().await;
    env.stop().await;
}

/// A login unused for longer than the idle time is gone: the console's own check on each
/// request refuses it (the login is aged in the database, as time would age it), while a
/// fresh login goes on working.
#[actix_rt::test]
async fn an_idle_login_expires() {
    let env = Env::start(Backend::Sqlite, false).await;
    let md = &env.server().metadata;
    add_user(md, "ann", Role::Admin, &[], ANN).await;
    let console = start(&env, |c| c.idle_minutes = 15).await;
    let mut old = Http::new(console.addr);
    assert_eq!(old.login("ann", ANN).await.status, 200);
    assert_eq!(old.get("/api/me").await.status, 200);
    let mut fresh = Http::new(console.addr);
    assert_eq!(fresh.login("ann", ANN).await.status, 200);

    let token = old.cookie.as_ref().unwrap().split_once('=').unwrap().1;
    let hash = sealstream::console::auth::token_sha256(token);
    let aged = now_us() - 16 * 60_000_000;
    let db = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let changed = db
        .execute(
            "UPDATE console_login SET last_seen_us = ?1 WHERE token_sha256 = ?2",
            rusqlite::params![aged, &hash[..]],
        )
        .unwrap();
    assert_eq!(changed, 1, "the login's row");

    let r = old.get("/api/me").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        fresh.get("/api/me").await.status,
        200,
        "a fresh login still works"
    );
    console.stop().await;
    env.stop().await;
}

/// With `tls_cert` and `tls_key` the console speaks HTTPS (rustls) and its login cookie is
/// `Secure`; a browser-like client that trusts the certificate logs in.
#[actix_rt::test]
async fn the_console_serves_https_with_secure_cookies() {
    let env = Env::start(Backend::Sqlite, false).await;
    add_user(&env.server().metadata, "ann", Role::Admin, &[], ANN).await;
    let d = env.dir.path();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(d.join("console.crt"), cert.pem()).unwrap();
    std::fs::write(d.join("console.key"), key.serialize_pem()).unwrap();
    let console = start(&env, |c| {
        c.tls_cert = Some(d.join("console.crt"));
        c.tls_key = Some(d.join("console.key"));
    })
    .await;
    assert_eq!(console.scheme, "https");
    let addr = console.addr;
    let der = cert.der().clone();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let body = format!("{{\"user\":\"ann\",\"password\":\"{ANN}\"}}");
        write!(
            tls,
            "POST /api/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    console.stop().await;
    env.stop().await;
}

/// The console serves a KEK's files only when they are what they claim: the public key must
/// have the KEK's id and the private key file must be one PEM private key, so a path pointing
/// elsewhere does not make the console a file reader.
#[actix_rt::test]
async fn key_files_are_served_only_when_they_are_key_files() {
    let (env, _) = recorded(Backend::Sqlite).await;
    let d = env.dir.path();
    crate::common::genrsa(d, "other.pem", 2048, &["-aes256"]);
    let other_pub = crate::common::pubout(d, "other.pem", "other.crt", true);
    std::fs::write(d.join("not-a-key.txt"), "db_password=hunter2\n").unwrap();
    let md = &env.server().metadata;
    md.insert_kek(
        true,
        true,
        &other_pub.display().to_string(),
        &d.join("not-a-key.txt").display().to_string(),
    )
    .await
    .unwrap();
    env.server().reload_keks().await;
    // An agent's DEK under it, so that the console would serve its key file at all.
    let mut other = env.enroll("ts-02");
    other.kek = other_pub.clone();
    run_agent(other, spec(1, 0.3)).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let keks = ann.get("/api/keks").await.json();
    let ids: Vec<String> = keks
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kek_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{keks}");
    let good = crate::common::openssl_fingerprint(d, "publickey.crt");
    let bad = crate::common::openssl_fingerprint(d, "other.crt");
    let r = ann.get(&format!("/api/keks/{good}/private")).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let r = ann.get(&format!("/api/keks/{good}/public")).await;
    assert_eq!(r.status, 200);
    let r = ann.get(&format!("/api/keks/{bad}/private")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(!String::from_utf8_lossy(&r.body).contains("hunter2"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a PEM private key")
    );
    console.stop().await;
    env.stop().await;
}

/// A KEK's private key file is an offline passphrase-guessing target: a reviewer gets it only
/// for a KEK that wraps a DEK of an agent they are granted, whatever the KEK is bound to (the
/// how-to's insert binds it to none); every fetch and every refusal is audited.
async fn private_key_files_follow_the_grant(backend: Backend) {
    let env = Env::start(backend, true).await;
    let d = env.dir.path();
    crate::common::genrsa(d, "team-b.pem", 2048, &["-aes256"]);
    let team_b_pub = crate::common::pubout(d, "team-b.pem", "team-b.crt", true);
    crate::common::genrsa(d, "unused.pem", 2048, &["-aes256"]);
    let unused_pub = crate::common::pubout(d, "unused.pem", "unused.crt", true);
    let md = &env.server().metadata;
    for (public, private) in [(&team_b_pub, "team-b.pem"), (&unused_pub, "unused.pem")] {
        md.insert_kek(
            true,
            true,
            &public.display().to_string(),
            &d.join(private).display().to_string(),
        )
        .await
        .unwrap();
    }
    env.server().reload_keks().await;
    run_agent(env.enroll("ts-01"), spec(1, 0.5)).await;
    let mut vdi = env.enroll("vdi-01");
    vdi.kek = team_b_pub.clone();
    run_agent(vdi, spec(1, 0.5)).await;
    add_user(md, "ann", Role::Admin, &[], ANN).await;
    add_user(md, "rita", Role::Reviewer, &["ts-*"], RITA).await;

    let team_a = crate::common::openssl_fingerprint(d, "publickey.crt");
    let team_b = crate::common::openssl_fingerprint(d, "team-b.crt");
    let unused = crate::common::openssl_fingerprint(d, "unused.crt");
    let console = start(&env, |_| {}).await;
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let listed = rita.get("/api/keks").await.json();
    let private_file = |kek: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kek_id"] == kek)
            .map(|k| k["private_file"].as_bool().unwrap())
    };
    assert_eq!(private_file(&team_a), Some(true), "{listed}");
    assert_eq!(private_file(&team_b), Some(false), "{listed}");
    assert_eq!(private_file(&unused), Some(false), "{listed}");

    let r = rita.get(&format!("/api/keks/{team_a}/private")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, std::fs::read(d.join("keypair.pem")).unwrap());
    for kek in [&team_b, &unused] {
        let r = rita.get(&format!("/api/keks/{kek}/private")).await;
        assert_eq!(r.status, 404, "{kek}: {r:?}");
        assert!(!String::from_utf8_lossy(&r.body).contains("PRIVATE KEY"));
        // The public key is no secret: still served.
        assert_eq!(
            rita.get(&format!("/api/keks/{kek}/public")).await.status,
            200
        );
    }
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let r = ann.get(&format!("/api/keks/{team_b}/private")).await;
    assert_eq!(r.status, 200, "an admin sees every agent: {r:?}");
    assert_eq!(r.body, std::fs::read(d.join("team-b.pem")).unwrap());

    let rows = actions(&env).await;
    let has = |actor: &str, action: &str, detail: String| {
        rows.iter()
            .any(|(a, act, det, _)| a == actor && act == action && *det == detail)
    };
    assert!(
        has(
            "rita",
            "fetch_key_file",
            format!("kek={team_a} file=private")
        ),
        "{rows:?}"
    );
    assert!(
        has("rita", "denied", format!("kek={team_b} file=private")),
        "{rows:?}"
    );
    assert!(
        has("rita", "denied", format!("kek={unused} file=private")),
        "{rows:?}"
    );
    assert!(
        has(
            "ann",
            "fetch_key_file",
            format!("kek={team_b} file=private")
        ),
        "{rows:?}"
    );
    console.stop().await;
    env.stop().await;
}

#[actix_rt::test]
async fn private_key_files_follow_the_grant_sqlite() {
    private_key_files_follow_the_grant(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn private_key_files_follow_the_grant_postgres() {
    private_key_files_follow_the_grant(Backend::Postgres).await;
}

// ---- Issue 23, findings 5, 7 and 8: what the audit log says, equal login work, bad counts.

/// The audit rows a reviewer's access leaves, read as the admin's view reads them: a session of
/// an agent outside the grant asked for under a granted agent's path is a refusal naming the
/// agent it belongs to (session, index and ciphertext alike), details are plain `key=value`
/// text, and the admin pages through the log and filters it on the server.
async fn the_audit_log_names_what_was_asked_and_pages_by_filter(backend: Backend) {
    let (env, _) = recorded(backend).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let all = ann.get("/api/sessions").await.json();
    let of = |agent: &str| {
        all["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["agent"] == agent)
            .unwrap()["session"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ts, vdi) = (of("ts-01"), of("vdi-01"));
    let ts_hex = hex::encode("ts-01");

    // vdi-01's session under ts-01's path (granted): 404, and a refusal naming vdi-01.
    let under_ts = format!("/api/agents/{ts_hex}/sessions/{vdi}");
    let paths = [
        under_ts.clone(),
        format!("{under_ts}/index"),
        format!("{under_ts}/streams/0/chunks?from_seq=0&count=4"),
    ];
    for path in &paths {
        let r = rita.get(path).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }
    // A session that exists nowhere, under a granted agent: 404 and audited too.
    let nowhere = "00112233445566778899aabbccddeeff";
    let r = rita
        .get(&format!(
            "/api/agents/{ts_hex}/sessions/{nowhere}/streams/0/chunks?from_seq=0&count=1"
        ))
        .await;
    assert_eq!(r.status, 404);
    let rows = actions(&env).await;
    let rita_rows: Vec<_> = rows.iter().filter(|r| r.0 == "rita").collect();
    let naming_vdi: Vec<_> = rita_rows
        .iter()
        .filter(|r| r.1 == "denied" && r.2.contains("agent=vdi-01") && r.2.contains(&vdi))
        .collect();
    assert_eq!(
        naming_vdi.len(),
        3,
        "one refusal per request: {rita_rows:?}"
    );
    assert!(
        naming_vdi.iter().any(|r| r.2.contains("stream=0")),
        "the ciphertext request's refusal names its stream: {naming_vdi:?}"
    );
    assert!(
        !rita_rows
            .iter()
            .any(|r| r.1 != "denied" && r.2.contains(&vdi)),
        "no view, index read or fetch of vdi-01's session is logged: {rita_rows:?}"
    );
    assert!(
        rita_rows
            .iter()
            .any(|r| r.1 == "not_found" && r.2.contains(nowhere)),
        "{rita_rows:?}"
    );

    // `count=0` asks for nothing: refused, not answered with a chunk.
    let own = format!("/api/agents/{ts_hex}/sessions/{ts}");
    let r = ann
        .get(&format!("{own}/streams/0/chunks?from_seq=0&count=0"))
        .await;
    assert_eq!(r.status, 400, "{r:?}");

    // Details are text a person reads: no Rust `Some(..)`, `None` or quoted strings, with or
    // without the optional parts of each request.
    let t_mid = now_us();
    for path in [
        "/api/sessions".to_owned(),
        "/api/sessions?agent=ts-01&since_us=1".to_owned(),
        format!("{own}/index"),
        format!("{own}/index?stream=1&from_seq=2"),
        format!("{own}/streams/0/chunks?from_seq=0&count=2"),
    ] {
        assert_eq!(ann.get(&path).await.status, 200, "{path}");
    }
    for body in [
        format!(r#"{{"agent_hex":"{ts_hex}","session":"{ts}","what":"video"}}"#),
        format!(
            r#"{{"agent_hex":"{ts_hex}","session":"{ts}","what":"frames","from_us":1,"to_us":2}}"#
        ),
    ] {
        let r = ann.request("POST", "/api/exports", Some(&body)).await;
        assert_eq!(r.status, 204, "{r:?}");
    }
    let rows = actions(&env).await;
    let console_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "ann" || r.0 == "rita")
        .collect();
    for r in &console_rows {
        for debug in ["Some(", "None", "\""] {
            assert!(!r.2.contains(debug), "Rust debug text in {r:?}");
        }
    }
    for want in [
        "agent=ts-01 since_us=1 page=first",
        "stream=1 from_seq=2",
        "what=frames from_us=1 to_us=2",
    ] {
        assert!(
            console_rows.iter().any(|r| r.2.contains(want)),
            "{want}: {console_rows:?}"
        );
    }

    // The admin's view pages: newest first, `older` continues below, `newer` comes back.
    let ids_of = |v: &serde_json::Value| -> Vec<i64> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let first = ann.get("/api/audit?limit=5").await.json();
    let first_ids = ids_of(&first);
    assert_eq!(first_ids.len(), 5, "{first}");
    assert!(first_ids.windows(2).all(|w| w[0] > w[1]), "{first_ids:?}");
    assert!(first["newer"].is_null(), "the newest page: {first}");
    let older = first["older"].as_i64().expect("older rows exist");
    let second = ann
        .get(&format!("/api/audit?limit=5&before={older}"))
        .await
        .json();
    let second_ids = ids_of(&second);
    assert_eq!(second_ids.len(), 5);
    assert!(
        second_ids[0] < first_ids[4],
        "{second_ids:?} after {first_ids:?}"
    );
    let newer = second["newer"].as_i64().expect("newer rows exist");
    let back = ann
        .get(&format!("/api/audit?limit=5&after={newer}"))
        .await
        .json();
    // The first page again, but for the `view_audit` rows the paging itself wrote.
    let back_ids = ids_of(&back);
    assert_eq!(back_ids.len(), 5);
    assert_eq!(back_ids[4], first_ids[4], "{back_ids:?} vs {first_ids:?}");
    assert!(back_ids[4] > second_ids[0]);

    // Filters, on the server: every matching row and nothing else.
    let all_rows = env
        .server()
        .metadata
        .audit_rows(None, 10_000)
        .await
        .unwrap();
    let denied = ann
        .get("/api/audit?user=rita&action=denied&limit=1000")
        .await
        .json();
    let want: Vec<i64> = all_rows
        .iter()
        .filter(|r| r.actor == "rita" && r.action == "denied")
        .map(|r| r.id)
        .collect();
    assert!(want.len() >= 3);
    assert_eq!(ids_of(&denied), want);
    assert!(
        denied["older"].is_null() && denied["newer"].is_null(),
        "{denied}"
    );
    let since = ann
        .get(&format!("/api/audit?since_us={t_mid}&user=ann&limit=1000"))
        .await
        .json();
    let until = ann
        .get(&format!("/api/audit?until_us={t_mid}&user=ann&limit=1000"))
        .await
        .json();
    let (since_ids, until_ids) = (ids_of(&since), ids_of(&until));
    assert!(!since_ids.is_empty() && !until_ids.is_empty());
    assert!(
        since_ids.iter().min() > until_ids.iter().max(),
        "{since_ids:?} / {until_ids:?}"
    );
    let ann_before: Vec<i64> = all_rows
        .iter()
        .filter(|r| r.actor == "ann")
        .map(|r| r.id)
        .filter(|id| id <= until_ids.first().unwrap())
        .collect();
    assert_eq!(until_ids, ann_before, "every row of ann's up to t_mid");
    for r in since["rows"].as_array().unwrap() {
        assert_eq!(r["actor"], "ann");
    }
    // Reviewers have no audit view at all.
    assert_eq!(rita.get("/api/audit?user=rita").await.status, 404);
    console.stop().await;
    env.stop().await;
}

#[actix_rt::test]
async fn the_audit_log_names_what_was_asked_and_pages_by_filter_sqlite() {
    the_audit_log_names_what_was_asked_and_pages_by_filter(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn the_audit_log_names_what_was_asked_and_pages_by_filter_postgres() {
    the_audit_log_names_what_was_asked_and_pages_by_filter(Backend::Postgres).await;
}

/// A login for a name that does not exist does the same argon2 work as a wrong password for
/// one that does: one argon2id verification per attempt, against a hash of the same parameters,
/// and no hashing on the way (made once at start). Timings are printed, not asserted.
#[actix_rt::test]
async fn an_unknown_user_costs_a_login_the_same_argon2_work_as_a_wrong_password() {
    let env = Env::start(Backend::Sqlite, false).await;
    add_user(
        &env.server().metadata,
        "rita",
        Role::Reviewer,
        &["ts-*"],
        RITA,
    )
    .await;
    let console = start(&env, |c| c.max_failed_logins = 100).await;
    let mut client = Http::new(console.addr);
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..3 {
        for (name, out) in [
            ("rita".to_owned(), &mut known),
            (format!("nobody-{i}"), &mut unknown),
        ] {
            let before = console.password_work();
            let t = std::time::Instant::now();
            let r = client.login(&name, "not her password").await;
            let took = t.elapsed();
            assert_eq!(r.status, 401, "{name}: {r:?}");
            assert_eq!(r.json()["error"], "wrong user name or password");
            out.push((console.password_work() - before, took));
        }
    }
    eprintln!(
        "argon2 runs and time per failed login: known user {known:?}, unknown user {unknown:?}"
    );
    for (runs, _) in known.iter().chain(&unknown) {
        assert_eq!(
            *runs, 1,
            "one argon2 verification per login: {known:?} {unknown:?}"
        );
    }
    // The dummy hash has the parameters of a stored one.
    let stored = env
        .server()
        .metadata
        .console_user("rita")
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    let params = |phc: &str| phc.rsplitn(3, '$').nth(2).unwrap().to_owned();
    assert_eq!(params(console.dummy_hash()), params(&stored));
    console.stop().await;
    env.stop().await;
}

/// `/api/overview` (the page's Live montage, Screen snapshots and keystrokes report): each
/// session of the caller's agents with its stream ids and where its frames to show are, the
/// newest frame or the newest of each part of a range, another team's agents never, every call
/// audited.
async fn the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant(
    backend: Backend,
) {
    let (env, reports) = recorded(backend).await;
    let console = start(&env, |_| {}).await;
    let mut ann = Http::new(console.addr);
    assert_eq!(ann.login("ann", ANN).await.status, 200);
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let md = &env.server().metadata;
    let (ts, vdi) = (hex::encode("ts-01"), hex::encode("vdi-01"));

    let all = ann.get("/api/overview").await;
    assert_eq!(all.status, 200, "{all:?}");
    let all = all.json();
    let sessions = all["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{all}");
    for r in &reports {
        let s = &r.sessions[0];
        let row = sessions
            .iter()
            .find(|x| x["agent"] == r.agent.as_str())
            .unwrap();
        assert_eq!(row["session"], hex::encode(s.session.0));
        assert_eq!(row["frame_stream"], 0);
        assert_eq!(row["key_stream"], 1);
        assert_eq!(row["state"], "complete");
        let keys = md
            .chunk_locations(r.agent.as_str(), s.session.0, Some(1), 0, 10_000)
            .await
            .unwrap();
        assert_eq!(row["key_chunks"], keys.len() as u64);
        // The newest frame: the last image, not the empty chunk that ends the stream.
        let newest = s.frames.len() as u64 - 1;
        let frames = row["frames"].as_array().unwrap();
        assert_eq!(frames.len(), 1, "{row}");
        assert_eq!(frames[0]["seq"], newest);
        let loc = md
            .chunk_locations(r.agent.as_str(), s.session.0, Some(0), newest, 1)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(frames[0]["capture_us"], loc.capture_us.unwrap());
        assert_eq!(frames[0]["dek_id"], hex::encode(loc.dek_id.unwrap()));
        assert_eq!(frames[0]["len"], loc.range.unwrap().1);

        // Slots: the newest frame of each of three parts of the session's time.
        let (first, last) = (
            row["first_capture_us"].as_i64().unwrap(),
            row["last_capture_us"].as_i64().unwrap(),
        );
        let q = format!(
            "/api/overview?agents={}&since_us={first}&until_us={last}&slots=3",
            hex::encode(r.agent.as_str())
        );
        let picked = ann.get(&q).await.json();
        let picked = picked["sessions"][0]["frames"].as_array().unwrap().clone();
        let rows = md
            .chunk_locations(r.agent.as_str(), s.session.0, Some(0), 0, 10_000)
            .await
            .unwrap();
        let capture = |seq: u64| {
            rows.iter()
                .find(|c| c.seq == seq)
                .unwrap()
                .capture_us
                .unwrap()
        };
        let slot = |us: i64| (us - first) * 3 / (last - first + 1);
        assert!(!picked.is_empty() && picked.len() <= 3, "{picked:?}");
        for (i, f) in picked.iter().enumerate() {
            let seq = f["seq"].as_u64().unwrap();
            let later = rows
                .iter()
                .filter(|c| c.seq > seq && (c.seq as usize) < s.frames.len())
                .find(|c| slot(c.capture_us.unwrap()) == slot(capture(seq)));
            assert!(
                later.is_none(),
                "frame {seq} is its part's newest: {later:?}"
            );
            if i > 0 {
                assert!(slot(capture(seq)) > slot(capture(picked[i - 1]["seq"].as_u64().unwrap())));
            }
        }
        assert_eq!(picked.last().unwrap()["seq"], newest);
    }
    // Without frames; and none is live (both ended with their final chunk).
    let none = ann.get("/api/overview?slots=0").await.json();
    assert!(
        none["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["frames"] == serde_json::json!([]))
    );
    let live = ann.get("/api/overview?live=true").await.json();
    assert_eq!(live["sessions"], serde_json::json!([]));

    // A reviewer sees only her agents, even when she names another team's.
    let names = |v: serde_json::Value| -> Vec<String> {
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["agent"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(rita.get("/api/overview").await.json()), ["ts-01"]);
    assert_eq!(
        names(
            rita.get(&format!("/api/overview?agents={vdi}"))
                .await
                .json()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            rita.get(&format!("/api/overview?agents={ts},{vdi}&slots=0"))
                .await
                .json()
        ),
        ["ts-01"]
    );
    assert_eq!(rita.get("/api/overview?agents=zz").await.status, 400);
    // Every call is in the audit log, with what was asked.
    let rows = actions(&env).await;
    let asked: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "rita" && r.1 == "list_overview")
        .map(|r| r.2.as_str())
        .collect();
    assert!(asked.contains(&"slots=1 page=first"), "{asked:?}");
    assert!(
        asked.contains(&"agents=vdi-01 slots=1 page=first"),
        "{asked:?}"
    );
    assert!(
        asked.contains(&"agents=ts-01,vdi-01 slots=0 page=first"),
        "{asked:?}"
    );
    console.stop().await;
    env.stop().await;
}

#[actix_rt::test]
async fn the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant_sqlite() {
    the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant(Backend::Sqlite)
        .await;
}

#[actix_rt::test]
async fn the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant_postgres() {
    the_overview_lists_sessions_with_their_streams_and_frames_within_the_grant(Backend::Postgres)
        .await;
}

/// Agent patterns are case-sensitive on both databases: a reviewer of `ts-*` is not listed an
/// agent named `TS-01` (SQLite's LIKE ignores ASCII case unless told not to).
async fn grants_are_case_sensitive(backend: Backend) {
    let env = Env::start(backend, true).await;
    for name in ["ts-01", "TS-01"] {
        run_agent(env.enroll(name), spec(1, 0.3)).await;
    }
    add_user(
        &env.server().metadata,
        "rita",
        Role::Reviewer,
        &["ts-*"],
        RITA,
    )
    .await;
    let console = start(&env, |_| {}).await;
    let mut rita = Http::new(console.addr);
    assert_eq!(rita.login("rita", RITA).await.status, 200);
    let listed = rita.get("/api/sessions").await.json();
    let agents: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["ts-01"], "{listed}");
    let recorded = rita.get("/api/agents").await.json();
    let names: Vec<&str> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ts-01"], "{recorded}");
    console.stop().await;
    env.stop().await;
}

#[actix_rt::test]
async fn grants_are_case_sensitive_sqlite() {
    grants_are_case_sensitive(Backend::Sqlite).await;
}

#[actix_rt::test]
async fn grants_are_case_sensitive_postgres() {
    grants_are_case_sensitive(Backend::Postgres).await;
}
