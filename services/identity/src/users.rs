//! The current user (spec: `UserService`): GetMe, UpdateMe, and GetUser for the public profile
//! of someone in the same organization.

use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::error::{IdentityError, Violation, Violations};
use crate::organizations::{check_locale, parse_id};
use crate::store::{self, users as users_store};
use crate::user::{self, MAX_NAME_LEN};
use crate::{Identity, events};

/// The fields UpdateMe changes.
pub const UPDATABLE: [&str; 4] = ["first_name", "last_name", "timezone", "locale"];

/// The caller's profile and the organization their token acts in.
#[derive(Debug)]
pub struct Me {
    /// The user.
    pub user: store::User,
    /// The active organization with the caller's role, when the token names one they belong to.
    pub active: Option<(store::Organization, String)>,
}

/// The profile fields after an UpdateMe, and which of them changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// IANA zone.
    pub timezone: String,
    /// BCP 47 tag.
    pub locale: String,
}

impl Profile {
    fn of(u: &store::User) -> Self {
        Self {
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            timezone: u.timezone.clone(),
            locale: u.locale.clone(),
        }
    }

    /// The names of the fields that differ from `before`.
    pub fn changed_since(&self, before: &Profile) -> Vec<String> {
        let pairs = [
            ("first_name", &self.first_name, &before.first_name),
            ("last_name", &self.last_name, &before.last_name),
            ("timezone", &self.timezone, &before.timezone),
            ("locale", &self.locale, &before.locale),
        ];
        pairs.into_iter().filter(|(_, a, b)| a != b).map(|(name, _, _)| name.to_string()).collect()
    }
}

/// The fields of an UpdateMe: the mask, or every non-empty field when it is empty.
pub fn update_paths(req: &pb::UpdateMeRequest) -> Vec<String> {
    match &req.update_mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths.clone(),
        _ => [
            ("first_name", &req.first_name),
            ("last_name", &req.last_name),
            ("timezone", &req.timezone),
            ("locale", &req.locale),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(p, _)| p.to_string())
        .collect(),
    }
}

/// Applies the masked fields of `req` to `profile`, collecting every violation (the zone's
/// existence is checked by the caller, against the database's zone list).
pub fn apply(profile: &mut Profile, req: &pb::UpdateMeRequest, paths: &[String]) -> Violations {
    let mut violations = Violations::default();
    for path in paths {
        match path.as_str() {
            "first_name" => {
                let name = req.first_name.trim();
                violations.check("first_name", user::check_name(name, true, MAX_NAME_LEN));
                profile.first_name = name.to_string();
            }
            "last_name" => {
                let name = req.last_name.trim();
                violations.check("last_name", user::check_name(name, false, MAX_NAME_LEN));
                profile.last_name = name.to_string();
            }
            "timezone" => profile.timezone = req.timezone.trim().to_string(),
            "locale" => {
                let tag = req.locale.trim();
                violations.check("locale", check_locale(tag));
                profile.locale = tag.to_string();
            }
            "avatar_key" => violations.push(Violation::new("update_mask", "avatars are not supported yet")),
            other => violations.push(Violation::new("update_mask", format!("`{other}` cannot be updated"))),
        }
    }
    violations
}

impl Identity {
    /// GetMe.
    pub async fn get_me(&self, ctx: &RequestContext) -> Result<Me> {
        let user_id = ctx.user_id()?;
        let mut tx = self.db.tx().await?;
        let user = store::user_by_id(&mut tx, user_id)
            .await?
            .ok_or_else(|| Error::unauthenticated("UNAUTHENTICATED", "Authentication required"))?;
        let mut active = None;
        if let Some(org_id) = ctx.org_id {
            store::scope_to_user(&mut tx, user_id).await?;
            let memberships = store::memberships_of_user(&mut tx, user_id).await?;
            if let Some(m) = memberships.into_iter().find(|m| m.org_id == org_id)
                && let Some(org) = store::organization(&mut tx, org_id).await?
            {
                active = Some((org, m.role));
            }
        }
        tx.commit().await?;
        Ok(Me { user, active })
    }

    /// UpdateMe: validates every field, then writes and publishes `identity.user.updated` when
    /// something changed.
    pub async fn update_me(&self, ctx: &RequestContext, req: &pb::UpdateMeRequest) -> Result<store::User> {
        let user_id = ctx.user_id()?;
        let paths = update_paths(req);
        let mut tx = self.db.tx().await?;
        let current = users_store::user_for_update(&mut tx, user_id)
            .await?
            .ok_or_else(|| Error::unauthenticated("UNAUTHENTICATED", "Authentication required"))?;
        let before = Profile::of(&current);
        let mut after = before.clone();
        let mut violations = apply(&mut after, req, &paths);
        if paths.iter().any(|p| p == "timezone")
            && (after.timezone.is_empty() || !users_store::timezone_exists(&mut tx, &after.timezone).await?)
        {
            violations.push(Violation::new("timezone", "must be an IANA time zone such as Europe/Paris"));
        }
        violations.finish()?;
        let changed = after.changed_since(&before);
        if changed.is_empty() {
            return Ok(current);
        }
        users_store::update_profile(
            &mut tx,
            user_id,
            &after.first_name,
            &after.last_name,
            &after.timezone,
            &after.locale,
        )
        .await?;
        let payload = pb::UserUpdated {
            user_id: user_id.to_string(),
            changed_fields: changed,
            first_name: after.first_name.clone(),
            last_name: after.last_name.clone(),
            timezone: after.timezone.clone(),
            locale: after.locale.clone(),
        };
        let mut ectx = RequestContext::system(Uuid::nil(), ctx.correlation_id.clone());
        ectx.subject = Subject::User(user_id);
        trellis_kit::events::stage(&mut tx, &ectx, events::USER_UPDATED, &payload).await?;
        let updated = store::user_by_id(&mut tx, user_id).await?.ok_or(IdentityError::InvalidCredentials)?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, "profile updated");
        Ok(updated)
    }

    /// GetUser: the public profile of an active member of the caller's active organization.
    pub async fn get_user(&self, ctx: &RequestContext, user_id: &str) -> Result<store::User> {
        let target = parse_id("user_id", user_id)?;
        let org_id = ctx.org_id()?;
        self.require(ctx, org_id, "view").await?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let found = users_store::active_member(&mut tx, org_id, target).await?;
        tx.commit().await?;
        found.ok_or_else(|| Error::not_found("USER_NOT_FOUND", "The user does not exist"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile { first_name: "Ada".into(), last_name: "L".into(), timezone: "UTC".into(), locale: "en".into() }
    }

    #[test]
    fn without_a_mask_the_non_empty_fields_are_updated() {
        let req = pb::UpdateMeRequest { first_name: "Grace".into(), locale: "pt-BR".into(), ..Default::default() };
        assert_eq!(update_paths(&req), ["first_name", "locale"]);
        let masked = pb::UpdateMeRequest {
            update_mask: Some(prost_types::FieldMask { paths: vec!["last_name".into()] }),
            ..Default::default()
        };
        assert_eq!(update_paths(&masked), ["last_name"], "a masked empty last name clears it");
    }

    #[test]
    fn every_bad_field_is_reported_and_changes_are_named() {
        let req = pb::UpdateMeRequest {
            first_name: "bad\u{7}name".into(),
            locale: "not a locale".into(),
            ..Default::default()
        };
        let mut p = profile();
        let paths = vec!["first_name".to_string(), "locale".to_string(), "email".to_string()];
        let e: Error = match apply(&mut p, &req, &paths).finish() {
            Err(e) => e.into(),
            Ok(()) => panic!("violations expected"),
        };
        let fields: Vec<_> = e.violations().iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, ["first_name", "locale", "update_mask"]);

        let mut p = profile();
        let ok = pb::UpdateMeRequest { first_name: " Grace ".into(), locale: "en".into(), ..Default::default() };
        assert!(apply(&mut p, &ok, &update_paths(&ok)).finish().is_ok());
        assert_eq!(p.first_name, "Grace");
        assert_eq!(p.changed_since(&profile()), ["first_name"], "the locale did not change");
    }
}
