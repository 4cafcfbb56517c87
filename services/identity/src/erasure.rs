//! The erasure of deactivated accounts past their window (spec rule 26, ADR 0019): the profile is
//! anonymized (`erased+{id}@invalid`, "Deleted user", no avatar, status `erased`); credentials,
//! sessions, MFA data, linked identities, email tokens, settings and onboarding state are deleted;
//! every membership (and team membership) is removed with `identity.member.removed {reason:
//! erased}`, and `identity.user.erased` closes the account. The user row itself stays, so ids
//! named elsewhere still resolve to "Deleted user".
//!
//! Replica-safe the same way as the organization purge (ADR 0018): each due user is erased in one
//! transaction that first takes the user row `for update skip locked` and re-checks that the
//! account is still deactivated and due, so a reactivation that committed first wins and a user is
//! erased, and its events published, exactly once. An erased user is never due again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trellis_kit::{RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::members::MEMBER_REMOVED;
use crate::organization::Role;
use crate::organizations::stage;
use crate::{org_store, store};

/// `identity.user.erased`
pub const USER_ERASED: &str = "identity.user.erased";
/// The display name an erased user keeps.
pub const ERASED_NAME: &str = "Deleted user";
/// Users erased per pass at most.
const BATCH: i64 = 50;

/// The anonymized email of an erased user.
pub fn erased_email(user_id: Uuid) -> String {
    format!("erased+{user_id}@invalid")
}

impl Identity {
    /// Erases the deactivated accounts whose window has passed; how many this replica erased.
    pub async fn erase_due_users(&self) -> Result<usize> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "select id from identity.users where status = 'deactivated' and erase_after <= now()
             order by erase_after limit $1",
        )
        .bind(BATCH)
        .fetch_all(self.db.pool())
        .await?;
        let mut erased = 0;
        for user_id in due {
            if self.erase_user(user_id).await? {
                erased += 1;
            }
        }
        Ok(erased)
    }

    /// Erases one account if it is still deactivated, due, and not being erased elsewhere.
    async fn erase_user(&self, user_id: Uuid) -> Result<bool> {
        let mut tx = self.db.tx().await?;
        let due: Option<Uuid> = sqlx::query_scalar(
            "select id from identity.users
              where id = $1 and status = 'deactivated' and erase_after <= now()
              for update skip locked",
        )
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if due.is_none() {
            return Ok(false);
        }
        let correlation = Uuid::now_v7().to_string();
        let acting = |org_id: Uuid| {
            let mut ctx = RequestContext::system(org_id, correlation.clone());
            ctx.subject = Subject::User(user_id);
            ctx
        };

        store::scope_to_user(&mut tx, user_id).await?;
        let memberships: Vec<(Uuid, String)> =
            sqlx::query_as("select org_id, role from identity.org_members where user_id = $1 order by org_id")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
        let mut removed = Vec::new();
        for (org_id, role) in &memberships {
            let org_id = *org_id;
            crate::store::users::scope_to_org(&mut tx, org_id).await?;
            let ctx = acting(org_id);
            let teams = self.leave_all_teams(&mut tx, &ctx, org_id, user_id).await?;
            sqlx::query("delete from identity.settings where org_id = $1 and scope = 'user' and scope_id = $2")
                .bind(org_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("delete from identity.onboarding_progress where org_id = $1 and subject_id = $2")
                .bind(org_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("delete from identity.onboarding_dismissals where org_id = $1 and user_id = $2")
                .bind(org_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let heir = org_store::owner(&mut tx, org_id).await?.map(|o| o.user_id).filter(|o| *o != user_id);
            let version = org_store::delete_member(&mut tx, org_id, user_id).await?;
            let payload = pb::MemberRemoved {
                org_id: org_id.to_string(),
                user_id: user_id.to_string(),
                role: Role::parse(role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
                removed_by: user_id.to_string(),
                reassign_to: heir.map(|h| h.to_string()).unwrap_or_default(),
                reason: pb::MemberRemovalReason::Erased.into(),
                version,
            };
            stage(&mut tx, &ctx, org_id, MEMBER_REMOVED, &payload).await?;
            removed.push((org_id, teams, version));
        }

        // Credentials, sessions (their refresh tokens cascade), MFA data and single-use tokens.
        for table in [
            "identity.sessions",
            "identity.mfa_totp",
            "identity.mfa_backup_codes",
            "identity.login_challenges",
            "identity.email_tokens",
        ] {
            sqlx::query(&format!("delete from {table} where user_id = $1")).bind(user_id).execute(&mut *tx).await?;
        }
        // Linked OIDC identities, where that table exists.
        let oidc: Option<String> =
            sqlx::query_scalar("select to_regclass('identity.oidc_identities')::text").fetch_one(&mut *tx).await?;
        if oidc.is_some() {
            sqlx::query("delete from identity.oidc_identities where user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "update identity.users
                set email = $2, first_name = $3, last_name = '', avatar_key = null, timezone = 'UTC', locale = 'en',
                    status = 'erased', email_verified_at = null, password_hash = null, password_changed_at = null,
                    failed_login_count = 0, locked_until = null, last_login_at = null, mfa_enabled = false,
                    erase_after = null, updated_at = now()
              where id = $1",
        )
        .bind(user_id)
        .bind(erased_email(user_id))
        .bind(ERASED_NAME)
        .execute(&mut *tx)
        .await?;
        let payload = pb::UserErased { user_id: user_id.to_string() };
        trellis_kit::events::stage(&mut tx, &acting(Uuid::nil()), USER_ERASED, &payload).await?;
        tx.commit().await?;

        // The relationships go at once; the events apply them again if this write is lost.
        for (org_id, teams, version) in removed {
            let change = trellis_kit::org_relationships::member_removed(
                &org_id.to_string(),
                &user_id.to_string(),
                &teams,
                version,
            );
            self.apply_relationships(org_id, &[change]).await;
        }
        tracing::info!(user_id = %user_id, memberships = memberships.len(), "account erased");
        Ok(true)
    }

    /// Runs [`Identity::erase_due_users`] every `interval` until shutdown.
    pub async fn run_erasure(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
            match self.erase_due_users().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(erased = n, "account erasure pass"),
                Err(e) => tracing::warn!(code = ?e.code(), message = e.message(), "account erasure pass failed"),
            }
        }
    }
}
