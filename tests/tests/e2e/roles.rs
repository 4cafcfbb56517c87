//! Custom roles through the gateway (permissions spec, flow 9), with the organization, its
//! members and team qa made through identity, so that the relationships come from identity's
//! own writes and events.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tonic::Request;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::relationship_service_client::RelationshipServiceClient;
use trellis_proto::trellis::permissions::v1::schema_service_client::SchemaServiceClient;
use uuid::Uuid;

use crate::common::{Platform, User};

const DOCUMENTS: &str = "
definition test_document {
  relation org: organization
  relation owner: user
  relation editor: user | team#member
  relation viewer: user | team#member
  relation banned: user
  permission edit = owner + editor + org->administer + org->role__test_document__edit
  permission view = (viewer + edit) - banned
  permission share = owner + org->administer
}
";

pub(crate) fn service_token(p: &Platform, service: &str, org: &str) -> String {
    p.cell.keys.service_token(&p.cell.config, service, Some(org.parse().expect("an organization id")))
}

pub(crate) fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

pub(crate) fn org_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("claims");
    claims["org"].as_str().expect("org").to_string()
}

/// Registers the test documents module (once identity's schema is there) and writes
/// `test_document:spec` in `org`.
pub(crate) async fn documents(p: &Platform, org: &str) {
    let channel = p.cell.channel("permissions").await;
    let mut schema = SchemaServiceClient::new(channel);
    let req = || pb::WriteSchemaRequest { module: "acceptance".into(), schema: DOCUMENTS.into(), dry_run: false };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = schema.write_schema(authed(req(), &service_token(p, "acceptance", org))).await {
        assert!(tokio::time::Instant::now() < deadline, "schema: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    write_documents(p, org, &[&format!("test_document:spec#org@organization:{org}")]).await;
}

/// TOUCHes `resource#relation@subject[#relation]` relationships of test documents in `org`.
pub(crate) async fn write_documents(p: &Platform, org: &str, tuples: &[&str]) {
    let updates = tuples
        .iter()
        .map(|s| {
            let (res, sub) = s.split_once('@').expect("@");
            let (res, relation) = res.split_once('#').expect("#");
            let (rt, rid) = res.split_once(':').expect(":");
            let (sub, srel) = sub.split_once('#').unwrap_or((sub, ""));
            let (st, sid) = sub.split_once(':').expect(":");
            let rel = pb::Relationship {
                resource: Some(pb::ObjectReference { object_type: rt.into(), object_id: rid.into() }),
                relation: relation.into(),
                subject: Some(pb::SubjectReference {
                    object: Some(pb::ObjectReference { object_type: st.into(), object_id: sid.into() }),
                    optional_relation: srel.into(),
                }),
            };
            pb::RelationshipUpdate { operation: pb::Operation::Touch as i32, relationship: Some(rel) }
        })
        .collect();
    let req = pb::WriteRelationshipsRequest { updates, preconditions: Vec::new(), source_version: None };
    RelationshipServiceClient::new(p.cell.channel("permissions").await)
        .write_relationships(authed(req, &service_token(p, "acceptance", org)))
        .await
        .expect("write");
}

pub(crate) async fn join(p: &Platform, by: &User, email: &str, name: &str, role: &str) -> User {
    let invited = p.post("/api/v1/invitations", Some(&by.token), json!({"email": email, "role": role})).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    let token = p.invitation_token(email).await;
    p.register(name, email, Some(&token)).await
}

async fn can_edit(p: &Platform, user: &User) -> bool {
    let body = json!({"resource": {"object_type": "test_document", "object_id": "spec"}, "permission": "edit",
                      "consistency": {"fully_consistent": true}});
    let a = p.post("/api/v1/permissions/check", Some(&user.token), body).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    a.body["permissionship"].as_str().is_some_and(|s| s.contains("has"))
}

/// Polls until `user`'s edit permission is `want` (identity's writes and events arrive after
/// its response), failing after 3 s.
async fn edit_becomes(p: &Platform, user: &User, want: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while can_edit(p, user).await != want {
        assert!(tokio::time::Instant::now() < deadline, "edit never became {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn custom_roles_over_rest_with_identity_members_and_teams() {
    let p = Platform::start().await;
    let ada = p.register("Ada", "ada@example.com", None).await;
    let org = org_of(&ada.token);
    documents(&p, &org).await;
    let vera = join(&p, &ada, "vera@example.com", "Vera", "viewer").await;
    let bob = join(&p, &ada, "bob@example.com", "Bob", "member").await;

    // Flow 9: create, with Location.
    let created = p
        .post("/api/v1/roles", Some(&ada.token), json!({"name": "reviewer", "permissions": ["test_document:edit"]}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let role = created.body["role"]["id"].as_str().expect("id").to_string();
    assert_eq!(created.location.as_deref(), Some(format!("/api/v1/roles/{role}").as_str()));
    assert_eq!(created.body["role"]["expanded_permissions"], json!(["test_document:edit"]));
    let got = p.get(&format!("/api/v1/roles/{role}"), &bob.token).await;
    assert_eq!((got.status, got.body["role"]["name"].clone()), (StatusCode::OK, json!("reviewer")));

    // Assign to vera: she can edit; unassign: she cannot.
    assert!(!can_edit(&p, &vera).await);
    let assignments = format!("/api/v1/roles/{role}/assignments");
    let a = p.post(&assignments, Some(&ada.token), json!({"subject": {"type": "user", "id": vera.id}})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert!(can_edit(&p, &vera).await);
    let listed = p.get(&assignments, &ada.token).await;
    assert_eq!(listed.body["subjects"], json!([{"type": "user", "id": vera.id}]), "{listed:?}");
    let gone = p.call(Method::DELETE, &format!("{assignments}/user/{}", vera.id), Some(&ada.token), None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{gone:?}");
    assert!(!can_edit(&p, &vera).await);

    // Validation, authorization and conflicts.
    let a =
        p.post("/api/v1/roles", Some(&ada.token), json!({"name": "v", "permissions": ["test_document:view"]})).await;
    assert_eq!((a.status, a.error_code()), (StatusCode::BAD_REQUEST, "NOT_GRANTABLE"), "{a:?}");
    assert_eq!(a.body["error"]["details"][0]["field"], json!("permissions[0]"));
    let a =
        p.post("/api/v1/roles", Some(&bob.token), json!({"name": "mine", "permissions": ["test_document:edit"]})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    let a = p
        .post("/api/v1/roles", Some(&ada.token), json!({"name": "Reviewer", "permissions": ["test_document:*"]}))
        .await;
    assert_eq!((a.status, a.error_code()), (StatusCode::CONFLICT, "ROLE_NAME_TAKEN"), "{a:?}");
    let a = p.post(&assignments, Some(&ada.token), json!({"subject": {"type": "user", "id": Uuid::now_v7()}})).await;
    assert_eq!((a.status, a.error_code()), (StatusCode::CONFLICT, "NOT_A_MEMBER"), "{a:?}");

    // Team qa through identity, containing vera; the role assigned to the team.
    let qa = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "qa"})).await;
    assert_eq!(qa.status, StatusCode::CREATED, "{qa:?}");
    let qa = qa.body["team"]["id"].as_str().expect("id").to_string();
    let added = p.post(&format!("/api/v1/teams/{qa}/members"), Some(&ada.token), json!({"user_ids": [vera.id]})).await;
    assert_eq!(added.status, StatusCode::OK, "{added:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let a = p.post(&assignments, Some(&ada.token), json!({"subject": {"type": "team", "id": qa}})).await;
        if a.status == StatusCode::OK {
            break;
        }
        // The team's relationships may still be on their way from identity.
        assert!(tokio::time::Instant::now() < deadline, "{a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edit_becomes(&p, &vera, true).await;
    let removed =
        p.call(Method::DELETE, &format!("/api/v1/teams/{qa}/members/{}", vera.id), Some(&ada.token), None).await;
    assert!(removed.status.is_success(), "{removed:?}");
    edit_becomes(&p, &vera, false).await;

    // The list: built-in roles first, then reviewer; deleting it removes it.
    let list = p.get("/api/v1/roles", &bob.token).await;
    let names: Vec<&str> =
        list.body["roles"].as_array().expect("roles").iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, vec!["owner", "admin", "member", "viewer", "reviewer"], "{list:?}");
    let deleted = p.call(Method::DELETE, &format!("/api/v1/roles/{role}"), Some(&ada.token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert_eq!(p.get(&format!("/api/v1/roles/{role}"), &ada.token).await.status, StatusCode::NOT_FOUND);
}
