//! The object stores: one conformance suite over every backend the tests can start (a local
//! directory, S3 on moto's server), agents recording into each through the real server, the
//! export and `sealstream verify` reading each by URL, and a store that fails, slows down,
//! throttles (503 SlowDown) or is unreachable, on each, losing nothing acked.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use sealstream::agent;
use sealstream::config;
use sealstream::protocol::uplink::Reject;
use sealstream::storage::durable::SegmentWriter;
use sealstream::storage::remote::ObjectWriter;
use sealstream::storage::{self, PutOutcome, StoreError};

use crate::common::agents::{check_store, run_agent, spec};
use crate::common::moto::Moto;
use crate::common::object_faults::{Fault, FaultyStore};
use crate::common::server::{Backend, Env};

/// A store every test here runs on.
struct Case {
    name: &'static str,
    location: String,
    settings: config::Store,
    /// Environment for a `sealstream` command that reads the store by `location` alone.
    env: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
    _moto: Option<Moto>,
}

fn backends() -> Vec<Case> {
    let local = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let bucket = moto.bucket("recordings");
    vec![
        Case {
            name: "local directory",
            location: local.path().join("store").display().to_string(),
            settings: config::Store::default(),
            env: Vec::new(),
            _dir: local,
            _moto: None,
        },
        Case {
            name: "S3 (moto)",
            location: format!("{bucket}/estate-a"),
            settings: moto.settings(),
            env: moto.env(),
            _dir: tempfile::tempdir().unwrap(),
            _moto: Some(moto),
        },
    ]
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// `writer` creates `path` from `parts`, takes the same parts again as a repeat, refuses
/// `other` as a conflict, and the object keeps the first bytes throughout.
async fn create_if_absent(
    name: &str,
    objects: &dyn object_store::ObjectStore,
    writer: &dyn SegmentWriter,
    path: &Path,
    parts: Vec<Bytes>,
    other: Vec<Bytes>,
) {
    let whole: Vec<u8> = parts.iter().flat_map(|b| b.to_vec()).collect();
    let put = |p: Vec<Bytes>| writer.put(path.clone(), p);
    assert_eq!(
        put(parts.clone()).await.unwrap(),
        PutOutcome::Created,
        "{name}"
    );
    assert_eq!(storage::get(objects, path).await.unwrap(), whole, "{name}");
    assert_eq!(
        put(parts).await.unwrap(),
        PutOutcome::AlreadyPresent,
        "{name}"
    );
    let e = put(other).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{name}: {e}");
    assert_eq!(
        storage::get(objects, path).await.unwrap(),
        whole,
        "{name}: kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_writes_create_if_absent_reads_ranges_lists_and_uploads_in_parts() {
    for case in backends() {
        let name = case.name;
        let opened = storage::open(&case.location, &case.settings).unwrap();
        let objects = opened.objects.as_ref();
        let p = Path::from("v1/deks/agent/one.dek");

        // Create-if-absent: created, the same bytes again are a repeat, other bytes refused.
        let a = pattern(3000, 1);
        assert_eq!(
            storage::put_new(objects, &p, a.clone()).await.unwrap(),
            PutOutcome::Created,
            "{name}"
        );
        assert_eq!(
            storage::put_new(objects, &p, a.clone()).await.unwrap(),
            PutOutcome::AlreadyPresent,
            "{name}"
        );
        let e = storage::put_new(objects, &p, pattern(3000, 2))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{name}: {e}");
        assert_eq!(storage::get(objects, &p).await.unwrap(), a, "{name}: kept");

        // Byte ranges, absent objects, sorted listings.
        assert_eq!(
            storage::get_range(objects, &p, 100, 50).await.unwrap(),
            a.slice(100..150),
            "{name}"
        );
        assert!(
            storage::get_opt(objects, &Path::from("v1/none"))
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        let q = Path::from("v1/deks/agent/0.dek");
        storage::put_new(objects, &q, pattern(10, 3)).await.unwrap();
        let listed = storage::list(objects, &Path::from("v1/deks"))
            .await
            .unwrap();
        assert_eq!(listed, vec![q.clone(), p.clone()], "{name}");

        // The segment writer this backend uses in `serve`, from parts.
        let parts = vec![pattern(1000, 4), pattern(2000, 5)];
        let seg = Path::from("v1/segments/2026-11-28/aa.seg");
        let other = vec![pattern(3000, 6)];
        create_if_absent(name, objects, opened.segments.as_ref(), &seg, parts, other).await;

        // A large segment in parts (multipart upload; a local directory writes it whole).
        let parts: Vec<Bytes> = (0..6).map(|i| pattern(2 * 1024 * 1024 + 7, i)).collect();
        let mut other = parts.clone();
        other[5] = pattern(2 * 1024 * 1024 + 7, 99);
        let writer = ObjectWriter {
            objects: opened.objects.clone(),
            multipart_threshold: 5 * 1024 * 1024,
            part_bytes: 5 * 1024 * 1024,
        };
        let big = Path::from("v1/segments/2026-11-28/bb.seg");
        create_if_absent(name, objects, &writer, &big, parts, other).await;
        eprintln!("{name}: conformance passed");
    }
}

#[actix_rt::test]
async fn agents_record_into_every_backend_and_export_and_verify_read_it_by_url() {
    for case in backends() {
        let name = case.name;
        // The production pairing on S3 (PostgreSQL); the embedded one on a directory.
        let backend = if case._moto.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let (location, settings) = (case.location.clone(), case.settings.clone());
        let env = Env::start_tuned(backend, true, move |c| {
            c.store_url = location;
            c.store = settings;
        })
        .await;
        assert_eq!(env.server().store.to_string(), case.location, "{name}");
        let reports = vec![
            run_agent(env.enroll("vdi-01"), spec(2, 2.5)).await,
            run_agent(env.enroll("vdi-02"), spec(1, 2.5)).await,
        ];
        let opened = storage::open(&case.location, &case.settings).unwrap();
        let frames = check_store(
            opened.objects.as_ref(),
            &env.private_key(),
            &reports,
            &env.dir.path().join("checked"),
        )
        .await;
        assert!(frames > 20, "{name}: {frames}");

        // The CLI reads the same store by its URL (S3 settings from the environment).
        let verify = std::process::Command::new(env!("CARGO_BIN_EXE_sealstream"))
            .args(["verify", "--store", &case.location])
            .envs(case.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&verify.stdout);
        assert!(
            verify.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let out = env.dir.path().join("exported");
        let export = std::process::Command::new(env!("CARGO_BIN_EXE_sealstream"))
            .args(["export", "--store", &case.location, "--out"])
            .arg(&out)
            .arg("--key")
            .arg(&env.kek_priv)
            .arg("--passphrase-file")
            .arg(&env.pass_file)
            .envs(case.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            export.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&export.stdout),
            String::from_utf8_lossy(&export.stderr)
        );
        assert_eq!(
            crate::common::agents::check_sessions(&out, &reports),
            frames,
            "{name}: the CLI exported every frame"
        );
        eprintln!("{name}: {frames} frames recorded, verified and exported by URL");
        env.stop().await;
    }
}

/// The agent's retry_later answers, counted under the store fault in force when each arrived.
struct RetryLaterByFault {
    store: Arc<FaultyStore>,
    seen: [AtomicU64; 5],
}

impl RetryLaterByFault {
    fn seen(&self, f: Fault) -> u64 {
        self.seen[f as usize].load(SeqCst)
    }
}

impl agent::Observer for RetryLaterByFault {
    fn acked(&self, _bytes: usize, _latency: Duration) {}

    fn rejected(&self, code: Reject) {
        if code == Reject::RetryLater {
            self.seen[self.store.current() as usize].fetch_add(1, SeqCst);
        }
    }
}

/// Wait (up to a minute) until `done` holds; `what` says what was awaited if it never does.
async fn wait_until(mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_failing_slow_throttling_or_unreachable_store_loses_nothing_on_every_backend() {
    for case in backends() {
        let name = case.name;
        let (location, settings) = (case.location.clone(), case.settings.clone());
        let mut env = Env::start_tuned(Backend::Sqlite, true, move |c| {
            c.store_url = location;
            c.store = settings;
        })
        .await;
        env.server.take().unwrap().shutdown().await;
        let opened = storage::open(&case.location, &case.settings).unwrap();
        let faulty = FaultyStore::new(opened.objects.clone());
        let writer = ObjectWriter {
            objects: faulty.clone(),
            multipart_threshold: 16 * 1024 * 1024,
            part_bytes: 8 * 1024 * 1024,
        };
        env.server = Some(
            sealstream::server::Server::start_with(&env.cfg, Some(Arc::new(writer)))
                .await
                .unwrap(),
        );
        let observer = Arc::new(RetryLaterByFault {
            store: faulty.clone(),
            seen: Default::default(),
        });
        // The agent records until told to stop, so that every fault meets its writes however
        // slow the machine.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let agent = tokio::spawn(agent::run_observed(
            env.enroll("terminal-7"),
            agent::Source::Synthetic(spec(2, 600.0)),
            stopped,
            Duration::from_secs(120),
            Some(observer.clone() as Arc<dyn agent::Observer>),
        ));
        for fault in [
            Fault::Failing,
            Fault::Slow,
            Fault::Throttling,
            Fault::Unreachable,
        ] {
            // Healthy in between: writes go through again before the next fault.
            let healthy = faulty.hits(Fault::Healthy);
            wait_until(
                || faulty.hits(Fault::Healthy) >= healthy + 2,
                || format!("{name}: writes go through before {fault:?}"),
            )
            .await;
            faulty.set(fault);
            // Each fault acts on writes of its own, and each refusing one reaches the agent as
            // retry_later (the chunks are resent); a slow store only delays.
            wait_until(
                || {
                    faulty.hits(fault) >= 2 && (fault == Fault::Slow || observer.seen(fault) >= 1)
                },
                || {
                    format!(
                        "{name}: {fault:?} acted on {} writes and the agent heard retry_later {} times under it",
                        faulty.hits(fault),
                        observer.seen(fault)
                    )
                },
            )
            .await;
            faulty.set(Fault::Healthy);
        }
        // Writes go through again before the agent stops, so the last fault's retry_later
        // answers have reached it (under load they could still be on their way).
        let healthy = faulty.hits(Fault::Healthy);
        wait_until(
            || faulty.hits(Fault::Healthy) >= healthy + 2,
            || format!("{name}: writes go through after the last fault"),
        )
        .await;
        stop.send(true).unwrap();
        let report = agent.await.unwrap().unwrap();
        let refused = faulty.refused.load(SeqCst);
        let per_fault = [
            Fault::Failing,
            Fault::Slow,
            Fault::Throttling,
            Fault::Unreachable,
        ]
        .map(|f| (f, faulty.hits(f), observer.seen(f)));
        for (f, hits, retries) in per_fault {
            assert!(hits > 0, "{name}: {f:?} acted on a write: {per_fault:?}");
            if f != Fault::Slow {
                assert!(
                    retries > 0,
                    "{name}: the agent was told retry_later under {f:?}: {per_fault:?}"
                );
            }
        }
        // Every refused write held at least one chunk, each answered retry_later.
        let retry_later = report.rejected.get("retry_later").copied().unwrap_or(0);
        assert!(
            retry_later >= refused,
            "{name}: {refused} writes refused, {retry_later} retry_later answers: {:?}",
            report.rejected
        );
        let frames = check_store(
            opened.objects.as_ref(),
            &env.private_key(),
            &[report],
            &env.dir.path().join("export"),
        )
        .await;
        eprintln!(
            "{name}: (fault, writes it acted on, retry_later heard under it) {per_fault:?}; {refused} writes refused, {frames} frames verified"
        );
        env.stop().await;
    }
}

/// Real HTTP throttling (503 SlowDown from a proxy in front of moto): a short burst is
/// absorbed by object_store's retries within `[store] retries` / `retry_timeout_ms` (no
/// failed put, nothing answered retry_later for it); a long one outlasts them, the chunks are
/// answered retry_later, and the agent's resends land once it ends. Nothing is lost.
#[actix_rt::test]
async fn s3_throttling_is_retried_within_the_store_settings_then_answered_retry_later() {
    let moto = Moto::start();
    let bucket = moto.bucket("throttled");
    let proxy = crate::common::moto::Throttle::start(&moto.endpoint).await;
    let settings = config::Store {
        endpoint: proxy.endpoint.clone(),
        retries: 6,
        retry_timeout_ms: 3_000,
        ..moto.settings()
    };
    let location = format!("{bucket}/estate");
    let (l, s) = (location.clone(), settings.clone());
    let env = Env::start_tuned(Backend::Sqlite, true, move |c| {
        c.store_url = l;
        c.store = s;
    })
    .await;
    use std::sync::atomic::Ordering::{Relaxed, SeqCst};
    // A burst shorter than the retries, while one agent records: absorbed, so that agent never
    // hears retry_later. (Per-agent answers: the metrics are shared with the other tests.)
    let first = tokio::spawn(run_agent(env.enroll("throttled-1"), spec(1, 3.0)));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    proxy.throttle.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.throttle.store(false, SeqCst);
    let first = first.await.unwrap();
    let slowed = proxy.slowed.load(Relaxed);
    assert!(slowed >= 1, "the proxy throttled requests");
    assert_eq!(
        first.rejected.get("retry_later"),
        None,
        "retries absorbed {slowed} 503s: {:?}",
        first.rejected
    );

    // A stretch longer than retry_timeout_ms: puts give up, chunks are answered retry_later,
    // and they are delivered once it ends.
    let second = tokio::spawn(run_agent(env.enroll("throttled-2"), spec(1, 6.0)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.throttle.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    proxy.throttle.store(false, SeqCst);
    let second = second.await.unwrap();
    assert!(
        second.rejected.get("retry_later").copied().unwrap_or(0) > 0,
        "{:?}",
        second.rejected
    );
    let report = vec![first, second];
    let opened = storage::open(&location, &moto.settings()).unwrap();
    let frames = check_store(
        opened.objects.as_ref(),
        &env.private_key(),
        &report,
        &env.dir.path().join("export"),
    )
    .await;
    eprintln!(
        "throttled S3: {} requests answered 503 SlowDown, {frames} frames verified",
        proxy.slowed.load(Relaxed)
    );
    env.stop().await;
}
