//! API keys (spec flow 13, rules 12-13): creation with a key shown once, listing, revocation
//! through the revocation feed (`key:<id>`), the gateway's ResolveApiKey exchange, and the
//! registry of scope resources that scopes must name.
//!
//! Checks run in this order, so each refusal names its real cause: field validation (with
//! SCOPE_UNKNOWN per scope), ROLE_EXCEEDS_CREATOR (a key never acts with more than its creator's
//! role), then `organization#manage_api_keys` (owner or admin membership), then
//! EMAIL_NOT_VERIFIED. A member asking for an admin key is therefore told ROLE_EXCEEDS_CREATOR.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use trellis_kit::db::Tx;
use trellis_kit::org_relationships;
use trellis_kit::paging::{PageTokens, page_size};
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::organization::Role;
use crate::service_tokens::require_service;
use crate::store::api_keys::{self as db, ApiKeyRow};
use crate::{Identity, store, tokens};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "tk_live_";
/// Characters of the key kept in `key_prefix` (the prefix and four more).
pub const STORED_PREFIX_LEN: usize = 12;
/// Random bytes in a key.
pub const KEY_BYTES: usize = 32;
/// Default lifetime.
pub const DEFAULT_TTL: TimeDelta = TimeDelta::days(90);
/// Longest lifetime.
pub const MAX_TTL: TimeDelta = TimeDelta::days(365);
/// Longest access token for a key.
pub const KEY_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Active keys per organization.
pub const MAX_ACTIVE_KEYS: i64 = 100;
/// Scopes per key.
pub const MAX_SCOPES: usize = 50;
/// Longest name.
pub const MAX_NAME_LEN: usize = 200;
/// Routing keys.
pub const API_KEY_CREATED: &str = "identity.api_key.created";
/// Routing keys.
pub const API_KEY_REVOKED: &str = "identity.api_key.revoked";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Base62 of a big-endian number (leading zero bytes keep their digit).
pub fn base62(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 138 / 100 + 1);
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 62) as u8;
            carry /= 62;
        }
        while carry > 0 {
            digits.push((carry % 62) as u8);
            carry /= 62;
        }
    }
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('0', zeros));
    out.extend(digits.iter().rev().map(|d| BASE62[*d as usize] as char));
    out
}

/// A new key and its stored hash.
pub fn new_key() -> (String, tokens::TokenHash) {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", base62(&bytes));
    let hash = tokens::hash_token(&key);
    (key, hash)
}

/// Whether a presented string can be a key at all (saves a lookup on garbage).
pub fn looks_like_key(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| (40..=50).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `scope` is `<resource>:read|write`; returns the resource.
pub fn scope_resource(scope: &str) -> Option<&str> {
    let (resource, access) = scope.split_once(':')?;
    let valid = resource.len() >= 2
        && resource.len() <= 50
        && resource.starts_with(|c: char| c.is_ascii_lowercase())
        && resource.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    (valid && matches!(access, "read" | "write")).then_some(resource)
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 4,
        Role::Admin => 3,
        Role::Member => 2,
        Role::Viewer => 1,
    }
}

/// A CreateApiKey request.
#[derive(Debug)]
pub struct NewKeyRequest {
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Role; `Ok(None)` = member; `Err` = an unknown enum value.
    pub role: std::result::Result<Option<Role>, i32>,
    /// Expiry; `None` = default.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A resolved key and its access token.
#[derive(Debug)]
pub struct Resolved {
    /// The key.
    pub key: ApiKeyRow,
    /// The token.
    pub access_token: String,
}

fn not_found() -> Error {
    Error::not_found("API_KEY_NOT_FOUND", "The API key does not exist")
}

fn invalid_key() -> Error {
    Error::unauthenticated("API_KEY_INVALID", "The API key is invalid, revoked or expired")
}

fn parse_id(id: &str) -> Result<Uuid> {
    id.trim().parse().map_err(|_| not_found())
}

impl Identity {
    /// `organization#manage_api_keys` for the caller in its active org; returns (user, org, role).
    async fn api_key_manager(&self, ctx: &RequestContext, tx: &mut Tx) -> Result<(Uuid, Uuid, Role)> {
        let (user_id, org_id) = (ctx.user_id()?, ctx.org_id()?);
        let role = db::member_role(tx, org_id, user_id).await?.as_deref().and_then(Role::parse);
        match role {
            Some(role) => Ok((user_id, org_id, role)),
            None => Err(Error::permission_denied("PERMISSION_DENIED", "You are not a member of this organization")),
        }
    }

    fn require_admin(role: Role) -> Result<()> {
        if role.administers() {
            Ok(())
        } else {
            Err(Error::permission_denied("PERMISSION_DENIED", "Only owners and admins can manage API keys"))
        }
    }

    /// CreateApiKey: returns the stored key and the key itself (shown once).
    pub async fn create_api_key(&self, ctx: &RequestContext, req: NewKeyRequest) -> Result<(ApiKeyRow, String)> {
        ctx.user_id()?;
        let now = Utc::now();
        // (field, description); `invalid` marks violations other than an unknown scope.
        let mut violations: Vec<(String, String)> = Vec::new();
        let mut invalid = false;
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            violations.push(("name".into(), "must be 1 to 200 characters without control characters".into()));
            invalid = true;
        }
        if req.scopes.is_empty() || req.scopes.len() > MAX_SCOPES {
            violations.push(("scopes".into(), "must hold 1 to 50 scopes".into()));
            invalid = true;
        }
        let mut scopes: Vec<String> = Vec::new();
        let mut resources = Vec::new();
        for (i, scope) in req.scopes.iter().enumerate() {
            match scope_resource(scope.trim()) {
                Some(resource) => {
                    resources.push((i, resource.to_string()));
                    if !scopes.iter().any(|s| s == scope.trim()) {
                        scopes.push(scope.trim().to_string());
                    }
                }
                None => {
                    violations.push((format!("scopes[{i}]"), "must be `<resource>:read` or `<resource>:write`".into()));
                }
            }
        }
        let names: Vec<String> = resources.iter().map(|(_, r)| r.clone()).collect();
        let registered = db::registered_scope_resources(self.db.pool(), &names).await?;
        for (i, resource) in &resources {
            if !registered.contains(resource) {
                violations.push((format!("scopes[{i}]"), format!("`{resource}` is not a registered scope resource")));
            }
        }
        let role = match req.role {
            Ok(role) => role.unwrap_or(Role::Member),
            Err(_) => {
                violations.push(("role".into(), "must be admin, member or viewer".into()));
                invalid = true;
                Role::Member
            }
        };
        if role == Role::Owner {
            violations.push(("role".into(), "must be admin, member or viewer".into()));
            invalid = true;
        }
        let expires_at = req.expires_at.unwrap_or(now + DEFAULT_TTL);
        if expires_at <= now || expires_at > now + MAX_TTL + TimeDelta::minutes(1) {
            violations.push(("expires_at".into(), "must be in the future and at most 365 days away".into()));
            invalid = true;
        }
        if !violations.is_empty() {
            // Only unknown scopes: the specific reason; anything else: a validation error.
            let mut error = if invalid {
                Error::invalid_argument("VALIDATION_ERROR", "Request validation failed")
            } else {
                Error::invalid_argument("SCOPE_UNKNOWN", "A scope names an unknown resource")
            };
            for (field, description) in violations {
                error = error.with_field(field, description);
            }
            return Err(error);
        }

        let mut tx = self.db.tenant_tx(ctx).await?;
        let (user_id, org_id, creator_role) = self.api_key_manager(ctx, &mut tx).await?;
        if rank(role) > rank(creator_role) {
            return Err(Error::permission_denied(
                "ROLE_EXCEEDS_CREATOR",
                "An API key's role cannot exceed its creator's role",
            ));
        }
        Self::require_admin(creator_role)?;
        let creator = store::user_by_id(&mut tx, user_id).await?;
        if creator.is_none_or(|u| u.email_verified_at.is_none()) {
            return Err(Error::failed_precondition(
                "EMAIL_NOT_VERIFIED",
                "Verify your email address before creating API keys",
            ));
        }
        if db::count_active_api_keys(&mut tx).await? >= MAX_ACTIVE_KEYS {
            return Err(Error::failed_precondition(
                "API_KEY_LIMIT_REACHED",
                "The organization has 100 active API keys; revoke one first",
            ));
        }
        let (key, hash) = new_key();
        let row = db::insert_api_key(
            &mut tx,
            &db::NewApiKey {
                id: Uuid::now_v7(),
                org_id,
                name,
                key_prefix: &key[..STORED_PREFIX_LEN],
                key_hash: &hash,
                scopes: &scopes,
                role: role.as_str(),
                expires_at,
                created_by: user_id,
            },
        )
        .await?;
        let payload = pb::ApiKeyCreated {
            api_key_id: row.id.to_string(),
            name: row.name.clone(),
            scopes: row.scopes.clone(),
            role: role.to_proto().into(),
            created_by: user_id.to_string(),
        };
        trellis_kit::events::stage(&mut tx, ctx, API_KEY_CREATED, &payload).await?;
        tx.commit().await?;
        let role_tuple = org_relationships::api_key_created(&org_id.to_string(), &row.id.to_string(), role.as_str());
        self.apply_relationships(org_id, &[role_tuple]).await;
        tracing::info!(api_key_id = %row.id, org_id = %org_id, "api key created");
        Ok((row, key))
    }

    /// GetApiKey.
    pub async fn get_api_key(&self, ctx: &RequestContext, id: &str) -> Result<ApiKeyRow> {
        let id = parse_id(id)?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let (_, _, role) = self.api_key_manager(ctx, &mut tx).await?;
        Self::require_admin(role)?;
        db::api_key(&mut tx, id).await?.ok_or_else(not_found)
    }

    /// ListApiKeys: a page, the next page token and the total.
    pub async fn list_api_keys(
        &self,
        ctx: &RequestContext,
        requested_size: i32,
        page_token: &str,
    ) -> Result<(Vec<ApiKeyRow>, String, i64)> {
        let size = page_size(requested_size)?;
        let pages = PageTokens::new(self.cell_secret.as_bytes());
        let org = ctx.org_id()?.to_string();
        let query = PageTokens::query_hash(&["identity.api_keys", &org]);
        let after: Option<Uuid> = if page_token.is_empty() { None } else { pages.decode(&query, page_token)? };
        let mut tx = self.db.tenant_tx(ctx).await?;
        let (_, _, role) = self.api_key_manager(ctx, &mut tx).await?;
        Self::require_admin(role)?;
        let mut rows = db::api_keys_page(&mut tx, after, i64::from(size) + 1).await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|r| pages.encode(&query, &r.id)).unwrap_or_default()
        } else {
            String::new()
        };
        let total = db::count_api_keys(&mut tx).await?;
        Ok((rows, next, total))
    }

    /// RevokeApiKey: idempotent; the key stops working everywhere within a second.
    pub async fn revoke_api_key(&self, ctx: &RequestContext, id: &str) -> Result<()> {
        let id = parse_id(id)?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let (user_id, org_id, role) = self.api_key_manager(ctx, &mut tx).await?;
        Self::require_admin(role)?;
        let key = db::api_key(&mut tx, id).await?.ok_or_else(not_found)?;
        let revoked = db::revoke_api_key(&mut tx, id, user_id).await?;
        if revoked {
            let payload = pb::ApiKeyRevoked {
                api_key_id: key.id.to_string(),
                name: key.name.clone(),
                scopes: key.scopes.clone(),
                role: Role::parse(&key.role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
                created_by: key.created_by.to_string(),
                revoked_by: user_id.to_string(),
            };
            trellis_kit::events::stage(&mut tx, ctx, API_KEY_REVOKED, &payload).await?;
        }
        tx.commit().await?;
        self.announcer.announce(vec![format!("key:{id}")]);
        if revoked {
            self.apply_relationships(
                org_id,
                &[org_relationships::api_key_revoked(&org_id.to_string(), &id.to_string())],
            )
            .await;
        }
        Ok(())
    }

    /// ResolveApiKey: the key's access token, valid min(5 min, until the key expires).
    pub async fn resolve_api_key(&self, key: &str, ip: Option<&str>) -> Result<Resolved> {
        if !looks_like_key(key) {
            return Err(invalid_key());
        }
        // Found by its hash (an index probe): no comparison of secrets in application code.
        let hash = tokens::hash_token(key);
        let (id, org_id) = db::find_api_key(self.db.pool(), &hash).await?.ok_or_else(invalid_key)?;
        let now = Utc::now();
        let mut tx = self.db.tenant_tx_for(org_id, None).await?;
        let row = db::api_key(&mut tx, id).await?.ok_or_else(invalid_key)?;
        if row.revoked_at.is_some() || row.expires_at <= now {
            return Err(invalid_key());
        }
        let plan = db::org_plan(&mut tx, org_id).await?.ok_or_else(invalid_key)?;
        db::touch_api_key(&mut tx, id, ip).await?;
        tx.commit().await?;
        let left = (row.expires_at - now).to_std().unwrap_or_default();
        let ttl = KEY_TOKEN_TTL.min(left).max(Duration::from_secs(1));
        let iat = now.timestamp();
        let claims = trellis_kit::auth::Claims {
            iss: self.issuer.clone(),
            sub: format!("api_key:{id}"),
            aud: self.audience.clone(),
            exp: iat + ttl.as_secs() as i64,
            nbf: Some(iat),
            iat,
            jti: Uuid::now_v7().to_string(),
            org: Some(org_id.to_string()),
            sid: Some(format!("key:{id}")),
            roles: vec![row.role.clone()],
            scopes: row.scopes.clone(),
            plan: Some(plan),
        };
        let access_token = self.keys.active().await?.sign(&claims);
        Ok(Resolved { key: row, access_token })
    }

    /// RegisterScopeResources: the calling module's resources; returns how many changed.
    pub async fn register_scope_resources(&self, ctx: &RequestContext, resources: &[(String, String)]) -> Result<i64> {
        let module = require_service(ctx)?.to_string();
        let mut error = Error::invalid_argument("VALIDATION_ERROR", "Request validation failed");
        let mut invalid = false;
        for (i, (resource, description)) in resources.iter().enumerate() {
            if scope_resource(&format!("{resource}:read")) != Some(resource.as_str()) {
                error = error.with_field(format!("resources[{i}].resource"), "must match ^[a-z][a-z_]{1,49}$");
                invalid = true;
            }
            if description.chars().count() > 500 {
                error = error.with_field(format!("resources[{i}].description"), "must be at most 500 characters");
                invalid = true;
            }
        }
        if invalid {
            return Err(error);
        }
        Ok(db::upsert_scope_resources(self.db.pool(), &module, resources).await?)
    }

    /// Registers identity's own scope resources (rule 13: `organization`, `teams`).
    pub(crate) async fn register_own_scope_resources(&self) -> anyhow::Result<()> {
        let own = [
            ("organization".to_string(), "The organization, its members, invitations and settings".to_string()),
            ("teams".to_string(), "Teams and team members".to_string()),
        ];
        db::upsert_scope_resources(self.db.pool(), "identity", &own).await?;
        Ok(())
    }

    /// Status of `key:<id>` sids for GetSessionStatus: (id, revoked_at, active).
    pub(crate) async fn api_key_statuses(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, Option<DateTime<Utc>>, bool)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(db::api_key_status(self.db.pool(), ids).await?)
    }
}

/// Whether the caller is an API key (for handlers that refuse them).
pub fn is_api_key(ctx: &RequestContext) -> bool {
    matches!(ctx.subject, Subject::ApiKey(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_prefix_and_base62_of_32_random_bytes() {
        let (key, hash) = new_key();
        assert!(key.starts_with("tk_live_"));
        assert!(looks_like_key(&key), "{key}");
        assert_eq!(hash, tokens::hash_token(&key));
        assert_ne!(new_key().0, key);
        assert!(!looks_like_key("tk_live_short"));
        assert!(!looks_like_key(&key.replace("tk_live_", "tk_test_")));
    }

    #[test]
    fn base62_encodes_big_endian_numbers() {
        assert_eq!(base62(&[0]), "0");
        assert_eq!(base62(&[61]), "z");
        assert_eq!(base62(&[62]), "10");
        assert_eq!(base62(&[1, 0]), "48"); // 256 = 4*62 + 8
        assert_eq!(base62(&[0, 0, 1]), "001");
        assert_eq!(base62(&[0xff; 32]).len(), 43);
    }

    #[test]
    fn scopes_name_a_resource_and_read_or_write() {
        assert_eq!(scope_resource("tasks:read"), Some("tasks"));
        assert_eq!(scope_resource("email_log:write"), Some("email_log"));
        for bad in ["tasks", "tasks:admin", "Tasks:read", ":read", "t:read", "tasks:read:x", "ta-sks:read"] {
            assert_eq!(scope_resource(bad), None, "{bad}");
        }
    }

    #[test]
    fn roles_rank_owner_over_admin_over_member_over_viewer() {
        assert!(rank(Role::Owner) > rank(Role::Admin));
        assert!(rank(Role::Admin) > rank(Role::Member));
        assert!(rank(Role::Member) > rank(Role::Viewer));
    }
}
