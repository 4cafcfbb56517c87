//! Invitations: creating one (spec rule 23), and when one may be accepted.
//!
//! The token is 32 random bytes, valid 7 days, stored only as its SHA-256; it leaves the service
//! once, inside the `identity.invitation.sent` event's `link_url`, from which notifications sends
//! the email. Accepting happens through Register (a new account) for now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use trellis_kit::db::on_constraint;
use trellis_kit::{RequestContext, Result};
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{IdentityError, Violation, Violations};
use crate::organization::Role;
use crate::store;
use crate::{events, tokens, user};

/// How long an invitation link works.
pub const INVITATION_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Most teams one invitation can name.
pub const MAX_TEAMS: usize = 20;
/// Longest personal note.
pub const MAX_MESSAGE_LEN: usize = 1000;

/// A CreateInvitation request.
#[derive(Debug)]
pub struct InvitationRequest {
    /// Invitee's email as typed.
    pub email: String,
    /// Offered role; `Ok(None)` means member, `Err` carries an unknown enum number.
    pub role: Result<Option<Role>, i32>,
    /// Team ids as sent.
    pub team_ids: Vec<String>,
    /// Personal note.
    pub message: String,
}

/// Whether an invitation can still be used by someone registering or signing in as `email`.
pub fn check_acceptable(inv: &store::Invitation, email: &str, now: DateTime<Utc>) -> Result<(), IdentityError> {
    match inv.status.as_str() {
        "accepted" => return Err(IdentityError::InvitationAlreadyUsed),
        "revoked" => return Err(IdentityError::InvitationRevoked),
        _ => {}
    }
    if inv.expires_at <= now {
        return Err(IdentityError::InvitationExpired);
    }
    if inv.email != email {
        return Err(IdentityError::InvitationEmailMismatch);
    }
    Ok(())
}

/// The link an invitee follows: `{PUBLIC_BASE_URL}/invitations/accept?token=…`.
pub fn link_url(public_base_url: &str, token: &str) -> String {
    format!("{}/invitations/accept?token={token}", public_base_url.trim_end_matches('/'))
}

/// The validated fields of a request.
#[derive(Debug)]
struct Validated {
    email: String,
    role: Role,
    team_ids: Vec<Uuid>,
    message: Option<String>,
}

fn validate(req: InvitationRequest) -> Result<Validated, IdentityError> {
    let mut violations = Violations::default();
    let email = user::normalize_email(&req.email).unwrap_or_else(|d| {
        violations.push(Violation::new("email", d));
        String::new()
    });
    let role = match req.role {
        Ok(role) => role.unwrap_or(Role::Member),
        Err(_) => {
            violations.push(Violation::new("role", "must be admin, member or viewer"));
            Role::Member
        }
    };
    if role == Role::Owner {
        violations
            .push(Violation::new("role", "must be admin, member or viewer (ownership is transferred, not given)"));
    }
    if req.team_ids.len() > MAX_TEAMS {
        violations.push(Violation::new("team_ids", "must name at most 20 teams"));
    }
    let mut team_ids = Vec::new();
    for (i, raw) in req.team_ids.iter().enumerate() {
        match raw.parse::<Uuid>() {
            // Whether each names a team of this organization is checked in its transaction.
            Ok(id) => team_ids.push(id),
            Err(_) => violations.push(Violation::new(format!("team_ids[{i}]"), "must be a UUID")),
        }
    }
    let message = req.message.trim();
    if message.chars().count() > MAX_MESSAGE_LEN {
        violations.push(Violation::new("message", "must be at most 1000 characters"));
    } else if message.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        violations.push(Violation::new("message", "must not contain control characters"));
    }
    violations.finish()?;
    Ok(Validated { email, role, team_ids, message: (!message.is_empty()).then(|| message.to_string()) })
}

impl Identity {
    /// Invites an email address to the caller's active organization (see
    /// `InvitationService.CreateInvitation`).
    pub async fn create_invitation(&self, ctx: &RequestContext, req: InvitationRequest) -> Result<store::Invitation> {
        let inviter_id = ctx.user_id()?;
        let org_id = ctx.org_id()?;
        let req = validate(req)?;
        self.require(ctx, org_id, "invite").await?;
        if req.role == Role::Admin {
            self.require(ctx, org_id, "administer").await?;
        }

        let (token, token_hash) = tokens::new_opaque_token();
        let mut tx = self.db.tenant_tx(ctx).await?;
        let org = store::organization(&mut tx, org_id)
            .await?
            .ok_or(IdentityError::PermissionDenied("The active organization is not available; sign in again"))?;
        let existing = crate::team_store::existing_teams(&mut tx, &req.team_ids).await?;
        let unknown: Vec<Violation> = req
            .team_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !existing.contains(id))
            .map(|(i, _)| Violation::new(format!("team_ids[{i}]"), "is not a team of this organization"))
            .collect();
        if !unknown.is_empty() {
            return Err(IdentityError::Invalid(unknown).into());
        }
        if store::is_member_email(&mut tx, org_id, &req.email).await? {
            return Err(IdentityError::AlreadyMember.into());
        }
        if let Some(limit) = org.member_limit
            && store::seats_taken(&mut tx, org_id).await? >= i64::from(limit)
        {
            return Err(IdentityError::MemberLimitReached.into());
        }
        let invitation = store::insert_invitation(
            &mut tx,
            &store::NewInvitation {
                id: Uuid::now_v7(),
                org_id,
                email: &req.email,
                role: req.role.as_str(),
                team_ids: &req.team_ids,
                message: req.message.as_deref(),
                token_hash: &token_hash,
                invited_by: inviter_id,
                expires_at: Utc::now() + INVITATION_TTL,
            },
        )
        .await
        .map_err(|e| on_constraint(e, "invitations_pending_email", || IdentityError::InvitationPending.into()))?;
        let inviter = store::user_by_id(&mut tx, inviter_id).await?;
        let inviter_name = inviter.map(|u| user::display_name(&u.first_name, &u.last_name)).unwrap_or_default();
        let link = link_url(&self.settings.public_base_url, &token);
        events::invitation_sent(&mut tx, ctx, &invitation, &inviter_name, &org.name, link).await?;
        tx.commit().await?;
        tracing::info!(invitation_id = %invitation.id, org_id = %org_id, "invitation created");
        Ok(invitation)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn invitation(status: &str, expires_in: TimeDelta) -> store::Invitation {
        let now = Utc::now();
        store::Invitation {
            id: Uuid::now_v7(),
            org_id: Uuid::now_v7(),
            email: "new@example.com".into(),
            role: "member".into(),
            team_ids: vec![],
            message: None,
            status: status.into(),
            invited_by: Uuid::now_v7(),
            expires_at: now + expires_in,
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
            send_count: 1,
            last_sent_at: now,
            created_at: now,
        }
    }

    #[test]
    fn a_pending_invitation_for_the_same_email_is_acceptable() {
        let inv = invitation("pending", TimeDelta::days(7));
        assert!(check_acceptable(&inv, "new@example.com", Utc::now()).is_ok());
    }

    #[test]
    fn used_revoked_expired_and_foreign_invitations_are_refused() {
        let now = Utc::now();
        let reason = |inv: &store::Invitation, email: &str| check_acceptable(inv, email, now).map_err(|e| e.reason());
        assert_eq!(
            reason(&invitation("accepted", TimeDelta::days(7)), "new@example.com"),
            Err("INVITATION_ALREADY_USED")
        );
        assert_eq!(reason(&invitation("revoked", TimeDelta::days(7)), "new@example.com"), Err("INVITATION_REVOKED"));
        assert_eq!(
            reason(&invitation("pending", TimeDelta::seconds(-1)), "new@example.com"),
            Err("INVITATION_EXPIRED")
        );
        assert_eq!(
            reason(&invitation("pending", TimeDelta::days(7)), "other@example.com"),
            Err("INVITATION_EMAIL_MISMATCH")
        );
    }

    #[test]
    fn links_point_at_the_public_accept_page() {
        assert_eq!(
            link_url("https://app.example.com/", "abc_-123"),
            "https://app.example.com/invitations/accept?token=abc_-123"
        );
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        let request = |email: &str| InvitationRequest {
            email: email.into(),
            role: Ok(None),
            team_ids: vec![],
            message: String::new(),
        };
        let ok = validate(request(" New@Example.com ")).expect("valid");
        assert_eq!((ok.email.as_str(), ok.role), ("new@example.com", Role::Member));
        assert_eq!(ok.message, None);

        let Err(IdentityError::Invalid(violations)) = validate(InvitationRequest {
            role: Ok(Some(Role::Owner)),
            team_ids: vec!["x".into()],
            message: "m".repeat(1001),
            ..request("nope")
        }) else {
            panic!("expected violations");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "role", "team_ids[0]", "message"]);
        let team = Uuid::now_v7();
        let with_team = validate(InvitationRequest { team_ids: vec![team.to_string()], ..request("a@example.com") });
        assert_eq!(with_team.expect("a well-formed team id").team_ids, vec![team]);
        let unknown_role = validate(InvitationRequest { role: Err(42), ..request("new@example.com") });
        assert!(matches!(unknown_role, Err(IdentityError::Invalid(v)) if v[0].field == "role"));
    }
}
