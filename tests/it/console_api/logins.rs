use super::*;

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

crate::common::on_both_backends!(
    logins_grants_and_audit,
    sqlite: logins_grants_and_audit_sqlite,
    postgres: logins_grants_and_audit_postgres,
);

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
