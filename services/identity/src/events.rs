//! What identity publishes. Each function stages one event in the outbox of the transaction that
//! makes the change, so the event commits with it (or not at all); kit's relay publishes it to
//! `trellis.events` with the routing key below. Payload messages live in
//! `proto/trellis/identity/v1/events.proto`.
//!
//! Identity consumes no events yet.

use chrono::{DateTime, Utc};
use trellis_kit::db::Tx;
use trellis_kit::events::stage;
use trellis_kit::{RequestContext, Result};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::organization::Role;
use crate::store;

/// `identity.user.registered`
pub const USER_REGISTERED: &str = "identity.user.registered";
/// `identity.organization.created`
pub const ORGANIZATION_CREATED: &str = "identity.organization.created";
/// `identity.member.added`
pub const MEMBER_ADDED: &str = "identity.member.added";
/// `identity.invitation.sent`
pub const INVITATION_SENT: &str = "identity.invitation.sent";
/// `identity.invitation.accepted`
pub const INVITATION_ACCEPTED: &str = "identity.invitation.accepted";
/// `identity.session.revoked`
pub const SESSION_REVOKED: &str = "identity.session.revoked";
/// `identity.user.login_failed`
pub const LOGIN_FAILED: &str = "identity.user.login_failed";
/// `identity.user.locked`
pub const USER_LOCKED: &str = "identity.user.locked";
/// `identity.user.mfa_enabled`
pub const MFA_ENABLED: &str = "identity.user.mfa_enabled";
/// `identity.user.mfa_disabled`
pub const MFA_DISABLED: &str = "identity.user.mfa_disabled";
/// `identity.user.updated`
pub const USER_UPDATED: &str = "identity.user.updated";
/// `identity.user.backup_codes_regenerated`
pub const BACKUP_CODES_REGENERATED: &str = "identity.user.backup_codes_regenerated";

/// Converts a time to the wire.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// A new account. `ctx` names the organization the user landed in.
pub async fn user_registered(
    tx: &mut Tx,
    ctx: &RequestContext,
    user: &store::User,
    via_invitation: bool,
) -> Result<()> {
    let via = if via_invitation { pb::RegistrationMethod::Invitation } else { pb::RegistrationMethod::Password };
    let payload = pb::UserRegistered {
        user_id: user.id.to_string(),
        email: user.email.clone(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        via: via.into(),
    };
    stage(tx, ctx, USER_REGISTERED, &payload).await.map(drop)
}

/// A new organization and its owner.
pub async fn organization_created(
    tx: &mut Tx,
    ctx: &RequestContext,
    org: &store::Organization,
    owner_id: Uuid,
) -> Result<()> {
    let payload = pb::OrganizationCreated {
        org_id: org.id.to_string(),
        name: org.name.clone(),
        slug: org.slug.clone(),
        owner_id: owner_id.to_string(),
        personal: org.personal,
        plan: org.plan.clone(),
    };
    stage(tx, ctx, ORGANIZATION_CREATED, &payload).await.map(drop)
}

/// A new membership; `invited` says whether it came from an invitation.
pub async fn member_added(
    tx: &mut Tx,
    ctx: &RequestContext,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
    invited: bool,
    version: i64,
) -> Result<()> {
    let via = if invited { pb::MembershipSource::Invitation } else { pb::MembershipSource::Created };
    let payload = pb::MemberAdded {
        org_id: org_id.to_string(),
        user_id: user_id.to_string(),
        role: role.to_proto().into(),
        via: via.into(),
        version,
    };
    stage(tx, ctx, MEMBER_ADDED, &payload).await.map(drop)
}

/// An invitation link to deliver. `link_url` carries the token and is marked sensitive.
pub async fn invitation_sent(
    tx: &mut Tx,
    ctx: &RequestContext,
    invitation: &store::Invitation,
    inviter_name: &str,
    org_name: &str,
    link_url: String,
) -> Result<()> {
    let payload = pb::InvitationSent {
        invitation_id: invitation.id.to_string(),
        email: invitation.email.clone(),
        role: Role::parse(&invitation.role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
        team_ids: invitation.team_ids.iter().map(Uuid::to_string).collect(),
        inviter_name: inviter_name.to_string(),
        org_name: org_name.to_string(),
        link_url,
        expires_at: Some(timestamp(invitation.expires_at)),
        resend: invitation.send_count > 1,
        message: invitation.message.clone().unwrap_or_default(),
    };
    stage(tx, ctx, INVITATION_SENT, &payload).await.map(drop)
}

/// An invitation used by the user who joined through it.
pub async fn invitation_accepted(
    tx: &mut Tx,
    ctx: &RequestContext,
    invitation: &store::Invitation,
    user_id: Uuid,
) -> Result<()> {
    let payload = pb::InvitationAccepted {
        invitation_id: invitation.id.to_string(),
        email: invitation.email.clone(),
        user_id: user_id.to_string(),
        invited_by: invitation.invited_by.to_string(),
    };
    stage(tx, ctx, INVITATION_ACCEPTED, &payload).await.map(drop)
}

/// A session that ended.
pub async fn session_revoked(
    tx: &mut Tx,
    ctx: &RequestContext,
    session_id: Uuid,
    user_id: Uuid,
    reason: pb::SessionRevokeReason,
) -> Result<()> {
    let payload =
        pb::SessionRevoked { session_id: session_id.to_string(), user_id: user_id.to_string(), reason: reason.into() };
    stage(tx, ctx, SESSION_REVOKED, &payload).await.map(drop)
}

/// A failed sign-in (audit). `ctx` names the platform org.
pub async fn login_failed(tx: &mut Tx, ctx: &RequestContext, payload: pb::LoginFailed) -> Result<()> {
    stage(tx, ctx, LOGIN_FAILED, &payload).await.map(drop)
}

/// An account locked after repeated failures. `ctx` names the platform org.
pub async fn user_locked(
    tx: &mut Tx,
    ctx: &RequestContext,
    user_id: Uuid,
    locked_until: DateTime<Utc>,
    failed_count: i32,
) -> Result<()> {
    let payload =
        pb::UserLocked { user_id: user_id.to_string(), locked_until: Some(timestamp(locked_until)), failed_count };
    stage(tx, ctx, USER_LOCKED, &payload).await.map(drop)
}
