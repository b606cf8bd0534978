//! `POST /api/login`, `POST /api/logout`, `GET /api/me`: the login cookie and CSRF token,
//! argon2 work the same whether or not the user exists, the failed-login throttle.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::console::auth::{self, COOKIE, Caller};
use crate::console::{ApiError, State};
use crate::metadata::{Login, Role, now_us};

#[derive(Deserialize)]
pub(super) struct LoginForm {
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

pub(super) async fn login(
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

pub(super) async fn logout(
    state: web::Data<State>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
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

pub(super) async fn me(state: web::Data<State>, caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(Me {
        user: caller.user.name,
        role: caller.user.role,
        csrf: caller.login.csrf,
        idle_minutes: state.cfg.idle_minutes,
    })
}
