//! The gRPC API served by the module: schema registration, writes and evaluation as services call
//! them (service tokens carrying the org).

use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;
use trellis_kit::auth::Claims;
use trellis_kit::testing::TestCell;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::check_service_client::CheckServiceClient;
use trellis_proto::trellis::permissions::v1::relationship_service_client::RelationshipServiceClient;
use trellis_proto::trellis::permissions::v1::schema_service_client::SchemaServiceClient;

use super::*;

pub(crate) fn service_token(cell: &TestCell, service: &str, org: Uuid) -> String {
    let now = chrono_now();
    cell.keys.sign(&Claims {
        iss: cell.config.jwt_issuer.clone(),
        sub: format!("service:{service}"),
        aud: cell.config.jwt_audience.clone(),
        exp: now + 900,
        nbf: None,
        iat: now,
        jti: Uuid::now_v7().to_string(),
        org: Some(org.to_string()),
        sid: None,
        roles: Vec::new(),
        scopes: Vec::new(),
        plan: None,
    })
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(crate) fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

pub(crate) fn rel(t: &Tuple) -> pb::Relationship {
    pb::Relationship {
        resource: Some(pb::ObjectReference { object_type: t.resource.ty.clone(), object_id: t.resource.id.clone() }),
        relation: t.relation.clone(),
        subject: Some(pb::SubjectReference {
            object: Some(pb::ObjectReference { object_type: t.subject.ty.clone(), object_id: t.subject.id.clone() }),
            optional_relation: t.subject.relation.clone(),
        }),
    }
}

pub(crate) fn updates(op: pb::Operation, tuples: &[Tuple]) -> pb::WriteRelationshipsRequest {
    pb::WriteRelationshipsRequest {
        updates: tuples
            .iter()
            .map(|t| pb::RelationshipUpdate { operation: op as i32, relationship: Some(rel(t)) })
            .collect(),
        preconditions: Vec::new(),
        source_version: None,
    }
}

pub(crate) fn check_req(s: &str, consistency: Option<pb::Consistency>) -> pb::CheckRequest {
    let t = tuple(s);
    let r = rel(&t);
    pb::CheckRequest {
        resource: r.resource,
        permission: r.relation,
        subject: r.subject,
        consistency,
        max_depth: 0,
        with_trace: false,
    }
}

#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) schema: SchemaServiceClient<Channel>,
    pub(crate) rels: RelationshipServiceClient<Channel>,
    pub(crate) check: CheckServiceClient<Channel>,
}

pub(crate) async fn clients(cell: &TestCell) -> Clients {
    let url = cell.config.urls.get("permissions").expect("url").to_owned();
    let ch = Channel::from_shared(url).expect("url").connect().await.expect("connect");
    Clients {
        schema: SchemaServiceClient::new(ch.clone()),
        rels: RelationshipServiceClient::new(ch.clone()),
        check: CheckServiceClient::new(ch),
    }
}

pub(crate) async fn has(c: &mut Clients, token: &str, s: &str, consistency: Option<pb::Consistency>) -> bool {
    let r = c.check.check(authed(check_req(s, consistency), token)).await.unwrap_or_else(|e| panic!("{s}: {e:?}"));
    r.into_inner().permissionship == pb::Permissionship::HasPermission as i32
}

pub(crate) fn fresh(token: &pb::ZedToken) -> Option<pb::Consistency> {
    Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::AtLeastAsFresh(token.clone())) })
}

#[tokio::test]
async fn schema_writes_and_checks_over_grpc() {
    let cell = TestCell::start(vec![trellis_permissions::module()]).await;
    let mut c = clients(&cell).await;
    let case = case();
    let (acme, globex) = (Uuid::now_v7(), Uuid::now_v7());
    let as_identity = service_token(&cell, "identity", acme);
    let as_acceptance = service_token(&cell, "acceptance", acme);

    // Registration: each module as its own principal, idempotent.
    let req = |m: &str, s: &str| pb::WriteSchemaRequest { module: m.into(), schema: s.into(), dry_run: false };
    let e = c.schema.write_schema(authed(req("identity", IDENTITY), &as_acceptance)).await.expect_err("not the owner");
    assert_eq!(e.code(), Code::PermissionDenied);
    c.schema.write_schema(authed(req("identity", IDENTITY), &as_identity)).await.expect("identity");
    let perms = service_token(&cell, "permissions", acme);
    c.schema.write_schema(authed(req("permissions", trellis_permissions::SCHEMA), &perms)).await.expect("role");
    let w = c
        .schema
        .write_schema(authed(req("acceptance", &case.modules["acceptance"]), &as_acceptance))
        .await
        .expect("acc");
    assert!(w.into_inner().changed);
    let again = c
        .schema
        .write_schema(authed(req("acceptance", &case.modules["acceptance"]), &as_acceptance))
        .await
        .expect("again");
    assert!(!again.into_inner().changed);
    let bad = c
        .schema
        .write_schema(authed(req("acceptance", "definition test_x {\n  relation viewer: usr\n}"), &as_acceptance))
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let details = bad.get_error_details();
    assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("SCHEMA_INVALID"));
    let fields: Vec<String> =
        details.bad_request().map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect()).unwrap_or_default();
    assert_eq!(fields, vec!["schema:2:20".to_owned()]);

    // Writes: each module writes its own types only.
    let tuples: Vec<Tuple> = case.relationships.lines().filter(|l| !l.trim().is_empty()).map(tuple).collect();
    let (own, identity): (Vec<Tuple>, Vec<Tuple>) =
        tuples.into_iter().partition(|t| t.resource.ty.starts_with("test_"));
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &identity), &as_identity)).await.expect("identity");
    let e = c
        .rels
        .write_relationships(authed(updates(pb::Operation::Touch, &own), &as_identity))
        .await
        .expect_err("foreign");
    assert_eq!(
        (e.code(), e.get_error_details().error_info().map(|i| i.reason.clone())),
        (Code::PermissionDenied, Some("FOREIGN_TYPE".into()))
    );
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &own), &as_acceptance)).await.expect("acceptance");
    let e = c
        .rels
        .write_relationships(authed(
            updates(pb::Operation::Touch, &[tuple("test_document:spec#edit@user:x")]),
            &as_acceptance,
        ))
        .await
        .expect_err("a permission");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Check: the table's assertions over gRPC.
    for s in &case.assertions.yes {
        assert!(has(&mut c, &as_acceptance, s, None).await, "{s}");
    }
    for s in &case.assertions.no {
        assert!(!has(&mut c, &as_acceptance, s, None).await, "{s}");
    }
    let e = c
        .check
        .check(authed(check_req("test_document:spec#delete@user:olivia", None), &as_acceptance))
        .await
        .expect_err("unknown");
    assert_eq!(
        (e.code(), e.get_error_details().error_info().map(|i| i.reason.clone())),
        (Code::InvalidArgument, Some("UNKNOWN_PERMISSION".into()))
    );
    // A user token is refused.
    let user = cell.token(Uuid::now_v7(), acme);
    let e = c.check.check(authed(check_req("test_document:spec#edit@user:dave", None), &user)).await.expect_err("user");
    assert_eq!(e.code(), Code::PermissionDenied);

    // CheckBulk: one bad item does not fail the others.
    let item = |s: &str| {
        let r = check_req(s, None);
        pb::CheckBulkItem { resource: r.resource, permission: r.permission, subject: r.subject }
    };
    let bulk = c
        .check
        .check_bulk(authed(
            pb::CheckBulkRequest {
                items: vec![
                    item("test_document:spec#edit@user:bob"),
                    item("test_document:spec#nope@user:bob"),
                    item("test_document:spec#view@user:pat"),
                ],
                consistency: None,
            },
            &as_acceptance,
        ))
        .await
        .expect("bulk")
        .into_inner();
    let got: Vec<(i32, String)> = bulk.results.iter().map(|r| (r.permissionship, r.error_reason.clone())).collect();
    assert_eq!(
        got,
        vec![
            (pb::Permissionship::HasPermission as i32, String::new()),
            (pb::Permissionship::Unspecified as i32, "UNKNOWN_PERMISSION".into()),
            (pb::Permissionship::NoPermission as i32, String::new()),
        ]
    );

    // LookupResources, paged by the cursor.
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let req = pb::LookupResourcesRequest {
            resource_type: "test_document".into(),
            permission: "view".into(),
            subject: check_req("x:y#z@user:bob", None).subject,
            consistency: None,
            limit: 2,
            cursor: cursor.clone(),
            allow_org_wide: false,
        };
        let mut stream = c.check.lookup_resources(authed(req, &as_acceptance)).await.expect("lookup").into_inner();
        let mut page = Vec::new();
        while let Some(m) = stream.message().await.expect("message") {
            page.push(m.resource_id.clone());
            cursor = m.after_cursor;
        }
        let n = page.len();
        ids.extend(page);
        if n < 2 {
            break;
        }
    }
    assert_eq!(ids, vec!["handbook", "public", "spec"]);

    // Read your writes with the token; a token of another org is refused.
    let vera = "test_document:spec#view@user:vera";
    let grant = [tuple("test_document:spec#viewer@user:vera")];
    let t1 = c
        .rels
        .write_relationships(authed(updates(pb::Operation::Touch, &grant), &as_acceptance))
        .await
        .expect("w")
        .into_inner();
    let t1 = t1.written_at.expect("token");
    assert!(has(&mut c, &as_acceptance, vera, fresh(&t1)).await);
    let t2 = c
        .rels
        .write_relationships(authed(updates(pb::Operation::Delete, &grant), &as_acceptance))
        .await
        .expect("d")
        .into_inner();
    assert!(!has(&mut c, &as_acceptance, vera, fresh(&t2.written_at.expect("token"))).await);
    let in_globex = service_token(&cell, "acceptance", globex);
    let e = c.check.check(authed(check_req(vera, fresh(&t1)), &in_globex)).await.expect_err("mismatch");
    assert_eq!(e.get_error_details().error_info().map(|i| i.reason.clone()), Some("TOKEN_ORG_MISMATCH".into()));
    // globex sees nothing of acme.
    assert!(!has(&mut c, &in_globex, "test_document:spec#edit@user:carol", None).await);
}
