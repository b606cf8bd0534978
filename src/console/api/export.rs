//! `POST /api/exports`: the browser announces an export (made from plaintext only it holds)
//! and the console audits it.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::access::{details, owned, text, visible};
use crate::console::auth::Caller;
use crate::console::{ApiError, State};

#[derive(Deserialize)]
pub(super) struct ExportForm {
    agent_hex: String,
    session: String,
    /// `video`, `frames`, …: what the browser is about to make.
    what: String,
    from_us: Option<i64>,
    to_us: Option<i64>,
}

/// The browser announces an export before it makes one from plaintext only it holds.
pub(super) async fn export_request(
    state: web::Data<State>,
    caller: Caller,
    form: web::Json<ExportForm>,
) -> Result<HttpResponse, ApiError> {
    let (agent, session) = visible(&state, &caller, &form.agent_hex, &form.session).await?;
    owned(&state, &caller, &agent, session, "what=export").await?;
    let what: String = form
        .what
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    state
        .audit(
            &caller,
            "export",
            &details(&[
                ("agent", Some(text(&agent))),
                ("session", Some(hex::encode(session))),
                ("what", Some(what)),
                ("from_us", form.from_us.map(|v| v.to_string())),
                ("to_us", form.to_us.map(|v| v.to_string())),
            ]),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
