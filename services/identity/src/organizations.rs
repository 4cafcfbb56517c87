//! The OrganizationService flows: creating, listing, reading, updating, deleting and restoring
//! organizations. The members flows are in [`crate::members`].
//!
//! Every request on `{org_id}` resolves the caller's membership first (no active membership in
//! a live org: NOT_FOUND, as for an org of another tenant), then, for writes, requires the org to
//! be the token's active one (ORG_NOT_ACTIVE), then asks the permissions service (`Check` on
//! `organization:{org_id}`).

use std::time::Duration;

use chrono::Utc;
use trellis_kit::authz::Ref;
use trellis_kit::db::{Tx, on_constraint};
use trellis_kit::events::{envelope, stage_envelope};
use trellis_kit::org_relationships;
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{IdentityError, Violation, Violations};
use crate::org_store::{self, Org, OrgChanges};
use crate::organization::{MAX_ORG_NAME_LEN, Role, is_valid_slug};
use crate::password::{self, Verification};
use crate::{events, user};

/// Slugs that name routes or products rather than organizations.
pub const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "api",
    "app",
    "apps",
    "assets",
    "auth",
    "billing",
    "blog",
    "dashboard",
    "docs",
    "help",
    "invitations",
    "invite",
    "login",
    "logout",
    "mail",
    "me",
    "new",
    "oauth",
    "organizations",
    "register",
    "root",
    "settings",
    "signin",
    "signup",
    "static",
    "status",
    "support",
    "system",
    "teams",
    "trellis",
    "users",
    "www",
];
/// Organizations a user may create per day.
pub const CREATIONS_PER_DAY: u32 = 10;
/// Organizations a user may be an active member of (rule 20).
pub const MAX_ORGS_PER_USER: i64 = 100;
/// How long a deleted organization can be restored.
pub const PURGE_AFTER_DAYS: i64 = 30;
/// The plans.
pub const PLANS: [&str; 3] = ["free", "pro", "enterprise"];

/// `identity.organization.updated`
pub const ORGANIZATION_UPDATED: &str = "identity.organization.updated";
/// `identity.organization.deleted`
pub const ORGANIZATION_DELETED: &str = "identity.organization.deleted";
/// `identity.organization.restored`
pub const ORGANIZATION_RESTORED: &str = "identity.organization.restored";

/// Checks a slug someone chose (derived slugs are valid by construction).
pub fn check_slug(slug: &str) -> Option<&'static str> {
    if !is_valid_slug(slug) {
        Some("must be 3-50 lowercase letters, digits and single hyphens")
    } else if RESERVED_SLUGS.contains(&slug) {
        Some("is reserved")
    } else {
        None
    }
}

/// Checks an IANA-style zone name (`Area/Location`, `UTC`).
pub fn check_timezone(tz: &str) -> Option<&'static str> {
    let ok = (1..=64).contains(&tz.len())
        && tz.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-+".contains(&b))
        && tz.as_bytes()[0].is_ascii_uppercase();
    (!ok).then_some("must be an IANA time zone such as Europe/Paris")
}

/// Checks a BCP 47 tag (at most 16 characters: `en`, `pt-BR`, `zh-Hant-TW`).
pub fn check_locale(tag: &str) -> Option<&'static str> {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    let ok = tag.len() <= 16
        && (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    (!ok).then_some("must be a BCP 47 language tag such as en or pt-BR")
}

/// The caller as a permissions subject.
pub(crate) fn subject(ctx: &RequestContext) -> Result<Ref> {
    match &ctx.subject {
        Subject::User(id) => Ok(Ref::new("user", id.to_string())),
        Subject::ApiKey(id) => Ok(Ref::new("api_key", id.to_string())),
        _ => Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required")),
    }
}

/// A request field naming an organization, user or other entity by UUID.
pub(crate) fn parse_id(field: &str, raw: &str) -> Result<Uuid> {
    raw.trim().parse().map_err(|_| IdentityError::Invalid(vec![Violation::new(field, "must be a UUID")]).into())
}

/// Stages an event of `org_id` caused by `ctx`.
pub(crate) async fn stage<M: prost::Name>(
    tx: &mut Tx,
    ctx: &RequestContext,
    org_id: Uuid,
    event_type: &str,
    payload: &M,
) -> Result<()> {
    stage_envelope(tx, envelope(ctx, org_id, event_type, payload)).await.map(drop)
}

/// Where a request on `{org_id}` stands: its transaction and the caller's membership.
#[derive(Debug)]
pub(crate) struct InOrg {
    pub tx: Tx,
    pub org: Org,
    /// The caller's membership (`None` for an API key of the org).
    pub caller: Option<org_store::Member>,
}

impl Identity {
    /// Opens the org's tenant transaction after making sure the caller belongs to it: an active
    /// member of the live org (or an API key of it), else NOT_FOUND. `deleted` admits a deleted
    /// org (restore).
    pub(crate) async fn enter_org(&self, ctx: &RequestContext, org_id: Uuid, deleted: bool) -> Result<InOrg> {
        let user = ctx.user_id_opt();
        if user.is_none() && ctx.org_id != Some(org_id) {
            return Err(IdentityError::OrganizationNotFound.into());
        }
        let mut tx = self.db.tenant_tx_for(org_id, user).await?;
        let org = org_store::org(&mut tx, org_id).await?.ok_or(IdentityError::OrganizationNotFound)?;
        if org.deleted_at.is_some() != deleted {
            return Err(IdentityError::OrganizationNotFound.into());
        }
        let caller = match user {
            Some(user) => {
                let m = org_store::member(&mut tx, org_id, user).await?;
                Some(m.filter(|m| m.status == "active").ok_or(IdentityError::OrganizationNotFound)?)
            }
            None => None,
        };
        Ok(InOrg { tx, org, caller })
    }

    /// Writes need the org to be the token's active one.
    pub(crate) fn require_active(ctx: &RequestContext, org_id: Uuid) -> Result<()> {
        if ctx.org_id == Some(org_id) { Ok(()) } else { Err(IdentityError::OrgNotActive.into()) }
    }

    /// Whether the caller holds `permission` on `organization:{org_id}`.
    pub(crate) async fn allowed(&self, ctx: &RequestContext, org_id: Uuid, permission: &str) -> Result<bool> {
        let resource = Ref::new("organization", org_id.to_string());
        self.authz.check(org_id, &resource, permission, &subject(ctx)?, None).await.map_err(|status| {
            tracing::warn!(code = ?status.code(), message = status.message(), "permission check failed");
            Error::unavailable("PERMISSIONS_UNAVAILABLE", "Permissions cannot be checked right now; try again")
        })
    }

    /// PERMISSION_DENIED unless the caller holds `permission` on the org.
    pub(crate) async fn require(&self, ctx: &RequestContext, org_id: Uuid, permission: &str) -> Result<()> {
        if self.allowed(ctx, org_id, permission).await? {
            Ok(())
        } else {
            Err(IdentityError::PermissionDenied("Your role in this organization does not allow this").into())
        }
    }

    /// Checks the caller's password (a step-up for destructive changes); INVALID_CREDENTIALS.
    pub(crate) async fn require_password(&self, user_id: Uuid, password: String) -> Result<()> {
        let mut conn = self.db.pool().acquire().await?;
        let hash = org_store::password_hash(&mut conn, user_id).await?;
        drop(conn);
        match password::verify_blocking(hash, password).await? {
            Verification::Match { .. } => Ok(()),
            _ => Err(IdentityError::InvalidCredentials.into()),
        }
    }

    /// Creates an organization owned by the caller (see `OrganizationService.CreateOrganization`).
    pub async fn create_organization(&self, ctx: &RequestContext, name: &str, slug: &str, plan: &str) -> Result<Org> {
        let user_id = ctx.user_id()?;
        let mut violations = Violations::default();
        let name = name.trim();
        let slug = slug.trim();
        let plan = match plan.trim() {
            "" => "free",
            p => p,
        };
        violations.check("name", user::check_name(name, true, MAX_ORG_NAME_LEN));
        violations.check("slug", check_slug(slug));
        if !PLANS.contains(&plan) {
            violations.push(Violation::new("plan", "must be free, pro or enterprise"));
        }
        violations.finish()?;
        self.limiter.hit(&format!("org-create:{user_id}"), CREATIONS_PER_DAY, Duration::from_secs(86_400)).await?;

        let org_id = Uuid::now_v7();
        let mut tx = self.db.tenant_tx_for(org_id, Some(user_id)).await?;
        if org_store::active_org_count(&mut tx, user_id).await? >= MAX_ORGS_PER_USER {
            return Err(IdentityError::OrgLimitReached.into());
        }
        let org = org_store::insert_org(&mut tx, org_id, name, slug, plan, user_id)
            .await
            .map_err(|e| on_constraint(e, "organizations_slug_key", || IdentityError::SlugTaken.into()))?;
        let version = crate::store::insert_member(&mut tx, org_id, user_id, Role::Owner.as_str(), None).await?;
        let summary = crate::store::Organization {
            id: org.id,
            name: org.name.clone(),
            slug: org.slug.clone(),
            plan: org.plan.clone(),
            personal: false,
            member_limit: org.member_limit,
        };
        let event_ctx = RequestContext { org_id: Some(org_id), ..ctx.clone() };
        events::organization_created(&mut tx, &event_ctx, &summary, user_id).await?;
        events::member_added(&mut tx, &event_ctx, org_id, user_id, Role::Owner, false, version).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, user_id = %user_id, "organization created");
        let owner = org_relationships::member_role(&org_id.to_string(), &user_id.to_string(), "owner", version);
        self.apply_relationships(org_id, &[owner]).await;
        Ok(org)
    }

    /// The caller's organizations with their role (see `ListMyOrganizations`).
    pub async fn my_organizations(&self, ctx: &RequestContext) -> Result<Vec<(Org, String)>> {
        let user_id = ctx.user_id()?;
        let mut tx = self.db.tx().await?;
        crate::store::scope_to_user(&mut tx, user_id).await?;
        let orgs = org_store::orgs_of_user(&mut tx, user_id, false).await?;
        tx.commit().await?;
        Ok(orgs)
    }

    /// One organization and the caller's role in it (see `GetOrganization`).
    pub async fn get_organization(&self, ctx: &RequestContext, org_id: &str) -> Result<(Org, Option<String>)> {
        let org_id = parse_id("org_id", org_id)?;
        let InOrg { tx, org, caller } = self.enter_org(ctx, org_id, false).await?;
        tx.commit().await?;
        self.require(ctx, org_id, "view").await?;
        Ok((org, caller.map(|m| m.role)))
    }

    /// Updates an organization (see `UpdateOrganization`). `mask` lists the fields to change.
    pub async fn update_organization(
        &self,
        ctx: &RequestContext,
        org_id: &str,
        req: &pb::UpdateOrganizationRequest,
    ) -> Result<Org> {
        let org_id = parse_id("org_id", org_id)?;
        let mask: Vec<String> = match &req.update_mask {
            Some(m) if !m.paths.is_empty() => m.paths.clone(),
            _ => {
                let mut paths = Vec::new();
                for (path, value) in [
                    ("name", &req.name),
                    ("slug", &req.slug),
                    ("default_timezone", &req.default_timezone),
                    ("default_locale", &req.default_locale),
                    ("billing_email", &req.billing_email),
                ] {
                    if !value.is_empty() {
                        paths.push(path.to_string());
                    }
                }
                paths
            }
        };
        let mut violations = Violations::default();
        let mut changes = OrgChanges::default();
        for path in &mask {
            match path.as_str() {
                "name" => {
                    let name = req.name.trim();
                    violations.check("name", user::check_name(name, true, MAX_ORG_NAME_LEN));
                    changes.name = Some(name.to_string());
                }
                "slug" => {
                    let slug = req.slug.trim();
                    violations.check("slug", check_slug(slug));
                    changes.slug = Some(slug.to_string());
                }
                "default_timezone" => {
                    violations.check("default_timezone", check_timezone(req.default_timezone.trim()));
                    changes.default_timezone = Some(req.default_timezone.trim().to_string());
                }
                "default_locale" => {
                    violations.check("default_locale", check_locale(req.default_locale.trim()));
                    changes.default_locale = Some(req.default_locale.trim().to_string());
                }
                "billing_email" => {
                    if req.billing_email.trim().is_empty() {
                        changes.billing_email = Some(None);
                    } else {
                        match user::normalize_email(&req.billing_email) {
                            Ok(email) => changes.billing_email = Some(Some(email)),
                            Err(d) => violations.push(Violation::new("billing_email", d)),
                        }
                    }
                }
                other => violations.push(Violation::new("update_mask", format!("`{other}` cannot be updated"))),
            }
        }
        violations.finish()?;

        let InOrg { mut tx, org, .. } = self.enter_org(ctx, org_id, false).await?;
        Self::require_active(ctx, org_id)?;
        self.require(ctx, org_id, "administer").await?;
        if changes.slug.as_deref().is_some_and(|s| s != org.slug) {
            self.require(ctx, org_id, "transfer").await?;
        }
        let updated = org_store::update_org(&mut tx, org_id, &changes)
            .await
            .map_err(|e| on_constraint(e, "organizations_slug_key", || IdentityError::SlugTaken.into()))?
            .ok_or(IdentityError::OrganizationNotFound)?;
        let payload = pb::OrganizationUpdated {
            org_id: org_id.to_string(),
            name: updated.name.clone(),
            slug: updated.slug.clone(),
            changed_fields: mask,
        };
        stage(&mut tx, ctx, org_id, ORGANIZATION_UPDATED, &payload).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Soft-deletes an organization (see `DeleteOrganization`).
    pub async fn delete_organization(
        &self,
        ctx: &RequestContext,
        org_id: &str,
        confirmation: &str,
        password: String,
    ) -> Result<()> {
        let user_id = ctx.user_id()?;
        let org_id = parse_id("org_id", org_id)?;
        let InOrg { tx, org, .. } = self.enter_org(ctx, org_id, false).await?;
        tx.commit().await?;
        Self::require_active(ctx, org_id)?;
        self.require(ctx, org_id, "delete").await?;
        if confirmation.trim() != org.slug {
            return Err(IdentityError::ConfirmationMismatch.into());
        }
        self.require_password(user_id, password).await?;

        let mut tx = self.db.tenant_tx_for(org_id, Some(user_id)).await?;
        if org_store::active_org_count(&mut tx, user_id).await? <= 1 {
            return Err(IdentityError::LastOrganization.into());
        }
        let purge_after = Utc::now() + chrono::TimeDelta::days(PURGE_AFTER_DAYS);
        let deleted = org_store::set_org_deleted(&mut tx, org_id, Some(purge_after))
            .await?
            .ok_or(IdentityError::OrganizationNotFound)?;
        let payload = pb::OrganizationDeleted {
            org_id: org_id.to_string(),
            name: deleted.name.clone(),
            slug: deleted.slug.clone(),
            purge_after: Some(events::timestamp(purge_after)),
        };
        stage(&mut tx, ctx, org_id, ORGANIZATION_DELETED, &payload).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, "organization deleted");
        Ok(())
    }

    /// Restores a soft-deleted organization within its window (see `RestoreOrganization`).
    pub async fn restore_organization(&self, ctx: &RequestContext, org_id: &str) -> Result<Org> {
        ctx.user_id()?;
        let org_id = parse_id("org_id", org_id)?;
        let InOrg { mut tx, org, caller } = self.enter_org(ctx, org_id, true).await?;
        if org.purge_after.is_some_and(|p| p <= Utc::now()) {
            return Err(IdentityError::OrganizationNotFound.into());
        }
        // The owner's tuples stay while the org is in the trash; the stored role is the fallback
        // for a permissions service that lost them.
        let owner = caller.as_ref().is_some_and(|m| m.role == "owner");
        if !owner && !self.allowed(ctx, org_id, "delete").await? {
            return Err(IdentityError::PermissionDenied("Only the owner can restore the organization").into());
        }
        let restored =
            org_store::set_org_deleted(&mut tx, org_id, None).await?.ok_or(IdentityError::OrganizationNotFound)?;
        let payload = pb::OrganizationDeleted {
            org_id: org_id.to_string(),
            name: restored.name.clone(),
            slug: restored.slug.clone(),
            purge_after: None,
        };
        stage(&mut tx, ctx, org_id, ORGANIZATION_RESTORED, &payload).await?;
        tx.commit().await?;
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_slugs_must_be_well_formed_and_not_reserved() {
        assert_eq!(check_slug("acme-corp"), None);
        assert_eq!(check_slug("admin"), Some("is reserved"));
        assert_eq!(check_slug("api"), Some("is reserved"));
        assert!(check_slug("Acme").is_some());
        assert!(check_slug("ac").is_some());
        assert!(check_slug("a--b").is_some());
    }

    #[test]
    fn zones_and_locales_are_checked_for_shape() {
        assert_eq!(check_timezone("Europe/Paris"), None);
        assert_eq!(check_timezone("UTC"), None);
        assert!(check_timezone("europe/paris; drop").is_some());
        assert!(check_timezone("").is_some());
        assert_eq!(check_locale("en"), None);
        assert_eq!(check_locale("pt-BR"), None);
        assert!(check_locale("english-language-tag").is_some());
        assert!(check_locale("e").is_some());
    }
}
