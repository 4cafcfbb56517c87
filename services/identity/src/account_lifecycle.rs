//! The end of an account (spec: UserService Deactivate and DeleteMe, rule 25, flow 14):
//! deactivation suspends the memberships, revokes every session and every API key the user
//! created (announced on the revocation feed, so every service refuses them within a second),
//! soft-deletes a personal organization nobody else uses, and schedules the erasure 30 days
//! later. DeleteMe, the GDPR erasure request, does the same without the typed confirmation.
//! Reactivate (public, within the 30 days) undoes it and signs in, or asks for the second factor.
//!
//! Everything happens in one transaction: the user's memberships live in other tenants, so the
//! transaction moves its tenant (`app.org_id`) from organization to organization, each write
//! under that organization's RLS policy.

use chrono::{DateTime, Utc};
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::api_keys::API_KEY_REVOKED;
use crate::error::IdentityError;
use crate::organization::Role;
use crate::store::{self, users as users_store};
use crate::{Identity, events};

/// The confirmation Deactivate asks the user to type.
pub const CONFIRMATION: &str = "DEACTIVATE";
/// Days between deactivation and erasure (and the window for reactivation).
pub const ERASE_AFTER_DAYS: i64 = 30;
/// `identity.user.deactivated`
pub const USER_DEACTIVATED: &str = "identity.user.deactivated";
/// `identity.organization.deleted`
const ORGANIZATION_DELETED: &str = "identity.organization.deleted";

/// `identity.user.reactivated`
pub const USER_REACTIVATED: &str = "identity.user.reactivated";

/// FAILED_PRECONDITION OWNERSHIP_TRANSFER_REQUIRED naming the organizations (metadata
/// `org_ids`, comma-separated).
pub fn ownership_transfer_required(org_ids: &[Uuid]) -> Error {
    let ids: Vec<String> = org_ids.iter().map(Uuid::to_string).collect();
    Error::failed_precondition(
        "OWNERSHIP_TRANSFER_REQUIRED",
        "Transfer the ownership of your organizations with other members first",
    )
    .with_metadata("org_ids", ids.join(","))
}

/// The context of events about the account in `org_id`, caused by the user.
fn acting(ctx: &RequestContext, user_id: Uuid, org_id: Uuid) -> RequestContext {
    let mut e = RequestContext::system(org_id, ctx.correlation_id.clone());
    e.subject = Subject::User(user_id);
    e
}

impl Identity {
    /// Deactivate: `confirmation` must be `DEACTIVATE`.
    pub async fn deactivate(
        &self,
        ctx: &RequestContext,
        confirmation: &str,
        password: String,
    ) -> Result<DateTime<Utc>> {
        if confirmation.trim() != CONFIRMATION {
            return Err(IdentityError::ConfirmationMismatch.into());
        }
        self.end_account(ctx, password, false).await
    }

    /// DeleteMe: the erasure request, which behaves as Deactivate.
    pub async fn delete_me(&self, ctx: &RequestContext, password: String) -> Result<DateTime<Utc>> {
        self.end_account(ctx, password, true).await
    }

    /// Reactivate: within the window, with the password; every failure is INVALID_CREDENTIALS
    /// after the same Argon2id work.
    pub async fn reactivate(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: String,
        client: &crate::accounts::Client,
    ) -> Result<crate::accounts::LoginOutcome> {
        let normalized = crate::user::normalize_email(email).ok();
        let key = normalized.clone().unwrap_or_else(|| email.trim().to_lowercase());
        let digest: String = crate::tokens::hash_token(&key).iter().map(|b| format!("{b:02x}")).collect();
        let settings = &self.settings;
        self.limiter
            .hit(&format!("reactivate:email:{digest}"), settings.login_rate_limit, settings.login_rate_window)
            .await?;
        let account = match &normalized {
            Some(email) => store::credentials_by_email(self.db.pool(), email).await?,
            None => None,
        };
        let stored = account.as_ref().and_then(|a| a.password_hash.clone());
        let verification = crate::password::verify_blocking(stored, password).await?;
        let (Some(account), crate::password::Verification::Match { .. }) = (account, verification) else {
            return Err(IdentityError::InvalidCredentials.into());
        };
        let user_id = account.user.id;
        let mut tx = self.db.tx().await?;
        let erase_after = users_store::erase_after(&mut tx, user_id).await?;
        let Some(erase_after) = erase_after else {
            return Err(IdentityError::InvalidCredentials.into());
        };
        if !users_store::reactivate_user(&mut tx, user_id).await? {
            return Err(IdentityError::InvalidCredentials.into());
        }
        store::scope_to_user(&mut tx, user_id).await?;
        let orgs = users_store::suspended_memberships(&mut tx, user_id).await?;
        for org_id in &orgs {
            users_store::scope_to_org(&mut tx, *org_id).await?;
            users_store::restore_membership(&mut tx, *org_id, user_id).await?;
            if let Some((name, slug)) = users_store::restore_personal_org(&mut tx, *org_id, erase_after).await? {
                let payload = pb::OrganizationDeleted { org_id: org_id.to_string(), name, slug, purge_after: None };
                let ectx = acting(ctx, user_id, *org_id);
                trellis_kit::events::stage(&mut tx, &ectx, crate::organizations::ORGANIZATION_RESTORED, &payload)
                    .await?;
            }
        }
        let payload = pb::UserReactivated {
            user_id: user_id.to_string(),
            org_ids: orgs.iter().map(Uuid::to_string).collect(),
            erase_after: Some(events::timestamp(erase_after)),
        };
        trellis_kit::events::stage(&mut tx, &acting(ctx, user_id, Uuid::nil()), USER_REACTIVATED, &payload).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, "account reactivated");
        let mut user = account.user;
        user.status = "active".into();
        if user.mfa_enabled {
            let pending = self.start_mfa_challenge(&user, client).await?;
            return Ok(crate::accounts::LoginOutcome::MfaRequired(pending));
        }
        let signed_in = self.finish_sign_in(user, client, crate::tokens::password_amr()).await?;
        Ok(crate::accounts::LoginOutcome::SignedIn(Box::new(signed_in)))
    }

    async fn end_account(&self, ctx: &RequestContext, password: String, erasure: bool) -> Result<DateTime<Utc>> {
        let user_id = ctx.user_id()?;
        self.require_password(user_id, password).await?;
        let erase_after = Utc::now() + chrono::TimeDelta::days(ERASE_AFTER_DAYS);

        let mut tx = self.db.tx().await?;
        store::scope_to_user(&mut tx, user_id).await?;
        let memberships = store::memberships_of_user(&mut tx, user_id).await?;
        // Rule 25: refused while the user owns an organization that has other active members.
        let mut blocking = Vec::new();
        let mut solo_personal = Vec::new();
        for m in memberships.iter().filter(|m| m.role == Role::Owner.as_str()) {
            users_store::scope_to_org(&mut tx, m.org_id).await?;
            let others = users_store::other_active_members(&mut tx, m.org_id, user_id).await?;
            if others > 0 {
                blocking.push(m.org_id);
            } else if m.personal {
                solo_personal.push(m.org_id);
            }
        }
        if !blocking.is_empty() {
            return Err(ownership_transfer_required(&blocking));
        }
        if !users_store::deactivate_user(&mut tx, user_id, erase_after).await? {
            return Err(IdentityError::InvalidCredentials.into());
        }

        let mut revoked_keys = Vec::new();
        for m in &memberships {
            users_store::scope_to_org(&mut tx, m.org_id).await?;
            let ectx = acting(ctx, user_id, m.org_id);
            if solo_personal.contains(&m.org_id)
                && let Some(org) = crate::org_store::set_org_deleted(&mut tx, m.org_id, Some(erase_after)).await?
            {
                let payload = pb::OrganizationDeleted {
                    org_id: m.org_id.to_string(),
                    name: org.name.clone(),
                    slug: org.slug.clone(),
                    purge_after: Some(events::timestamp(erase_after)),
                };
                trellis_kit::events::stage(&mut tx, &ectx, ORGANIZATION_DELETED, &payload).await?;
            }
            users_store::suspend_membership(&mut tx, m.org_id, user_id).await?;
            for key_id in users_store::live_api_keys_created_by(&mut tx, user_id).await? {
                let Some(key) = store::api_keys::api_key(&mut tx, key_id).await? else { continue };
                if store::api_keys::revoke_api_key(&mut tx, key_id, user_id).await? {
                    let payload = pb::ApiKeyRevoked {
                        api_key_id: key.id.to_string(),
                        name: key.name.clone(),
                        scopes: key.scopes.clone(),
                        role: Role::parse(&key.role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
                        created_by: key.created_by.to_string(),
                        revoked_by: user_id.to_string(),
                    };
                    trellis_kit::events::stage(&mut tx, &ectx, API_KEY_REVOKED, &payload).await?;
                    revoked_keys.push((m.org_id, key_id));
                }
            }
        }

        let account_ctx = acting(ctx, user_id, Uuid::nil());
        let sessions = store::revoke_user_sessions(&mut tx, user_id, "deactivated", None).await?;
        for id in &sessions {
            events::session_revoked(&mut tx, &account_ctx, *id, user_id, pb::SessionRevokeReason::Deactivated).await?;
        }
        let payload = pb::UserDeactivated {
            user_id: user_id.to_string(),
            org_ids: memberships.iter().map(|m| m.org_id.to_string()).collect(),
            erase_after: Some(events::timestamp(erase_after)),
            erasure_requested: erasure,
        };
        trellis_kit::events::stage(&mut tx, &account_ctx, USER_DEACTIVATED, &payload).await?;
        tx.commit().await?;

        let mut announced: Vec<String> = sessions.iter().map(Uuid::to_string).collect();
        announced.extend(revoked_keys.iter().map(|(_, key_id)| format!("key:{key_id}")));
        self.announcer.announce(announced);
        for (org_id, key_id) in revoked_keys {
            let change = trellis_kit::org_relationships::api_key_revoked(&org_id.to_string(), &key_id.to_string());
            self.apply_relationships(org_id, &[change]).await;
        }
        tracing::info!(user_id = %user_id, erasure, sessions = sessions.len(), "account deactivated");
        Ok(erase_after)
    }
}
