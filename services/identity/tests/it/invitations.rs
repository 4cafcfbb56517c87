//! CreateInvitation, and joining an organization by registering with the invitation's token.

use tonic::Code;
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::common::{Identity, failure, registration};

/// The token inside the link of the last `identity.invitation.sent` event.
async fn last_invitation_token(id: &Identity) -> String {
    let sent: Vec<pb::InvitationSent> = id.payloads("identity.invitation.sent").await;
    let link = &sent.last().expect("an invitation.sent event").link_url;
    let (_, token) = link.split_once("/invitations/accept?token=").expect("a link with a token");
    token.to_string()
}

fn invited(email: &str, first_name: &str, token: &str) -> pb::RegisterRequest {
    pb::RegisterRequest { invitation_token: token.into(), ..registration(email, first_name) }
}

#[tokio::test]
async fn an_owner_invites_and_the_invitee_joins_through_register() {
    let id = Identity::start().await;
    let owner = id.register("owner@example.com", "Olive").await;
    let owner_claims = id.verify(&owner.access_token).await;
    let org_id = owner_claims.org.clone().expect("org");

    let invitation =
        id.invite(&owner.access_token, " Carol@Example.com ", pb::OrgRole::Member).await.expect("invite").invitation;
    let invitation = invitation.expect("invitation");
    assert_eq!((invitation.email.as_str(), invitation.org_id.as_str()), ("carol@example.com", org_id.as_str()));
    assert_eq!((invitation.role(), invitation.status()), (pb::OrgRole::Member, pb::InvitationStatus::Pending));
    assert_eq!(invitation.invited_by, owner_claims.sub);
    let expires = invitation.expires_at.as_ref().expect("expiry").seconds;
    let created = invitation.created_at.as_ref().expect("created").seconds;
    assert!((expires - created - 7 * 86_400).abs() <= 1, "valid for 7 days");

    let sent: Vec<pb::InvitationSent> = id.payloads("identity.invitation.sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].inviter_name.as_str(), sent[0].org_name.as_str()), ("Olive Tester", "Olive's workspace"));
    assert!(sent[0].link_url.starts_with("http://localhost:8080/invitations/accept?token="), "{}", sent[0].link_url);
    assert_eq!(id.outbox("identity.invitation.sent").await[0].org_id, org_id);
    let token = last_invitation_token(&id).await;

    let carol = id.try_register(invited("carol@example.com", "Carol", &token)).await.expect("register invited");
    assert!(!carol.requires_email_verification);
    assert!(carol.user.as_ref().expect("user").email_verified);
    let claims = id.verify(&carol.access_token).await;
    assert_eq!(claims.org.as_deref(), Some(org_id.as_str()));
    assert_eq!(claims.roles, vec!["member".to_string()]);

    // No personal organization; two members in the owner's.
    let carol_id: Uuid = claims.sub.parse().expect("uuid");
    let created_by_carol: i64 = sqlx::query_scalar("select count(*) from identity.organizations where created_by = $1")
        .bind(carol_id)
        .fetch_one(&id.owner)
        .await
        .expect("count");
    assert_eq!(created_by_carol, 0);
    let members: Vec<(Uuid, String)> =
        sqlx::query_as("select user_id, role from identity.org_members where org_id = $1::uuid order by joined_at")
            .bind(&org_id)
            .fetch_all(&id.owner)
            .await
            .expect("members");
    assert_eq!(members.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>(), ["owner", "member"]);
    let status: String = sqlx::query_scalar("select status from identity.invitations where id = $1::uuid")
        .bind(&invitation.id)
        .fetch_one(&id.owner)
        .await
        .expect("invitation");
    assert_eq!(status, "accepted");

    let registered: Vec<pb::UserRegistered> = id.payloads("identity.user.registered").await;
    assert_eq!(registered.last().map(|e| e.via()), Some(pb::RegistrationMethod::Invitation));
    let added: Vec<pb::MemberAdded> = id.payloads("identity.member.added").await;
    let last = added.last().expect("member.added");
    assert_eq!(
        (last.role(), last.via(), last.user_id.as_str()),
        (pb::OrgRole::Member, pb::MembershipSource::Invitation, claims.sub.as_str())
    );
    let accepted: Vec<pb::InvitationAccepted> = id.payloads("identity.invitation.accepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].invited_by, owner_claims.sub);

    // Signing in later lands in the only organization Carol has.
    let login = id.login("carol@example.com", crate::common::PASSWORD).await.expect("login");
    assert_eq!(id.verify(&login.access_token).await.org.as_deref(), Some(org_id.as_str()));

    // The token is single-use.
    let again = id.try_register(invited("carol2@example.com", "Carol", &token)).await;
    assert_eq!(failure(again), (Code::FailedPrecondition, "INVITATION_ALREADY_USED".into()));
}

#[tokio::test]
async fn invitation_tokens_that_cannot_be_used_are_refused() {
    let id = Identity::start().await;
    let owner = id.register("boss@example.com", "Boss").await;

    let unknown = id.try_register(invited("x@example.com", "X", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(failure(unknown), (Code::NotFound, "INVITATION_NOT_FOUND".into()));
    let garbage = id.try_register(invited("x@example.com", "X", "nope")).await;
    assert_eq!(failure(garbage), (Code::NotFound, "INVITATION_NOT_FOUND".into()));

    id.invite(&owner.access_token, "dan@example.com", pb::OrgRole::Viewer).await.expect("invite");
    let token = last_invitation_token(&id).await;
    let mismatch = id.try_register(invited("eve@example.com", "Eve", &token)).await;
    assert_eq!(failure(mismatch), (Code::FailedPrecondition, "INVITATION_EMAIL_MISMATCH".into()));

    sqlx::query(
        "update identity.invitations set expires_at = now() - interval '1 second' where email = 'dan@example.com'",
    )
    .execute(&id.owner)
    .await
    .expect("expire");
    let expired = id.try_register(invited("dan@example.com", "Dan", &token)).await;
    assert_eq!(failure(expired), (Code::FailedPrecondition, "INVITATION_EXPIRED".into()));

    sqlx::query(
        "update identity.invitations set status = 'revoked', revoked_at = now() where email = 'dan@example.com'",
    )
    .execute(&id.owner)
    .await
    .expect("revoke");
    let revoked = id.try_register(invited("dan@example.com", "Dan", &token)).await;
    assert_eq!(failure(revoked), (Code::FailedPrecondition, "INVITATION_REVOKED".into()));

    let users: i64 =
        sqlx::query_scalar("select count(*) from identity.users").fetch_one(&id.owner).await.expect("count");
    assert_eq!(users, 1, "no refused registration created a user");
}

#[tokio::test]
async fn duplicate_invitations_and_existing_members_are_conflicts() {
    let id = Identity::start().await;
    let owner = id.register("own@example.com", "Own").await;
    id.invite(&owner.access_token, "fay@example.com", pb::OrgRole::Admin).await.expect("invite");
    let again = id.invite(&owner.access_token, "FAY@example.com", pb::OrgRole::Member).await;
    assert_eq!(failure(again), (Code::AlreadyExists, "INVITATION_PENDING".into()));
    let member = id.invite(&owner.access_token, "own@example.com", pb::OrgRole::Member).await;
    assert_eq!(failure(member), (Code::AlreadyExists, "ALREADY_MEMBER".into()));
    let as_owner = id.invite(&owner.access_token, "gus@example.com", pb::OrgRole::Owner).await;
    assert_eq!(failure(as_owner), (Code::InvalidArgument, "VALIDATION_ERROR".into()));
    assert_eq!(id.outbox("identity.invitation.sent").await.len(), 1, "refused invitations send nothing");
}

#[tokio::test]
async fn only_owners_and_admins_can_invite() {
    let id = Identity::start().await;
    let owner = id.register("chief@example.com", "Chief").await;
    id.invite(&owner.access_token, "mia@example.com", pb::OrgRole::Member).await.expect("invite");
    let token = last_invitation_token(&id).await;
    let member = id.try_register(invited("mia@example.com", "Mia", &token)).await.expect("join as member");

    let denied = id.invite(&member.access_token, "ned@example.com", pb::OrgRole::Member).await;
    assert_eq!(failure(denied), (Code::PermissionDenied, "PERMISSION_DENIED".into()));

    let anonymous = id
        .invitations
        .clone()
        .create_invitation(pb::CreateInvitationRequest { email: "ned@example.com".into(), ..Default::default() })
        .await;
    assert_eq!(failure(anonymous).0, Code::Unauthenticated);
    let forged = id.invite("not.a.token", "ned@example.com", pb::OrgRole::Member).await;
    assert_eq!(failure(forged).0, Code::Unauthenticated);
}
