//! The cell's permission schema through the gateway for platform administrators (permissions
//! spec, flows 1 and 2): ReadSchema and ValidateSchema.

use reqwest::StatusCode;
use serde_json::json;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::relationship_service_client::RelationshipServiceClient;
use uuid::Uuid;

use crate::common::Platform;
use crate::roles::{authed, documents, org_of, service_token};

#[tokio::test]
async fn platform_admins_read_and_validate_the_schema_over_rest() {
    let p = Platform::start().await;
    let ada = p.register("Ada", "ada@example.com", None).await;
    let bob = p.register("Bob", "bob@example.com", None).await;
    documents(&p, &org_of(&ada.token)).await;
    // Ada is a platform administrator: a platform-scope relationship identity writes.
    let rel = pb::Relationship {
        resource: Some(pb::ObjectReference { object_type: "platform".into(), object_id: "cell".into() }),
        relation: "admin".into(),
        subject: Some(pb::SubjectReference {
            object: Some(pb::ObjectReference { object_type: "user".into(), object_id: ada.id.clone() }),
            optional_relation: String::new(),
        }),
    };
    let req = pb::WriteRelationshipsRequest {
        updates: vec![pb::RelationshipUpdate { operation: pb::Operation::Touch as i32, relationship: Some(rel) }],
        preconditions: Vec::new(),
        source_version: None,
    };
    RelationshipServiceClient::new(p.cell.channel("permissions").await)
        .write_relationships(authed(req, &service_token(&p, "identity", &Uuid::nil().to_string())))
        .await
        .expect("platform admin");

    let merged = p.get("/api/v1/permissions/schema", &ada.token).await;
    assert_eq!(merged.status, StatusCode::OK, "{merged:?}");
    let text = merged.body["schema"].as_str().expect("schema");
    assert!(text.contains("definition role") && text.contains("// generated: custom-role hooks"), "{text}");
    let one = p.get("/api/v1/permissions/schema?module=acceptance", &ada.token).await;
    assert!(one.body["schema"].as_str().is_some_and(|s| s.contains("definition test_document")), "{one:?}");
    assert_eq!(p.get("/api/v1/permissions/schema", &bob.token).await.status, StatusCode::FORBIDDEN);

    // Invalid text is a 200 with valid:false and the error's line, column and code.
    let body = json!({"module": "acceptance", "schema": "definition test_x {\n  relation viewer: usr\n}"});
    let a = p.post("/api/v1/permissions/schema/validate", Some(&ada.token), body.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["valid"], json!(false));
    assert_eq!((a.body["errors"][0]["line"].clone(), a.body["errors"][0]["column"].clone()), (json!(2), json!(20)));
    assert_eq!(a.body["errors"][0]["code"], json!("UNKNOWN_TYPE"));
    let again = p.get("/api/v1/permissions/schema", &ada.token).await;
    assert_eq!(again.body["hash"], merged.body["hash"], "nothing was written");
    let a = p.post("/api/v1/permissions/schema/validate", Some(&bob.token), body).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
}
