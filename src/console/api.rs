//! The console's JSON and byte API. Every handler takes a `Caller` (logged in, CSRF checked
//! for state changes), answers 404 for anything outside the caller's agents (and audits the
//! attempt), and writes its audit row before it answers.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::auth::{self, COOKIE, Caller};
use super::{ApiError, State};
use crate::metadata::{ChunkLocation, Login, Role, SessionQuery, SessionSummary, now_us};
use crate::storage;

mod overview;

/// Chunks per ciphertext request, and bytes: a player asks for a few frames at a time.
const MAX_CHUNKS_PER_FETCH: u32 = 64;
const MAX_BYTES_PER_FETCH: u64 = 64 << 20;
/// Index rows per request.
const MAX_INDEX_ROWS: u32 = 20_000;
/// A key file larger than this is not a key file.
const MAX_KEY_FILE: u64 = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .wrap(actix_web::middleware::DefaultHeaders::new().add(("Cache-Control", "no-store")))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/me", web::get().to(me))
            .route("/agents", web::get().to(agents))
            .route("/sessions", web::get().to(sessions))
            .route("/overview", web::get().to(overview::overview))
            .route("/agents/{agent}/sessions/{session}", web::get().to(session))
            .route(
                "/agents/{agent}/sessions/{session}/index",
                web::get().to(index),
            )
            .route(
                "/agents/{agent}/sessions/{session}/streams/{stream}/chunks",
                web::get().to(chunks),
            )
            .route("/deks/{dek}", web::get().to(dek))
            .route("/keks", web::get().to(keks))
            .route("/agent-ca", web::get().to(agent_ca))
            .route("/keks/{kek}/{which}", web::get().to(kek_file))
            .route("/exports", web::post().to(export_request))
            .route("/audit", web::get().to(audit)),
    );
}

impl State {
    /// Write an audit row for `caller`; when it cannot be written, the access is refused.
    async fn audit(&self, caller: &Caller, action: &str, detail: &str) -> Result<(), ApiError> {
        self.md
            .audit_from(&caller.user.name, action, detail, &caller.address)
            .await
            .map_err(|e| ApiError::AuditUnavailable(e.to_string()))
    }

    /// Audit a refused access and answer 404 (the caller learns nothing about what exists).
    async fn denied(&self, caller: &Caller, what: &str) -> ApiError {
        if let Err(e) = self.audit(caller, "denied", what).await {
            return e;
        }
        tracing::warn!(user = %caller.user.name, what, "console access outside the user's agents refused");
        ApiError::NotFound
    }
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

#[derive(Serialize)]
struct Me {
    user: String,
    role: Role,
    csrf: String,
    idle_minutes: u64,
}

async fn login(
    state: web::Data<State>,
    req: HttpRequest,
    form: web::Json<LoginForm>,
) -> Result<HttpResponse, ApiError> {
    let (ip, address) = auth::peer(&req);
    let LoginForm { user, password } = form.into_inner();
    let name: String = user.chars().take(64).collect();
    let audit = |action: &'static str, detail: String| {
        let (state, name, address) = (state.clone(), name.clone(), address.clone());
        async move {
            state
                .md
                .audit_from(&name, action, &detail, &address)
                .await
                .map_err(|e| ApiError::AuditUnavailable(e.to_string()))
        }
    };
    if let Some(wait) = state.throttle.wait(&name, ip, state.cfg.max_failed_logins) {
        audit(
            "login_throttled",
            format!("retry_after_s={}", wait.as_secs() + 1),
        )
        .await?;
        return Err(ApiError::Throttled(wait.as_secs() + 1));
    }
    let account = state.md.console_user(&name).await?;
    // An unknown name is checked against the dummy hash: the same argon2 work either way.
    let hash = account
        .as_ref()
        .map_or_else(|| state.dummy_hash.clone(), |u| u.password_hash.clone());
    let counter = state.clone();
    let good = web::block(move || {
        counter
            .password_work
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        auth::verify_password(&password, &hash)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let account = match account {
        Some(u) if good && u.disabled_us.is_none() => u,
        other => {
            state.throttle.failed(&name, ip);
            let why = match other {
                None => "unknown user",
                Some(u) if u.disabled_us.is_some() => "account disabled",
                Some(_) => "wrong password",
            };
            audit("login_failed", why.to_owned()).await?;
            return Err(ApiError::BadLogin);
        }
    };
    state.throttle.succeeded(&name, ip);
    let token =
        <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&auth::random_token());
    let csrf = hex::encode(auth::random_token());
    let now = now_us();
    audit("login", format!("role={}", account.role.as_str())).await?;
    state
        .md
        .insert_login(Login {
            token_sha256: auth::token_sha256(&token),
            user: account.name.clone(),
            csrf: csrf.clone(),
            address,
            created_us: now,
            last_seen_us: now,
        })
        .await?;
    let cookie = Cookie::build(COOKIE, token)
        .http_only(true)
        .secure(state.secure)
        .same_site(SameSite::Strict)
        .path("/")
        .finish();
    Ok(HttpResponse::Ok().cookie(cookie).json(Me {
        user: account.name,
        role: account.role,
        csrf,
        idle_minutes: state.cfg.idle_minutes,
    }))
}

async fn logout(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.audit(&caller, "logout", "").await?;
    state.md.delete_login(caller.login.token_sha256).await?;
    let mut gone = Cookie::build(COOKIE, "")
        .http_only(true)
        .secure(state.secure)
        .same_site(SameSite::Strict)
        .path("/")
        .finish();
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

async fn me(state: web::Data<State>, caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(Me {
        user: caller.user.name,
        role: caller.user.role,
        csrf: caller.login.csrf,
        idle_minutes: state.cfg.idle_minutes,
    })
}

#[derive(Serialize)]
struct AgentJson {
    agent: String,
    agent_hex: String,
    sessions: i64,
    last_capture_us: i64,
}

async fn agents(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.audit(&caller, "list_agents", "").await?;
    let rows = state.md.recorded_agents(caller.allowed()).await?;
    let out: Vec<AgentJson> = rows
        .into_iter()
        .map(|(agent, sessions, last)| AgentJson {
            agent_hex: hex::encode(agent.as_bytes()),
            agent,
            sessions,
            last_capture_us: last,
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Serialize)]
struct SessionJson {
    agent: String,
    agent_hex: String,
    session: String,
    first_capture_us: i64,
    last_capture_us: i64,
    chunks: i64,
    bytes: i64,
    gaps: i64,
    /// `complete`, `recording` or `incomplete`.
    state: &'static str,
    encrypted: Option<bool>,
    streams: Vec<crate::metadata::StreamState>,
}

fn session_json(s: SessionSummary, live_window_us: i64) -> SessionJson {
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
struct SessionsQuery {
    agent: Option<String>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    limit: Option<u32>,
    /// `next` of the previous page.
    cursor: Option<String>,
}

fn parse_cursor(c: &str) -> Result<(i64, String, [u8; 16]), ApiError> {
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

fn parse_id(hex_id: &str) -> Result<[u8; 16], ApiError> {
    hex::decode(hex_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("{hex_id:?} is not 32 hex digits")))
}

fn parse_agent(agent_hex: &str) -> Result<String, ApiError> {
    hex::decode(agent_hex)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::BadRequest("agent: hex of the agent id's UTF-8".into()))
}

async fn sessions(
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

/// An audit row's detail: `key=value` pairs, the absent ones left out, text a person reads.
fn details(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A name from a request (an agent id, a filter) as audit text: letters, digits and `-_.:*@`
/// as they are, anything else (spaces, `=`, quotes, control characters) as `%XX`, so a row
/// always reads as `key=value` pairs.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().take(128) {
        if c.is_alphanumeric() || "-_.:*@".contains(c) {
            out.push(c);
        } else {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// The agent and session of a path, checked against the caller's grants.
async fn visible(
    state: &State,
    caller: &Caller,
    agent_hex: &str,
    session_hex: &str,
) -> Result<(String, [u8; 16]), ApiError> {
    let agent = parse_agent(agent_hex)?;
    let session = parse_id(session_hex)?;
    if !caller.may_see(&agent) {
        return Err(state
            .denied(
                caller,
                &format!("agent={} session={}", text(&agent), hex::encode(session)),
            )
            .await);
    }
    Ok((agent, session))
}

/// Is `session` one of `agent`'s? When it is not (another agent's, asked for under this
/// agent's path, or no session at all), audit what was really asked for and answer 404: a
/// refusal naming the agent it belongs to when the caller may not see that agent, else
/// `not_found`. `more`: the request's other parts for the row (`stream=0`).
async fn owned(
    state: &State,
    caller: &Caller,
    agent: &str,
    session: [u8; 16],
    more: &str,
) -> Result<(), ApiError> {
    let owners = state.md.session_agents(session).await?;
    if owners.iter().any(|a| a == agent) {
        return Ok(());
    }
    let session = hex::encode(session);
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(" {more}")
    };
    let asked_as = text(agent);
    Err(match owners.iter().find(|a| !caller.may_see(a)) {
        Some(real) => {
            state
                .denied(
                    caller,
                    &format!(
                        "agent={} session={session}{more} asked_as={asked_as}",
                        text(real)
                    ),
                )
                .await
        }
        None => {
            let recorded_by = (!owners.is_empty())
                .then(|| owners.iter().map(|a| text(a)).collect::<Vec<_>>().join(","));
            let detail = details(&[
                ("agent", Some(asked_as)),
                ("session", Some(session)),
                ("recorded_by", recorded_by),
            ]);
            match state
                .audit(caller, "not_found", &format!("{detail}{more}"))
                .await
            {
                Ok(()) => ApiError::NotFound,
                Err(e) => e,
            }
        }
    })
}

async fn session(
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

#[derive(Deserialize)]
struct IndexQuery {
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

async fn index(
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
struct ChunksQuery {
    from_seq: u64,
    count: Option<u32>,
}

/// Sealed chunks `from_seq ..` of one stream, back to back (each is self-delimiting), read
/// as byte ranges of their segments.
async fn chunks(
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

async fn dek(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let Some((agent, record)) = state.md.dek_record(id).await? else {
        return Err(ApiError::NotFound);
    };
    if !caller.may_see(&agent) {
        return Err(state
            .denied(&caller, &format!("dek={}", path.as_str()))
            .await);
    }
    state
        .audit(
            &caller,
            "fetch_dek",
            &format!("agent={agent} dek={}", path.as_str()),
        )
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(record))
}

#[derive(Serialize)]
struct KekJson {
    kek_id: String,
    /// A customer's key (E2EE: a passphrase opens it) or a server-held one.
    priv_encrypted: bool,
    active: bool,
    /// The console can serve the private key file (else the reviewer picks it from disk).
    private_file: bool,
}

/// The KEKs this caller may use: unbound ones and those bound to agents they see.
async fn visible_keks(
    state: &State,
    caller: &Caller,
) -> Result<Vec<crate::metadata::KekRow>, ApiError> {
    Ok(state
        .md
        .keks()
        .await?
        .into_iter()
        .filter(|k| k.fingerprint.is_some())
        .filter(|k| k.agent_id.as_deref().is_none_or(|a| caller.may_see(a)))
        .collect())
}

/// May `caller` have `kek`'s private key file: does it wrap a DEK of an agent they may see?
async fn may_fetch_private(state: &State, caller: &Caller, kek: &str) -> Result<bool, ApiError> {
    Ok(state
        .md
        .kek_agents(kek)
        .await?
        .iter()
        .any(|a| caller.may_see(a)))
}

async fn keks(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.audit(&caller, "list_keks", "").await?;
    let mut out = Vec::new();
    for k in visible_keks(&state, &caller).await? {
        let kek_id = k.fingerprint.unwrap_or_default();
        let private_file = k.priv_datafile.is_some_and(|p| !p.is_empty())
            && may_fetch_private(&state, &caller, &kek_id).await?;
        out.push(KekJson {
            kek_id,
            priv_encrypted: k.priv_encrypted,
            active: k.active,
            private_file,
        });
    }
    Ok(HttpResponse::Ok().json(out))
}

/// The deployment's agent CA, which the page checks agents' signatures against (and shows the
/// fingerprint of, for the reviewer to compare with the one they were given).
async fn agent_ca(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.audit(&caller, "fetch_agent_ca", "").await?;
    Ok(HttpResponse::Ok().json(match &state.agent_ca {
        Some(ca) => serde_json::json!({"pem": ca.pem, "fingerprint": ca.fingerprint}),
        None => serde_json::json!({"pem": null, "fingerprint": null}),
    }))
}

/// A KEK's public key file, or its private key file exactly as stored (passphrase-protected
/// for a customer's KEK): the console never opens it.
async fn kek_file(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (kek, which) = path.into_inner();
    let kek = if kek.starts_with("sha256:") {
        kek
    } else {
        format!("sha256:{kek}")
    };
    let row = visible_keks(&state, &caller)
        .await?
        .into_iter()
        .find(|k| k.fingerprint.as_deref() == Some(kek.as_str()));
    let Some(row) = row else {
        return Err(state.denied(&caller, &format!("kek={kek}")).await);
    };
    let file = match which.as_str() {
        "public" => row.pub_datafile.clone(),
        "private" => {
            // The private key file is an offline passphrase-guessing target: only a reviewer
            // who may see an agent whose DEKs this KEK wraps gets it, whatever the KEK's
            // binding says (the how-to's insert binds a KEK to no agent).
            if !may_fetch_private(&state, &caller, &kek).await? {
                return Err(state
                    .denied(&caller, &format!("kek={kek} file=private"))
                    .await);
            }
            row.priv_datafile
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or(ApiError::NotFound)?
        }
        _ => return Err(ApiError::NotFound),
    };
    state
        .audit(
            &caller,
            "fetch_key_file",
            &format!("kek={kek} file={which}"),
        )
        .await?;
    let text = read_key_file(&file).await.map_err(|e| {
        ApiError::Store(format!(
            "the {which} key file of {kek} cannot be read on the console server ({e}); pick it from your disk"
        ))
    })?;
    // Serve only what is a key file of this KEK: a path in encryption_kek pointing elsewhere
    // (by mistake or by whoever can edit the table) does not turn the console into a file
    // reader.
    let fits = match which.as_str() {
        "public" => public_key_matches(&file, &text, &kek),
        _ => private_pem(&text),
    };
    if !fits {
        return Err(ApiError::Store(format!(
            "the {which} key file registered for {kek} is not {}; fix priv_datafile/pub_datafile or pick the file from your disk",
            if which == "public" {
                "this KEK's public key"
            } else {
                "a PEM private key"
            }
        )));
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(text))
}

/// `text` is a public key file whose KEK id is `kek`.
fn public_key_matches(path: &str, text: &[u8], kek: &str) -> bool {
    crate::keys::parse_public_key(std::path::Path::new(path), text)
        .is_ok_and(|k| k.kek_id.to_string() == kek)
}

/// `text` is one PEM private key block (any of the forms openssl writes), and nothing else.
fn private_pem(text: &[u8]) -> bool {
    let Ok(t) = std::str::from_utf8(text) else {
        return false;
    };
    let t = t.trim();
    ["ENCRYPTED PRIVATE KEY", "PRIVATE KEY", "RSA PRIVATE KEY"]
        .iter()
        .any(|label| {
            t.starts_with(&format!("-----BEGIN {label}-----"))
                && t.ends_with(&format!("-----END {label}-----"))
                && t.matches("-----BEGIN").count() == 1
        })
}

async fn read_key_file(path: &str) -> std::io::Result<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await?;
    if meta.len() > MAX_KEY_FILE {
        return Err(std::io::Error::other("larger than 64 KiB: not a key file"));
    }
    tokio::fs::read(path).await
}

#[derive(Deserialize)]
struct ExportForm {
    agent_hex: String,
    session: String,
    /// `video`, `frames`, …: what the browser is about to make.
    what: String,
    from_us: Option<i64>,
    to_us: Option<i64>,
}

/// The browser announces an export before it makes one from plaintext only it holds.
async fn export_request(
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

#[derive(Deserialize)]
struct AuditQuery {
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

async fn audit(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_details_are_key_value_text_with_request_names_escaped() {
        assert_eq!(
            details(&[
                ("agent", Some(text("ts-01"))),
                ("since_us", None),
                ("page", Some("first".into())),
            ]),
            "agent=ts-01 page=first"
        );
        assert_eq!(text("ts-*.eu:1@x"), "ts-*.eu:1@x");
        assert_eq!(
            text("a b=\"c\"\nx"),
            "a%20b%3D%22c%22%0Ax",
            "nothing that would read as another pair or row"
        );
        assert_eq!(text("ünï"), "ünï", "letters of any script stay readable");
    }

    #[test]
    fn only_a_lone_pem_private_key_block_is_served_as_a_private_key_file() {
        let key =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(private_pem(key.as_bytes()));
        assert!(private_pem(
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAA==\n-----END RSA PRIVATE KEY-----"
        ));
        assert!(!private_pem(b"root:x:0:0:root:/root:/bin/bash\n"));
        assert!(!private_pem(format!("{key}{key}").as_bytes()), "two blocks");
        assert!(
            !private_pem(format!("secret\n{key}").as_bytes()),
            "text around it"
        );
        assert!(!private_pem(
            b"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----"
        ));
    }
}
