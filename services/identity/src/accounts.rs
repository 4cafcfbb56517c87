//! Sign-up and sign-in: Register, Login and Refresh, and [`Identity`], the state they share.
//!
//! Each flow validates, does its slow crypto (Argon2id) before opening a transaction, then writes
//! everything it changes in one transaction together with its events, and signs the access token
//! after commit.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use trellis_kit::config::Config;
use trellis_kit::db::{Db, Tx, on_constraint};
use trellis_kit::org_relationships;
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1::{LoginFailed, LoginFailureReason, SessionRevokeReason};
use uuid::Uuid;

use crate::config::IdentityConfig;
use crate::error::{IdentityError, Violation, Violations};
use crate::keys::{EncryptionKey, Keys};
use crate::organization::{self, MAX_ORG_NAME_LEN, Role};
use crate::password::{self, Verification};
use crate::store::{self, Membership};
use crate::tokens::{self, RefreshVerdict};
use crate::user::{self, MAX_NAME_LEN};
use crate::{events, invitation};

/// How many slugs registration tries before giving up (the first is derived from the name, the
/// others add a random suffix; a collision after that means something else is wrong).
const SLUG_ATTEMPTS: usize = 8;
/// Longest user agent stored with a session.
pub const MAX_USER_AGENT_LEN: usize = 512;

/// The identity service's state, shared by every handler.
#[derive(Debug)]
pub struct Identity {
    pub(crate) db: Db,
    pub(crate) keys: Arc<Keys>,
    pub(crate) settings: IdentityConfig,
    pub(crate) announcer: crate::revocation::Announcer,
    pub(crate) limiter: trellis_kit::ratelimit::RateLimiter,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    /// The cell secret, from which service clients' secrets are derived.
    pub(crate) cell_secret: String,
    /// The permissions client, acting as `service:identity` with tokens identity signs itself.
    pub(crate) authz: trellis_kit::authz::Authz,
    /// True once identity's schema is registered with permissions (direct writes wait for it).
    pub(crate) schema_registered: tokio::sync::watch::Sender<bool>,
}

/// Where a sign-in comes from (recorded on the session).
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The client's IP, as the gateway resolved it.
    pub ip: Option<IpAddr>,
    /// Its user agent.
    pub user_agent: Option<String>,
}

/// A Register request.
#[derive(Debug, Default)]
pub struct Registration {
    /// Email as typed.
    pub email: String,
    /// Password as typed.
    pub password: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Token of an invitation link; empty for none.
    pub invitation_token: String,
    /// Name of the personal organization; empty for the default.
    pub organization_name: String,
}

/// An access token with its lifetime and the refresh token of the same session.
#[derive(Debug)]
pub struct TokenPair {
    /// EdDSA JWT.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: i32,
    /// Opaque refresh token.
    pub refresh_token: String,
}

/// The outcome of Register or Login.
#[derive(Debug)]
pub struct SignIn {
    /// The user.
    pub user: store::User,
    /// The session's tokens.
    pub tokens: TokenPair,
}

/// The outcome of Login: signed in, or a second factor is due (MfaService.Challenge).
#[derive(Debug)]
pub enum LoginOutcome {
    /// The password was enough: a new session.
    SignedIn(Box<SignIn>),
    /// The account has MFA; no session yet.
    MfaRequired(crate::mfa::PendingMfa),
}

/// The outcome of Refresh.
#[derive(Debug)]
pub struct Refreshed {
    /// The next tokens.
    pub tokens: TokenPair,
    /// The session moved to another organization.
    pub org_changed: bool,
}

impl Identity {
    /// Loads (or creates) the signing key and prepares password hashing.
    pub async fn start(db: Db, config: &Config, settings: IdentityConfig) -> anyhow::Result<Identity> {
        if settings.uses_dev_key() {
            tracing::warn!("IDENTITY_ENCRYPTION_KEY is the development default; set a key of your own in a cell");
        }
        let encryption = EncryptionKey::from_base64(&settings.encryption_key)?;
        let keys = Arc::new(Keys::start_with(db.clone(), encryption, settings.rotation_policy()).await?);
        let credentials =
            crate::relationships::SelfSigned::new(keys.clone(), config.jwt_issuer.clone(), config.jwt_audience.clone());
        let authz = trellis_kit::authz::Authz::new(&config.urls.permissions, std::sync::Arc::new(credentials))?;
        // The dummy hash costs one Argon2id run: pay it now rather than in the first sign-in.
        tokio::task::spawn_blocking(password::dummy_hash).await?;
        let announcer = crate::revocation::Announcer::new(&config.redis_url)?;
        // The queue prefix namespaces one cell's share of common infrastructure (empty in a cell,
        // unique per test cell), so cells sharing a Redis never count each other's attempts.
        let limiter = trellis_kit::ratelimit::RateLimiter::new(&config.redis_url, &config.events_queue_prefix)?;
        Ok(Identity {
            db,
            keys,
            settings,
            announcer,
            limiter,
            authz,
            schema_registered: tokio::sync::watch::Sender::new(false),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            cell_secret: config.cell_secret.clone(),
        })
    }

    /// Creates an account and signs it in (see `AuthService.Register`).
    pub async fn register(&self, ctx: &RequestContext, reg: Registration, client: &Client) -> Result<SignIn> {
        let mut violations = Violations::default();
        // An invalid email is recorded and stands as "" until `finish` rejects the request.
        let email = user::normalize_email(&reg.email).unwrap_or_else(|d| {
            violations.push(Violation::new("email", d));
            String::new()
        });
        let first_name = reg.first_name.trim();
        let last_name = reg.last_name.trim();
        let org_name = reg.organization_name.trim();
        violations.check("first_name", user::check_name(first_name, true, MAX_NAME_LEN));
        violations.check("last_name", user::check_name(last_name, false, MAX_NAME_LEN));
        violations.check("organization_name", user::check_name(org_name, false, MAX_ORG_NAME_LEN));
        if let Err(problem) = password::check_policy(&reg.password, &email) {
            violations.push(Violation::with_reason("password", problem.reason(), problem.description()));
        }
        violations.finish()?;

        let password_hash = password::hash_blocking(reg.password).await?;
        let user_id = Uuid::now_v7();
        let new_user = store::NewUser {
            id: user_id,
            email: &email,
            first_name,
            last_name,
            password_hash: &password_hash,
            email_verified: false,
        };
        let token = reg.invitation_token.trim();
        let (mut tx, user, membership, version, team_changes) = if token.is_empty() {
            self.register_with_personal_org(ctx, new_user, org_name).await?
        } else {
            self.register_through_invitation(ctx, new_user, token).await?
        };
        let (session_id, refresh_token) = self.start_session(&mut tx, user_id, Some(&membership), client).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, org_id = %membership.org_id, "user registered");
        let role = org_relationships::member_role(
            &membership.org_id.to_string(),
            &user_id.to_string(),
            &membership.role,
            version,
        );
        let changes: Vec<_> = std::iter::once(role).chain(team_changes).collect();
        self.apply_relationships(membership.org_id, &changes).await;
        let access_token =
            self.sign_access_token(user_id, session_id, Some(&membership), tokens::password_amr()).await?;
        Ok(SignIn { user, tokens: self.pair(access_token, refresh_token) })
    }

    /// The user, their personal organization and its ownership, in that organization's tenant
    /// transaction (returned uncommitted).
    async fn register_with_personal_org(
        &self,
        ctx: &RequestContext,
        new_user: store::NewUser<'_>,
        org_name: &str,
    ) -> Result<(Tx, store::User, Membership, i64, Vec<org_relationships::Change>)> {
        let org_id = Uuid::now_v7();
        let user_id = new_user.id;
        let mut tx = self.db.tenant_tx_for(org_id, Some(user_id)).await?;
        let user = insert_user(&mut tx, &new_user).await?;
        let name = if org_name.is_empty() { organization::default_org_name(&user.first_name) } else { org_name.into() };
        let base = organization::slug_from_name(&name);
        let mut org = None;
        for attempt in 0..SLUG_ATTEMPTS {
            let slug = match attempt {
                0 => base.clone(),
                _ => organization::slug_with_suffix(&base, &organization::random_slug_suffix()),
            };
            org = store::insert_organization_unless_slug_taken(&mut tx, org_id, &name, &slug, true, user_id).await?;
            if org.is_some() {
                break;
            }
        }
        let org = org.ok_or_else(|| Error::internal(anyhow::anyhow!("no free slug derived from {base:?}")))?;
        let version = store::insert_member(&mut tx, org_id, user_id, Role::Owner.as_str(), None).await?;

        let event_ctx = acting_user(ctx, user_id, org_id);
        events::user_registered(&mut tx, &event_ctx, &user, false).await?;
        events::organization_created(&mut tx, &event_ctx, &org, user_id).await?;
        events::member_added(&mut tx, &event_ctx, org_id, user_id, Role::Owner, false, version).await?;
        self.request_verification(&mut tx, ctx, user_id, &user.email).await?;
        let membership = Membership {
            org_id,
            role: Role::Owner.as_str().into(),
            plan: org.plan,
            personal: true,
            joined_at: user.created_at,
            last_used_at: None,
        };
        Ok((tx, user, membership, version, Vec::new()))
    }

    /// The user and their membership of the inviting organization, in its tenant transaction
    /// (returned uncommitted). The invitation is marked accepted and the email counts as verified.
    async fn register_through_invitation(
        &self,
        ctx: &RequestContext,
        new_user: store::NewUser<'_>,
        token: &str,
    ) -> Result<(Tx, store::User, Membership, i64, Vec<org_relationships::Change>)> {
        let found = match tokens::looks_like_token(token) {
            true => store::find_invitation(self.db.pool(), &tokens::hash_token(token)).await?,
            false => None,
        };
        let (invitation_id, org_id) = found.ok_or(IdentityError::InvitationNotFound)?;
        let user_id = new_user.id;
        let mut tx = self.db.tenant_tx_for(org_id, Some(user_id)).await?;
        let inv =
            store::invitation_for_update(&mut tx, invitation_id).await?.ok_or(IdentityError::InvitationNotFound)?;
        invitation::check_acceptable(&inv, new_user.email, Utc::now())?;
        let org = store::organization(&mut tx, org_id).await?.ok_or(IdentityError::InvitationNotFound)?;
        let role = Role::parse(&inv.role)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("invitation {} has role {:?}", inv.id, inv.role)))?;

        let user = insert_user(&mut tx, &store::NewUser { email_verified: true, ..new_user }).await?;
        let version = store::insert_member(&mut tx, org_id, user_id, role.as_str(), Some(inv.invited_by)).await?;
        store::mark_invitation_accepted(&mut tx, inv.id, user_id).await?;

        let event_ctx = acting_user(ctx, user_id, org_id);
        events::user_registered(&mut tx, &event_ctx, &user, true).await?;
        let (_, team_changes) = self.join_invited_teams(&mut tx, &event_ctx, org_id, user_id, &inv).await?;
        events::member_added(&mut tx, &event_ctx, org_id, user_id, role, true, version).await?;
        events::invitation_accepted(&mut tx, &event_ctx, &inv, user_id).await?;
        let membership = Membership {
            org_id,
            role: role.as_str().into(),
            plan: org.plan,
            personal: false,
            joined_at: user.created_at,
            last_used_at: None,
        };
        Ok((tx, user, membership, version, team_changes))
    }

    /// Signs in with email and password (see `AuthService.Login`). Every failure is the same
    /// INVALID_CREDENTIALS after one Argon2id verification, whether or not the account exists
    /// (spec rule 3); attempts are rate limited per email and per client IP (rule 5), and
    /// consecutive failures lock the account (rule 4).
    pub async fn login(&self, email: &str, password: String, client: &Client) -> Result<LoginOutcome> {
        let normalized = user::normalize_email(email).ok();
        // Unknown and malformed emails count too, under the form the caller typed.
        let email_key = normalized.clone().unwrap_or_else(|| email.trim().to_lowercase());
        let email_hash = hex(&tokens::hash_token(&email_key));
        let settings = &self.settings;
        self.limiter
            .hit(&format!("login:email:{email_hash}"), settings.login_rate_limit, settings.login_rate_window)
            .await?;
        if let Some(ip) = client.ip {
            self.limiter.hit(&format!("login:ip:{ip}"), settings.login_rate_limit, settings.login_rate_window).await?;
        }

        let account = match &normalized {
            Some(email) => store::credentials_by_email(self.db.pool(), email).await?,
            None => None,
        };
        let stored_hash = account.as_ref().and_then(|a| a.password_hash.clone());
        let verification = password::verify_blocking(stored_hash.clone(), password.clone()).await?;
        let now = Utc::now();
        let failure = |reason| LoginFailure { email_hash: email_hash.clone(), client: client.clone(), reason };
        let Some(account) = account else {
            self.login_failed(None, failure(LoginFailureReason::UnknownEmail)).await?;
            return Err(IdentityError::InvalidCredentials.into());
        };
        let user_id = account.user.id;
        if account.locked_until.is_some_and(|until| until > now) {
            self.login_failed(Some(user_id), failure(LoginFailureReason::Locked)).await?;
            return Err(IdentityError::InvalidCredentials.into());
        }
        if account.user.status != "active" || stored_hash.is_none() {
            self.login_failed(Some(user_id), failure(LoginFailureReason::Inactive)).await?;
            return Err(IdentityError::InvalidCredentials.into());
        }
        let Verification::Match { needs_rehash } = verification else {
            self.login_failed(Some(user_id), failure(LoginFailureReason::BadPassword)).await?;
            return Err(IdentityError::InvalidCredentials.into());
        };
        let user = account.user;
        if let (true, Some(old)) = (needs_rehash, stored_hash) {
            self.rehash(user.id, &old, password).await;
        }
        if user.mfa_enabled {
            // The failure count is not reset yet: wrong codes keep counting toward the lockout.
            return Ok(LoginOutcome::MfaRequired(self.start_mfa_challenge(&user, client).await?));
        }
        let signed_in = self.finish_sign_in(user, client, tokens::password_amr()).await?;
        Ok(LoginOutcome::SignedIn(Box::new(signed_in)))
    }

    /// Starts a session for a user who passed every factor (`amr`): the most recently used
    /// organization, the login recorded (which clears the failure count), tokens signed.
    pub(crate) async fn finish_sign_in(&self, user: store::User, client: &Client, amr: Vec<String>) -> Result<SignIn> {
        let mut tx = self.db.tx().await?;
        store::scope_to_user(&mut tx, user.id).await?;
        let memberships = store::memberships_of_user(&mut tx, user.id).await?;
        let org = tokens::org_for_login(&memberships);
        let methods: Vec<&str> = amr.iter().map(String::as_str).collect();
        let (session_id, refresh_token) = self.start_session_with(&mut tx, user.id, org, client, &methods).await?;
        store::record_login(&mut tx, user.id).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, session_id = %session_id, "signed in");
        let access_token = self.sign_access_token(user.id, session_id, org, amr).await?;
        Ok(SignIn { user, tokens: self.pair(access_token, refresh_token) })
    }

    /// Records a failed sign-in: the audit event, and for a bad password (or MFA code) one more
    /// consecutive failure, which locks the account at the threshold.
    pub(crate) async fn login_failed(&self, user_id: Option<Uuid>, failure: LoginFailure) -> Result<()> {
        let platform = RequestContext::system(Uuid::nil(), Uuid::now_v7().to_string());
        let mut tx = self.db.tx().await?;
        let counts = matches!(failure.reason, LoginFailureReason::BadPassword | LoginFailureReason::MfaFailed);
        if let (Some(user_id), true) = (user_id, counts) {
            let threshold = i32::try_from(self.settings.lockout_threshold).unwrap_or(i32::MAX);
            let lock_until = Utc::now() + self.settings.lockout_duration;
            if let Some(failed_count) = store::count_failed_login(&mut tx, user_id, threshold, lock_until).await? {
                events::user_locked(&mut tx, &platform, user_id, lock_until, failed_count).await?;
                tracing::warn!(user_id = %user_id, failed_count, "account locked after repeated failed sign-ins");
            }
        }
        let payload = LoginFailed {
            user_id: user_id.map(|u| u.to_string()).unwrap_or_default(),
            email_hash: failure.email_hash,
            ip: failure.client.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: failure.client.user_agent.as_deref().map(truncate_user_agent).unwrap_or_default().to_string(),
            reason: failure.reason.into(),
        };
        events::login_failed(&mut tx, &platform, payload).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a hash with the current parameters; a failure only delays the upgrade.
    async fn rehash(&self, user_id: Uuid, old: &str, password: String) {
        let result = async {
            let new = password::hash_blocking(password).await?;
            store::update_password_hash(self.db.pool(), user_id, old, &new).await?;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(user_id = %user_id, "password hash upgraded to the current parameters"),
            Err(e) => tracing::warn!(user_id = %user_id, error = format!("{e:#}"), "password rehash failed"),
        }
    }

    /// Rotates a refresh token (see `AuthService.Refresh`).
    pub async fn refresh(&self, ctx: &RequestContext, token: &str) -> Result<Refreshed> {
        let token = token.trim();
        if !tokens::looks_like_token(token) {
            return Err(IdentityError::RefreshTokenInvalid.into());
        }
        let mut tx = self.db.tx().await?;
        let presented = store::refresh_token_for_update(&mut tx, &tokens::hash_token(token))
            .await?
            .ok_or(IdentityError::RefreshTokenInvalid)?;
        match tokens::judge_refresh(&presented, Utc::now()) {
            RefreshVerdict::Invalid => Err(IdentityError::RefreshTokenInvalid.into()),
            RefreshVerdict::Reused => {
                // The session is presumed stolen: end it for the thief and the owner alike.
                store::revoke_session(&mut tx, presented.session_id, "reuse_detected").await?;
                let org_id = presented.active_org_id.unwrap_or(Uuid::nil());
                let event_ctx = RequestContext::system(org_id, ctx.correlation_id.clone());
                events::session_revoked(
                    &mut tx,
                    &event_ctx,
                    presented.session_id,
                    presented.user_id,
                    SessionRevokeReason::ReuseDetected,
                )
                .await?;
                tx.commit().await?;
                self.announcer.announce(vec![presented.session_id.to_string()]);
                tracing::warn!(
                    session_id = %presented.session_id,
                    user_id = %presented.user_id,
                    "refresh token reuse detected; session revoked"
                );
                Err(IdentityError::RefreshTokenReused.into())
            }
            RefreshVerdict::Rotate => {
                // The lock above scoped the transaction to the user: their memberships are visible.
                let memberships = store::memberships_of_user(&mut tx, presented.user_id).await?;
                let (org, org_changed) = tokens::org_after_refresh(presented.active_org_id, &memberships);
                let (refresh_token, next_hash) = tokens::new_opaque_token();
                let rotation = store::Rotation {
                    presented_id: presented.id,
                    next_id: Uuid::now_v7(),
                    next_hash: &next_hash,
                    next_expires_at: Utc::now() + self.settings.refresh_token_ttl,
                    session_id: presented.session_id,
                    active_org_id: org.map(|m| m.org_id),
                };
                store::rotate_refresh_token(&mut tx, &rotation).await?;
                tx.commit().await?;
                let access_token =
                    self.sign_access_token(presented.user_id, presented.session_id, org, presented.session_amr).await?;
                Ok(Refreshed { tokens: self.pair(access_token, refresh_token), org_changed })
            }
        }
    }

    /// Starts a password session acting in `org` and issues its first refresh token.
    async fn start_session(
        &self,
        tx: &mut Tx,
        user_id: Uuid,
        org: Option<&Membership>,
        client: &Client,
    ) -> Result<(Uuid, String)> {
        self.start_session_with(tx, user_id, org, client, &["pwd"]).await
    }

    /// Starts a session authenticated by `amr` acting in `org` and issues its first refresh token.
    async fn start_session_with(
        &self,
        tx: &mut Tx,
        user_id: Uuid,
        org: Option<&Membership>,
        client: &Client,
        amr: &[&str],
    ) -> Result<(Uuid, String)> {
        let session_id = Uuid::now_v7();
        let user_agent = client.user_agent.as_deref().map(truncate_user_agent);
        store::insert_session(
            tx,
            &store::NewSession {
                id: session_id,
                user_id,
                active_org_id: org.map(|m| m.org_id),
                amr,
                ip: client.ip.map(|ip| ip.to_string()),
                user_agent,
                expires_at: Utc::now() + tokens::SESSION_LIFETIME,
            },
        )
        .await?;
        let (_, refresh_token) = self.issue_refresh_token(tx, session_id).await?;
        Ok((session_id, refresh_token))
    }

    /// Stores a new refresh token of a session; returns its row id and the token.
    async fn issue_refresh_token(&self, tx: &mut Tx, session_id: Uuid) -> Result<(Uuid, String)> {
        let (token, hash) = tokens::new_opaque_token();
        let id = Uuid::now_v7();
        let expires_at = Utc::now() + self.settings.refresh_token_ttl;
        store::insert_refresh_token(tx, id, session_id, &hash, expires_at).await?;
        Ok((id, token))
    }

    /// Signs an access token for a user's session acting in `org`, with the session's
    /// authentication methods (`amr`).
    pub(crate) async fn sign_access_token(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        org: Option<&Membership>,
        amr: Vec<String>,
    ) -> Result<String> {
        let key = self.keys.active().await?;
        let claims = tokens::user_claims(
            &self.issuer,
            &self.audience,
            user_id,
            session_id,
            org,
            Utc::now(),
            self.settings.access_token_ttl,
        );
        Ok(key.sign(&tokens::UserClaims { claims, amr }))
    }

    pub(crate) fn pair(&self, access_token: String, refresh_token: String) -> TokenPair {
        let expires_in = i32::try_from(self.settings.access_token_ttl.as_secs()).unwrap_or(i32::MAX);
        TokenPair { access_token, expires_in, refresh_token }
    }

    /// The public signing keys (see `TokenService.GetJwks`).
    pub async fn jwks(&self) -> Result<Vec<trellis_proto::trellis::identity::v1::Jwk>> {
        self.keys.jwks().await
    }
}

/// A failed sign-in as the audit sees it.
#[derive(Debug, Clone)]
pub struct LoginFailure {
    /// SHA-256 (hex) of the email as normalised (or as typed, when it is not an email).
    pub email_hash: String,
    /// Where the attempt came from.
    pub client: Client,
    /// Why it failed.
    pub reason: LoginFailureReason,
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Inserts a user, turning a taken email into EMAIL_TAKEN.
async fn insert_user(tx: &mut Tx, new_user: &store::NewUser<'_>) -> Result<store::User> {
    store::insert_user(tx, new_user)
        .await
        .map_err(|e| on_constraint(e, "users_email_key", || IdentityError::EmailTaken.into()))
}

/// The context events of a sign-up carry: the new user acting in `org_id`, with the request's
/// correlation id.
fn acting_user(ctx: &RequestContext, user_id: Uuid, org_id: Uuid) -> RequestContext {
    RequestContext {
        subject: Subject::User(user_id),
        org_id: Some(org_id),
        correlation_id: ctx.correlation_id.clone(),
        ..RequestContext::anonymous(String::new())
    }
}

/// A user agent cut to what a session stores.
fn truncate_user_agent(ua: &str) -> &str {
    match ua.char_indices().nth(MAX_USER_AGENT_LEN) {
        Some((end, _)) => &ua[..end],
        None => ua,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_cut_on_character_boundaries() {
        assert_eq!(truncate_user_agent("curl/8"), "curl/8");
        let long = "é".repeat(600);
        assert_eq!(truncate_user_agent(&long).chars().count(), MAX_USER_AGENT_LEN);
    }

    #[test]
    fn sign_up_events_are_attributed_to_the_new_user() {
        let request = RequestContext::anonymous("corr-1");
        let (user, org) = (Uuid::now_v7(), Uuid::now_v7());
        let ctx = acting_user(&request, user, org);
        assert_eq!(ctx.actor(), ("user", user.to_string()));
        assert_eq!(ctx.org_id, Some(org));
        assert_eq!(ctx.correlation_id, "corr-1");
    }
}
