//! Keys as stored, never opened: wrapped DEK records, the KEKs a caller may use and their
//! public or (passphrase-protected) private key files, the deployment's agent CA.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::access::parse_id;
use crate::console::auth::Caller;
use crate::console::{ApiError, State};

/// A key file larger than this is not a key file.
const MAX_KEY_FILE: u64 = 64 * 1024;

pub(super) async fn dek(
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

pub(super) async fn keks(
    state: web::Data<State>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
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
pub(super) async fn agent_ca(
    state: web::Data<State>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    state.audit(&caller, "fetch_agent_ca", "").await?;
    Ok(HttpResponse::Ok().json(match &state.agent_ca {
        Some(ca) => serde_json::json!({"pem": ca.pem, "fingerprint": ca.fingerprint}),
        None => serde_json::json!({"pem": null, "fingerprint": null}),
    }))
}

/// A KEK's public key file, or its private key file exactly as stored (passphrase-protected
/// for a customer's KEK): the console never opens it.
pub(super) async fn kek_file(
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

#[cfg(test)]
mod tests {
    use super::*;

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
