//! The purge of deleted organizations (spec rule 27, ADR 0018): once `purge_after` has passed,
//! every row identity holds for the organization is deleted, the sessions acting in it forget it,
//! and `identity.organization.purged` tells every other service to delete its data.
//!
//! Safe with several replicas: the due organizations come from a definer function, and each one
//! is purged in its own tenant transaction that first takes the org row `for update skip locked`
//! (and re-checks that it is still deleted and due, so a restore that committed first wins).
//! Another replica finding the row locked skips it. The loop is local to identity on purpose;
//! it can move onto kit's scheduler once that exists.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trellis_kit::{RequestContext, Result};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::organizations::stage;

/// `identity.organization.purged`
pub const ORGANIZATION_PURGED: &str = "identity.organization.purged";
/// Organizations purged per pass at most.
const BATCH: i32 = 50;

/// Identity's tenant tables, children first (each has `org_id`).
const TENANT_TABLES: &[&str] = &[
    "identity.team_members",
    "identity.teams",
    "identity.invitations",
    "identity.api_keys",
    "identity.settings",
    "identity.onboarding_progress",
    "identity.onboarding_dismissals",
    "identity.org_members",
];

impl Identity {
    /// Purges the organizations whose window has passed; how many this replica purged.
    pub async fn purge_due_organizations(&self) -> Result<usize> {
        let due: Vec<Uuid> = sqlx::query_scalar("select id from identity.organizations_due_for_purge($1)")
            .bind(BATCH)
            .fetch_all(self.db.pool())
            .await?;
        let mut purged = 0;
        for org_id in due {
            if self.purge_organization(org_id).await? {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Purges one organization if it is still deleted, due, and not being purged elsewhere.
    async fn purge_organization(&self, org_id: Uuid) -> Result<bool> {
        let mut tx = self.db.tenant_tx_for(org_id, None).await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "select name, slug from identity.organizations
             where id = $1 and deleted_at is not null and purge_after <= now()
             for update skip locked",
        )
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((name, slug)) = row else { return Ok(false) };
        let owner: Option<Uuid> =
            sqlx::query_scalar("select user_id from identity.org_members where org_id = $1 and role = 'owner'")
                .bind(org_id)
                .fetch_optional(&mut *tx)
                .await?;
        for table in TENANT_TABLES {
            sqlx::query(&format!("delete from {table} where org_id = $1")).bind(org_id).execute(&mut *tx).await?;
        }
        sqlx::query("delete from identity.organizations where id = $1").bind(org_id).execute(&mut *tx).await?;
        let payload = pb::OrganizationDeleted { org_id: org_id.to_string(), name, slug, purge_after: None };
        let ctx = RequestContext::system(org_id, Uuid::now_v7().to_string());
        stage(&mut tx, &ctx, org_id, ORGANIZATION_PURGED, &payload).await?;
        tx.commit().await?;
        // Sessions still naming the org act in another one at their next refresh.
        sqlx::query("update identity.sessions set active_org_id = null where active_org_id = $1")
            .bind(org_id)
            .execute(self.db.pool())
            .await?;
        tracing::info!(org_id = %org_id, owner = ?owner, "organization purged");
        Ok(true)
    }

    /// Runs [`Identity::purge_due_organizations`] every `interval` until shutdown.
    pub async fn run_purge(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
            match self.purge_due_organizations().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "organization purge pass"),
                Err(e) => tracing::warn!(code = ?e.code(), message = e.message(), "organization purge pass failed"),
            }
        }
    }
}
