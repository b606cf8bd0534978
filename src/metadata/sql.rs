//! The statements both backends run alike, written once. Each is PostgreSQL text with
//! numbered parameters (`$1`); [`Sql::lite`] is the same text with `?1`, made at compile time.
//! SQLite reads `$1` as a *named* parameter and numbers named parameters in order of first
//! appearance, so `... = $2 WHERE id = $1` would bind the arguments swapped: `?N` binds by
//! number (pinned by the tests below). Statements whose dialects differ (time functions,
//! `unnest` arrays, `IS DISTINCT FROM`, pattern lists) stay with their backend.

/// One statement in both dialects.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sql {
    /// PostgreSQL: `$1`, `$2`, ...
    pub pg: &'static str,
    /// SQLite: `?1`, `?2`, ...
    pub lite: &'static str,
}

/// `pg` with every `$` that starts a parameter number turned into `?` (same length).
const fn lite_bytes<const N: usize>(pg: &str) -> [u8; N] {
    let b = pg.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = if b[i] == b'$' && i + 1 < N && b[i + 1].is_ascii_digit() {
            b'?'
        } else {
            b[i]
        };
        i += 1;
    }
    out
}

/// `NAME = "postgres text";` items as [`Sql`] constants.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $pg:expr;)*) => {$(
        $(#[$doc])*
        pub(super) const $name: Sql = {
            const PG: &str = $pg;
            const LITE: [u8; PG.len()] = lite_bytes(PG);
            Sql {
                pg: PG,
                lite: match std::str::from_utf8(&LITE) {
                    Ok(s) => s,
                    Err(_) => panic!("a statement is not UTF-8"),
                },
            }
        };
    )*};
}

/// The columns a session summary is read from (`recording_session r`), with whether its newest
/// DEK is wrapped to a customer (E2EE) KEK.
pub(super) const SESSION_COLUMNS: &str = "r.agent_id, r.session_id, r.first_capture_us, r.last_capture_us, r.chunks, r.bytes, r.gaps, r.updated_us, \
     (SELECT k.priv_encrypted FROM encryption_dek d JOIN encryption_kek k ON k.fingerprint = d.kek_fingerprint \
      WHERE d.dek_id = r.last_dek_id LIMIT 1)";

statements! {
    /// Whether a migration is applied.
    MIGRATION_DONE = "SELECT 1 FROM schema_migrations WHERE version = $1";
    /// Note a migration applied.
    MIGRATION_APPLIED = "INSERT INTO schema_migrations (version) VALUES ($1)";
    /// A round trip.
    PING = "SELECT 1";
    /// The how-to's statement registering a KEK by its file paths.
    INSERT_KEK = "insert into encryption_kek (active, priv_encrypted, pub_datafile, priv_datafile) values ($1, $2, $3, $4)";
    /// Every audit row with its chain columns, in insertion order.
    AUDIT_CHAIN_ROWS = "SELECT id, chain_seq, at_us, actor, action, detail, address, prev_hash, row_hash FROM audit_log ORDER BY id";
    /// An audit row.
    INSERT_AUDIT = "INSERT INTO audit_log (actor, action, detail) VALUES ($1, $2, $3)";
    /// An audit row with the caller's address.
    INSERT_AUDIT_FROM = "INSERT INTO audit_log (actor, action, detail, address) VALUES ($1, $2, $3, $4)";
    /// A stream's position.
    STREAM = "SELECT kind, next_seq, final_seq FROM streams WHERE agent_id = $1 AND session_id = $2 AND stream_id = $3";
    /// A stream's newest gap records, newest first.
    GAP_RANGES = "SELECT gap_first_seq, seq FROM chunks WHERE agent_id = $1 AND session_id = $2 AND stream_id = $3 AND gap_first_seq IS NOT NULL ORDER BY seq DESC LIMIT $4";
    /// A chunk's digest.
    CHUNK_DIGEST = "SELECT digest FROM chunks WHERE agent_id = $1 AND session_id = $2 AND stream_id = $3 AND seq = $4";
    /// Every agent certificate's access columns.
    CREDENTIALS = "SELECT fingerprint, agent_id, issued_us, not_after_us, revoked_us, revoked_reason FROM agent_credential";
    /// Every agent account.
    ACCOUNTS = "SELECT agent_id, disabled_us, registered_only FROM agent_account";
    /// A new agent certificate.
    INSERT_CREDENTIAL = "INSERT INTO agent_credential (fingerprint, agent_id, issued_us, not_after_us) VALUES ($1, $2, $3, $4)";
    /// A certificate's serial, if none is noted.
    NOTE_SERIAL = "UPDATE agent_credential SET serial = $2 WHERE fingerprint = $1 AND serial IS NULL";
    /// Serial and sightings of every certificate.
    CERTIFICATES_SEEN = "SELECT fingerprint, serial, first_seen_us, last_seen_us FROM agent_credential";
    /// A DEK record's owner and bytes.
    DEK_RECORD = "SELECT agent_id, record FROM encryption_dek WHERE dek_id = $1";
    /// The agents that recorded a session id.
    SESSION_AGENTS = "SELECT agent_id FROM recording_session WHERE session_id = $1 ORDER BY agent_id LIMIT 16";
    /// The agents with a DEK under a KEK.
    KEK_AGENTS = "SELECT DISTINCT agent_id FROM encryption_dek WHERE kek_fingerprint = $1";
    /// A new console account (refused when the name is taken).
    INSERT_CONSOLE_USER = "INSERT INTO console_user (name, role, password_hash, agents, created_us, disabled_us) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING";
    /// Every login of a console account.
    DELETE_USER_LOGINS = "DELETE FROM console_login WHERE user_name = $1";
    /// A console login.
    INSERT_LOGIN = "INSERT INTO console_login (token_sha256, user_name, csrf, address, created_us, last_seen_us) VALUES ($1, $2, $3, $4, $5, $6)";
    /// A login's last sighting, when it is not idle too long.
    TOUCH_LOGIN = "UPDATE console_login SET last_seen_us = $2 WHERE token_sha256 = $1 AND last_seen_us >= $3 RETURNING user_name, csrf, address, created_us, last_seen_us";
    /// Logins idle too long.
    DELETE_IDLE_LOGINS = "DELETE FROM console_login WHERE last_seen_us < $1";
    /// One login.
    DELETE_LOGIN = "DELETE FROM console_login WHERE token_sha256 = $1";
    /// A console account.
    CONSOLE_USER = "SELECT name, role, password_hash, agents, created_us, disabled_us FROM console_user WHERE name = $1";
    /// Every console account, by name.
    CONSOLE_USERS = "SELECT name, role, password_hash, agents, created_us, disabled_us FROM console_user ORDER BY name";
}

/// Every statement, for the tests.
#[cfg(test)]
const ALL: &[Sql] = &[
    MIGRATION_DONE,
    MIGRATION_APPLIED,
    PING,
    INSERT_KEK,
    AUDIT_CHAIN_ROWS,
    INSERT_AUDIT,
    INSERT_AUDIT_FROM,
    STREAM,
    GAP_RANGES,
    CHUNK_DIGEST,
    CREDENTIALS,
    ACCOUNTS,
    INSERT_CREDENTIAL,
    NOTE_SERIAL,
    CERTIFICATES_SEEN,
    DEK_RECORD,
    SESSION_AGENTS,
    KEK_AGENTS,
    INSERT_CONSOLE_USER,
    DELETE_USER_LOGINS,
    INSERT_LOGIN,
    TOUCH_LOGIN,
    DELETE_IDLE_LOGINS,
    DELETE_LOGIN,
    CONSOLE_USER,
    CONSOLE_USERS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_text_numbers_the_parameters_as_postgres_does() {
        assert_eq!(
            NOTE_SERIAL.pg,
            "UPDATE agent_credential SET serial = $2 WHERE fingerprint = $1 AND serial IS NULL"
        );
        assert_eq!(
            NOTE_SERIAL.lite,
            "UPDATE agent_credential SET serial = ?2 WHERE fingerprint = ?1 AND serial IS NULL"
        );
        for s in ALL {
            assert_eq!(s.lite.len(), s.pg.len());
            assert!(!s.lite.contains('$'), "{}", s.lite);
            assert_eq!(s.lite.replace('?', "$"), s.pg, "only the parameters differ");
        }
    }

    /// Why the SQLite text is rewritten: `$N` is a named parameter there, bound in order of
    /// first appearance, while `?N` binds argument N wherever it appears.
    #[test]
    fn sqlite_binds_numbered_parameters_by_number_and_named_ones_by_appearance() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let pick = |sql: &str| -> (i64, i64) {
            c.query_row(sql, rusqlite::params![1i64, 2i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        assert_eq!(pick("SELECT ?2, ?1"), (2, 1));
        assert_eq!(pick("SELECT $2, $1"), (1, 2), "named: by appearance");
    }

    #[test]
    fn every_statement_prepares_on_the_sqlite_schema() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        // As `sqlite::Lite::migrate` makes it.
        c.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            .unwrap();
        for (_, _, lite) in super::super::MIGRATIONS {
            c.execute_batch(lite).unwrap();
        }
        for s in ALL {
            c.prepare(s.lite)
                .unwrap_or_else(|e| panic!("{}: {e}", s.lite));
        }
        c.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM recording_session r"
        ))
        .unwrap();
    }
}
