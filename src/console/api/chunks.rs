//! A session's chunk index (sequence numbers, capture times, DEK ids, lengths) and its sealed
//! chunks, served as byte ranges of their segments.

use actix_web::{HttpResponse, web};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::access::{details, owned, text, visible};
use crate::console::auth::Caller;
use crate::console::{ApiError, State};
use crate::metadata::ChunkLocation;
use crate::storage;

/// Chunks per ciphertext request, and bytes: a player asks for a few frames at a time.
const MAX_CHUNKS_PER_FETCH: u32 = 64;
const MAX_BYTES_PER_FETCH: u64 = 64 << 20;
/// Index rows per request.
const MAX_INDEX_ROWS: u32 = 20_000;

#[derive(Deserialize)]
pub(super) struct IndexQuery {
    stream: Option<u32>,
    from_seq: Option<u64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct IndexRow {
    stream: u32,
    seq: u64,
    capture_us: Option<i64>,
    flags: Option<u8>,
    dek_id: Option<String>,
    len: Option<u32>,
}

pub(super) async fn index(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    q: web::Query<IndexQuery>,
) -> Result<HttpResponse, ApiError> {
    let (agent, session) = visible(&state, &caller, &path.0, &path.1).await?;
    let limit = q.limit.unwrap_or(MAX_INDEX_ROWS).clamp(1, MAX_INDEX_ROWS);
    let from = q.from_seq.unwrap_or(0);
    let rows = state
        .md
        .chunk_locations(&agent, session, q.stream, from, limit)
        .await?;
    let stream = q.stream.map(|s| s.to_string());
    if rows.is_empty() {
        // Nothing (yet) from `from`, or not this agent's session at all.
        let more = details(&[("stream", stream.clone())]);
        owned(&state, &caller, &agent, session, &more).await?;
    }
    state
        .audit(
            &caller,
            "list_chunks",
            &details(&[
                ("agent", Some(text(&agent))),
                ("session", Some(hex::encode(session))),
                ("stream", stream),
                ("from_seq", Some(from.to_string())),
            ]),
        )
        .await?;
    let more = rows.len() == limit as usize;
    let out: Vec<IndexRow> = rows
        .into_iter()
        .map(|c| IndexRow {
            stream: c.stream,
            seq: c.seq,
            capture_us: c.capture_us,
            flags: c.flags,
            dek_id: c.dek_id.map(hex::encode),
            len: c.range.map(|r| r.1),
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "chunks": out, "more": more })))
}

#[derive(Deserialize)]
pub(super) struct ChunksQuery {
    from_seq: u64,
    count: Option<u32>,
}

/// Sealed chunks `from_seq ..` of one stream, back to back (each is self-delimiting), read
/// as byte ranges of their segments.
pub(super) async fn chunks(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String, u32)>,
    q: web::Query<ChunksQuery>,
) -> Result<HttpResponse, ApiError> {
    let (agent, session) = visible(&state, &caller, &path.0, &path.1).await?;
    let stream = path.2;
    if q.count == Some(0) {
        return Err(ApiError::BadRequest(
            "count=0 asks for no chunk: ask for 1 or more".into(),
        ));
    }
    let count = q.count.unwrap_or(1).min(MAX_CHUNKS_PER_FETCH);
    let rows: Vec<ChunkLocation> = state
        .md
        .chunk_locations(&agent, session, Some(stream), q.from_seq, count)
        .await?;
    let mut total = 0u64;
    let mut wanted = Vec::new();
    for (i, c) in rows.into_iter().enumerate() {
        // Only contiguous sequence numbers, so the page knows which chunk is which.
        if c.seq != q.from_seq + i as u64 {
            break;
        }
        let Some((offset, len)) = c.range else {
            return Err(ApiError::BadRequest(format!(
                "chunk {} of stream {stream} was indexed before byte ranges were recorded; use `sealstream export` for this session",
                c.seq
            )));
        };
        if total + u64::from(len) > MAX_BYTES_PER_FETCH && !wanted.is_empty() {
            break;
        }
        total += u64::from(len);
        wanted.push((c.seq, c.object_key, offset, len));
    }
    let session_hex = hex::encode(session);
    let Some(last) = wanted.last().map(|w| w.0) else {
        // Not this agent's session (a refusal naming whose it is), or no such chunk.
        owned(
            &state,
            &caller,
            &agent,
            session,
            &format!("stream={stream}"),
        )
        .await?;
        state
            .audit(
                &caller,
                "not_found",
                &format!(
                    "agent={} session={session_hex} stream={stream} seq={}",
                    text(&agent),
                    q.from_seq
                ),
            )
            .await?;
        return Err(ApiError::NotFound);
    };
    state
        .audit(
            &caller,
            "fetch_ciphertext",
            &format!(
                "agent={} session={session_hex} stream={stream} seq={}..={last} bytes={total}",
                text(&agent),
                q.from_seq
            ),
        )
        .await?;
    let mut body = BytesMut::with_capacity(total as usize);
    for (_, key, offset, len) in wanted {
        let path = object_store::path::Path::from(key);
        let b = storage::get_range(state.store.as_ref(), &path, offset, len)
            .await
            .map_err(|e| ApiError::Store(e.to_string()))?;
        body.extend_from_slice(&b);
    }
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("X-Sealstream-Last-Seq", last.to_string()))
        .body(body.freeze()))
}
