//! `GET /api/audit`: the audit log for admins, filtered by user, action and time, paged both
//! ways.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::access::{details, text};
use crate::console::auth::Caller;
use crate::console::{ApiError, State};
use crate::metadata::Role;

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    /// An older page: rows with ids below this (`older` of the page before).
    before: Option<i64>,
    /// A newer page: rows with ids above this (`newer` of the page before).
    after: Option<i64>,
    /// Filters, all on the server: the row's user (actor) and action, exactly, and its time.
    user: Option<String>,
    action: Option<String>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn audit(
    state: web::Data<State>,
    caller: Caller,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    if caller.user.role != Role::Admin {
        return Err(state.denied(&caller, "audit log").await);
    }
    let q = q.into_inner();
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let filter = crate::metadata::AuditQuery {
        actor: nonempty(q.user),
        action: nonempty(q.action),
        since_us: q.since_us,
        until_us: q.until_us,
        ..Default::default()
    };
    state
        .audit(
            &caller,
            "view_audit",
            &details(&[
                ("user", filter.actor.as_deref().map(text)),
                ("action", filter.action.as_deref().map(text)),
                ("since_us", q.since_us.map(|v| v.to_string())),
                ("until_us", q.until_us.map(|v| v.to_string())),
                ("before", q.before.map(|v| v.to_string())),
                ("after", q.after.map(|v| v.to_string())),
            ]),
        )
        .await?;
    let rows = state
        .md
        .audit_page(crate::metadata::AuditQuery {
            before: q.before,
            after: q.after,
            limit: q.limit.unwrap_or(100).clamp(1, 1000),
            ..filter.clone()
        })
        .await?;
    // Whether there is an older and a newer page under the same filters (one row each way).
    let probe = |before, after| {
        state.md.audit_page(crate::metadata::AuditQuery {
            before,
            after,
            limit: 1,
            ..filter.clone()
        })
    };
    let (older, newer) = match (rows.last(), rows.first()) {
        (Some(oldest), Some(newest)) => (
            (!probe(Some(oldest.id), None).await?.is_empty()).then_some(oldest.id),
            (!probe(None, Some(newest.id)).await?.is_empty()).then_some(newest.id),
        ),
        _ => (None, None),
    };
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({ "rows": rows, "older": older, "newer": newer })),
    )
}
