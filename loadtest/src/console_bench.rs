//! `sealstream-loadtest console-list`: the review console's server-side list queries at scale.
//! A database of its own (PostgreSQL, or the embedded SQLite file) is filled with N recorded
//! sessions and their chunk index rows, the console runs in this process against it, and each
//! query is timed through real HTTP (login cookie, authorization, audit row and all), beside
//! a baseline request in the same run (`/api/me`: the login check alone).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use sealstream::console::{Console, auth};
use sealstream::metadata::{ConsoleUser, Metadata, Role, now_us};
use serde::Serialize;

pub struct Args {
    pub database_url: Option<String>,
    pub sessions: u64,
    pub chunks_per_session: u64,
    pub agents: u64,
    pub requests: usize,
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Query {
    name: &'static str,
    path: String,
    median_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    /// median / the baseline's median
    ratio: f64,
    rows: usize,
}

#[derive(Serialize)]
struct Report {
    database: String,
    sessions: u64,
    chunks: u64,
    agents: u64,
    fill_s: f64,
    requests_per_query: usize,
    baseline_median_ms: f64,
    queries: Vec<Query>,
}

const DAY_US: i64 = 86_400_000_000;

pub fn run(args: Args) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(run_async(args))
}

async fn run_async(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.chunks_per_session >= 2 && a.chunks_per_session.is_multiple_of(2),
        "--chunks-per-session: an even number, at least 2"
    );
    anyhow::ensure!(
        a.agents >= 1 && a.sessions >= a.agents,
        "--sessions must be at least --agents"
    );
    let dir = tempfile::tempdir()?;
    let temp = match &a.database_url {
        Some(admin) => Some(crate::pg::TempDatabase::create(admin, "console").await?),
        None => None,
    };
    let url = temp.as_ref().map_or(String::new(), |t| t.url.clone());
    let md = Metadata::open(&url, &dir.path().join("bench.db"))
        .await
        .context("opening the benchmark database")?;
    let t0 = now_us() - 30 * DAY_US;
    let started = Instant::now();
    eprintln!(
        "filling {} with {} sessions × {} chunks ({} agents) ...",
        md.describe(),
        a.sessions,
        a.chunks_per_session,
        a.agents
    );
    match &temp {
        Some(t) => fill_pg(&t.url, &a, t0).await?,
        None => fill_sqlite(&dir.path().join("bench.db"), &a, t0)?,
    }
    let fill_s = started.elapsed().as_secs_f64();
    eprintln!("filled in {fill_s:.1} s");

    for (name, role, agents) in [
        ("bench-admin", Role::Admin, vec![]),
        ("bench-reviewer", Role::Reviewer, vec!["vdi-01*".to_owned()]),
    ] {
        md.put_console_user(
            ConsoleUser {
                name: name.into(),
                role,
                password_hash: auth::hash_password("benchmark password")
                    .map_err(anyhow::Error::msg)?,
                agents,
                created_us: now_us(),
                disabled_us: None,
            },
            true,
            "loadtest",
            "user_add",
        )
        .await?;
    }
    let store = sealstream::storage::open_local(&dir.path().join("store"))?;
    let cfg = sealstream::config::Console {
        listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let console = Console::start(&cfg, md.clone(), store).await?;
    let admin = Client::login(console.addr, "bench-admin").await?;
    let reviewer = Client::login(console.addr, "bench-reviewer").await?;

    // A cursor 20 pages deep, and one session's id for its index.
    let mut cursor = String::new();
    for _ in 0..20 {
        let page = admin
            .json(&format!("/api/sessions?limit=50{cursor}"))
            .await?;
        cursor = format!("&cursor={}", page["next"].as_str().context("a next page")?);
    }
    let first = admin.json("/api/sessions?limit=1&agent=vdi-0005").await?;
    let s = &first["sessions"][0];
    let index = format!(
        "/api/agents/{}/sessions/{}/index",
        s["agent_hex"].as_str().context("a session")?,
        s["session"].as_str().context("a session id")?
    );
    let mid = t0 + 15 * DAY_US;
    let queries: Vec<(&'static str, &Client, String)> = vec![
        (
            "newest sessions, first page (admin)",
            &admin,
            "/api/sessions?limit=50".into(),
        ),
        (
            "page 21 by cursor (admin)",
            &admin,
            format!("/api/sessions?limit=50{cursor}"),
        ),
        (
            "one agent's sessions (admin)",
            &admin,
            "/api/sessions?limit=50&agent=vdi-0500".into(),
        ),
        (
            "one day's sessions (admin)",
            &admin,
            format!(
                "/api/sessions?limit=50&since_us={mid}&until_us={}",
                mid + DAY_US
            ),
        ),
        (
            "newest sessions, granted vdi-01* (reviewer)",
            &reviewer,
            "/api/sessions?limit=50".into(),
        ),
        (
            "one granted agent's sessions (reviewer)",
            &reviewer,
            "/api/sessions?limit=50&agent=vdi-0150".into(),
        ),
        (
            "agents with session counts (admin)",
            &admin,
            "/api/agents".into(),
        ),
        ("one session's chunk index (admin)", &admin, index),
    ];
    let baseline = time(&admin, "/api/me", a.requests).await?;
    let base_median = percentile(&baseline.0, 0.5);
    let mut out = Vec::new();
    for (name, client, path) in queries {
        let (t, rows) = time(client, &path, a.requests).await?;
        let median = percentile(&t, 0.5);
        out.push(Query {
            name,
            path,
            median_ms: median,
            p95_ms: percentile(&t, 0.95),
            max_ms: percentile(&t, 1.0),
            ratio: median / base_median,
            rows,
        });
    }
    console.stop().await;
    let report = Report {
        database: md.kind().to_owned(),
        sessions: a.sessions,
        chunks: a.sessions * a.chunks_per_session,
        agents: a.agents,
        fill_s,
        requests_per_query: a.requests,
        baseline_median_ms: base_median,
        queries: out,
    };
    println!(
        "console list queries on {} ({} sessions, {} chunks), {} requests each; baseline /api/me median {:.2} ms",
        report.database, report.sessions, report.chunks, report.requests_per_query, base_median
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>7} {:>6}",
        "query", "median ms", "p95 ms", "max ms", "× base", "rows"
    );
    for q in &report.queries {
        println!(
            "{:<48} {:>9.2} {:>9.2} {:>9.2} {:>7.1} {:>6}",
            q.name, q.median_ms, q.p95_ms, q.max_ms, q.ratio, q.rows
        );
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    drop(md);
    if let Some(t) = temp {
        t.drop_now().await?;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// `n` timed GETs of `path` after 3 unmeasured ones: sorted milliseconds, and the rows the
/// answer held.
async fn time(c: &Client, path: &str, n: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut rows = 0;
    for _ in 0..3 {
        c.json(path).await?;
    }
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        let v = c.json(path).await?;
        t.push(s.elapsed().as_secs_f64() * 1000.0);
        rows = match &v {
            serde_json::Value::Array(a) => a.len(),
            v => v["sessions"]
                .as_array()
                .or(v["chunks"].as_array())
                .map_or(1, Vec::len),
        };
    }
    t.sort_by(f64::total_cmp);
    Ok((t, rows))
}

/// A logged-in HTTP/1.1 client (one connection per request, as a browser's fetch may do).
struct Client {
    addr: SocketAddr,
    cookie: String,
}

impl Client {
    async fn login(addr: SocketAddr, user: &str) -> anyhow::Result<Client> {
        let body =
            serde_json::json!({ "user": user, "password": "benchmark password" }).to_string();
        let (head, _) = request(addr, "POST", "/api/login", "", &body).await?;
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .with_context(|| format!("logging in as {user}: {head}"))?;
        Ok(Client {
            addr,
            cookie: cookie.to_owned(),
        })
    }

    async fn json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (head, body) = request(self.addr, "GET", path, &self.cookie, "").await?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
        Ok(serde_json::from_slice(&body)?)
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> anyhow::Result<(String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an HTTP response")?;
    Ok((
        String::from_utf8_lossy(&raw[..split]).into_owned(),
        raw[split + 4..].to_vec(),
    ))
}

/// The same rows in PostgreSQL, by `generate_series`: agents `vdi-0000…`, sessions spread
/// over 30 days (each an hour long), two streams each, chunks in segments of 1,000.
async fn fill_pg(url: &str, a: &Args, t0: i64) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let (n, c, ag) = (
        a.sessions as i64,
        a.chunks_per_session as i64,
        a.agents as i64,
    );
    let half = c / 2;
    let step = 30 * DAY_US / n;
    let segments = (n * c + 999) / 1000;
    let sql = format!(
        "INSERT INTO encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile, fingerprint) \
           VALUES (true, true, '/bench/publickey.crt', '/bench/keypair.pem', 'sha256:' || repeat('0', 64));
         INSERT INTO encryption_dek (dek_id, kek_fingerprint, agent_id, agent_session, wrapped_dek, record, object_key)
           SELECT decode(lpad(to_hex(g), 32, '0'), 'hex'), 'sha256:' || repeat('0', 64), 'vdi-' || lpad(g::text, 4, '0'),
                  '\\x00'::bytea, '\\x00'::bytea, '\\x00'::bytea, 'bench' FROM generate_series(0, {ag} - 1) g;
         INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count)
           SELECT decode(lpad(to_hex(g), 32, '0'), 'hex'), 'v1/segments/bench/' || g, 65536000, '\\x00'::bytea, 1000
           FROM generate_series(0, {segments} - 1) g;
         INSERT INTO recording_session (agent_id, session_id, first_capture_us, last_capture_us, chunks, bytes, gaps, last_dek_id, updated_us)
           SELECT 'vdi-' || lpad((i % {ag})::text, 4, '0'), decode(lpad(to_hex(i), 32, '0'), 'hex'),
                  {t0} + i::int8 * {step}, {t0} + i::int8 * {step} + 3600000000, {c}, {c} * 65536, 0,
                  decode(lpad(to_hex(i % {ag}), 32, '0'), 'hex'), {t0} + i::int8 * {step} + 3600000000
           FROM generate_series(0, {n} - 1) i;
         INSERT INTO streams (agent_id, session_id, stream_id, kind, next_seq, final_seq)
           SELECT 'vdi-' || lpad((i % {ag})::text, 4, '0'), decode(lpad(to_hex(i), 32, '0'), 'hex'), s, s + 1, {half}, {half} - 1
           FROM generate_series(0, {n} - 1) i, generate_series(0, 1) s;
         INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest, chunk_offset, chunk_len, capture_us, flags, dek_id)
           SELECT 'vdi-' || lpad((i % {ag})::text, 4, '0'), decode(lpad(to_hex(i), 32, '0'), 'hex'), s, q,
                  decode(lpad(to_hex((i::int8 * {c} + s * {half} + q) / 1000), 32, '0'), 'hex'), '\\x00'::bytea,
                  36 + ((i::int8 * {c} + s * {half} + q) % 1000) * 65536, 65536, {t0} + i::int8 * {step} + q * 1000000,
                  CASE WHEN q = {half} - 1 THEN 1 ELSE 0 END, decode(lpad(to_hex(i % {ag}), 32, '0'), 'hex')
           FROM generate_series(0, {n} - 1) i, generate_series(0, 1) s, generate_series(0, {half} - 1) q;
         ANALYZE;"
    );
    client.batch_execute(&sql).await.map_err(|e| {
        let why = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned());
        anyhow::anyhow!("filling PostgreSQL: {why}")
    })?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// The same rows in the SQLite file, by recursive CTEs.
fn fill_sqlite(path: &std::path::Path, a: &Args, t0: i64) -> anyhow::Result<()> {
    let db = rusqlite::Connection::open(path)?;
    let (n, c, ag) = (
        a.sessions as i64,
        a.chunks_per_session as i64,
        a.agents as i64,
    );
    let half = c / 2;
    let step = 30 * DAY_US / n;
    let segments = (n * c + 999) / 1000;
    let series = |name: &str, count: i64| {
        format!("{name}(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM {name} WHERE x < {count} - 1)")
    };
    let id = |e: &str| format!("unhex(printf('%032x', {e}))");
    let agent = |e: &str| format!("'vdi-' || printf('%04d', ({e}) % {ag})");
    let sql = format!(
        "PRAGMA synchronous = OFF; BEGIN;
         INSERT INTO encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile, fingerprint)
           VALUES (1, 1, '/bench/publickey.crt', '/bench/keypair.pem', 'sha256:' || printf('%064d', 0));
         WITH RECURSIVE {g} INSERT INTO encryption_dek (dek_id, kek_fingerprint, agent_id, agent_session, wrapped_dek, record, object_key)
           SELECT {gid}, 'sha256:' || printf('%064d', 0), {gagent}, x'00', x'00', x'00', 'bench' FROM g;
         WITH RECURSIVE {sg} INSERT INTO segments (segment_id, object_key, size_bytes, sha256, chunk_count)
           SELECT {sgid}, 'v1/segments/bench/' || x, 65536000, x'00', 1000 FROM sg;
         WITH RECURSIVE {ss} INSERT INTO recording_session (agent_id, session_id, first_capture_us, last_capture_us, chunks, bytes, gaps, last_dek_id, updated_us)
           SELECT {sagent}, {sid}, {t0} + x * {step}, {t0} + x * {step} + 3600000000, {c}, {c} * 65536, 0, {sdek}, {t0} + x * {step} + 3600000000 FROM ss;
         WITH RECURSIVE {ss}, st(s) AS (SELECT 0 UNION ALL SELECT 1)
           INSERT INTO streams (agent_id, session_id, stream_id, kind, next_seq, final_seq)
           SELECT {sagent}, {sid}, s, s + 1, {half}, {half} - 1 FROM ss, st;
         WITH RECURSIVE {ss}, st(s) AS (SELECT 0 UNION ALL SELECT 1), {qq}
           INSERT INTO chunks (agent_id, session_id, stream_id, seq, segment_id, digest, chunk_offset, chunk_len, capture_us, flags, dek_id)
           SELECT {sagent}, {sid}, s, q.x, unhex(printf('%032x', (ss.x * {c} + s * {half} + q.x) / 1000)), x'00',
                  36 + ((ss.x * {c} + s * {half} + q.x) % 1000) * 65536, 65536, {t0} + ss.x * {step} + q.x * 1000000,
                  CASE WHEN q.x = {half} - 1 THEN 1 ELSE 0 END, {sdek}
           FROM ss, st, q;
         COMMIT; ANALYZE; PRAGMA synchronous = FULL;",
        g = series("g", ag),
        gid = id("x"),
        gagent = agent("x"),
        sg = series("sg", segments),
        sgid = id("x"),
        ss = series("ss", n),
        sagent = agent("ss.x"),
        sid = id("ss.x"),
        sdek = id(&format!("ss.x % {ag}")),
        qq = series("q", half),
    );
    db.execute_batch(&sql).context("filling SQLite")?;
    Ok(())
}
