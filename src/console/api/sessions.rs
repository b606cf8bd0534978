//! What the index knows of recordings, without keys: the agents the caller may see, their
//! sessions (filtered, paged by cursor) and one session's summary.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::access::{details, owned, parse_id, text, visible};
use crate::console::auth::Caller;
use crate::console::{ApiError, State};
use crate::metadata::{SessionQuery, SessionSummary, now_us};

#[derive(Serialize)]
struct AgentJson {
    agent: String,
    agent_hex: String,
    sessions: i64,
    last_capture_us: i64,
}

pub(super) async fn agents(
    state: web::Data<State>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    state.audit(&caller, "list_agents", "").await?;
    let rows = state.md.recorded_agents(caller.allowed()).await?;
    let out: Vec<AgentJson> = rows
        .into_iter()
        .map(|a| AgentJson {
            agent_hex: hex::encode(a.agent.as_bytes()),
            agent: a.agent,
            sessions: a.sessions,
            last_capture_us: a.last_capture_us,
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Serialize)]
pub(super) struct SessionJson {
    agent: String,
    agent_hex: String,
    session: String,
    first_capture_us: i64,
    last_capture_us: i64,
    chunks: i64,
    bytes: i64,
    gaps: i64,
    /// `complete`, `recording` or `incomplete`.
    pub(super) state: &'static str,
    encrypted: Option<bool>,
    streams: Vec<crate::metadata::StreamState>,
}

pub(super) fn session_json(s: SessionSummary, live_window_us: i64) -> SessionJson {
    let complete = !s.streams.is_empty() && s.streams.iter().all(|t| t.final_seq.is_some());
    let state = if complete {
        "complete"
    } else if now_us() - s.updated_us <= live_window_us {
        "recording"
    } else {
        "incomplete"
    };
    SessionJson {
        agent_hex: hex::encode(s.agent.as_bytes()),
        agent: s.agent,
        session: hex::encode(s.session),
        first_capture_us: s.first_capture_us,
        last_capture_us: s.last_capture_us,
        chunks: s.chunks,
        bytes: s.bytes,
        gaps: s.gaps,
        state,
        encrypted: s.encrypted,
        streams: s.streams,
    }
}

#[derive(Deserialize)]
pub(super) struct SessionsQuery {
    agent: Option<String>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    limit: Option<u32>,
    /// `next` of the previous page.
    cursor: Option<String>,
}

pub(super) fn parse_cursor(c: &str) -> Result<(i64, String, [u8; 16]), ApiError> {
    let bad = || ApiError::BadRequest("bad cursor: pass `next` of the previous page".into());
    let mut parts = c.split('.');
    let at = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let agent = parts
        .next()
        .and_then(|p| hex::decode(p).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let session = parts
        .next()
        .and_then(|p| parse_id(p).ok())
        .ok_or_else(bad)?;
    Ok((at, agent, session))
}

pub(super) async fn sessions(
    state: web::Data<State>,
    caller: Caller,
    q: web::Query<SessionsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let before = q.cursor.as_deref().map(parse_cursor).transpose()?;
    state
        .audit(
            &caller,
            "list_sessions",
            &details(&[
                ("agent", q.agent.as_deref().map(text)),
                ("since_us", q.since_us.map(|v| v.to_string())),
                ("until_us", q.until_us.map(|v| v.to_string())),
                (
                    "page",
                    Some(if before.is_some() { "next" } else { "first" }.into()),
                ),
            ]),
        )
        .await?;
    if let Some(a) = &q.agent
        && !caller.may_see(a)
    {
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": [], "next": null })));
    }
    let rows = state
        .md
        .sessions(SessionQuery {
            allowed: caller.allowed(),
            agent: q.agent,
            since_us: q.since_us,
            until_us: q.until_us,
            before,
            limit,
        })
        .await?;
    let next = (rows.len() == limit as usize).then(|| {
        let l = &rows[rows.len() - 1];
        format!(
            "{}.{}.{}",
            l.last_capture_us,
            hex::encode(l.agent.as_bytes()),
            hex::encode(l.session)
        )
    });
    let live = state.cfg.live_window_ms as i64 * 1000;
    let out: Vec<SessionJson> = rows.into_iter().map(|s| session_json(s, live)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": out, "next": next })))
}

pub(super) async fn session(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (agent, session) = visible(&state, &caller, &path.0, &path.1).await?;
    let Some(s) = state.md.session(&agent, session).await? else {
        owned(&state, &caller, &agent, session, "").await?;
        return Err(ApiError::NotFound);
    };
    state
        .audit(
            &caller,
            "view_session",
            &format!("agent={} session={}", text(&agent), hex::encode(session)),
        )
        .await?;
    Ok(HttpResponse::Ok().json(session_json(s, state.cfg.live_window_ms as i64 * 1000)))
}
