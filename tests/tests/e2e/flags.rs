//! Identity acceptance flow 17 through the gateway: a platform admin's feature flag reaches the
//! users and organizations it targets, non-admins cannot change it, and a change applies at once.

use reqwest::{Method, StatusCode};
use serde_json::json;
use trellis_kit::auth::Claims;
use uuid::Uuid;

use crate::common::{Platform, User};
use crate::organizations::{org_of, platform};

fn platform_admin(p: &Platform) -> String {
    let now = chrono::Utc::now().timestamp();
    p.cell.keys.sign(&Claims {
        iss: p.cell.config.jwt_issuer.clone(),
        sub: "service:platform-admin".into(),
        aud: p.cell.config.jwt_audience.clone(),
        exp: now + 300,
        nbf: None,
        iat: now,
        jti: Uuid::now_v7().to_string(),
        org: None,
        sid: None,
        roles: Vec::new(),
        scopes: Vec::new(),
        plan: None,
    })
}

async fn kanban(p: &Platform, who: &User) -> serde_json::Value {
    let answer = p.get("/api/v1/features", &who.token).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.body["flags"]["kanban_view"].clone()
}

#[tokio::test]
async fn feature_flags_flow() {
    let (p, _checks) = platform().await;
    let admin = platform_admin(&p);
    let u1 = p.register("Una", "u1@example.com", None).await;
    let o2 = p.register("Otto", "o2@example.com", None).await;
    let other = p.register("Sam", "sam@example.com", None).await;
    let o2_id = org_of(&p, &o2.token);

    let body = json!({
        "key": "kanban_view",
        "description": "Kanban boards",
        "rules": [
            {"type": "user", "ids": [u1.id], "enabled": true},
            {"type": "org", "ids": [o2_id], "enabled": true},
            {"type": "percentage", "value": 25, "enabled": true}
        ]
    });
    let created = p.post("/api/v1/admin/feature-flags", Some(&admin), body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.body["flag"]["rules"][2]["type"], json!("percentage"));
    assert_eq!(p.post("/api/v1/admin/feature-flags", Some(&u1.token), body).await.status, StatusCode::FORBIDDEN);

    assert_eq!(kanban(&p, &u1).await, json!(true));
    assert_eq!(kanban(&p, &o2).await, json!(true));
    let features = p.get("/api/v1/features", &other.token).await;
    assert!(features.body["modules"].as_array().is_some_and(|m| m.contains(&json!("identity"))), "{features:?}");

    let patch = json!({"enabled": true, "rules": []});
    let refused =
        p.call(Method::PATCH, "/api/v1/admin/feature-flags/kanban_view", Some(&other.token), Some(patch.clone())).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let patched = p.call(Method::PATCH, "/api/v1/admin/feature-flags/kanban_view", Some(&admin), Some(patch)).await;
    assert_eq!(patched.status, StatusCode::OK, "{patched:?}");
    assert_eq!(patched.body["flag"]["description"], json!("Kanban boards"), "the mask comes from the body");
    // Visible at once, well within the one second the spec allows.
    assert_eq!(kanban(&p, &other).await, json!(true));

    let deleted = p.call(Method::DELETE, "/api/v1/admin/feature-flags/kanban_view", Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(kanban(&p, &u1).await, serde_json::Value::Null);
}
