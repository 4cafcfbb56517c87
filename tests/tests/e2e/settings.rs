//! Identity acceptance flow 16 through the gateway: org and user settings, who may write them,
//! resolution with its source, and validation (schema with a JSON pointer, the 16 KB limit).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Platform, User};
use crate::organizations::{invite_and_join, platform};

async fn put(p: &Platform, who: &User, body: Value) -> crate::common::Answer {
    p.call(Method::PUT, "/api/v1/settings", Some(&who.token), Some(body)).await
}

fn entry<'a>(answer: &'a Value, key: &str) -> &'a Value {
    answer["settings"].as_array().and_then(|s| s.iter().find(|e| e["key"] == json!(key))).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn settings_flow() {
    let (p, _checks) = platform().await;
    let ada = p.register("Ada", "ada@example.com", None).await;
    let mia = invite_and_join(&p, &ada, "mia@example.com", "Mia", json!({"role": "member"})).await;

    let color = json!({"scope": "org", "namespace": "branding", "key": "primary_color", "value": "#0f766e"});
    let set = put(&p, &ada, color.clone()).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    assert_eq!(set.body["setting"]["value"], json!("#0f766e"));
    assert_eq!(put(&p, &mia, color).await.status, StatusCode::FORBIDDEN);

    let org_week = json!({"scope": "org", "namespace": "general", "key": "week_start", "value": "sunday"});
    assert_eq!(put(&p, &ada, org_week).await.status, StatusCode::OK);
    let own_week = json!({"scope": "user", "namespace": "general", "key": "week_start", "value": "saturday"});
    assert_eq!(put(&p, &mia, own_week).await.status, StatusCode::OK);

    let effective = p.get("/api/v1/settings/effective?namespace=general", &mia.token).await;
    assert_eq!(effective.status, StatusCode::OK, "{effective:?}");
    let week = entry(&effective.body, "week_start");
    assert_eq!((week["value"].clone(), week["source"].clone()), (json!("saturday"), json!("user")), "{effective:?}");

    let deleted = p.call(Method::DELETE, "/api/v1/settings/user/general/week_start", Some(&mia.token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    let effective = p.get("/api/v1/settings/effective?namespace=general", &mia.token).await;
    let week = entry(&effective.body, "week_start");
    assert_eq!((week["value"].clone(), week["source"].clone()), (json!("sunday"), json!("org")), "{effective:?}");
    let defaults = p.get("/api/v1/settings/effective?namespace=appearance", &mia.token).await;
    assert_eq!(entry(&defaults.body, "theme")["source"], json!("default"));

    let listed = p.get("/api/v1/settings?scope=org", &mia.token).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["settings"].as_array().map(Vec::len), Some(2), "{listed:?}");

    // A registered JSON schema with a nested value: the field names the JSON pointer.
    let bad = json!({"scope": "org", "namespace": "branding", "key": "primary_color", "value": "teal"});
    let refused = put(&p, &ada, bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    assert_eq!(refused.body["error"]["details"][0]["field"], json!("value"));
    let big = json!({"scope": "user", "namespace": "custom", "key": "notes", "value": "x".repeat(17 * 1024)});
    let refused = put(&p, &ada, big).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    let unknown = json!({"scope": "org", "namespace": "general", "key": "nope", "value": 1});
    let refused = put(&p, &ada, unknown).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::BAD_REQUEST, "SETTING_UNKNOWN"));
}
