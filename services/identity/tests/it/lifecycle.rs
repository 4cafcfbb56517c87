//! Deactivate and DeleteMe (spec rule 25, flow 14): the owner of a shared organization must
//! transfer first; a deactivated account has no session, no API key and no active membership
//! left, and its personal organization goes to the trash with it.

use tonic::Code;
use tonic_types::StatusExt;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::api_key_service_client::ApiKeyServiceClient;
use trellis_proto::trellis::identity::v1::user_service_client::UserServiceClient;

use crate::common::{Identity, PASSWORD, bearer, failure, registration};

async fn users(id: &Identity) -> UserServiceClient<tonic::transport::Channel> {
    UserServiceClient::new(id.cell.channel("identity").await)
}

fn deactivate(confirmation: &str, password: &str) -> pb::DeactivateRequest {
    pb::DeactivateRequest { confirmation: confirmation.into(), password: password.into() }
}

#[tokio::test]
async fn the_owner_of_a_shared_org_must_transfer_and_a_member_is_deactivated_everywhere() {
    let id = Identity::start().await;
    let owner = id.register("owner@example.com", "Olive").await;
    let org_id = id.verify(&owner.access_token).await.org.expect("org");
    id.invite(&owner.access_token, "mia@example.com", pb::OrgRole::Member).await.expect("invite");
    let sent: Vec<pb::InvitationSent> = id.payloads("identity.invitation.sent").await;
    let token = sent[0].link_url.split_once("token=").expect("token").1.to_string();
    let mia = id
        .try_register(pb::RegisterRequest { invitation_token: token, ..registration("mia@example.com", "Mia") })
        .await
        .expect("mia joins");
    let mia_id = mia.user.expect("user").id;
    let mut client = users(&id).await;

    let refused = client.deactivate(bearer(deactivate("DEACTIVATE", PASSWORD), &owner.access_token)).await;
    let status = refused.expect_err("the owner has a member");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let details = status.get_error_details();
    let info = details.error_info().expect("error info");
    assert_eq!(info.reason, "OWNERSHIP_TRANSFER_REQUIRED");
    assert_eq!(info.metadata.get("org_ids"), Some(&org_id));

    let typo = client.deactivate(bearer(deactivate("deactivate me", PASSWORD), &mia.access_token)).await;
    assert_eq!(failure(typo), (Code::FailedPrecondition, "CONFIRMATION_MISMATCH".into()));
    let wrong = client.deactivate(bearer(deactivate("DEACTIVATE", "not-the-password-x"), &mia.access_token)).await;
    assert_eq!(failure(wrong), (Code::Unauthenticated, "INVALID_CREDENTIALS".into()));

    let done = client.deactivate(bearer(deactivate("DEACTIVATE", PASSWORD), &mia.access_token)).await;
    let erase_after = done.expect("deactivated").into_inner().erase_after.expect("erase_after").seconds;
    let in_30_days = chrono::Utc::now().timestamp() + 30 * 86_400;
    assert!((erase_after - in_30_days).abs() < 60, "erased 30 days later");

    // No way back in with the old credentials; the membership is suspended with its role.
    assert_eq!(failure(id.refresh(&mia.refresh_token).await).1, "REFRESH_TOKEN_INVALID");
    assert_eq!(failure(id.login("mia@example.com", PASSWORD).await).1, "INVALID_CREDENTIALS");
    let (status, role): (String, String) =
        sqlx::query_as("select status, role from identity.org_members where user_id = $1::uuid")
            .bind(&mia_id)
            .fetch_one(&id.owner)
            .await
            .expect("membership");
    assert_eq!((status.as_str(), role.as_str()), ("suspended", "member"));
    let revoked: Vec<String> =
        sqlx::query_scalar("select revoke_reason from identity.sessions where user_id = $1::uuid")
            .bind(&mia_id)
            .fetch_all(&id.owner)
            .await
            .expect("sessions");
    assert_eq!(revoked, ["deactivated"]);

    let events: Vec<pb::UserDeactivated> = id.payloads("identity.user.deactivated").await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].user_id.as_str(), events[0].org_ids.as_slice()), (mia_id.as_str(), &[org_id.clone()][..]));
    assert!(!events[0].erasure_requested);
    let sessions: Vec<pb::SessionRevoked> = id.payloads("identity.session.revoked").await;
    assert!(sessions.iter().any(|s| s.user_id == mia_id && s.reason() == pb::SessionRevokeReason::Deactivated));

    // Reactivation within the window restores the membership and signs in; only once.
    let back = id
        .auth
        .clone()
        .reactivate(pb::ReactivateRequest { email: "mia@example.com".into(), password: PASSWORD.into() })
        .await
        .expect("reactivated")
        .into_inner();
    assert_eq!(id.verify(&back.access_token).await.org.as_deref(), Some(org_id.as_str()));
    let status: String = sqlx::query_scalar("select status from identity.org_members where user_id = $1::uuid")
        .bind(&mia_id)
        .fetch_one(&id.owner)
        .await
        .expect("membership");
    assert_eq!(status, "active");
    let reactivated: Vec<pb::UserReactivated> = id.payloads("identity.user.reactivated").await;
    assert_eq!(reactivated.len(), 1);
    assert_eq!(reactivated[0].org_ids, std::slice::from_ref(&org_id));
    // The erasure it cancelled (stored to the microsecond).
    let micros = |t: &Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos / 1000));
    assert_eq!(micros(&reactivated[0].erase_after), micros(&events[0].erase_after));
    let again = id
        .auth
        .clone()
        .reactivate(pb::ReactivateRequest { email: "mia@example.com".into(), password: PASSWORD.into() })
        .await;
    assert_eq!(failure(again), (Code::Unauthenticated, "INVALID_CREDENTIALS".into()), "an active account");
    id.login("mia@example.com", PASSWORD).await.expect("signs in as usual");
    client.deactivate(bearer(deactivate("DEACTIVATE", PASSWORD), &back.access_token)).await.expect("again");

    // Past the window, reactivation is refused like a wrong password.
    sqlx::query("update identity.users set erase_after = now() - interval '1 second' where id = $1::uuid")
        .bind(&mia_id)
        .execute(&id.owner)
        .await
        .expect("age the deactivation");
    let late = id
        .auth
        .clone()
        .reactivate(pb::ReactivateRequest { email: "mia@example.com".into(), password: PASSWORD.into() })
        .await;
    assert_eq!(failure(late), (Code::Unauthenticated, "INVALID_CREDENTIALS".into()));

    // With the member gone, the owner may leave too.
    client.deactivate(bearer(deactivate("DEACTIVATE", PASSWORD), &owner.access_token)).await.expect("owner leaves");
}

#[tokio::test]
async fn delete_me_revokes_the_api_keys_and_trashes_the_personal_organization() {
    let id = Identity::start().await;
    let solo = id.register("solo@example.com", "Solo").await;
    let user_id = solo.user.expect("user").id;
    sqlx::query("update identity.users set email_verified_at = now() where id = $1::uuid")
        .bind(&user_id)
        .execute(&id.owner)
        .await
        .expect("verify");
    let org_id = id.verify(&solo.access_token).await.org.expect("org");
    let key = ApiKeyServiceClient::new(id.cell.channel("identity").await)
        .create_api_key(bearer(
            pb::CreateApiKeyRequest {
                name: "CI".into(),
                scopes: vec!["organization:read".into()],
                role: pb::OrgRole::Admin.into(),
                expires_at: None,
            },
            &solo.access_token,
        ))
        .await
        .expect("key")
        .into_inner();

    let wrong = users(&id)
        .await
        .delete_me(bearer(pb::DeleteMeRequest { password: "nope-nope-nope".into() }, &solo.access_token))
        .await;
    assert_eq!(failure(wrong).1, "INVALID_CREDENTIALS");
    users(&id)
        .await
        .delete_me(bearer(pb::DeleteMeRequest { password: PASSWORD.into() }, &solo.access_token))
        .await
        .expect("erasure requested");

    let revoked: Vec<pb::ApiKeyRevoked> = id.payloads("identity.api_key.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].api_key_id, key.api_key.expect("api key").id);
    let key_revoked: bool = sqlx::query_scalar("select revoked_at is not null from identity.api_keys")
        .fetch_one(&id.owner)
        .await
        .expect("key");
    assert!(key_revoked);
    let (deleted, status): (bool, String) = sqlx::query_as(
        "select o.deleted_at is not null, u.status from identity.organizations o, identity.users u
          where o.id = $1::uuid and u.id = $2::uuid",
    )
    .bind(&org_id)
    .bind(&user_id)
    .fetch_one(&id.owner)
    .await
    .expect("rows");
    assert!(deleted, "the personal org went with the account");
    assert_eq!(status, "deactivated");
    assert_eq!(id.payloads::<pb::OrganizationDeleted>("identity.organization.deleted").await.len(), 1);
    let events: Vec<pb::UserDeactivated> = id.payloads("identity.user.deactivated").await;
    assert!(events[0].erasure_requested);

    // Reactivating restores the personal organization too (the revoked key stays revoked).
    let request = pb::ReactivateRequest { email: "solo@example.com".into(), password: PASSWORD.into() };
    let back = id.auth.clone().reactivate(request).await.expect("reactivated").into_inner();
    assert_eq!(id.verify(&back.access_token).await.org.as_deref(), Some(org_id.as_str()));
    let deleted: bool =
        sqlx::query_scalar("select deleted_at is not null from identity.organizations where id = $1::uuid")
            .bind(&org_id)
            .fetch_one(&id.owner)
            .await
            .expect("org");
    assert!(!deleted);
    assert_eq!(id.payloads::<pb::OrganizationDeleted>("identity.organization.restored").await.len(), 1);
}
