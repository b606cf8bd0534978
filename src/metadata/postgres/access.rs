//! Agent access on PostgreSQL: the certificates issued and the operators' changes to them,
//! each change with its audit row in one transaction.

use super::{Pg, Which, pg_err};
use crate::metadata::{
    AccessChange, AccessOutcome, AccessRows, AgentAccount, Credential, MetaError, access_detail,
    now_us,
};

impl Pg {
    pub async fn access_rows(&self) -> Result<AccessRows, MetaError> {
        self.run(Which::Keys, |c, t| {
            Box::pin(async move {
                let e = |e| pg_err(&t, e);
                let credentials = c
                    .query(
                        "SELECT fingerprint, agent_id, issued_us, not_after_us, revoked_us, revoked_reason FROM agent_credential",
                        &[],
                    )
                    .await
                    .map_err(e)?
                    .iter()
                    .map(|r| Credential {
                        fingerprint: r.get(0),
                        agent: r.get(1),
                        issued_us: r.get(2),
                        not_after_us: r.get(3),
                        revoked_us: r.get(4),
                        revoked_reason: r.get(5),
                    })
                    .collect();
                let accounts = c
                    .query(
                        "SELECT agent_id, disabled_us, registered_only FROM agent_account",
                        &[],
                    )
                    .await
                    .map_err(e)?
                    .iter()
                    .map(|r| AgentAccount {
                        agent: r.get(0),
                        disabled_us: r.get(1),
                        registered_only: r.get(2),
                    })
                    .collect();
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
                    AccessChange::Issue(cred) => {
                        tx.execute(
                            "INSERT INTO agent_credential (fingerprint, agent_id, issued_us, not_after_us) VALUES ($1, $2, $3, $4)",
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
                    "INSERT INTO audit_log (actor, action, detail) VALUES ($1, $2, $3)",
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
}
