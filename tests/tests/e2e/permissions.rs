//! Permissions through the gateway (spec "End-to-end flows" 8 and the REST check): sharing with
//! Grant and Revoke under the no-escalation and membership rules, and end users checking their
//! own access. Identity's org and team writes are made here as identity's service would make
//! them (the identity-event mirror is a separate piece of work).

use serde_json::{Value, json};
use tonic::Request;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::relationship_service_client::RelationshipServiceClient;
use trellis_proto::trellis::permissions::v1::schema_service_client::SchemaServiceClient;
use uuid::Uuid;

use crate::common::Platform;

const IDENTITY: &str = include_str!("../../../services/identity/schema.zed");
const ACCEPTANCE: &str = "
definition test_document {
  relation org: organization
  relation owner: user
  relation editor: user | team#member
  relation viewer: user | user:* | team#member
  relation approver: user | team#member
  relation banned: user
  permission edit = owner + editor + org->administer
  permission view = (viewer + edit) - banned
  permission approve = approver & org->contribute
  permission share = owner + org->administer
}
";

fn service_token(p: &Platform, service: &str, org: Uuid) -> String {
    p.cell.keys.service_token(&p.cell.config, service, Some(org))
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

fn touch(s: &str) -> pb::RelationshipUpdate {
    let (res, sub) = s.split_once('@').expect("@");
    let (res, relation) = res.split_once('#').expect("#");
    let (rt, rid) = res.split_once(':').expect(":");
    let (sub, srel) = sub.split_once('#').unwrap_or((sub, ""));
    let (st, sid) = sub.split_once(':').expect(":");
    pb::RelationshipUpdate {
        operation: pb::Operation::Touch as i32,
        relationship: Some(pb::Relationship {
            resource: Some(pb::ObjectReference { object_type: rt.into(), object_id: rid.into() }),
            relation: relation.into(),
            subject: Some(pb::SubjectReference {
                object: Some(pb::ObjectReference { object_type: st.into(), object_id: sid.into() }),
                optional_relation: srel.into(),
            }),
        }),
    }
}

struct People {
    acme: Uuid,
    dave: Uuid,
    bob: Uuid,
    vera: Uuid,
    carol: Uuid,
    gina: Uuid,
}

async fn setup(p: &Platform) -> People {
    let people = People {
        acme: Uuid::now_v7(),
        dave: Uuid::now_v7(),
        bob: Uuid::now_v7(),
        vera: Uuid::now_v7(),
        carol: Uuid::now_v7(),
        gina: Uuid::now_v7(),
    };
    let channel = p.cell.channel("permissions").await;
    let mut schema = SchemaServiceClient::new(channel.clone());
    for (module, text) in
        [("identity", IDENTITY), ("permissions", trellis_permissions::SCHEMA), ("acceptance", ACCEPTANCE)]
    {
        let req = pb::WriteSchemaRequest { module: module.into(), schema: text.into(), dry_run: false };
        schema.write_schema(authed(req, &service_token(p, module, people.acme))).await.expect("schema");
    }
    let org = format!("organization:{}", people.acme);
    let People { dave, bob, vera, carol, .. } = people;
    let identity: Vec<String> = vec![
        format!("{org}#admin@user:{carol}"),
        format!("{org}#member@user:{dave}"),
        format!("{org}#member@user:{bob}"),
        format!("{org}#member@user:{vera}"),
        format!("team:eng#org@{org}"),
        format!("team:eng#member@user:{bob}"),
    ];
    let docs: Vec<String> = vec![
        format!("test_document:spec#org@{org}"),
        format!("test_document:spec#owner@user:{dave}"),
        "test_document:spec#editor@team:eng#member".into(),
    ];
    let mut rels = RelationshipServiceClient::new(channel);
    for (service, list) in [("identity", identity), ("acceptance", docs)] {
        let req = pb::WriteRelationshipsRequest {
            updates: list.iter().map(|s| touch(s)).collect(),
            preconditions: Vec::new(),
            source_version: None,
        };
        rels.write_relationships(authed(req, &service_token(p, service, people.acme))).await.expect("write");
    }
    people
}

fn has(body: &Value) -> bool {
    body["permissionship"].as_str().is_some_and(|s| s.contains("has"))
}

async fn check(p: &Platform, token: &str, permission: &str, subject: Option<Uuid>) -> crate::common::Answer {
    let mut body = json!({"resource": {"object_type": "test_document", "object_id": "spec"}, "permission": permission});
    if let Some(s) = subject {
        body["subject"] = json!({"object": {"object_type": "user", "object_id": s.to_string()}});
    }
    p.post("/api/v1/permissions/check", Some(token), body).await
}

fn grant_body(relation: &str, user: Uuid) -> Value {
    json!({"namespace": "test_document", "object_id": "spec", "relation": relation,
           "subject": {"type": "user", "id": user.to_string()}})
}

#[tokio::test]
async fn sharing_respects_share_escalation_and_membership_and_users_check_their_own_access() {
    let p = Platform::start().await;
    let people = setup(&p).await;
    let token = |u: Uuid| p.cell.token(u, people.acme);
    let (dave, bob, vera, carol) = (token(people.dave), token(people.bob), token(people.vera), token(people.carol));

    // End users check their own access; the subject defaults to the caller.
    let a = check(&p, &vera, "view", None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(!has(&a.body));
    assert!(has(&check(&p, &bob, "edit", None).await.body));
    // Another subject needs organization#administer.
    let a = check(&p, &bob, "edit", Some(people.dave)).await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    let a = check(&p, &carol, "edit", Some(people.bob)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(has(&a.body));
    // An unknown permission is a 400.
    assert_eq!(check(&p, &bob, "delete", None).await.status, 400);

    // Flow 8: dave (owner) grants viewer to vera.
    let a = p.post("/api/v1/permissions/grant", Some(&dave), grant_body("viewer", people.vera)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.body["written_at"]["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(has(&check(&p, &vera, "view", None).await.body));
    let pool = p.cell.owner_pool().await;
    let staged: i64 =
        sqlx::query_scalar("select count(*) from permissions.outbox where event_type = 'permissions.access.granted'")
            .fetch_one(&pool)
            .await
            .expect("outbox");
    assert_eq!(staged, 1, "the grant publishes permissions.access.granted");
    // bob edits but cannot share.
    let a = p.post("/api/v1/permissions/grant", Some(&bob), grant_body("viewer", people.vera)).await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    // dave does not hold approve, so he cannot grant approver.
    let a = p.post("/api/v1/permissions/grant", Some(&dave), grant_body("approver", people.vera)).await;
    assert_eq!((a.status.as_u16(), a.error_code()), (403, "ESCALATION"), "{:?}", a.body);
    // A structural relation.
    let a = p.post("/api/v1/permissions/grant", Some(&dave), grant_body("org", people.vera)).await;
    assert_eq!((a.status.as_u16(), a.error_code()), (400, "NOT_GRANTABLE_RELATION"), "{:?}", a.body);
    // Someone outside the org.
    let a = p.post("/api/v1/permissions/grant", Some(&dave), grant_body("viewer", people.gina)).await;
    assert_eq!((a.status.as_u16(), a.error_code()), (409, "NOT_A_MEMBER"), "{:?}", a.body);
    // Revoke: vera loses view; revoking again is fine.
    for _ in 0..2 {
        let a = p.post("/api/v1/permissions/revoke", Some(&dave), grant_body("viewer", people.vera)).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    assert!(!has(&check(&p, &vera, "view", None).await.body));
    let revoked: i64 =
        sqlx::query_scalar("select count(*) from permissions.outbox where event_type = 'permissions.access.revoked'")
            .fetch_one(&pool)
            .await
            .expect("outbox");
    assert_eq!(revoked, 1, "only the effective revoke publishes");
}
