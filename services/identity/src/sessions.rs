//! Sessions after sign-in: Logout, LogoutAll, the session list, RevokeSession,
//! SwitchOrganization, and GetSessionStatus (kit's fallback while the revocation feed is down).
//!
//! Every revocation commits `revoked_at` and its `identity.session.revoked` event in one
//! transaction, then announces the sids through [`crate::revocation::Announcer`].

use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1::SessionRevokeReason;
use uuid::Uuid;

use crate::accounts::{Identity, TokenPair};
use crate::error::{IdentityError, Violation};
use crate::{events, store};

/// Most sids one GetSessionStatus call may ask about.
pub const MAX_STATUS_SIDS: usize = 100;

/// The status of one session, as GetSessionStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// The sid as asked.
    pub sid: String,
    /// Unrevoked and unexpired.
    pub active: bool,
    /// When it was revoked.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The outcome of SwitchOrganization.
#[derive(Debug)]
pub struct Switched {
    /// The new access token (the refresh token is unchanged).
    pub tokens: TokenPair,
    /// The organization now active.
    pub org_id: Uuid,
    /// The caller's role there.
    pub role: String,
}

/// The calling user and the session of their token (API keys and services have no session).
fn user_session(ctx: &RequestContext) -> Result<(Uuid, Uuid)> {
    let Subject::User(user_id) = ctx.subject else {
        return Err(Error::permission_denied("USER_TOKEN_REQUIRED", "This method needs a user's access token"));
    };
    let sid = ctx
        .session_id
        .as_deref()
        .and_then(|s| s.parse::<Uuid>().ok())
        .ok_or_else(|| Error::unauthenticated("INVALID_TOKEN", "The access token names no session"))?;
    Ok((user_id, sid))
}

/// The context of a user's own session events: the user, in the token's org (else the platform org).
fn event_ctx(ctx: &RequestContext, user_id: Uuid) -> RequestContext {
    RequestContext {
        subject: Subject::User(user_id),
        org_id: Some(ctx.org_id.unwrap_or(Uuid::nil())),
        correlation_id: ctx.correlation_id.clone(),
        ..RequestContext::anonymous(String::new())
    }
}

impl Identity {
    /// Revokes the caller's current session. Idempotent.
    pub async fn logout(&self, ctx: &RequestContext) -> Result<()> {
        let (user_id, sid) = user_session(ctx)?;
        let mut tx = self.db.tx().await?;
        let mine = store::session_owner(&mut tx, sid).await? == Some(user_id);
        let revoked = mine && store::revoke_session(&mut tx, sid, "logout").await?;
        if revoked {
            events::session_revoked(&mut tx, &event_ctx(ctx, user_id), sid, user_id, SessionRevokeReason::Logout)
                .await?;
        }
        tx.commit().await?;
        if revoked {
            tracing::info!(user_id = %user_id, session_id = %sid, "signed out");
        }
        // Announce even a repeated logout: a lost announcement is then repaired.
        self.announcer.announce(vec![sid.to_string()]);
        Ok(())
    }

    /// Revokes every session of the caller, the current one included; returns how many.
    pub async fn logout_all(&self, ctx: &RequestContext) -> Result<i32> {
        let (user_id, _) = user_session(ctx)?;
        let revoked =
            self.revoke_all_sessions(ctx, user_id, SessionRevokeReason::LogoutAll, "logout_all", None).await?;
        Ok(i32::try_from(revoked).unwrap_or(i32::MAX))
    }

    /// Revokes every session of `user_id` but `keep`, with events, and announces them.
    pub(crate) async fn revoke_all_sessions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        reason: SessionRevokeReason,
        reason_text: &str,
        keep: Option<Uuid>,
    ) -> Result<usize> {
        let mut tx = self.db.tx().await?;
        let ids = store::revoke_user_sessions(&mut tx, user_id, reason_text, keep).await?;
        let ectx = event_ctx(ctx, user_id);
        for id in &ids {
            events::session_revoked(&mut tx, &ectx, *id, user_id, reason).await?;
        }
        tx.commit().await?;
        tracing::info!(user_id = %user_id, count = ids.len(), reason = reason_text, "sessions revoked");
        self.announcer.announce(ids.iter().map(ToString::to_string).collect());
        Ok(ids.len())
    }

    /// The caller's live sessions, most recently seen first, and the id of the current one.
    pub async fn list_sessions(&self, ctx: &RequestContext) -> Result<(Vec<store::SessionRow>, Uuid)> {
        let (user_id, sid) = user_session(ctx)?;
        let mut conn = self.db.pool().acquire().await?;
        let sessions = store::live_sessions(&mut conn, user_id).await?;
        Ok((sessions, sid))
    }

    /// Revokes one of the caller's sessions (reason `user`). Another user's session is NOT_FOUND.
    pub async fn revoke_session(&self, ctx: &RequestContext, session_id: &str) -> Result<()> {
        let (user_id, _) = user_session(ctx)?;
        let not_found = || Error::not_found("SESSION_NOT_FOUND", "No such session");
        let id: Uuid = session_id.trim().parse().map_err(|_| not_found())?;
        let mut tx = self.db.tx().await?;
        if store::session_owner(&mut tx, id).await? != Some(user_id) {
            return Err(not_found());
        }
        if store::revoke_session(&mut tx, id, "user").await? {
            events::session_revoked(&mut tx, &event_ctx(ctx, user_id), id, user_id, SessionRevokeReason::User).await?;
        }
        tx.commit().await?;
        self.announcer.announce(vec![id.to_string()]);
        Ok(())
    }

    /// Makes `org_id` the session's organization and signs a token for it.
    pub async fn switch_organization(&self, ctx: &RequestContext, org_id: &str) -> Result<Switched> {
        let (user_id, sid) = user_session(ctx)?;
        let org_id: Uuid = org_id
            .trim()
            .parse()
            .map_err(|_| IdentityError::Invalid(vec![Violation::new("org_id", "must be an organization id (UUID)")]))?;
        let mut tx = self.db.tx().await?;
        store::scope_to_user(&mut tx, user_id).await?;
        let memberships = store::memberships_of_user(&mut tx, user_id).await?;
        let membership = memberships
            .into_iter()
            .find(|m| m.org_id == org_id)
            .ok_or_else(|| Error::permission_denied("NOT_A_MEMBER", "You are not a member of this organization"))?;
        let Some(amr) = store::switch_session_org(&mut tx, sid, user_id, org_id).await? else {
            return Err(Error::unauthenticated("SESSION_REVOKED", "The session has been signed out"));
        };
        tx.commit().await?;
        let access_token = self.sign_access_token(user_id, sid, Some(&membership), amr).await?;
        let role = membership.role.clone();
        Ok(Switched { tokens: self.pair(access_token, String::new()), org_id, role })
    }

    /// Whether sessions are live (GetSessionStatus). A service may ask about any sid; a user
    /// token only about its own session. Unknown or malformed sids are inactive.
    pub async fn session_status(&self, ctx: &RequestContext, sids: &[String]) -> Result<Vec<SessionStatus>> {
        if sids.is_empty() || sids.len() > MAX_STATUS_SIDS {
            return Err(IdentityError::Invalid(vec![Violation::new("sids", "must name 1 to 100 sessions")]).into());
        }
        match &ctx.subject {
            Subject::Service(_) => {}
            Subject::User(_) | Subject::ApiKey(_)
                if sids.iter().all(|s| ctx.session_id.as_deref() == Some(s.as_str())) => {}
            _ => {
                return Err(Error::permission_denied(
                    "PERMISSION_DENIED",
                    "Only services may ask about other sessions",
                ));
            }
        }
        let ids: Vec<Uuid> = sids.iter().filter_map(|s| s.parse().ok()).collect();
        let mut rows = store::live_session_ids(self.db.pool(), &ids).await?;
        // `key:<id>`: API keys (active while neither revoked nor expired).
        let key_ids: Vec<Uuid> =
            sids.iter().filter_map(|s| s.strip_prefix("key:")).filter_map(|id| id.parse().ok()).collect();
        let key_rows = self.api_key_statuses(&key_ids).await?;
        rows.extend(key_rows.iter().cloned());
        Ok(sids
            .iter()
            .map(|sid| {
                let id = sid.strip_prefix("key:").unwrap_or(sid);
                let row = id.parse::<Uuid>().ok().and_then(|id| rows.iter().find(|r| r.0 == id));
                SessionStatus { sid: sid.clone(), active: row.is_some_and(|r| r.2), revoked_at: row.and_then(|r| r.1) }
            })
            .collect())
    }
}
