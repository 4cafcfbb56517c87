//! Email-token flows: email verification (24 h), forgot/reset password (1 h), ChangePassword,
//! and ChangeEmail (a change_email token, 24 h, sent to the new address; VerifyEmail swaps it in).
//!
//! Tokens are 32 random bytes; only their SHA-256 is stored (`email_tokens`), each is single-use,
//! expires, and a newer token for the same (user, purpose) spends the older one (spec rules 16, 17).
//! The link travels only in the event's sensitive `link_url`, from which notifications sends it.

use std::time::Duration;

use chrono::Utc;
use trellis_kit::db::Tx;
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::{Client, Identity};
use crate::error::{IdentityError, Violation};
use crate::password::{self, Verification};
use crate::{events, store, tokens, user};

/// Lifetime of an email verification link.
pub const VERIFY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of a password reset link.
pub const RESET_TTL: Duration = Duration::from_secs(3600);
/// The one answer of ForgotPassword.
pub const FORGOT_MESSAGE: &str = "If an account exists for this email, a password reset link has been sent.";
/// The answer of a successful ResetPassword.
pub const RESET_MESSAGE: &str = "Your password has been reset. Sign in with the new password.";

fn token_invalid() -> Error {
    Error::invalid_argument("TOKEN_INVALID", "The link is invalid or has expired")
}

/// The platform org context for account events.
fn platform(correlation_id: &str, actor: Option<Uuid>) -> RequestContext {
    let mut ctx = RequestContext::system(Uuid::nil(), correlation_id.to_string());
    if let Some(user) = actor {
        ctx.subject = Subject::User(user);
    }
    ctx
}

/// `{base}/{path}?token=…`
fn link(base: &str, path: &str, token: &str) -> String {
    format!("{}/{path}?token={token}", base.trim_end_matches('/'))
}

impl Identity {
    /// Issues a verification token for the user's current address and stages the event.
    pub(crate) async fn request_verification(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        user_id: Uuid,
        email: &str,
    ) -> Result<chrono::DateTime<Utc>> {
        let (token, hash) = tokens::new_opaque_token();
        let expires_at = Utc::now() + VERIFY_TTL;
        store::replace_email_token(tx, user_id, "verify_email", &hash, None, expires_at).await?;
        let payload = pb::EmailVerificationRequested {
            user_id: user_id.to_string(),
            email: email.to_string(),
            purpose: pb::EmailTokenPurpose::VerifyEmail.into(),
            link_url: link(&self.settings.public_base_url, "verify-email", &token),
            expires_at: Some(events::timestamp(expires_at)),
        };
        trellis_kit::events::stage(
            tx,
            &platform(&ctx.correlation_id, Some(user_id)),
            "identity.user.email_verification_requested",
            &payload,
        )
        .await?;
        Ok(expires_at)
    }

    /// ForgotPassword: the same answer for every email.
    pub async fn forgot_password(&self, ctx: &RequestContext, email: &str, client: &Client) -> Result<&'static str> {
        if let Some(ip) = client.ip {
            self.limiter.hit(&format!("forgot:ip:{ip}"), 10, Duration::from_secs(3600)).await?;
        }
        let normalized = user::normalize_email(email).ok();
        let key = normalized.clone().unwrap_or_else(|| email.trim().to_lowercase());
        let email_hash: String = tokens::hash_token(&key).iter().map(|b| format!("{b:02x}")).collect();
        // Generated for every request: the same work whether or not the account exists.
        let (token, hash) = tokens::new_opaque_token();
        let over_limit =
            self.limiter.hit(&format!("forgot:email:{email_hash}"), 3, Duration::from_secs(3600)).await.is_err();
        let account = match &normalized {
            Some(email) => store::credentials_by_email(self.db.pool(), email).await?,
            None => None,
        };
        let Some(account) = account.filter(|a| a.user.status == "active" && a.password_hash.is_some()) else {
            return Ok(FORGOT_MESSAGE);
        };
        if over_limit {
            tracing::info!(user_id = %account.user.id, "password reset request over the per-email limit; nothing sent");
            return Ok(FORGOT_MESSAGE);
        }
        let expires_at = Utc::now() + RESET_TTL;
        let mut tx = self.db.tx().await?;
        store::replace_email_token(&mut tx, account.user.id, "reset_password", &hash, None, expires_at).await?;
        let payload = pb::PasswordResetRequested {
            user_id: account.user.id.to_string(),
            email: account.user.email.clone(),
            link_url: link(&self.settings.public_base_url, "reset-password", &token),
            expires_at: Some(events::timestamp(expires_at)),
        };
        trellis_kit::events::stage(
            &mut tx,
            &platform(&ctx.correlation_id, None),
            "identity.user.password_reset_requested",
            &payload,
        )
        .await?;
        tx.commit().await?;
        Ok(FORGOT_MESSAGE)
    }

    /// ResetPassword: a new password through a reset token; every session ends.
    pub async fn reset_password(&self, ctx: &RequestContext, token: &str, new_password: String) -> Result<()> {
        let token = token.trim();
        if !tokens::looks_like_token(token) {
            return Err(token_invalid());
        }
        let hash = tokens::hash_token(token);
        // Find the account first (for the password policy), then hash outside any transaction.
        let user_id = {
            let mut conn = self.db.pool().acquire().await?;
            store::live_email_token_for_update(&mut conn, &hash, &["reset_password"]).await?.map(|t| t.1)
        }
        .ok_or_else(token_invalid)?;
        let email = {
            let mut conn = self.db.pool().acquire().await?;
            store::user_by_id(&mut conn, user_id).await?.map(|u| u.email).ok_or_else(token_invalid)?
        };
        if let Err(problem) = password::check_policy(&new_password, &email) {
            return Err(IdentityError::Invalid(vec![Violation::with_reason(
                "new_password",
                problem.reason(),
                problem.description(),
            )])
            .into());
        }
        let new_hash = password::hash_blocking(new_password).await?;
        let mut tx = self.db.tx().await?;
        // Re-checked under lock: a concurrent reset with the same token loses here.
        let (token_id, user_id, _, _) =
            store::live_email_token_for_update(&mut tx, &hash, &["reset_password"]).await?.ok_or_else(token_invalid)?;
        store::spend_email_token(&mut tx, token_id).await?;
        store::set_password(&mut tx, user_id, &new_hash).await?;
        let ectx = platform(&ctx.correlation_id, Some(user_id));
        let changed = pb::PasswordChanged { user_id: user_id.to_string(), via: pb::PasswordChangeMethod::Reset.into() };
        trellis_kit::events::stage(&mut tx, &ectx, "identity.user.password_changed", &changed).await?;
        let revoked = store::revoke_user_sessions(&mut tx, user_id, "password_reset", None).await?;
        for id in &revoked {
            events::session_revoked(&mut tx, &ectx, *id, user_id, pb::SessionRevokeReason::PasswordReset).await?;
        }
        tx.commit().await?;
        tracing::info!(user_id = %user_id, sessions = revoked.len(), "password reset");
        self.announcer.announce(revoked.iter().map(ToString::to_string).collect());
        Ok(())
    }

    /// VerifyEmail: confirms the address of a verification token; a change_email token also
    /// replaces the account's address with the one it was sent to (EMAIL_TAKEN if someone took it
    /// meanwhile) and publishes `identity.user.email_changed` with the previous address.
    pub async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<String> {
        let token = token.trim();
        if !tokens::looks_like_token(token) {
            return Err(token_invalid());
        }
        let mut tx = self.db.tx().await?;
        let (token_id, user_id, purpose, new_email) =
            store::live_email_token_for_update(&mut tx, &tokens::hash_token(token), &["verify_email", "change_email"])
                .await?
                .ok_or_else(token_invalid)?;
        store::spend_email_token(&mut tx, token_id).await?;
        let ectx = platform(&ctx.correlation_id, Some(user_id));
        if purpose == "change_email" {
            let new_email = new_email.ok_or_else(token_invalid)?;
            let previous = store::change_email(&mut tx, user_id, &new_email)
                .await
                .map_err(|e| trellis_kit::db::on_constraint(e, "users_email_key", || IdentityError::EmailTaken.into()))?
                .ok_or_else(token_invalid)?;
            let payload =
                pb::EmailChanged { user_id: user_id.to_string(), email: new_email.clone(), previous_email: previous };
            trellis_kit::events::stage(&mut tx, &ectx, "identity.user.email_changed", &payload).await?;
            tx.commit().await?;
            tracing::info!(user_id = %user_id, "email changed");
            return Ok(new_email);
        }
        let email = store::mark_email_verified(&mut tx, user_id).await?.ok_or_else(token_invalid)?;
        let payload = pb::EmailVerified { user_id: user_id.to_string(), email: email.clone() };
        trellis_kit::events::stage(&mut tx, &ectx, "identity.user.email_verified", &payload).await?;
        tx.commit().await?;
        Ok(email)
    }

    /// ChangeEmail: after a password check, sends a change_email link to the new address; the
    /// account keeps its current address until the link is used. Returns the normalised new
    /// address and the link's expiry.
    pub async fn change_email(
        &self,
        ctx: &RequestContext,
        new_email: &str,
        password: String,
    ) -> Result<(String, chrono::DateTime<Utc>)> {
        let user_id = ctx.user_id()?;
        let new_email = user::normalize_email(new_email)
            .map_err(|problem| IdentityError::Invalid(vec![Violation::new("new_email", problem)]))?;
        let user = {
            let mut conn = self.db.pool().acquire().await?;
            store::user_by_id(&mut conn, user_id).await?
        }
        .filter(|u| u.status == "active")
        .ok_or(IdentityError::InvalidCredentials)?;
        let account =
            store::credentials_by_email(self.db.pool(), &user.email).await?.ok_or(IdentityError::InvalidCredentials)?;
        let stored = account.password_hash.clone();
        let verification = password::verify_blocking(stored.clone(), password).await?;
        if stored.is_none() || !matches!(verification, Verification::Match { .. }) {
            return Err(IdentityError::InvalidCredentials.into());
        }
        if new_email == user.email {
            return Err(IdentityError::Invalid(vec![Violation::with_reason(
                "new_email",
                "EMAIL_UNCHANGED",
                "is already the account's email",
            )])
            .into());
        }
        if store::credentials_by_email(self.db.pool(), &new_email).await?.is_some() {
            return Err(IdentityError::EmailTaken.into());
        }
        self.limiter.hit(&format!("change-email:user:{user_id}"), 5, Duration::from_secs(3600)).await?;
        let (token, hash) = tokens::new_opaque_token();
        let expires_at = Utc::now() + VERIFY_TTL;
        let mut tx = self.db.tx().await?;
        store::replace_email_token(&mut tx, user_id, "change_email", &hash, Some(&new_email), expires_at).await?;
        let payload = pb::EmailVerificationRequested {
            user_id: user_id.to_string(),
            email: new_email.clone(),
            purpose: pb::EmailTokenPurpose::ChangeEmail.into(),
            link_url: link(&self.settings.public_base_url, "verify-email", &token),
            expires_at: Some(events::timestamp(expires_at)),
        };
        trellis_kit::events::stage(
            &mut tx,
            &platform(&ctx.correlation_id, Some(user_id)),
            "identity.user.email_verification_requested",
            &payload,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, "email change requested");
        Ok((new_email, expires_at))
    }

    /// ResendVerification: a new 24 h link for the caller; 3 per hour.
    pub async fn resend_verification(&self, ctx: &RequestContext) -> Result<chrono::DateTime<Utc>> {
        let user_id = ctx.user_id()?;
        let mut tx = self.db.tx().await?;
        let user = store::user_by_id(&mut tx, user_id)
            .await?
            .ok_or_else(|| Error::not_found("USER_NOT_FOUND", "No such user"))?;
        if user.email_verified_at.is_some() {
            return Err(Error::failed_precondition("ALREADY_VERIFIED", "The email is already verified"));
        }
        self.limiter.hit(&format!("verify:user:{user_id}"), 3, Duration::from_secs(3600)).await?;
        let expires_at = self.request_verification(&mut tx, ctx, user_id, &user.email).await?;
        tx.commit().await?;
        Ok(expires_at)
    }

    /// ChangePassword: needs the current password; every other session ends.
    pub async fn change_password(&self, ctx: &RequestContext, current: String, new_password: String) -> Result<i32> {
        let user_id = ctx.user_id()?;
        let keep = ctx.session_id.as_deref().and_then(|s| s.parse::<Uuid>().ok());
        let user = {
            let mut conn = self.db.pool().acquire().await?;
            store::user_by_id(&mut conn, user_id).await?
        }
        .ok_or(IdentityError::InvalidCredentials)?;
        let account =
            store::credentials_by_email(self.db.pool(), &user.email).await?.ok_or(IdentityError::InvalidCredentials)?;
        let stored = account.password_hash.clone();
        let verification = password::verify_blocking(stored.clone(), current.clone()).await?;
        if stored.is_none() || !matches!(verification, Verification::Match { .. }) {
            return Err(IdentityError::InvalidCredentials.into());
        }
        if password::normalize(&current) == password::normalize(&new_password) {
            return Err(IdentityError::Invalid(vec![Violation::with_reason(
                "new_password",
                "PASSWORD_UNCHANGED",
                "must differ from the current password",
            )])
            .into());
        }
        if let Err(problem) = password::check_policy(&new_password, &user.email) {
            return Err(IdentityError::Invalid(vec![Violation::with_reason(
                "new_password",
                problem.reason(),
                problem.description(),
            )])
            .into());
        }
        let new_hash = password::hash_blocking(new_password).await?;
        let mut tx = self.db.tx().await?;
        store::set_password(&mut tx, user_id, &new_hash).await?;
        let ectx = platform(&ctx.correlation_id, Some(user_id));
        let changed =
            pb::PasswordChanged { user_id: user_id.to_string(), via: pb::PasswordChangeMethod::Change.into() };
        trellis_kit::events::stage(&mut tx, &ectx, "identity.user.password_changed", &changed).await?;
        let revoked = store::revoke_user_sessions(&mut tx, user_id, "password_changed", keep).await?;
        for id in &revoked {
            events::session_revoked(&mut tx, &ectx, *id, user_id, pb::SessionRevokeReason::PasswordChanged).await?;
        }
        tx.commit().await?;
        self.announcer.announce(revoked.iter().map(ToString::to_string).collect());
        Ok(i32::try_from(revoked.len()).unwrap_or(i32::MAX))
    }
}
