//! Service principals (flow 20): IssueServiceToken with secrets derived from the cell secret,
//! kit's ServiceTokens credentials against identity, and the service-only BatchGetUsers.

use tonic::Code;
use trellis_kit::auth::service_client_secret;
use trellis_kit::authz::{Credentials, ServiceTokens};
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::user_directory_service_client::UserDirectoryServiceClient;
use uuid::Uuid;

use crate::common::{Identity, bearer, failure, violated_fields};

fn request(id: &Identity, name: &str, org: Option<Uuid>) -> pb::IssueServiceTokenRequest {
    pb::IssueServiceTokenRequest {
        client_name: name.into(),
        client_secret: service_client_secret(&id.cell.config.cell_secret, name),
        org_id: org.map(|o| o.to_string()).unwrap_or_default(),
    }
}

async fn issue(id: &Identity, name: &str, org: Option<Uuid>) -> pb::IssueServiceTokenResponse {
    id.tokens.clone().issue_service_token(request(id, name, org)).await.expect("service token").into_inner()
}

#[tokio::test]
async fn a_service_with_its_secret_gets_a_five_minute_token_naming_it() {
    let id = Identity::start().await;
    let org = Uuid::now_v7();
    let issued = issue(&id, "tasks", Some(org)).await;
    assert_eq!((issued.expires_in, issued.token_type.as_str()), (300, "Bearer"));
    let claims = id.verify(&issued.access_token).await;
    assert_eq!(claims.sub, "service:tasks");
    assert_eq!(claims.aud, "trellis");
    assert_eq!(claims.org, Some(org.to_string()));
    assert_eq!(claims.exp - claims.iat, 300);
    assert_eq!((claims.sid, claims.roles.len()), (None, 0));
    // Without an org (schema registration).
    assert_eq!(id.verify(&issue(&id, "permissions", None).await.access_token).await.org, None);
}

#[tokio::test]
async fn a_wrong_secret_or_unknown_client_is_unauthenticated() {
    let id = Identity::start().await;
    let mut wrong = request(&id, "tasks", None);
    wrong.client_secret = service_client_secret("not-this-cell", "tasks");
    assert_eq!(
        failure(id.tokens.clone().issue_service_token(wrong).await),
        (Code::Unauthenticated, "INVALID_CLIENT".into())
    );
    let mut other = request(&id, "tasks", None);
    other.client_secret = service_client_secret(&id.cell.config.cell_secret, "crm");
    assert_eq!(
        failure(id.tokens.clone().issue_service_token(other).await),
        (Code::Unauthenticated, "INVALID_CLIENT".into())
    );
    let unknown = request(&id, "intruder", None);
    assert_eq!(
        failure(id.tokens.clone().issue_service_token(unknown).await),
        (Code::Unauthenticated, "INVALID_CLIENT".into())
    );
    let mut bad_org = request(&id, "tasks", None);
    bad_org.org_id = "acme".into();
    let status = id.tokens.clone().issue_service_token(bad_org).await.expect_err("bad org");
    assert_eq!((status.code(), violated_fields(&status)), (Code::InvalidArgument, vec!["org_id".to_string()]));
}

#[tokio::test]
async fn kit_service_tokens_are_issued_by_identity_and_cached_per_org() {
    let id = Identity::start().await;
    let tokens = ServiceTokens::new(&id.cell.config, "crm").expect("credentials");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let first = tokens.token(Some(a)).await.expect("token for a");
    assert_eq!(tokens.token(Some(a)).await.expect("cached"), first, "reused until shortly before expiry");
    let other = tokens.token(Some(b)).await.expect("token for b");
    assert_ne!(other, first);
    let claims = id.verify(&other).await;
    assert_eq!((claims.sub.as_str(), claims.org), ("service:crm", Some(b.to_string())));
    assert_eq!(id.verify(&tokens.token(None).await.expect("no org")).await.org, None);
}

#[tokio::test]
async fn platform_tooling_rotates_keys_with_an_issued_service_token() {
    let id = Identity::start().await;
    let admin = issue(&id, "platform-admin", None).await.access_token;
    let rotated = id
        .tokens
        .clone()
        .rotate_signing_key(bearer(pb::RotateSigningKeyRequest {}, &admin))
        .await
        .expect("platform-admin rotates")
        .into_inner();
    assert!(!rotated.next_kid.is_empty());
}

#[tokio::test]
async fn batch_get_users_serves_services_only_and_hides_erased_users() {
    let id = Identity::start().await;
    let ada = id.register("ada@example.com", "Ada").await;
    let bob = id.register("bob@example.com", "Bob").await;
    let (ada_id, bob_id) = (ada.user.expect("ada").id, bob.user.expect("bob").id);
    let mut directory = UserDirectoryServiceClient::new(id.cell.channel("identity").await);
    let ask = |ids: Vec<String>| pb::BatchGetUsersRequest { user_ids: ids };

    // A user token is refused.
    let denied = directory.batch_get_users(bearer(ask(vec![ada_id.clone()]), &ada.access_token)).await;
    assert_eq!(failure(denied), (Code::PermissionDenied, "SERVICE_PRINCIPAL_REQUIRED".into()));

    let service = issue(&id, "tasks", None).await.access_token;
    let unknown = Uuid::now_v7().to_string();
    let ids = vec![bob_id.clone(), unknown, ada_id.clone(), bob_id.clone()];
    let users = directory.batch_get_users(bearer(ask(ids), &service)).await.expect("batch").into_inner().users;
    let names: Vec<(&str, &str, &str)> =
        users.iter().map(|u| (u.id.as_str(), u.name.as_str(), u.email.as_str())).collect();
    assert_eq!(
        names,
        vec![(bob_id.as_str(), "Bob Tester", "bob@example.com"), (ada_id.as_str(), "Ada Tester", "ada@example.com")]
    );

    // Erased users come back as "Deleted user" with nothing else.
    sqlx::query("update identity.users set status = 'erased' where id = $1::uuid")
        .bind(&ada_id)
        .execute(&id.owner)
        .await
        .expect("erase");
    let users = directory.batch_get_users(bearer(ask(vec![ada_id.clone()]), &service)).await.expect("batch");
    let erased = &users.into_inner().users[0];
    assert_eq!(
        (erased.id.as_str(), erased.name.as_str(), erased.email.as_str(), erased.status.as_str()),
        (ada_id.as_str(), "Deleted user", "", "erased")
    );

    // Validation.
    let bad = directory.batch_get_users(bearer(ask(vec![bob_id, "nope".into()]), &service)).await.expect_err("bad id");
    assert_eq!((bad.code(), violated_fields(&bad)), (Code::InvalidArgument, vec!["user_ids[1]".to_string()]));
    let too_many = (0..501).map(|_| Uuid::now_v7().to_string()).collect();
    let e = directory.batch_get_users(bearer(ask(too_many), &service)).await.expect_err("501");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = directory.batch_get_users(bearer(ask(vec![]), &service)).await.expect_err("none");
    assert_eq!(e.code(), Code::InvalidArgument);
}
