//! Agent access on the embedded SQLite file: the certificates issued or admitted and the
//! operators' changes to them, each change with its audit row in one transaction.

use rusqlite::{OptionalExtension, params};

use super::{Lite, chain_pending_audit_rows};
use crate::metadata::{
    AccessChange, AccessOutcome, AccessRows, Admitted, CertSeen, MetaError, SEEN_REFRESH_US,
    access_detail, now_us,
};
use crate::metadata::{rows, sql};

impl Lite {
    pub async fn access_rows(&self) -> Result<AccessRows, MetaError> {
        self.with(|c| {
            let mut st = c.prepare(sql::CREDENTIALS.lite)?;
            let credentials = st
                .query_and_then([], |r| rows::credential(r))?
                .collect::<Result<_, MetaError>>()?;
            let mut st = c.prepare(sql::ACCOUNTS.lite)?;
            let accounts = st
                .query_and_then([], |r| rows::account(r))?
                .collect::<Result<_, MetaError>>()?;
            Ok(AccessRows {
                credentials,
                accounts,
            })
        })
        .await
    }

    pub async fn change_access(
        &self,
        change: AccessChange,
        actor: String,
    ) -> Result<AccessOutcome, MetaError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now_us();
            let mut out = AccessOutcome::default();
            let agent = change.agent().to_owned();
            let revoke = |tx: &rusqlite::Transaction, reason: &str, keep: Option<&str>| {
                let mut st = tx.prepare(
                    "UPDATE agent_credential SET revoked_us = ?1, revoked_reason = ?2 WHERE agent_id = ?3 AND revoked_us IS NULL AND fingerprint IS NOT ?4 RETURNING fingerprint",
                )?;
                let fps = st
                    .query_map(params![now, reason, agent, keep], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, rusqlite::Error>(fps)
            };
            match &change {
                AccessChange::Issue(cred) | AccessChange::Register(cred) => {
                    tx.execute(
                        sql::INSERT_CREDENTIAL.lite,
                        params![cred.fingerprint, cred.agent, cred.issued_us, cred.not_after_us],
                    )?;
                    out.revoked = revoke(&tx, "superseded by a later certificate", Some(&cred.fingerprint))?;
                    tx.execute(
                        "INSERT INTO agent_account (agent_id, registered_only) VALUES (?1, 1) ON CONFLICT (agent_id) DO UPDATE SET registered_only = 1",
                        params![agent],
                    )?;
                    out.changed = true;
                }
                AccessChange::Revoke { reason, .. } => {
                    out.revoked = revoke(&tx, reason, None)?;
                    tx.execute(
                        "INSERT INTO agent_account (agent_id, registered_only) VALUES (?1, 1) ON CONFLICT (agent_id) DO UPDATE SET registered_only = 1",
                        params![agent],
                    )?;
                    out.changed = true;
                }
                AccessChange::Disable { disabled, .. } => {
                    let at = disabled.then_some(now);
                    let before: Option<Option<i64>> = tx
                        .query_row(
                            "SELECT disabled_us FROM agent_account WHERE agent_id = ?1",
                            params![agent],
                            |r| r.get(0),
                        )
                        .optional()?;
                    out.changed = before.flatten().is_some() != *disabled;
                    tx.execute(
                        "INSERT INTO agent_account (agent_id, disabled_us) VALUES (?1, ?2) ON CONFLICT (agent_id) DO UPDATE SET disabled_us = CASE WHEN ?2 IS NULL THEN NULL ELSE coalesce(agent_account.disabled_us, ?2) END",
                        params![agent, at],
                    )?;
                }
            }
            tx.execute(
                sql::INSERT_AUDIT.lite,
                params![actor, change.action(), access_detail(&change, &out)],
            )?;
            tx.commit()?;
            chain_pending_audit_rows(c)?;
            Ok(out)
        })
        .await
    }

    /// See `Metadata::record_admitted`. A certificate of an agent that accepts registered
    /// certificates only (revoked since the node's rules were read) gets no row: the next
    /// refresh refuses it.
    pub async fn record_admitted(&self, cert: Admitted) -> Result<bool, MetaError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let inserted = tx.execute(
                "INSERT INTO agent_credential (fingerprint, agent_id, issued_us, not_after_us, serial, first_seen_us, last_seen_us) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?6 WHERE EXISTS (SELECT 1 FROM agent_credential WHERE fingerprint = ?1) OR NOT EXISTS (SELECT 1 FROM agent_account WHERE agent_id = ?2 AND registered_only) ON CONFLICT (fingerprint) DO NOTHING",
                params![cert.fingerprint, cert.agent, cert.not_before_us, cert.not_after_us, cert.serial, cert.seen_us],
            )? == 1;
            if !inserted {
                tx.execute(
                    "UPDATE agent_credential SET last_seen_us = ?2, first_seen_us = coalesce(first_seen_us, ?2), serial = coalesce(serial, ?3) WHERE fingerprint = ?1 AND (last_seen_us IS NULL OR last_seen_us < ?2 - ?4)",
                    params![cert.fingerprint, cert.seen_us, cert.serial, SEEN_REFRESH_US],
                )?;
            }
            tx.commit()?;
            Ok(inserted)
        })
        .await
    }

    pub async fn note_serial(&self, fingerprint: String, serial: String) -> Result<(), MetaError> {
        self.with(move |c| {
            c.execute(sql::NOTE_SERIAL.lite, params![fingerprint, serial])?;
            Ok(())
        })
        .await
    }

    pub async fn certificates_seen(&self) -> Result<Vec<CertSeen>, MetaError> {
        self.with(|c| {
            let mut st = c.prepare(sql::CERTIFICATES_SEEN.lite)?;
            st.query_and_then([], |r| rows::cert_seen(r))?.collect()
        })
        .await
    }
}
