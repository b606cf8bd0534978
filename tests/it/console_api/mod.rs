//! The review console's server side, over real HTTP against the real server's database and
//! store (SQLite and PostgreSQL): logins (argon2id, cookie flags, throttling, CSRF, logout,
//! disabled accounts, idle expiry), grants (a reviewer sees only their agents; anything else
//! is 404 and audited), ciphertext served as single chunks by byte range that open to what
//! the agent recorded, and the audit log written before anything is served (fail-closed).

use crate::common::agents::{run_agent, spec};
use crate::common::console::{Http, add_user, start};
use crate::common::server::{Backend, Env, insert_kek};
use sealstream::crypto::{Dek, StreamKey};
use sealstream::metadata::{Role, now_us};
use sealstream::protocol::{AgentId, DekRecord, SealedChunk, SessionId, StreamId};
use sha2::{Digest, Sha256};

mod audit_log;
mod ciphertext;
mod logins;
mod overview;

const ANN: &str = "ann-admin-password";
const RITA: &str = "rita-reviewer-password";

async fn recorded(backend: Backend) -> (Env, Vec<sealstream::agent::AgentReport>) {
    let env = Env::start(backend, true).await;
    let mut reports = Vec::new();
    for name in ["ts-01", "vdi-01"] {
        reports.push(run_agent(env.enroll(name), spec(1, 1.0)).await);
    }
    let md = &env.server().metadata;
    add_user(md, "ann", Role::Admin, &[], ANN).await;
    add_user(md, "rita", Role::Reviewer, &["ts-*"], RITA).await;
    (env, reports)
}

async fn actions(env: &Env) -> Vec<(String, String, String, Option<String>)> {
    env.server()
        .metadata
        .audit_rows(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.actor, r.action, r.detail, r.address))
        .collect()
}
