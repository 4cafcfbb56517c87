//! UserService: GetMe with the active organization, UpdateMe with its mask and field violations
//! and the `identity.user.updated` event, and GetUser limited to people of the same organization.

use tonic::Code;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::user_service_client::UserServiceClient;

use crate::common::{Identity, bearer, failure, violated_fields};

async fn users(id: &Identity) -> UserServiceClient<tonic::transport::Channel> {
    UserServiceClient::new(id.cell.channel("identity").await)
}

#[tokio::test]
async fn get_me_shows_the_profile_and_the_active_organization_with_the_role() {
    let id = Identity::start().await;
    let reg = id.register("me@example.com", "Ada").await;
    let me = users(&id).await.get_me(bearer(pb::GetMeRequest {}, &reg.access_token)).await.expect("me").into_inner();
    let user = reg.user.expect("user");
    assert_eq!(
        (me.id.as_str(), me.email.as_str(), me.name.as_str()),
        (user.id.as_str(), "me@example.com", "Ada Tester")
    );
    assert_eq!((me.timezone.as_str(), me.locale.as_str()), ("UTC", "en"));
    assert!(!me.email_verified && !me.mfa_enabled);
    let org = me.active_organization.expect("the personal organization");
    assert_eq!(org.id, id.verify(&reg.access_token).await.org.expect("org"));
    assert_eq!((org.name.as_str(), org.role()), ("Ada's workspace", pb::OrgRole::Owner));
    let anonymous = users(&id).await.get_me(pb::GetMeRequest {}).await;
    assert_eq!(failure(anonymous).0, Code::Unauthenticated);
}

#[tokio::test]
async fn update_me_validates_every_field_writes_nothing_on_failure_and_publishes_the_changes() {
    let id = Identity::start().await;
    let token = id.register("upd@example.com", "Ada").await.access_token;
    let mut client = users(&id).await;

    let bad = pb::UpdateMeRequest {
        first_name: "\u{7}".into(),
        timezone: "Mars/Olympus_Mons".into(),
        locale: "this-is-not-a-locale-tag".into(),
        ..Default::default()
    };
    let status = client.update_me(bearer(bad, &token)).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["first_name", "locale", "timezone"]);
    let masked_other = pb::UpdateMeRequest {
        update_mask: Some(prost_types::FieldMask { paths: vec!["email".into()] }),
        ..Default::default()
    };
    let status = client.update_me(bearer(masked_other, &token)).await.expect_err("email is not updatable here");
    assert_eq!(violated_fields(&status), ["update_mask"]);
    assert!(id.payloads::<pb::UserUpdated>("identity.user.updated").await.is_empty(), "nothing written");

    let good = pb::UpdateMeRequest {
        first_name: " Grace ".into(),
        timezone: "Europe/Lisbon".into(),
        locale: "pt-BR".into(),
        ..Default::default()
    };
    let updated = client.update_me(bearer(good, &token)).await.expect("update").into_inner();
    assert_eq!(
        (updated.first_name.as_str(), updated.name.as_str(), updated.timezone.as_str(), updated.locale.as_str()),
        ("Grace", "Grace Tester", "Europe/Lisbon", "pt-BR")
    );
    let events: Vec<pb::UserUpdated> = id.payloads("identity.user.updated").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].changed_fields, ["first_name", "timezone", "locale"]);
    assert_eq!(events[0].first_name, "Grace");

    // A masked empty last name clears it; unchanged values publish nothing.
    let clear = pb::UpdateMeRequest {
        update_mask: Some(prost_types::FieldMask { paths: vec!["last_name".into()] }),
        ..Default::default()
    };
    assert_eq!(client.update_me(bearer(clear, &token)).await.expect("clear").into_inner().name, "Grace");
    let same = pb::UpdateMeRequest { first_name: "Grace".into(), ..Default::default() };
    client.update_me(bearer(same, &token)).await.expect("no change");
    let events: Vec<pb::UserUpdated> = id.payloads("identity.user.updated").await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].changed_fields, ["last_name"]);
    let me = client.get_me(bearer(pb::GetMeRequest {}, &token)).await.expect("me").into_inner();
    assert_eq!((me.first_name.as_str(), me.last_name.as_str(), me.locale.as_str()), ("Grace", "", "pt-BR"));
}

#[tokio::test]
async fn get_user_shows_members_of_the_active_organization_only() {
    let id = Identity::start().await;
    let ada = id.register("ada@example.com", "Ada").await;
    let bob = id.register("bob@example.com", "Bob").await;
    let bob_id = bob.user.expect("bob").id;
    let ada_id = ada.user.expect("ada").id;
    let mut client = users(&id).await;

    let own = client.get_user(bearer(pb::GetUserRequest { user_id: ada_id.clone() }, &ada.access_token)).await;
    assert_eq!(own.expect("self").into_inner().name, "Ada Tester");
    let stranger = client.get_user(bearer(pb::GetUserRequest { user_id: bob_id.clone() }, &ada.access_token)).await;
    assert_eq!(failure(stranger), (Code::NotFound, "USER_NOT_FOUND".into()));
    let garbage = client.get_user(bearer(pb::GetUserRequest { user_id: "nope".into() }, &ada.access_token)).await;
    assert_eq!(failure(garbage).0, Code::InvalidArgument);
}
