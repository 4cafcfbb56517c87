//! Service principals: IssueServiceToken (spec flow 20, rule 15) and the methods only services
//! may call (BatchGetUsers). See ADR 0013.
//!
//! A client's secret is never stored or configured: it is
//! `kit::auth::service_client_secret(CELL_SECRET, name)`, which each service derives for itself
//! and identity derives to compare, in constant time. The clients are the modules of
//! [`trellis_kit::module::SERVICES`], the gateway and platform tooling (`platform-admin`).

use std::time::Duration;

use chrono::Utc;
use subtle::ConstantTimeEq;
use trellis_kit::auth::service_client_secret;
use trellis_kit::module::SERVICES;
use trellis_kit::{Error, RequestContext, Result, Subject};
use uuid::Uuid;

use crate::error::{IdentityError, Violation};
use crate::platform::PLATFORM_ADMIN_CLIENT;
use crate::{Identity, store, tokens, user};

/// Lifetime of a service token.
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Most users one BatchGetUsers answers.
pub const MAX_BATCH_USERS: usize = 500;
/// The display name of an erased user.
pub const DELETED_USER_NAME: &str = "Deleted user";

/// Whether `name` is a service client of the cell.
pub fn is_client(name: &str) -> bool {
    SERVICES.contains(&name) || name == "gateway" || name == PLATFORM_ADMIN_CLIENT
}

/// Whether `presented` is the secret of client `name` under `cell_secret`. Unknown names are
/// compared against a secret too, so both failures cost the same.
pub fn secret_matches(cell_secret: &str, name: &str, presented: &str) -> bool {
    let known = is_client(name);
    let expected = service_client_secret(cell_secret, if known { name } else { "\u{0}unknown" });
    let same: bool = expected.as_bytes().ct_eq(presented.as_bytes()).into();
    known && same
}

/// A user as another service displays them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Email; empty once erased.
    pub email: String,
    /// active | deactivated | erased.
    pub status: String,
}

impl UserSummary {
    /// The summary of a user row; erased users keep only their id.
    pub fn of(u: &store::User) -> Self {
        if u.status == "erased" {
            return Self { id: u.id, name: DELETED_USER_NAME.into(), email: String::new(), status: u.status.clone() };
        }
        Self {
            id: u.id,
            name: user::display_name(&u.first_name, &u.last_name),
            email: u.email.clone(),
            status: u.status.clone(),
        }
    }
}

/// PERMISSION_DENIED unless the caller is a service principal.
pub fn require_service(ctx: &RequestContext) -> Result<&str> {
    match &ctx.subject {
        Subject::Service(name) => Ok(name),
        Subject::Anonymous => Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required")),
        _ => Err(Error::permission_denied("SERVICE_PRINCIPAL_REQUIRED", "Only Trellis services may call this method")),
    }
}

impl Identity {
    /// IssueServiceToken: a 5-minute `service:<name>` token acting in `org_id` when given.
    pub async fn issue_service_token(&self, client_name: &str, client_secret: &str, org_id: &str) -> Result<String> {
        let org = match org_id.trim() {
            "" => None,
            id => Some(id.parse::<Uuid>().map_err(|_| {
                IdentityError::Invalid(vec![Violation::new("org_id", "must be an organization id (UUID) or empty")])
            })?),
        };
        if !secret_matches(&self.cell_secret, client_name, client_secret) {
            tracing::warn!(client = %client_name.chars().take(64).collect::<String>(), "service token refused");
            return Err(Error::unauthenticated("INVALID_CLIENT", "Unknown service client or wrong secret"));
        }
        let claims =
            tokens::service_claims(&self.issuer, &self.audience, client_name, org, Utc::now(), SERVICE_TOKEN_TTL);
        let key = self.keys.active().await?;
        Ok(key.sign(&claims))
    }

    /// BatchGetUsers: users by id, in request order (each once), for services only.
    pub async fn batch_get_users(&self, ctx: &RequestContext, ids: &[String]) -> Result<Vec<UserSummary>> {
        require_service(ctx)?;
        if ids.is_empty() || ids.len() > MAX_BATCH_USERS {
            return Err(IdentityError::Invalid(vec![Violation::new("user_ids", "must name 1 to 500 users")]).into());
        }
        let mut parsed = Vec::with_capacity(ids.len());
        let mut violations = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match id.trim().parse::<Uuid>() {
                Ok(id) if !parsed.contains(&id) => parsed.push(id),
                Ok(_) => {}
                Err(_) => violations.push(Violation::new(format!("user_ids[{i}]"), "must be a user id (UUID)")),
            }
        }
        if !violations.is_empty() {
            return Err(IdentityError::Invalid(violations).into());
        }
        let rows = store::directory::users_by_ids(self.db.pool(), &parsed).await?;
        Ok(parsed.iter().filter_map(|id| rows.iter().find(|u| u.id == *id)).map(UserSummary::of).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_clients_with_their_derived_secret_match() {
        let cell = "a-cell-secret-of-at-least-32-bytes!";
        let tasks = service_client_secret(cell, "tasks");
        assert!(secret_matches(cell, "tasks", &tasks));
        assert!(secret_matches(cell, "platform-admin", &service_client_secret(cell, "platform-admin")));
        assert!(!secret_matches(cell, "crm", &tasks), "another client's secret");
        assert!(!secret_matches("another-cell", "tasks", &tasks), "another cell's secret");
        assert!(!secret_matches(cell, "tasks", ""));
        assert!(!secret_matches(cell, "tasks", &tasks[..tasks.len() - 1]));
        // A name outside the cell's clients never matches, even with its derived secret.
        assert!(!secret_matches(cell, "intruder", &service_client_secret(cell, "intruder")));
    }

    #[test]
    fn erased_users_are_summarised_as_deleted() {
        let now = Utc::now();
        let mut u = store::User {
            id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            avatar_key: None,
            timezone: "UTC".into(),
            locale: "en".into(),
            status: "active".into(),
            email_verified_at: None,
            mfa_enabled: false,
            created_at: now,
        };
        assert_eq!(UserSummary::of(&u).name, "Ada Lovelace");
        u.status = "erased".into();
        let s = UserSummary::of(&u);
        assert_eq!((s.name.as_str(), s.email.as_str(), s.status.as_str()), ("Deleted user", "", "erased"));
    }
}
