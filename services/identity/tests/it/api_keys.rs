//! API keys over gRPC (flow 13): creation shown once and stored hashed, scopes checked against
//! the registry, role and email rules, ResolveApiKey, revocation everywhere, expiry, isolation.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::Code;
use trellis_kit::auth::Claims;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::api_key_service_client::ApiKeyServiceClient;
use trellis_proto::trellis::identity::v1::session_service_client::SessionServiceClient;
use uuid::Uuid;

use crate::common::{Identity, bearer, failure, violated_fields};

fn service_token(id: &Identity, name: &str) -> String {
    id.cell.keys.service_token(&id.cell.config, name, None)
}

async fn keys(id: &Identity) -> ApiKeyServiceClient<tonic::transport::Channel> {
    ApiKeyServiceClient::new(id.cell.channel("identity").await)
}

/// Registers `email` with a verified address; returns (user id, access token, org id).
pub async fn verified(id: &Identity, email: &str) -> (String, String, String) {
    let r = id.register(email, "Kim").await;
    let user = r.user.expect("user").id;
    sqlx::query("update identity.users set email_verified_at = now() where id = $1::uuid")
        .bind(&user)
        .execute(&id.owner)
        .await
        .expect("verify");
    let org = id.verify(&r.access_token).await.org.expect("org");
    (user, r.access_token, org)
}

pub async fn register_tasks_scopes(id: &Identity) {
    let request = pb::RegisterScopeResourcesRequest {
        resources: vec![pb::ScopeResource { resource: "tasks".into(), description: "Tasks".into() }],
    };
    let changed = keys(id).await.register_scope_resources(bearer(request, &service_token(id, "tasks"))).await;
    assert_eq!(changed.expect("registered").into_inner().changed, 1);
}

pub fn create(scopes: &[&str], role: pb::OrgRole) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        name: "CI".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        role: role.into(),
        expires_at: None,
    }
}

#[tokio::test]
async fn a_key_is_shown_once_stored_hashed_and_resolves_to_a_scoped_token() {
    let id = Identity::start().await;
    let (user, token, org) = verified(&id, "keys@example.com").await;
    let mut client = keys(&id).await;

    // `tasks` is not registered yet: SCOPE_UNKNOWN with the field.
    let unknown = client.create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Member), &token)).await;
    let status = unknown.expect_err("unknown scope");
    assert_eq!(failure::<()>(Err(status.clone())), (Code::InvalidArgument, "SCOPE_UNKNOWN".into()));
    assert_eq!(violated_fields(&status), vec!["scopes[0]".to_string()]);
    register_tasks_scopes(&id).await;

    let created = client
        .create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Unspecified), &token))
        .await
        .expect("created")
        .into_inner();
    let key = created.key.clone();
    let api_key = created.api_key.expect("api key");
    assert!(key.starts_with("tk_live_") && key.len() >= 48, "{key}");
    assert_eq!(api_key.prefix, key[..12]);
    assert_eq!((api_key.role, api_key.scopes.clone()), (pb::OrgRole::Member as i32, vec!["tasks:read".to_string()]));
    assert_eq!(api_key.created_by, user);
    let expires = api_key.expires_at.expect("expiry").seconds - chrono::Utc::now().timestamp();
    assert!((89 * 86_400..=90 * 86_400).contains(&expires), "90 days by default: {expires}");

    // Stored as its SHA-256 only.
    let stored: Vec<u8> = sqlx::query_scalar("select key_hash from identity.api_keys where id = $1::uuid")
        .bind(&api_key.id)
        .fetch_one(&id.owner)
        .await
        .expect("row");
    assert_eq!(stored, Sha256::digest(key.as_bytes()).to_vec());
    let got = client
        .get_api_key(bearer(pb::GetApiKeyRequest { id: api_key.id.clone() }, &token))
        .await
        .expect("get")
        .into_inner()
        .api_key
        .expect("api key");
    assert_eq!((got.prefix.as_str(), got.name.as_str()), (api_key.prefix.as_str(), "CI"));
    let listed = client.list_api_keys(bearer(pb::ListApiKeysRequest::default(), &token)).await.expect("list");
    let listed = listed.into_inner();
    assert_eq!((listed.api_keys.len(), listed.total_size), (1, 1));
    assert_eq!(id.payloads::<pb::ApiKeyCreated>("identity.api_key.created").await[0].api_key_id, api_key.id);

    // The gateway's exchange.
    let resolved =
        client.resolve_api_key(pb::ResolveApiKeyRequest { key: key.clone() }).await.expect("resolve").into_inner();
    let claims: Claims = id.verify(&resolved.access_token).await;
    assert_eq!(claims.sub, format!("api_key:{}", api_key.id));
    assert_eq!(claims.sid, Some(format!("key:{}", api_key.id)));
    assert_eq!((claims.org, claims.scopes), (Some(org.clone()), vec!["tasks:read".to_string()]));
    assert_eq!((claims.roles, claims.plan.as_deref()), (vec!["member".to_string()], Some("free")));
    assert!(claims.exp - claims.iat <= 300);
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select last_used_at from identity.api_keys where id = $1::uuid")
            .bind(&api_key.id)
            .fetch_one(&id.owner)
            .await
            .expect("row");
    assert!(used.is_some());

    for garbage in ["tk_live_nope", "", &format!("{key}x"), &key.replace('A', "B").replace('a', "A")] {
        if garbage == key {
            continue;
        }
        let e = client.resolve_api_key(pb::ResolveApiKeyRequest { key: garbage.to_string() }).await;
        assert_eq!(failure(e), (Code::Unauthenticated, "API_KEY_INVALID".into()), "{garbage}");
    }
}

#[tokio::test]
async fn revoking_a_key_stops_it_everywhere_and_expired_keys_fail() {
    let id = Identity::start().await;
    let (_, token, _) = verified(&id, "revoke@example.com").await;
    register_tasks_scopes(&id).await;
    let mut client = keys(&id).await;
    let created = client
        .create_api_key(bearer(create(&["tasks:write"], pb::OrgRole::Viewer), &token))
        .await
        .expect("created")
        .into_inner();
    let key_id = created.api_key.expect("key").id;
    let key_token = client
        .resolve_api_key(pb::ResolveApiKeyRequest { key: created.key.clone() })
        .await
        .expect("resolve")
        .into_inner()
        .access_token;
    // A key token reaches authenticated methods (and is refused by user-only ones).
    let before = client.list_api_keys(bearer(pb::ListApiKeysRequest::default(), &key_token)).await;
    assert_eq!(failure(before), (Code::PermissionDenied, "USER_TOKEN_REQUIRED".into()));

    client.revoke_api_key(bearer(pb::RevokeApiKeyRequest { id: key_id.clone() }, &token)).await.expect("revoke");
    client.revoke_api_key(bearer(pb::RevokeApiKeyRequest { id: key_id.clone() }, &token)).await.expect("idempotent");
    assert_eq!(id.outbox("identity.api_key.revoked").await.len(), 1);

    let resolve = client.resolve_api_key(pb::ResolveApiKeyRequest { key: created.key.clone() }).await;
    assert_eq!(failure(resolve), (Code::Unauthenticated, "API_KEY_INVALID".into()));
    // Its outstanding token is refused within a second (revocation feed, sid key:<id>).
    let started = std::time::Instant::now();
    loop {
        let r = client.list_api_keys(bearer(pb::ListApiKeysRequest::default(), &key_token)).await;
        if r.as_ref().is_err_and(|s| s.code() == Code::Unauthenticated) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "still accepted: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // GetSessionStatus answers for key:<id>.
    let mut sessions = SessionServiceClient::new(id.cell.channel("identity").await);
    let asked = pb::GetSessionStatusRequest { sids: vec![format!("key:{key_id}")] };
    let status = sessions.get_session_status(bearer(asked, &service_token(&id, "tasks"))).await.expect("status");
    let status = &status.into_inner().statuses[0];
    assert!(!status.active && status.revoked_at.is_some());

    // An expired key fails like a revoked one.
    let other = client
        .create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Member), &token))
        .await
        .expect("created")
        .into_inner();
    sqlx::query("update identity.api_keys set expires_at = now() - interval '1 second' where id = $1::uuid")
        .bind(&other.api_key.expect("key").id)
        .execute(&id.owner)
        .await
        .expect("expire");
    let e = client.resolve_api_key(pb::ResolveApiKeyRequest { key: other.key }).await;
    assert_eq!(failure(e), (Code::Unauthenticated, "API_KEY_INVALID".into()));
}

#[tokio::test]
async fn roles_email_verification_expiry_and_tenancy_are_enforced() {
    let id = Identity::start().await;
    register_tasks_scopes(&id).await;
    let (_, owner_token, _) = verified(&id, "owner@example.com").await;
    let mut client = keys(&id).await;

    // A member asking for an admin key; then for a member key (not an admin of the org).
    let (member, member_token, member_org) = verified(&id, "member@example.com").await;
    sqlx::query("update identity.org_members set role = 'member' where user_id = $1::uuid and org_id = $2::uuid")
        .bind(&member)
        .bind(&member_org)
        .execute(&id.owner)
        .await
        .expect("demote");
    let e = client.create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Admin), &member_token)).await;
    assert_eq!(failure(e), (Code::PermissionDenied, "ROLE_EXCEEDS_CREATOR".into()));
    let e = client.create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Member), &member_token)).await;
    assert_eq!(failure(e), (Code::PermissionDenied, "PERMISSION_DENIED".into()));

    // Unverified creators are refused.
    let unverified = id.register("new@example.com", "New").await;
    let e = client.create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Member), &unverified.access_token)).await;
    assert_eq!(failure(e), (Code::FailedPrecondition, "EMAIL_NOT_VERIFIED".into()));

    // Expiry bounds and field validation.
    let mut late = create(&["tasks:read"], pb::OrgRole::Member);
    late.expires_at = Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 400 * 86_400, nanos: 0 });
    let e = client.create_api_key(bearer(late, &owner_token)).await.expect_err("too late");
    assert_eq!(violated_fields(&e), vec!["expires_at".to_string()]);
    let mut bad = create(&["tasks:admin"], pb::OrgRole::Owner);
    bad.name = String::new();
    let e = client.create_api_key(bearer(bad, &owner_token)).await.expect_err("invalid");
    assert_eq!(violated_fields(&e), vec!["name", "scopes[0]", "role"]);

    // Another organization's key is NOT_FOUND.
    let created = client
        .create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Member), &owner_token))
        .await
        .expect("created")
        .into_inner();
    let (_, stranger, _) = verified(&id, "stranger@example.com").await;
    let key_id = created.api_key.expect("key").id;
    let e = client.get_api_key(bearer(pb::GetApiKeyRequest { id: key_id.clone() }, &stranger)).await;
    assert_eq!(failure(e), (Code::NotFound, "API_KEY_NOT_FOUND".into()));
    let e = client.revoke_api_key(bearer(pb::RevokeApiKeyRequest { id: key_id }, &stranger)).await;
    assert_eq!(failure(e), (Code::NotFound, "API_KEY_NOT_FOUND".into()));
    let e = client.get_api_key(bearer(pb::GetApiKeyRequest { id: Uuid::now_v7().to_string() }, &owner_token)).await;
    assert_eq!(failure(e).0, Code::NotFound);

    // Only services register scope resources.
    let request = pb::RegisterScopeResourcesRequest {
        resources: vec![pb::ScopeResource { resource: "x_things".into(), description: String::new() }],
    };
    let e = client.register_scope_resources(bearer(request, &owner_token)).await;
    assert_eq!(failure(e), (Code::PermissionDenied, "SERVICE_PRINCIPAL_REQUIRED".into()));
    let bad = pb::RegisterScopeResourcesRequest {
        resources: vec![pb::ScopeResource { resource: "Bad-Name".into(), description: String::new() }],
    };
    let e = client.register_scope_resources(bearer(bad, &service_token(&id, "crm"))).await.expect_err("bad");
    assert_eq!(violated_fields(&e), vec!["resources[0].resource".to_string()]);
}
