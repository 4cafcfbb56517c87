//! Invitations end to end at the gRPC level: preview, registering or accepting with teams, the
//! states a link can be in, resend, revoke, the list, and who may invite (acceptance flows 9, 10).

use tonic::Code;
use trellis_kit::authz::Ref;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::team_service_client::TeamServiceClient;

use crate::common::{bearer, failure, registration};
use crate::organizations::{Orgs, Signed};

async fn invite(t: &Orgs, by: &Signed, email: &str, teams: Vec<String>) -> Result<pb::Invitation, tonic::Status> {
    let request = pb::CreateInvitationRequest {
        email: email.into(),
        role: pb::OrgRole::Member.into(),
        team_ids: teams,
        message: String::new(),
    };
    let r = t.invitations.clone().create_invitation(bearer(request, &by.token)).await;
    r.map(|r| r.into_inner().invitation.expect("invitation"))
}

async fn last_token(t: &Orgs) -> String {
    let sent: Vec<pb::InvitationSent> = t.payloads("identity.invitation.sent").await;
    sent.last().expect("sent").link_url.split_once("token=").expect("token").1.to_string()
}

async fn preview(t: &Orgs, token: &str) -> Result<pb::PreviewInvitationResponse, tonic::Status> {
    let r = t.invitations.clone().preview_invitation(pb::PreviewInvitationRequest { token: token.into() }).await;
    r.map(|r| r.into_inner())
}

async fn accept(t: &Orgs, who: &Signed, token: &str) -> Result<pb::AcceptInvitationResponse, tonic::Status> {
    let request = pb::AcceptInvitationRequest { token: token.into() };
    t.invitations.clone().accept_invitation(bearer(request, &who.token)).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn a_new_user_registers_through_an_invitation_into_its_team() {
    let t = Orgs::start().await;
    let admin = t.register("admin@example.com", "Ada").await;
    let teams = TeamServiceClient::new(t.cell.channel("identity").await);
    let create = pb::CreateTeamRequest { name: "T".into(), ..Default::default() };
    let team =
        teams.clone().create_team(bearer(create, &admin.token)).await.expect("team").into_inner().team.expect("t");

    let unknown = invite(&t, &admin, "x@example.com", vec![uuid::Uuid::now_v7().to_string()]).await;
    assert_eq!(crate::common::violated_fields(&unknown.expect_err("unknown team")), vec!["team_ids[0]".to_string()]);
    invite(&t, &admin, "x@example.com", vec![team.id.clone()]).await.expect("invite");
    let token = last_token(&t).await;

    let seen = preview(&t, &token).await.expect("preview");
    assert_eq!((seen.email.as_str(), seen.role(), seen.account_exists), ("x@example.com", pb::OrgRole::Member, false));
    assert_eq!(seen.teams.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["T"]);
    assert_eq!(seen.status(), pb::InvitationStatus::Pending);
    assert_eq!(preview(&t, &token).await.expect("again").status(), pb::InvitationStatus::Pending, "no side effect");
    assert_eq!(failure(preview(&t, "nope").await).0, Code::NotFound);

    let request = pb::RegisterRequest { invitation_token: token.clone(), ..registration("x@example.com", "Xavier") };
    let x = t.auth.clone().register(request.clone()).await.expect("register").into_inner();
    assert!(x.user.as_ref().expect("user").email_verified);
    let x = t.signed(&x.access_token).await;
    assert_eq!(x.org, admin.org, "no personal org; a member of the inviting org");
    let can_view = t
        .checks
        .check(admin.org, &Ref::new("team", &team.id), "view", &Ref::new("user", x.user.to_string()), None)
        .await
        .expect("check");
    assert!(can_view, "x may view T at once");
    assert_eq!(preview(&t, &token).await.expect("after").status(), pb::InvitationStatus::Accepted);
    let again = pb::RegisterRequest { email: "y@example.com".into(), ..request };
    assert_eq!(
        failure(t.auth.clone().register(again).await),
        (Code::FailedPrecondition, "INVITATION_ALREADY_USED".into())
    );
}

#[tokio::test]
async fn existing_users_accept_and_links_expire_resend_and_revoke() {
    let t = Orgs::start().await;
    let admin = t.register("admin@example.com", "Ada").await;
    let bob = t.register("bob@example.com", "Bob").await;
    let eve = t.register("eve@example.com", "Eve").await;

    invite(&t, &admin, "bob@example.com", vec![]).await.expect("invite bob");
    let token = last_token(&t).await;
    assert!(preview(&t, &token).await.expect("preview").account_exists);
    let unauthenticated =
        t.invitations.clone().accept_invitation(pb::AcceptInvitationRequest { token: token.clone() }).await;
    assert_eq!(failure(unauthenticated).0, Code::Unauthenticated);
    assert_eq!(failure(accept(&t, &eve, &token).await), (Code::PermissionDenied, "INVITATION_EMAIL_MISMATCH".into()));
    let joined = accept(&t, &bob, &token).await.expect("accept");
    assert_eq!((joined.org_id.clone(), joined.role()), (admin.org.to_string(), pb::OrgRole::Member));
    let in_org = t.signed(&joined.access_token).await;
    assert_eq!(in_org.org, admin.org, "the token acts in the joined org");

    assert_eq!(
        failure(invite(&t, &admin, "bob@example.com", vec![]).await),
        (Code::AlreadyExists, "ALREADY_MEMBER".into())
    );
    let pending = invite(&t, &admin, "carol@example.com", vec![]).await.expect("carol");
    assert_eq!(
        failure(invite(&t, &admin, "carol@example.com", vec![]).await),
        (Code::AlreadyExists, "INVITATION_PENDING".into())
    );
    let old = last_token(&t).await;

    // Resend: the old link is gone, the new one works.
    let resent = t
        .invitations
        .clone()
        .resend_invitation(bearer(pb::ResendInvitationRequest { invitation_id: pending.id.clone() }, &admin.token))
        .await
        .expect("resend")
        .into_inner()
        .invitation
        .expect("invitation");
    assert_eq!(resent.send_count, 2);
    let new = last_token(&t).await;
    assert_ne!(old, new);
    assert_eq!(failure(preview(&t, &old).await).0, Code::NotFound);
    assert!(preview(&t, &new).await.is_ok());

    // Revoke: accepting then says so.
    t.invitations
        .clone()
        .revoke_invitation(bearer(pb::RevokeInvitationRequest { invitation_id: pending.id.clone() }, &admin.token))
        .await
        .expect("revoke");
    let carol = t.register("carol@example.com", "Carol").await;
    assert_eq!(failure(accept(&t, &carol, &new).await), (Code::FailedPrecondition, "INVITATION_REVOKED".into()));

    // Expired: past its 7 days.
    let dave = invite(&t, &admin, "dave@example.com", vec![]).await.expect("dave");
    let dave_token = last_token(&t).await;
    sqlx::query("update identity.invitations set expires_at = now() - interval '1 day' where id = $1::uuid")
        .bind(&dave.id)
        .execute(&t.cell.owner_pool().await)
        .await
        .expect("age it");
    let dave_user = t.register("dave@example.com", "Dave").await;
    assert_eq!(
        failure(accept(&t, &dave_user, &dave_token).await),
        (Code::FailedPrecondition, "INVITATION_EXPIRED".into())
    );

    // The list: pending by default, filters by status.
    let list = |filter: &str| pb::ListInvitationsRequest { filter: filter.into(), ..Default::default() };
    let expired = t.invitations.clone().list_invitations(bearer(list("status = expired"), &admin.token)).await;
    let expired = expired.expect("list").into_inner();
    assert_eq!(expired.invitations.iter().map(|i| i.email.as_str()).collect::<Vec<_>>(), ["dave@example.com"]);
    assert_eq!(expired.invitations[0].status(), pb::InvitationStatus::Expired);
    let accepted = t.invitations.clone().list_invitations(bearer(list("status = accepted"), &admin.token)).await;
    assert_eq!(accepted.expect("list").into_inner().total_size, 1);

    // A member may not invite.
    assert_eq!(failure(invite(&t, &in_org, "zed@example.com", vec![]).await).0, Code::PermissionDenied);
}
