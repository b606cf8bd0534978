//! KEKs at the ingest door: unknown then registered, deactivated, retired the runbook's way, and
//! known to a restarted server before its first agent.

use super::*;

async fn unknown_kek_then_accepted(backend: Backend) {
    let env = Env::start(backend, false).await;
    let cfg = env.enroll("late-kek");
    let agent = tokio::spawn(async move { run_agent(cfg, spec(1, 2.0)).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        env.server().metadata.count(Table::Chunks).await.unwrap(),
        0,
        "nothing stored under an unknown KEK"
    );
    // The how-to's statement, verbatim but for the paths, with the server running; the key
    // actor polls every 100 ms.
    let statement = format!(
        "insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile)\nvalues (true, true, '{}', '{}');",
        env.kek_pub.display(),
        env.kek_priv.display()
    );
    match &env.pg_db {
        Some(db) => {
            let (client, conn) = tokio_postgres::connect(
                &format!("host=127.0.0.1 user=postgres dbname={db}"),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            client.batch_execute(&statement).await.unwrap();
        }
        None => {
            let c = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
            c.execute_batch(&statement).unwrap();
        }
    }
    let report = agent.await.unwrap();
    assert_eq!(report.unacked, 0);
    assert!(
        report.rejected.get("unknown_kek").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.rejected
    );
    env.check_export(&[report]).await;
    env.stop().await;
}

crate::common::on_both_backends!(
    unknown_kek_then_accepted,
    sqlite: an_unknown_kek_is_refused_then_accepted_without_a_restart_on_sqlite,
    postgres: an_unknown_kek_is_refused_then_accepted_without_a_restart_on_postgresql,
);

#[actix_rt::test]
async fn a_deactivated_kek_is_refused_without_a_restart() {
    let env = Env::start(Backend::Sqlite, true).await;
    let (_ep, conn, _s, _rec) = env.registered("rotating").await;
    let c = rusqlite::Connection::open(env.cfg.sqlite_path()).unwrap();
    c.execute_batch("update encryption_kek set active = false, retired_at = CURRENT_TIMESTAMP")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A new DEK (an agent restart) under the retired KEK: kept by the agent, not stored.
    let kek = keys::load_public_key(&env.kek_pub).unwrap();
    let fresh = Recorder::new(AgentId::new("rotating").unwrap(), &kek);
    let mut s = RawStream::open(&conn).await.unwrap();
    s.send(MSG_DEK, &fresh.dek_record().encode()).await.unwrap();
    let r = s.response().await.unwrap();
    assert_eq!(r.outcome, Err(Reject::InactiveKek), "{r:?}");
    assert!(Reject::InactiveKek.retryable());
    env.stop().await;
}

/// The runbook's KEK retirement, whole: an agent holds a spooled backlog sealed under KEK A
/// when A is retired the how-to's way (`active = false`) and KEK B registered; the agent gets
/// B as kek.pem and restarts. Its backlog under A is still taken (it is ciphertext A's holder
/// can read), its new sessions go under B, and an agent still on A with a new DEK is refused
/// `inactive_kek` and keeps its data. Export with both keys gives everything back.
#[actix_rt::test]
async fn retiring_a_kek_the_runbooks_way_loses_nothing_and_new_sessions_use_the_new_kek() {
    let mut env = Env::start(Backend::Postgres, true).await;
    let d = env.dir.path().to_owned();
    let mut cfg = env.enroll("retiree");
    cfg.spool_dir = Some(d.join("retiree-spool"));
    cfg.reconnect_ms = 100;
    cfg.connect_timeout_ms = 300;
    let stale = env.enroll("stale");
    let quic = env.server().quic_addr;
    // The server goes away: the agent records 1 s and keeps it all in its spool.
    env.server.take().unwrap().shutdown().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let run1 = tokio::spawn(agent::run(
        cfg.clone(),
        Source::Synthetic(spec(2, 1.0)),
        rx,
        Duration::from_millis(200),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tx.send(true).unwrap();
    let first = run1.await.unwrap().unwrap();
    assert!(first.unacked > 0 && first.unacked == first.chunks_sealed);

    // Retire A as the how-to would, register B, hand the agent B.
    crate::common::genrsa(&d, "keypair-b.pem", 2048, &["-aes256"]);
    let kek_b = crate::common::pubout(&d, "keypair-b.pem", "publickey-b.crt", true);
    let url = env.cfg.database_url.clone();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "update encryption_kek set active = false where pub_datafile = '{a}';\n\
             insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile) \
             values (true, true, '{b}', '{bp}');",
            a = env.kek_pub.display(),
            b = kek_b.display(),
            bp = d.join("keypair-b.pem").display()
        ))
        .await
        .unwrap();
    env.cfg.listen = quic;
    env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
    env.server().reload_keks().await;

    // An agent still on A, with a new DEK made after the retirement: refused, data kept.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stale_run = tokio::spawn(agent::run(
        stale,
        Source::Synthetic(spec(1, 0.5)),
        rx,
        Duration::from_millis(200),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = tx.send(true);
    let stale_report = stale_run.await.unwrap().unwrap();
    assert!(
        stale_report
            .rejected
            .get("inactive_kek")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        stale_report.rejected
    );
    assert_eq!(stale_report.chunks_acked, 0);

    // The retiree restarts with B: backlog under A taken, new sessions under B.
    cfg.kek = kek_b.clone();
    let second = run_agent(cfg, spec(2, 1.0)).await;
    assert_eq!(second.unacked, 0, "{:?}", second.rejected);
    assert_eq!(
        second.kek.to_string(),
        keys::load_public_key(&kek_b).unwrap().kek_id.to_string()
    );
    assert_eq!(
        second.chunks_acked,
        second.chunks_sealed + first.chunks_sealed,
        "the backlog sealed under the retired KEK was delivered"
    );
    let md = &env.server().metadata;
    assert_eq!(
        md.count(Table::Chunks).await.unwrap() as u64,
        first.chunks_sealed + second.chunks_sealed
    );

    // Both keys read everything back; nothing is missing or damaged.
    let key_b = keys::load_private_key(&d.join("keypair-b.pem"), || {
        Ok(keys::Passphrase::new(
            crate::common::PASS.as_bytes().to_vec(),
        ))
    })
    .unwrap();
    let store = storage::open_local(&env.store_dir()).unwrap();
    let report = export::export(
        store.as_ref(),
        &[env.private_key(), key_b],
        None,
        &d.join("out"),
    )
    .await
    .unwrap();
    assert!(!report.tampered(), "{:?}", report.damaged_objects);
    let exported: u64 = report.streams.iter().map(|s| s.chunks).sum();
    assert_eq!(exported, first.chunks_sealed + second.chunks_sealed);
    assert!(
        report
            .streams
            .iter()
            .all(|s| s.status == export::Status::Complete)
    );
    env.stop().await;
}

/// A restarted server knows its KEKs before the first agent gets in: an agent reconnecting
/// the moment the server is back is not told `unknown_kek` (which makes it back off as for a
/// problem needing a person). The fault soak found agents waiting after a server restart.
#[actix_rt::test]
async fn a_restarted_server_knows_its_keks_before_the_first_agent_gets_in() {
    let mut env = Env::start(Backend::Sqlite, true).await;
    for i in 0..5 {
        env.server.take().unwrap().shutdown().await;
        env.server = Some(sealstream::server::Server::start(&env.cfg).await.unwrap());
        let (_ep, _conn, _s, _rec) = env.registered(&format!("eager-{i}")).await;
    }
    env.stop().await;
}
