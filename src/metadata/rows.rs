//! Row mappers both backends share: a result row of either driver, read through [`Columns`],
//! into the struct its statement's columns make. Each mapper names the columns it reads, in
//! order; the statements that select them are in `sql` (or their backend, where the dialects
//! differ in how a column is computed but not in what it is).

use super::review::{ConsoleUser, Role};
use super::{AgentAccount, CertSeen, Credential, KekRow, MetaError};
use crate::audit::ChainRow;

/// A value both drivers read from a column.
pub(super) trait Column:
    rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>
{
}

impl<T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>> Column for T {}

/// A result row of either driver.
pub(super) trait Columns {
    /// Column `i` (from 0).
    fn col<T: Column>(&self, i: usize) -> Result<T, MetaError>;
}

impl Columns for rusqlite::Row<'_> {
    fn col<T: Column>(&self, i: usize) -> Result<T, MetaError> {
        Ok(self.get(i)?)
    }
}

impl Columns for tokio_postgres::Row {
    fn col<T: Column>(&self, i: usize) -> Result<T, MetaError> {
        self.try_get(i)
            .map_err(|e| MetaError::Row(format!("column {i}: {e}")))
    }
}

/// `id, chain_seq, at_us, actor, action, detail, address, prev_hash, row_hash` of `audit_log`.
pub(super) fn chain_row(r: &impl Columns) -> Result<ChainRow, MetaError> {
    Ok(ChainRow {
        id: r.col(0)?,
        chain_seq: r.col(1)?,
        at_us: r.col(2)?,
        actor: r.col(3)?,
        action: r.col(4)?,
        detail: r.col(5)?,
        address: r.col(6)?,
        prev_hash: r.col(7)?,
        row_hash: r.col(8)?,
    })
}

/// `id, active, priv_encrypted, pub_datafile, priv_datafile, fingerprint, agent_id` of
/// `encryption_kek`, then `retired_at` in microseconds.
pub(super) fn kek(r: &impl Columns) -> Result<KekRow, MetaError> {
    Ok(KekRow {
        id: r.col(0)?,
        active: r.col(1)?,
        priv_encrypted: r.col(2)?,
        pub_datafile: r.col(3)?,
        priv_datafile: r.col(4)?,
        fingerprint: r.col(5)?,
        agent_id: r.col(6)?,
        retired_us: r.col(7)?,
    })
}

/// `fingerprint, agent_id, issued_us, not_after_us, revoked_us, revoked_reason` of
/// `agent_credential`.
pub(super) fn credential(r: &impl Columns) -> Result<Credential, MetaError> {
    Ok(Credential {
        fingerprint: r.col(0)?,
        agent: r.col(1)?,
        issued_us: r.col(2)?,
        not_after_us: r.col(3)?,
        revoked_us: r.col(4)?,
        revoked_reason: r.col(5)?,
    })
}

/// `agent_id, disabled_us, registered_only` of `agent_account`.
pub(super) fn account(r: &impl Columns) -> Result<AgentAccount, MetaError> {
    Ok(AgentAccount {
        agent: r.col(0)?,
        disabled_us: r.col(1)?,
        registered_only: r.col(2)?,
    })
}

/// `fingerprint, serial, first_seen_us, last_seen_us` of `agent_credential`.
pub(super) fn cert_seen(r: &impl Columns) -> Result<CertSeen, MetaError> {
    Ok(CertSeen {
        fingerprint: r.col(0)?,
        serial: r.col(1)?,
        first_seen_us: r.col(2)?,
        last_seen_us: r.col(3)?,
    })
}

/// `name, role, password_hash, agents, created_us, disabled_us` of `console_user` (the agent
/// patterns one a line).
pub(super) fn console_user(r: &impl Columns) -> Result<ConsoleUser, MetaError> {
    let role: String = r.col(1)?;
    let agents: String = r.col(3)?;
    Ok(ConsoleUser {
        name: r.col(0)?,
        role: Role::parse(&role).ok_or_else(|| MetaError::Row(format!("unknown role {role:?}")))?,
        password_hash: r.col(2)?,
        agents: agents.lines().map(str::to_owned).collect(),
        created_us: r.col(4)?,
        disabled_us: r.col(5)?,
    })
}
