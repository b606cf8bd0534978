//! PostgreSQL as the production path: the server under concurrent key and segment work on a
//! real PostgreSQL, with no hang, and a watchdog that says when the pipeline is stuck.

use std::time::Duration;

use crate::common::agents::{http_get, run_agent};
use crate::common::faults::PrivatePg;
use crate::common::server::{Backend, Env, RawStream, pg_admin, raw_connect};
use sealstream::agent::AgentReport;
use sealstream::metadata::Table;
use sealstream::protocol::AgentId;
use sealstream::protocol::uplink::MSG_DEK;
use sealstream::recorder::Recorder;
use sealstream::server::Server;
use sealstream::server::watchdog::Stage;

/// The hang found under the load harness: a DEK registration held the only PostgreSQL client
/// inside the key actor while the KEK reload, run with `ctx.wait`, stopped the actor from
/// polling it and waited for that same client. With the KEK table re-read every millisecond
/// and many DEK records arriving at once, the old server stopped answering within a second.
#[actix_rt::test]
async fn dek_registrations_and_kek_reloads_never_deadlock_on_postgresql() {
    let env = Env::start_tuned(Backend::Postgres, true, |cfg| {
        cfg.kek_poll_ms = 1;
        cfg.limits.dek_records_per_minute = 1000;
    })
    .await;
    let kek = sealstream::keys::load_public_key(&env.kek_pub).unwrap();
    let mut agents = Vec::new();
    for a in 0..6 {
        let name = format!("pg-dek-{a}");
        let cfg = env.enroll(&name);
        let (quic, pin) = (env.server().quic_addr, env.server().pin);
        let kek = kek.clone();
        agents.push(actix_rt::spawn(async move {
            let (_ep, conn) = raw_connect(quic, vec![pin], &cfg.cert, &cfg.key)
                .await
                .unwrap();
            let mut streams = Vec::new();
            for _ in 0..30 {
                let conn = conn.clone();
                let rec = Recorder::new(AgentId::new(name.clone()).unwrap(), &kek);
                streams.push(actix_rt::spawn(async move {
                    let mut s = RawStream::open(&conn).await.unwrap();
                    for _ in 0..3 {
                        s.send(MSG_DEK, &rec.dek_record().encode()).await.unwrap();
                        let r = s.response().await.expect("an answer to every DEK record");
                        assert_eq!(r.outcome, Ok(()), "{}", r.reason);
                    }
                }));
            }
            for s in streams {
                s.await.unwrap();
            }
            conn.close(0u32.into(), b"done");
        }));
    }
    let all = async {
        for a in agents {
            a.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every DEK registration answered (the server did not hang)");
    let deks = env
        .server()
        .metadata
        .count(sealstream::metadata::Table::EncryptionDek)
        .await
        .unwrap();
    assert_eq!(deks, 6 * 30, "each distinct DEK recorded once");
    env.stop().await;
}

/// The load harness's pace, scaled to a debug test: frames as fast as acks allow, 8 in flight
/// per stream, several agents with several users each.
fn pace(users: usize, secs: f64, seed: u64) -> sealstream::agent::synthetic::SyntheticSpec {
    sealstream::agent::synthetic::SyntheticSpec {
        users,
        duration: Duration::from_secs_f64(secs),
        frame_interval: Duration::ZERO,
        frame_size: 16 * 1024,
        frame_size_spread: 0.25,
        keystroke_interval: Duration::from_millis(300),
        keystroke_events: 8,
        seed,
        images: false,
    }
}

fn paced(mut cfg: sealstream::config::AgentConfig) -> sealstream::config::AgentConfig {
    cfg.window = 8;
    cfg.max_unacked_bytes = 8 * 1024 * 1024;
    cfg
}

/// Stage `stage` reported stuck by `/readyz`, polled until `within`.
async fn readyz_reports(env: &Env, stage: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (line, body) = http_get(env.server().ops_addr, "/readyz").await;
        if line.contains(" 503 ") && body.contains(stage) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never reported stage {stage} stuck: {line} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Agents at the harness's pace against a server on PostgreSQL at `url`; `fault` runs while
/// they record. Afterwards: every acked chunk exported once, byte for byte, every chunk
/// indexed once, and the server ready (watchdog clear).
async fn under_load<F, Fut>(env: &Env, agents: usize, secs: f64, fault: F) -> Vec<AgentReport>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut running = Vec::new();
    for a in 0..agents {
        let cfg = paced(env.enroll(&format!("pg-load-{a}")));
        running.push(tokio::spawn(run_agent(cfg, pace(3, secs, a as u64 + 1))));
    }
    fault().await;
    let mut reports = Vec::new();
    for r in running {
        reports.push(r.await.unwrap());
    }
    let sealed: u64 = reports.iter().map(|r| r.chunks_sealed).sum();
    assert_eq!(
        env.server().metadata.count(Table::Chunks).await.unwrap() as u64,
        sealed,
        "every chunk indexed exactly once"
    );
    let frames = env.check_export(&reports).await;
    eprintln!("{sealed} chunks sealed and acked, {frames} frames verified");
    // The pool recovered and the watchdog cleared.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (line, body) = http_get(env.server().ops_addr, "/readyz").await;
        if line.contains(" 200 ") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.server().progress.stalled_stages().is_empty());
    reports
}

fn retried(reports: &[AgentReport]) -> u64 {
    reports
        .iter()
        .map(|r| r.rejected.get("retry_later").copied().unwrap_or(0))
        .sum()
}

#[actix_rt::test]
async fn postgresql_restarted_under_load_loses_nothing_and_the_watchdog_clears() {
    let mut env = Env::start(Backend::Sqlite, false).await;
    env.server.take().unwrap().shutdown().await;
    let pg = PrivatePg::new(&env.dir.path().join("pgbase"));
    env.cfg.database_url = pg.url();
    env.cfg.watchdog.stall_after_ms = 1000;
    env.cfg.database.connect_timeout_ms = 1000;
    env.server = Some(Server::start(&env.cfg).await.unwrap());
    env.register_kek().await;
    let reports = under_load(&env, 3, 8.0, || async {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        pg.stop();
        let said = readyz_reports(&env, "index", Duration::from_secs(10)).await;
        eprintln!("while PostgreSQL was down, /readyz said: {said}");
        assert!(env.server().progress.stalled(Stage::Index));
        pg.start();
    })
    .await;
    assert!(retried(&reports) > 0, "the outage was felt");
    env.server.take().unwrap().shutdown().await;
    drop(pg);
    env.stop().await;
}

#[actix_rt::test]
async fn connections_killed_by_pg_terminate_backend_under_load_lose_nothing() {
    let env = Env::start(Backend::Postgres, true).await;
    let db = env.pg_db.clone().unwrap();
    let (client, conn) = tokio_postgres::connect(&pg_admin(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let k = killed.clone();
    under_load(&env, 3, 6.0, || async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let n = client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&db],
                )
                .await
                .unwrap()
                .len();
            k.fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .await;
    let killed = killed.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{killed} server connections terminated");
    assert!(killed >= 5, "connections were there to kill: {killed}");
    env.stop().await;
}

#[actix_rt::test]
async fn a_statement_timeout_under_load_answers_retry_later_and_loses_nothing() {
    let env = Env::start_tuned(Backend::Postgres, true, |cfg| {
        cfg.database.statement_timeout_ms = 300;
        cfg.watchdog.stall_after_ms = 1000;
    })
    .await;
    let db = env.pg_db.clone().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let reports = under_load(&env, 3, 7.0, || async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Hold the index tables for longer than the server's statement_timeout (and its
        // watchdog): every commit meanwhile times out.
        let tx = client.transaction().await.unwrap();
        tx.batch_execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let said = readyz_reports(&env, "index", Duration::from_secs(10)).await;
        eprintln!("while the index was locked, /readyz said: {said}");
        tx.rollback().await.unwrap();
    })
    .await;
    assert!(retried(&reports) > 0, "the timeouts were felt");
    env.stop().await;
}
