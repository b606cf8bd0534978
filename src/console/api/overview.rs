//! `GET /api/overview`: the sessions the page's overviews show (Live Montage, Screen
//! Snapshots, the keystrokes report), many at once. For each session of a time range and set of
//! agents the caller may see: what `/api/sessions` says of it, its frame and keystroke stream
//! ids, how many keystroke chunks it has, and where the frames to show are (the newest, or the
//! newest of each part of the range). No bytes: the page fetches the chunks it opens through
//! `/streams/{stream}/chunks`, each fetch audited there. Audited before it answers.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::access::{details, parse_agent, text};
use super::sessions::{SessionJson, parse_cursor, session_json};
use crate::console::auth::Caller;
use crate::console::{ApiError, State};
use crate::metadata::{SessionQuery, now_us};
use crate::protocol::Kind;

/// Sessions per page without frames (the keystrokes report), and with them (a query each).
const MAX_SESSIONS: u32 = 1000;
const MAX_FRAMED_SESSIONS: u32 = 200;
/// Frames per session.
const MAX_SLOTS: u32 = 60;
/// How far before the live window a live session's last capture may be (agent clocks drift).
const LIVE_CLOCK_SLACK_US: i64 = 3_600_000_000;

#[derive(Deserialize)]
pub(super) struct OverviewQuery {
    /// Hex of agent ids (UTF-8), comma-separated: only these (of those the caller may see).
    agents: Option<String>,
    /// Sessions whose captures overlap `[since_us, until_us]`.
    since_us: Option<i64>,
    until_us: Option<i64>,
    /// Only sessions the index says are still recording.
    live: Option<bool>,
    /// Frames per session: 0 none, 1 the newest in the range (default), more: the newest of
    /// each of that many equal parts of the range (both ends needed).
    slots: Option<u32>,
    limit: Option<u32>,
    /// `next` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize)]
struct FrameJson {
    seq: u64,
    /// The index's capture time: the page shows the chunk's own.
    capture_us: Option<i64>,
    dek_id: Option<String>,
    len: Option<u32>,
}

#[derive(Serialize)]
struct OverviewJson {
    #[serde(flatten)]
    session: SessionJson,
    frame_stream: Option<u32>,
    key_stream: Option<u32>,
    /// Chunks of the keystroke stream (its next sequence number).
    key_chunks: u64,
    frames: Vec<FrameJson>,
}

pub(super) async fn overview(
    state: web::Data<State>,
    caller: Caller,
    q: web::Query<OverviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let slots = q.slots.unwrap_or(1).min(MAX_SLOTS);
    let most = if slots == 0 {
        MAX_SESSIONS
    } else {
        MAX_FRAMED_SESSIONS
    };
    let limit = q.limit.unwrap_or(200).clamp(1, most);
    let live = q.live.unwrap_or(false);
    let before = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let wanted: Option<Vec<String>> = q
        .agents
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(|a| a.split(',').map(parse_agent).collect())
        .transpose()?;
    state
        .audit(
            &caller,
            "list_overview",
            &details(&[
                (
                    "agents",
                    wanted
                        .as_ref()
                        .map(|w| w.iter().map(|a| text(a)).collect::<Vec<_>>().join(",")),
                ),
                ("since_us", q.since_us.map(|v| v.to_string())),
                ("until_us", q.until_us.map(|v| v.to_string())),
                ("live", live.then(|| "true".to_owned())),
                ("slots", Some(slots.to_string())),
                (
                    "page",
                    Some(if before.is_some() { "next" } else { "first" }.into()),
                ),
            ]),
        )
        .await?;
    let live_window = state.cfg.live_window_ms as i64 * 1000;
    // The agents asked for that the caller may see, as literal patterns (a `*` in an agent id
    // would widen one: every row is checked against the grant and the list again below).
    let allowed = match &wanted {
        Some(w) => Some(
            w.iter()
                .filter(|a| caller.may_see(a))
                .cloned()
                .collect::<Vec<_>>(),
        ),
        None => caller.allowed(),
    };
    if allowed.as_ref().is_some_and(Vec::is_empty) {
        return Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": [], "next": null })));
    }
    let since_us = match (q.since_us, live) {
        (None, true) => Some(now_us() - live_window - LIVE_CLOCK_SLACK_US),
        (s, _) => s,
    };
    let rows = state
        .md
        .sessions(SessionQuery {
            allowed,
            agent: None,
            since_us,
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
    let mut out = Vec::new();
    for s in rows {
        if !caller.may_see(&s.agent) || wanted.as_ref().is_some_and(|w| !w.contains(&s.agent)) {
            continue;
        }
        let stream_of = |kind: Kind| s.streams.iter().find(|t| t.kind == kind.code()).cloned();
        let frame_stream = stream_of(Kind::Frame);
        let key_stream = stream_of(Kind::Keystrokes);
        let (agent, session) = (s.agent.clone(), s.session);
        let json = session_json(s, live_window);
        if live && json.state != "recording" {
            continue;
        }
        let frames = match (&frame_stream, slots) {
            (Some(f), 1..) => state
                .md
                .frame_picks(&agent, session, f.stream, q.since_us, q.until_us, slots)
                .await?
                .into_iter()
                .map(|c| FrameJson {
                    seq: c.seq,
                    capture_us: c.capture_us,
                    dek_id: c.dek_id.map(hex::encode),
                    len: c.range.map(|r| r.1),
                })
                .collect(),
            _ => Vec::new(),
        };
        out.push(OverviewJson {
            session: json,
            frame_stream: frame_stream.map(|f| f.stream),
            key_stream: key_stream.as_ref().map(|k| k.stream),
            key_chunks: key_stream.map_or(0, |k| k.next_seq),
            frames,
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": out, "next": next })))
}
