//! The InvitationService beyond creating one ([`crate::invitation`]): listing, the public preview,
//! accepting as a signed-in user, resending with a new token, revoking; and joining the invited
//! teams, which registering through an invitation shares.

use std::time::Duration;

use chrono::Utc;
use trellis_kit::db::Tx;
use trellis_kit::org_relationships::{self, Change};
use trellis_kit::paging::{PageTokens, page_size};
use trellis_kit::{Error, RequestContext, Result};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{IdentityError, Violation};
use crate::invitation::{INVITATION_TTL, check_acceptable, link_url};
use crate::invitation_store::{self, StatusFilter};
use crate::organization::Role;
use crate::organizations::{parse_id, stage};
use crate::sessions::Switched;
use crate::store::{self, Invitation};
use crate::{events, team_store, tokens, user};

/// Sends (resends) allowed per invitation per day.
pub const RESENDS_PER_DAY: u32 = 5;
/// `identity.invitation.revoked`
pub const INVITATION_REVOKED: &str = "identity.invitation.revoked";

/// Parses ListInvitations' `filter`: `status = …` (default pending) and `email = …`.
pub fn invitation_filter(filter: &str) -> std::result::Result<(StatusFilter, Option<String>), Vec<Violation>> {
    let mut status = StatusFilter::Pending;
    let mut email = None;
    let mut violations = Vec::new();
    for clause in filter.split(" AND ").map(str::trim).filter(|c| !c.is_empty()) {
        let Some((field, value)) = clause.split_once('=') else {
            violations.push(Violation::new("filter", format!("`{clause}` is not `field = value`")));
            continue;
        };
        let value = value.trim().trim_matches('"');
        match (field.trim(), value) {
            ("status", "pending") => status = StatusFilter::Pending,
            ("status", "accepted") => status = StatusFilter::Accepted,
            ("status", "revoked") => status = StatusFilter::Revoked,
            ("status", "expired") => status = StatusFilter::Expired,
            ("email", v) => match user::normalize_email(v) {
                Ok(e) => email = Some(e),
                Err(d) => violations.push(Violation::new("filter", format!("email {d}"))),
            },
            (f, v) => violations.push(Violation::new("filter", format!("cannot filter on `{f} = {v}`"))),
        }
    }
    if violations.is_empty() { Ok((status, email)) } else { Err(violations) }
}

/// What PreviewInvitation shows.
#[derive(Debug)]
pub struct Preview {
    pub invitation: Invitation,
    pub org_name: String,
    pub org_slug: String,
    pub inviter_name: String,
    pub teams: Vec<(Uuid, String)>,
    pub account_exists: bool,
}

/// What AcceptInvitation returns.
#[derive(Debug)]
pub struct Accepted {
    pub org_id: Uuid,
    pub role: Role,
    pub team_ids: Vec<Uuid>,
    pub switched: Switched,
}

impl Identity {
    /// Adds a new member to the invitation's teams that still exist, with an event each; returns
    /// the relationship changes to write after commit.
    pub(crate) async fn join_invited_teams(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        org_id: Uuid,
        user_id: Uuid,
        inv: &Invitation,
    ) -> Result<(Vec<Uuid>, Vec<Change>)> {
        let teams = team_store::existing_teams(tx, &inv.team_ids).await?;
        let mut changes = Vec::new();
        for team_id in &teams {
            let (_, version) =
                team_store::upsert_team_member(tx, org_id, *team_id, user_id, "member", inv.invited_by).await?;
            let payload = pb::TeamMemberChanged {
                org_id: org_id.to_string(),
                team_id: team_id.to_string(),
                user_id: user_id.to_string(),
                role: "member".into(),
                version,
            };
            stage(tx, ctx, org_id, crate::teams::TEAM_MEMBER_ADDED, &payload).await?;
            changes.push(org_relationships::team_member(
                &team_id.to_string(),
                &user_id.to_string(),
                Some("member"),
                version,
            ));
        }
        Ok((teams, changes))
    }

    /// The invitation with this token as `(id, org_id)`, else NOT_FOUND.
    async fn find_by_token(&self, token: &str) -> Result<(Uuid, Uuid)> {
        let token = token.trim();
        let found = match tokens::looks_like_token(token) {
            true => store::find_invitation(self.db.pool(), &tokens::hash_token(token)).await?,
            false => None,
        };
        Ok(found.ok_or(IdentityError::InvitationNotFound)?)
    }

    /// Lists the active org's invitations (see `ListInvitations`).
    pub async fn list_invitations(
        &self,
        ctx: &RequestContext,
        tokens: &PageTokens,
        req: &pb::ListInvitationsRequest,
    ) -> Result<(Vec<Invitation>, String, i64)> {
        let org_id = ctx.org_id()?;
        let (status, email) = invitation_filter(&req.filter).map_err(IdentityError::Invalid)?;
        let size = page_size(req.page_size)?;
        let hash = PageTokens::query_hash(&[&org_id.to_string(), req.filter.trim()]);
        let offset: i64 = tokens.decode(&hash, &req.page_token)?.unwrap_or(0);
        self.require(ctx, org_id, "invite").await?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let (rows, total) =
            invitation_store::invitations_page(&mut tx, status, email.as_deref(), offset, i64::from(size)).await?;
        tx.commit().await?;
        let next = offset + rows.len() as i64;
        Ok((rows, if next < total { tokens.encode(&hash, &next) } else { String::new() }, total))
    }

    /// What a link offers, without side effects (see `PreviewInvitation`).
    pub async fn preview_invitation(&self, token: &str) -> Result<Preview> {
        let (id, org_id) = self.find_by_token(token).await?;
        let mut tx = self.db.tenant_tx_for(org_id, None).await?;
        let invitation =
            invitation_store::invitation_for_update(&mut tx, id).await?.ok_or(IdentityError::InvitationNotFound)?;
        let org = crate::org_store::org(&mut tx, org_id).await?.ok_or(IdentityError::InvitationNotFound)?;
        let inviter = store::user_by_id(&mut tx, invitation.invited_by).await?;
        let teams = invitation_store::team_names(&mut tx, &invitation.team_ids).await?;
        let account_exists = invitation_store::account_exists(&mut tx, &invitation.email).await?;
        tx.rollback().await?;
        Ok(Preview {
            org_name: org.name,
            org_slug: org.slug,
            inviter_name: inviter.map(|u| user::display_name(&u.first_name, &u.last_name)).unwrap_or_default(),
            teams,
            account_exists,
            invitation,
        })
    }

    /// Joins the invitation's org as the signed-in user (see `AcceptInvitation`).
    pub async fn accept_invitation(&self, ctx: &RequestContext, token: &str) -> Result<Accepted> {
        let user_id = ctx.user_id()?;
        let (id, org_id) = self.find_by_token(token).await?;
        let mut tx = self.db.tenant_tx_for(org_id, Some(user_id)).await?;
        let inv =
            invitation_store::invitation_for_update(&mut tx, id).await?.ok_or(IdentityError::InvitationNotFound)?;
        let me = store::user_by_id(&mut tx, user_id).await?.ok_or(IdentityError::InvitationNotFound)?;
        match check_acceptable(&inv, &me.email, Utc::now()) {
            Ok(()) => {}
            Err(IdentityError::InvitationEmailMismatch) => {
                return Err(Error::permission_denied(
                    "INVITATION_EMAIL_MISMATCH",
                    "The invitation was sent to another email address",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let role = Role::parse(&inv.role)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("invitation {} has role {:?}", inv.id, inv.role)))?;
        let event_ctx = RequestContext { org_id: Some(org_id), ..ctx.clone() };
        if crate::org_store::member(&mut tx, org_id, user_id).await?.is_some() {
            invitation_store::mark_accepted(&mut tx, inv.id, user_id).await?;
            events::invitation_accepted(&mut tx, &event_ctx, &inv, user_id).await?;
            tx.commit().await?;
            return Err(IdentityError::AlreadyMember.into());
        }
        let version = store::insert_member(&mut tx, org_id, user_id, role.as_str(), Some(inv.invited_by)).await?;
        invitation_store::mark_accepted(&mut tx, inv.id, user_id).await?;
        invitation_store::verify_email(&mut tx, user_id).await?;
        let (team_ids, mut changes) = self.join_invited_teams(&mut tx, &event_ctx, org_id, user_id, &inv).await?;
        events::member_added(&mut tx, &event_ctx, org_id, user_id, role, true, version).await?;
        events::invitation_accepted(&mut tx, &event_ctx, &inv, user_id).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, user_id = %user_id, "invitation accepted");
        changes.insert(
            0,
            org_relationships::member_role(&org_id.to_string(), &user_id.to_string(), role.as_str(), version),
        );
        self.apply_relationships(org_id, &changes).await;
        let switched = self.switch_organization(ctx, &org_id.to_string()).await?;
        Ok(Accepted { org_id, role, team_ids, switched })
    }

    /// A pending (or expired) invitation of the active org, locked, after the invite check.
    async fn manageable(&self, ctx: &RequestContext, invitation_id: &str) -> Result<(Tx, Invitation)> {
        let org_id = ctx.org_id()?;
        let id = parse_id("invitation_id", invitation_id)?;
        self.require(ctx, org_id, "invite").await?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let inv =
            invitation_store::invitation_for_update(&mut tx, id).await?.ok_or(IdentityError::InvitationNotFound)?;
        match inv.status.as_str() {
            "accepted" => Err(IdentityError::InvitationAlreadyUsed.into()),
            "revoked" => Err(IdentityError::InvitationRevoked.into()),
            _ => Ok((tx, inv)),
        }
    }

    /// Sends a new link (see `ResendInvitation`).
    pub async fn resend_invitation(&self, ctx: &RequestContext, invitation_id: &str) -> Result<Invitation> {
        let org_id = ctx.org_id()?;
        let (mut tx, inv) = self.manageable(ctx, invitation_id).await?;
        self.limiter.hit(&format!("invitation-send:{}", inv.id), RESENDS_PER_DAY, Duration::from_secs(86_400)).await?;
        let (token, token_hash) = tokens::new_opaque_token();
        let invitation =
            invitation_store::replace_token(&mut tx, inv.id, &token_hash, Utc::now() + INVITATION_TTL).await?;
        let org = store::organization(&mut tx, org_id).await?.ok_or(IdentityError::OrganizationNotFound)?;
        let inviter = store::user_by_id(&mut tx, ctx.user_id()?).await?;
        let inviter_name = inviter.map(|u| user::display_name(&u.first_name, &u.last_name)).unwrap_or_default();
        let link = link_url(&self.settings.public_base_url, &token);
        events::invitation_sent(&mut tx, ctx, &invitation, &inviter_name, &org.name, link).await?;
        tx.commit().await?;
        Ok(invitation)
    }

    /// Withdraws an invitation (see `RevokeInvitation`).
    pub async fn revoke_invitation(&self, ctx: &RequestContext, invitation_id: &str) -> Result<()> {
        let org_id = ctx.org_id()?;
        let (mut tx, inv) = match self.manageable(ctx, invitation_id).await {
            // Revoking twice is harmless.
            Err(e) if e.reason() == "INVITATION_REVOKED" => return Ok(()),
            other => other?,
        };
        invitation_store::revoke(&mut tx, inv.id).await?;
        let payload = pb::InvitationRevoked {
            invitation_id: inv.id.to_string(),
            email: inv.email.clone(),
            revoked_by: ctx.user_id_opt().map(|u| u.to_string()).unwrap_or_default(),
            invited_by: inv.invited_by.to_string(),
        };
        stage(&mut tx, ctx, org_id, INVITATION_REVOKED, &payload).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_filters_default_to_pending() {
        assert_eq!(invitation_filter("").expect("empty"), (StatusFilter::Pending, None));
        assert_eq!(
            invitation_filter("status = expired AND email = X@Example.com").expect("valid"),
            (StatusFilter::Expired, Some("x@example.com".into()))
        );
        assert!(invitation_filter("status = lost").is_err());
        assert!(invitation_filter("role = admin").is_err());
    }
}
