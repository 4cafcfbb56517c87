//! "Who can see this and why" through the gateway (permissions spec, flow 10): MyAccess,
//! AccessAudit and Check with a trace, with the organization, its members and team eng made
//! through identity.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Platform, User};
use crate::roles::{documents, join, org_of, write_documents};

struct Acme {
    p: Platform,
    org: String,
    ada: User,
    bob: User,
    dave: User,
    eng: String,
}

/// Ada owns the org; bob and dave are members; bob is in team eng; dave owns
/// `test_document:spec`, on which eng's members are editors.
async fn acme() -> Acme {
    let p = Platform::start().await;
    let ada = p.register("Ada", "ada@example.com", None).await;
    let org = org_of(&ada.token);
    documents(&p, &org).await;
    let bob = join(&p, &ada, "bob@example.com", "Bob", "member").await;
    let dave = join(&p, &ada, "dave@example.com", "Dave", "member").await;
    let eng = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "eng"})).await;
    assert_eq!(eng.status, StatusCode::CREATED, "{eng:?}");
    let eng = eng.body["team"]["id"].as_str().expect("id").to_string();
    let added = p.post(&format!("/api/v1/teams/{eng}/members"), Some(&ada.token), json!({"user_ids": [bob.id]})).await;
    assert_eq!(added.status, StatusCode::OK, "{added:?}");
    write_documents(
        &p,
        &org,
        &[
            &format!("test_document:spec#owner@user:{}", dave.id),
            &format!("test_document:spec#editor@team:{eng}#member"),
        ],
    )
    .await;
    Acme { p, org, ada, bob, dave, eng }
}

/// Polls GET `path` as `user` until `done`, failing after 3 s (identity's team writes arrive
/// after its response).
async fn eventually(p: &Platform, path: &str, user: &User, done: impl Fn(&Value) -> bool) -> Value {
    let a = p.poll(path, &user.token, Duration::from_secs(3), |a| a.status == StatusCode::OK && done(&a.body)).await;
    assert!(done(&a.body), "{path}: {a:?}");
    a.body
}

#[tokio::test]
async fn my_access_and_the_audit_explain_who_has_access() {
    let Acme { p, org, ada, bob, dave, eng } = acme().await;

    // bob's test documents: spec, through team eng.
    let mine = "/api/v1/permissions/my-access?namespace=test_document";
    let body = eventually(&p, mine, &bob, |b| b["total_size"] == json!(1)).await;
    assert_eq!(
        body["objects"],
        json!([{"object_id": "spec", "relations": ["editor"], "permissions": ["edit", "view"]}])
    );
    let a = p.get(&format!("{mine}&permission=share"), &bob.token).await;
    assert_eq!((a.status, a.body["total_size"].clone()), (StatusCode::OK, json!(0)), "{a:?}");
    let a = p.get("/api/v1/permissions/my-access?namespace=nope", &bob.token).await;
    assert_eq!((a.status, a.error_code()), (StatusCode::BAD_REQUEST, "UNKNOWN_TYPE"), "{a:?}");

    // Who has access to spec and why: dave (its owner) may ask; ada as an admin too.
    let audit = "/api/v1/permissions/audit?namespace=test_document&object_id=spec";
    let a = p.get(audit, &dave.token).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let subjects = a.body["subjects"].as_array().expect("subjects").clone();
    let mut ids: Vec<&str> = subjects.iter().filter_map(|s| s["subject"]["object"]["object_id"].as_str()).collect();
    ids.sort();
    let mut want = vec![ada.id.as_str(), bob.id.as_str(), dave.id.as_str()];
    want.sort();
    assert_eq!(ids, want, "{a:?}");
    let row = |id: &str| subjects.iter().find(|s| s["subject"]["object"]["object_id"] == json!(id)).cloned();
    let bob_row = row(&bob.id).expect("bob");
    assert_eq!(bob_row["permissions"], json!(["edit", "view"]));
    assert_eq!(
        bob_row["grants"][0]["path"],
        json!([format!("test_document:spec#editor@team:{eng}#member"), format!("team:{eng}#member@user:{}", bob.id)])
    );
    // Ada (owner of the org, and eng's maintainer) shares spec through the org.
    let ada_row = row(&ada.id).expect("ada");
    let share =
        ada_row["grants"].as_array().expect("grants").iter().find(|g| g["permission"] == json!("share")).cloned();
    assert_eq!(
        share.expect("share")["path"],
        json!(["org->administer", format!("organization:{org}#owner@user:{}", ada.id)])
    );
    assert_eq!(p.get(audit, &ada.token).await.status, StatusCode::OK);
    let a = p.get(audit, &bob.token).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");

    // Check with a trace: why bob can edit spec, and, once banned, why he cannot view it.
    let traced = |permission: &str| {
        json!({"resource": {"object_type": "test_document", "object_id": "spec"}, "permission": permission,
               "subject": {"object": {"object_type": "user", "object_id": bob.id}}, "with_trace": true})
    };
    let a = p.post("/api/v1/permissions/check", Some(&ada.token), traced("edit")).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["permissionship"], json!("has_permission"), "{a:?}");
    assert_eq!(
        a.body["trace"]["explanation"],
        json!([format!("user:{} ∈ team:{eng}#member → test_document:spec#editor ⇒ edit", bob.id)])
    );
    assert_eq!(a.body["trace"]["root"]["kind"], json!("permission"));
    write_documents(&p, &org, &[&format!("test_document:spec#banned@user:{}", bob.id)]).await;
    let a = p.post("/api/v1/permissions/check", Some(&ada.token), traced("view")).await;
    assert_eq!(a.body["permissionship"], json!("no_permission"), "{a:?}");
    let why = a.body["trace"]["explanation"][0].as_str().unwrap_or_default().to_string();
    assert!(why.contains("test_document:spec#banned"), "{why}");
    // Members cannot trace.
    let a = p.post("/api/v1/permissions/check", Some(&bob.token), traced("edit")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
}
