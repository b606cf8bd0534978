//! Agent access on PostgreSQL: the certificates issued or admitted and the operators' changes
//! to them, each change with its audit row in one transaction.

use super::{Pg, Which, pg_err};
use crate::metadata::{
    AccessChange, AccessOutcome, AccessRows, Admitted, CertSeen, MetaError, SEEN_REFRESH_US,
    access_detail, now_us,
};
use crate::metadata::{rows, sql};

impl Pg {
    pub async fn access_rows(&self) -> Result<AccessRows, MetaError> {
        self.run(Which::Keys, |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let credentials = c
                    .query(sql::CREDENTIALS.pg, &[])
                    .await
                    .map_err(e)?
                    .iter()
                    .map(rows::credential)
                    .collect::<Result<_, _>>()?;
                let accounts = c
                    .query(sql::ACCOUNTS.pg, &[])
                    .await
                    .map_err(e)?
                    .iter()
                    .map(rows::account)
                    .collect::<Result<_, _>>()?;
                Ok(AccessRows {
                    credentials,
                    accounts,
                })
            })
        })
        .await
    }

    pub async fn change_access(
        &self,
        change: AccessChange,
        actor: String,
    ) -> Result<AccessOutcome, MetaError> {
        self.run(Which::Keys, move |mut c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let tx = c.transaction().await.map_err(e)?;
                let now = now_us();
                let agent = change.agent().to_owned();
                let mut out = AccessOutcome::default();
                const REVOKE: &str = "UPDATE agent_credential SET revoked_us = $1, revoked_reason = $2 WHERE agent_id = $3 AND revoked_us IS NULL AND fingerprint IS DISTINCT FROM $4 RETURNING fingerprint";
                const REGISTERED_ONLY: &str = "INSERT INTO agent_account (agent_id, registered_only) VALUES ($1, TRUE) ON CONFLICT (agent_id) DO UPDATE SET registered_only = TRUE";
                match &change {
                    AccessChange::Issue(cred) | AccessChange::Register(cred) => {
                        tx.execute(
                            sql::INSERT_CREDENTIAL.pg,
                            &[&cred.fingerprint, &cred.agent, &cred.issued_us, &cred.not_after_us],
                        )
                        .await
                        .map_err(e)?;
                        let reason = "superseded by a later certificate";
                        let keep = Some(cred.fingerprint.clone());
                        out.revoked = tx
                            .query(REVOKE, &[&now, &reason, &agent, &keep])
                            .await
                            .map_err(e)?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        tx.execute(REGISTERED_ONLY, &[&agent]).await.map_err(e)?;
                        out.changed = true;
                    }
                    AccessChange::Revoke { reason, .. } => {
                        let keep: Option<String> = None;
                        out.revoked = tx
                            .query(REVOKE, &[&now, reason, &agent, &keep])
                            .await
                            .map_err(e)?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        tx.execute(REGISTERED_ONLY, &[&agent]).await.map_err(e)?;
                        out.changed = true;
                    }
                    AccessChange::Disable { disabled, .. } => {
                        let at = disabled.then_some(now);
                        let before: Option<i64> = tx
                            .query_opt(
                                "SELECT disabled_us FROM agent_account WHERE agent_id = $1 FOR UPDATE",
                                &[&agent],
                            )
                            .await
                            .map_err(e)?
                            .and_then(|r| r.get(0));
                        out.changed = before.is_some() != *disabled;
                        tx.execute(
                            "INSERT INTO agent_account (agent_id, disabled_us) VALUES ($1, $2) ON CONFLICT (agent_id) DO UPDATE SET disabled_us = CASE WHEN $2::BIGINT IS NULL THEN NULL ELSE coalesce(agent_account.disabled_us, $2) END",
                            &[&agent, &at],
                        )
                        .await
                        .map_err(e)?;
                    }
                }
                tx.execute(
                    sql::INSERT_AUDIT.pg,
                    &[&actor, &change.action(), &access_detail(&change, &out)],
                )
                .await
                .map_err(e)?;
                tx.commit().await.map_err(e)?;
                Ok(out)
            })
        })
        .await
    }

    pub async fn record_admitted(&self, cert: Admitted) -> Result<bool, MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                // One statement: a new row, or the sightings filled in when missing or stale.
                // `xmax = 0` tells an inserted row from an updated one. A certificate of an
                // agent that accepts registered certificates only (revoked since this node's
                // rules were read) gets no row: the next refresh refuses it.
                let st = c
                    .prepare_cached(
                        "INSERT INTO agent_credential AS a (fingerprint, agent_id, issued_us, not_after_us, serial, first_seen_us, last_seen_us) \
                         SELECT $1::TEXT, $2::TEXT, $3::BIGINT, $4::BIGINT, $5::TEXT, $6::BIGINT, $6::BIGINT \
                         WHERE EXISTS (SELECT 1 FROM agent_credential WHERE fingerprint = $1) \
                           OR NOT EXISTS (SELECT 1 FROM agent_account WHERE agent_id = $2 AND registered_only) \
                         ON CONFLICT (fingerprint) DO UPDATE SET last_seen_us = $6, \
                           first_seen_us = coalesce(a.first_seen_us, $6), serial = coalesce(a.serial, $5) \
                         WHERE a.last_seen_us IS NULL OR a.last_seen_us < $6 - $7::BIGINT \
                         RETURNING (xmax = 0)",
                    )
                    .await
                    .map_err(e)?;
                let row = c
                    .query_opt(
                        &st,
                        &[
                            &cert.fingerprint,
                            &cert.agent,
                            &cert.not_before_us,
                            &cert.not_after_us,
                            &cert.serial,
                            &cert.seen_us,
                            &SEEN_REFRESH_US,
                        ],
                    )
                    .await
                    .map_err(e)?;
                Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
            })
        })
        .await
    }

    pub async fn note_serial(&self, fingerprint: String, serial: String) -> Result<(), MetaError> {
        self.run(Which::Keys, move |c, t| {
            Box::pin(async move {
                c.execute(sql::NOTE_SERIAL.pg, &[&fingerprint, &serial])
                    .await
                    .map_err(|e| pg_err(&t, e))?;
                Ok(())
            })
        })
        .await
    }

    pub async fn certificates_seen(&self) -> Result<Vec<CertSeen>, MetaError> {
        self.run(Which::Keys, |c, t| {
            Box::pin(async move {
                c.query(sql::CERTIFICATES_SEEN.pg, &[])
                    .await
                    .map_err(|e| pg_err(&t, e))?
                    .iter()
                    .map(rows::cert_seen)
                    .collect()
            })
        })
        .await
    }
}
