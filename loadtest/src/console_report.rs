//! `sealstream-loadtest console-report`: the review console's keystrokes report in headless
//! Chromium over --sessions sessions. The store and the index are filled directly (sealed and
//! signed as an agent does: --agents enrolled agents, each session a frame stream of one frame
//! and a keystroke stream of --batches batches of --events events, checkpoints every 16
//! chunks), one event in every other session holding the searched word. The console serves
//! them; Chromium, driven through chromedriver, decrypts and searches every session's
//! keystrokes. Measured in the page, per run (the report view's own timestamps, from the search
//! starting): the time to the first result, to the last result, and to the end of the search,
//! beside the baseline: the same page fetching the same keystroke ciphertext alone (same
//! requests, same concurrency, no decryption, no proof, no parsing).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sealstream::console::{Console, auth};
use sealstream::crypto::{AgentSigner, Checkpoints};
use sealstream::metadata::{ChunkRow, ConsoleUser, Role, SegmentCommit, StreamUpdate, now_us};
use sealstream::protocol::payload::Frame;
use sealstream::protocol::{AgentId, Kind, SealedChunk, Segment, SessionId, StreamId};
use sealstream::recorder::Recorder;
use sealstream::storage::{self, paths};
use serde::Serialize;

use crate::console_player::{Page, browser};

pub struct Args {
    pub sessions: u32,
    pub agents: u32,
    pub batches: u32,
    pub events: u32,
    pub runs: u32,
    pub json: Option<PathBuf>,
}

use crate::console_player::PASSPHRASE;
const PASSWORD: &str = "benchmark password";
const NEEDLE: &str = "quarterly-forecast-7f3a";
/// Sessions committed per segment object.
const SESSIONS_PER_SEGMENT: usize = 10;

#[derive(Serialize)]
struct Run {
    first_result_ms: f64,
    last_result_ms: f64,
    done_ms: f64,
    hits: u64,
    sessions: u64,
    /// The same keystroke ciphertext fetched alone by the same page.
    fetch_baseline_ms: f64,
    done_over_fetch: f64,
}

#[derive(Serialize)]
struct Report {
    sessions: u32,
    agents: u32,
    keystroke_chunks: u64,
    events: u64,
    keystroke_ciphertext_bytes: u64,
    unlock_ms: f64,
    runs: Vec<Run>,
    chromium: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(run_async(args))
}

async fn run_async(a: Args) -> anyhow::Result<()> {
    if a.sessions == 0 || a.agents == 0 || a.batches == 0 || a.events == 0 {
        bail!("--sessions, --agents, --batches and --events must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (cfg, server, kek) = crate::console_player::start_server(d).await?;
    let public = sealstream::keys::load_public_key(&kek)?;
    let pki = sealstream::pki::Pki::open_or_create(&cfg.data_dir)?;
    let store = sealstream::storage::open_local(&cfg.store_dir())?;
    let md = server.metadata.clone();

    eprintln!(
        "sealing {} sessions of {} agents: {} keystroke batches of {} events each ...",
        a.sessions, a.agents, a.batches, a.events
    );
    let start_us = now_us() - 2 * 3_600_000_000;
    let (mut key_chunks, mut events, mut key_bytes) = (0u64, 0u64, 0u64);
    let per_agent = a.sessions.div_ceil(a.agents);
    let mut made = 0u32;
    for ag in 0..a.agents {
        let name = format!("bench-ts-{ag:03}");
        let id = AgentId::new(&name).map_err(anyhow::Error::msg)?;
        let files = pki.enroll_agent(&id, &d.join(&name))?;
        let signer = Arc::new(
            AgentSigner::new(
                &CertificateDer::from_pem_file(&files.cert)?,
                &PrivateKeyDer::from_pem_file(&files.key)?,
            )
            .map_err(anyhow::Error::msg)?,
        );
        let every = Checkpoints {
            every_chunks: 16,
            every: Duration::from_secs(3600),
        };
        let rec = Recorder::new(id.clone(), &public)
            .signed_by(signer, every)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let record = rec.dek_record().clone();
        let dek_key = paths::dek_record(&record.agent, record.dek_id);
        storage::put_new(store.as_ref(), &dek_key, record.encode().into()).await?;
        md.insert_deks(vec![(record, dek_key.to_string())]).await?;
        let mut sessions: Vec<(Vec<SealedChunk>, Vec<StreamUpdate>)> = Vec::new();
        for _ in 0..per_agent {
            if made == a.sessions {
                break;
            }
            let session = SessionId::random();
            let t0 = start_us + i64::from(made) * 5_000_000;
            let mut chunks = Vec::new();
            let mut frames = rec.open_stream(session, StreamId(0), Kind::Frame);
            let image = sealstream::agent::synthetic::png(16, 9, &[128; 16 * 9 * 3], None);
            let frame = Frame {
                name: "screen-000000.png",
                image: &image,
            }
            .encode();
            chunks.push(frames.seal(&frame, t0, false)?);
            chunks.push(frames.seal(&[], t0 + 1, true)?);
            let mut keys = rec.open_stream(session, StreamId(1), Kind::Keystrokes);
            // Every other session types the searched word once, in its middle batch.
            let needle_at = made
                .is_multiple_of(2)
                .then_some((a.batches / 2, a.events / 2));
            for b in 0..a.batches {
                let mut batch = String::new();
                for e in 0..a.events {
                    let ts_ms = (t0 / 1000) + i64::from(b * a.events + e) * 150;
                    let text = if needle_at == Some((b, e)) {
                        NEEDLE.to_owned()
                    } else {
                        ["a", "s", "d", "Enter", "hello", " "][((b + e) % 6) as usize].to_owned()
                    };
                    batch.push_str(&format!(
                        "{{\"ts\":{ts_ms},\"user\":\"user{made:04}\",\"app\":\"WINWORD.EXE\",\"window\":\"Report {b}.docx\",\"text\":\"{text}\"}}\n"
                    ));
                    events += 1;
                }
                let c = keys.seal(batch.as_bytes(), t0 + i64::from(b) * 1000, false)?;
                key_bytes += c.len() as u64;
                key_chunks += 1;
                chunks.push(c);
            }
            let end = keys.seal(&[], t0 + i64::from(a.batches) * 1000, true)?;
            key_bytes += end.len() as u64;
            key_chunks += 1;
            chunks.push(end);
            let updates = [
                (StreamId(0), Kind::Frame, 1u64),
                (StreamId(1), Kind::Keystrokes, u64::from(a.batches)),
            ]
            .into_iter()
            .map(|(stream, kind, last)| StreamUpdate {
                agent: id.clone(),
                session,
                stream,
                kind: kind.code(),
                next_seq: last + 1,
                final_seq: Some(last),
            })
            .collect();
            sessions.push((chunks, updates));
            made += 1;
        }
        for group in sessions.chunks(SESSIONS_PER_SEGMENT) {
            let (key, bytes, commit) = segment(group);
            storage::put_new(store.as_ref(), &key, bytes).await?;
            md.commit_segment(commit).await?;
        }
    }

    server
        .metadata
        .put_console_user(
            ConsoleUser {
                name: "bench".into(),
                role: Role::Admin,
                password_hash: auth::hash_password(PASSWORD).map_err(anyhow::Error::msg)?,
                agents: vec![],
                created_us: now_us(),
                disabled_us: None,
            },
            true,
            "loadtest",
            "user_add",
        )
        .await?;
    let console_cfg = sealstream::config::Console {
        listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    let console = Console::start(&console_cfg, server.metadata.clone(), store).await?;

    let (_driver, c) = browser().await?;
    let chromium = c
        .execute("return navigator.userAgent", vec![])
        .await?
        .as_str()
        .unwrap_or("")
        .to_owned();
    let page = Page(c);
    page.c().goto(&console.url()).await?;
    page.until(
        "the login form",
        "return !document.getElementById('login-view').hidden",
    )
    .await?;
    page.fill("login-user", "bench").await?;
    page.fill("login-password", PASSWORD).await?;
    page.click("login-submit").await?;
    page.until(
        "the overview buttons",
        "return !document.getElementById('overviews').hidden",
    )
    .await?;
    page.click("report-open").await?;
    page.until(
        "the report's agents",
        "return document.getElementById('report-agents').options.length > 0",
    )
    .await?;
    let since = start_us / 1_000_000 - 60;
    page.js(&format!(
        "document.getElementById('report-since').value = new Date({since} * 1000).toISOString().slice(0, 19);
         document.getElementById('report-search').value = '{NEEDLE}';"
    ))
    .await?;
    page.fill("report-passphrase", PASSPHRASE).await?;
    // The first run starts once the passphrase has opened the key (Decrypt runs the search).
    let unlock_ms = page
        .async_js(
            "const done = arguments[0]; const v = document.getElementById('report-view'); const t0 = performance.now();
             new MutationObserver((m, o) => { if (v.dataset.state === 'running') { o.disconnect(); done(performance.now() - t0); } })
               .observe(v, { attributes: true });
             document.getElementById('report-decrypt-submit').click();",
        )
        .await?
        .as_f64()
        .context("unlock time")?;
    let mut runs = Vec::new();
    for i in 0..a.runs {
        if i > 0 {
            page.js("document.getElementById('report-filter').requestSubmit()")
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let v = page
            .until_long(
                "the search done",
                "const v = document.getElementById('report-view').dataset;
                 return v.state === 'done' && [Number(v.firstResultMs), Number(v.lastResultMs), Number(v.doneMs), Number(v.hits), Number(v.sessions)]",
            )
            .await?;
        let n = |k: usize| v[k].as_f64().unwrap_or(f64::NAN);
        // The baseline: the same keystroke chunks fetched by the same page, 6 at a time.
        let fetch_ms = page
            .async_js(
                "const done = arguments[0];
                 (async () => {
                   const list = [];
                   let cursor = null;
                   do {
                     const q = new URLSearchParams({ slots: '0', limit: '1000', since_us: String(Date.parse(document.getElementById('report-since').value + 'Z') * 1000) });
                     if (cursor) q.set('cursor', cursor);
                     const page = await (await fetch(`/api/overview?${q}`)).json();
                     list.push(...page.sessions.filter((s) => s.key_stream !== null && s.key_chunks > 0));
                     cursor = page.next;
                   } while (cursor);
                   const t0 = performance.now();
                   let next = 0;
                   const worker = async () => {
                     while (next < list.length) {
                       const s = list[next++];
                       for (let seq = 0; seq < s.key_chunks; seq += 64) {
                         const r = await fetch(`/api/agents/${s.agent_hex}/sessions/${s.session}/streams/${s.key_stream}/chunks?from_seq=${seq}&count=64`);
                         await r.arrayBuffer();
                       }
                     }
                   };
                   await Promise.all(Array.from({ length: 6 }, worker));
                   done(performance.now() - t0);
                 })();",
            )
            .await?
            .as_f64()
            .unwrap_or(f64::NAN);
        let r = Run {
            first_result_ms: n(0),
            last_result_ms: n(1),
            done_ms: n(2),
            hits: n(3) as u64,
            sessions: n(4) as u64,
            fetch_baseline_ms: fetch_ms,
            done_over_fetch: n(2) / fetch_ms,
        };
        eprintln!(
            "run {}: first {:.0} ms, last {:.0} ms, done {:.0} ms, {} hits in {} sessions; fetch alone {:.0} ms",
            i + 1,
            r.first_result_ms,
            r.last_result_ms,
            r.done_ms,
            r.hits,
            r.sessions,
            r.fetch_baseline_ms
        );
        runs.push(r);
    }
    let _ = page.0.close().await;
    console.stop().await;
    server.shutdown().await;

    let report = Report {
        sessions: a.sessions,
        agents: a.agents,
        keystroke_chunks: key_chunks,
        events,
        keystroke_ciphertext_bytes: key_bytes,
        unlock_ms,
        runs,
        chromium,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// One segment object holding `sessions`' chunks and its index commit, as the store actor
/// makes them after an agent's upload: (object key, bytes, commit).
fn segment(
    sessions: &[(Vec<SealedChunk>, Vec<StreamUpdate>)],
) -> (object_store::path::Path, bytes::Bytes, SegmentCommit) {
    let chunks: Vec<SealedChunk> = sessions.iter().flat_map(|s| s.0.iter().cloned()).collect();
    let created = now_us();
    let id = Segment::new_id(created);
    let (bytes, sha256) = Segment::encode(id, created, &chunks);
    let key = paths::segment(created, &id);
    let size = bytes.len() as u64;
    let mut offset = sealstream::protocol::segment::HEADER_LEN as u64;
    let mut rows = Vec::with_capacity(chunks.len());
    for c in &chunks {
        rows.push(ChunkRow::of(
            c,
            sealstream::protocol::segment::chunk_digest(c),
            offset,
            None,
        ));
        offset += c.len() as u64;
    }
    let commit = SegmentCommit {
        segment_id: id,
        object_key: key.to_string(),
        size,
        sha256,
        chunks: rows,
        streams: sessions.iter().flat_map(|s| s.1.iter().cloned()).collect(),
        fences: Vec::new(),
    };
    (key, bytes, commit)
}
