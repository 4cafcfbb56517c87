//! Identity acceptance flow 13 through the gateway: API keys created once, used with
//! `Authorization: Bearer tk_live_…` within their scopes, revoked within a second, expired,
//! unknown scopes and roles above the creator's refused.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use trellis_kit::testing::wait_until;

use crate::common::{Platform, User};

/// Marks the user's email verified (as following the emailed link would).
async fn verify_email(p: &Platform, user: &User) {
    let pool = p.cell.owner_pool().await;
    sqlx::query("update identity.users set email_verified_at = now() where id = $1::uuid")
        .bind(&user.id)
        .execute(&pool)
        .await
        .expect("verify email");
}

/// Waits for tasks to have registered its scope resource with identity at start-up.
async fn tasks_scopes_registered(p: &Platform) {
    let pool = p.cell.owner_pool().await;
    wait_until(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("select module from identity.scope_resources where resource = 'tasks'")
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .is_some_and(|m| m == "tasks")
        }
    })
    .await;
}

#[tokio::test]
async fn api_keys_work_within_their_scopes_until_revoked_or_expired() {
    let p = Platform::start().await;
    let owner = p.register("Olga", "olga@example.com", None).await;
    verify_email(&p, &owner).await;
    tasks_scopes_registered(&p).await;

    let created = p.post("/api/v1/api-keys", Some(&owner.token), json!({"name": "CI", "scopes": ["tasks:read"]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert!(created.location.is_some(), "{created:?}");
    let key = created.body["key"].as_str().expect("key shown once").to_string();
    assert!(key.starts_with("tk_live_"));
    let id = created.body["api_key"]["id"].as_str().expect("id").to_string();

    let got = p.get(&format!("/api/v1/api-keys/{id}"), &owner.token).await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(got.body["api_key"]["prefix"].as_str(), Some(&key[..12]));
    assert!(!got.body.to_string().contains(&key), "the key is never shown again");

    // Within its scopes, and only there.
    assert_eq!(p.get("/api/v1/tasks", &key).await.status, StatusCode::OK);
    let write = p.post("/api/v1/tasks", Some(&key), json!({"title": "nope"})).await;
    assert_eq!((write.status, write.error_code()), (StatusCode::FORBIDDEN, "SCOPE_MISSING"), "{write:?}");

    // An unknown scope.
    let unknown =
        p.post("/api/v1/api-keys", Some(&owner.token), json!({"name": "x", "scopes": ["nothing:read"]})).await;
    assert_eq!((unknown.status, unknown.error_code()), (StatusCode::BAD_REQUEST, "SCOPE_UNKNOWN"), "{unknown:?}");
    assert_eq!(unknown.body["error"]["details"][0]["field"], json!("scopes[0]"));

    // Revoked: refused within a second.
    let revoked = p.call(Method::DELETE, &format!("/api/v1/api-keys/{id}"), Some(&owner.token), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{revoked:?}");
    let after = p.poll("/api/v1/tasks", &key, Duration::from_secs(1), |a| a.status == StatusCode::UNAUTHORIZED).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "still accepted after revocation: {after:?}");

    // Expired.
    let second = p.post("/api/v1/api-keys", Some(&owner.token), json!({"name": "old", "scopes": ["tasks:read"]})).await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    let old_key = second.body["key"].as_str().expect("key").to_string();
    let pool = p.cell.owner_pool().await;
    sqlx::query("update identity.api_keys set expires_at = now() - interval '1 second' where id = $1::uuid")
        .bind(second.body["api_key"]["id"].as_str().expect("id"))
        .execute(&pool)
        .await
        .expect("expire");
    assert_eq!(p.get("/api/v1/tasks", &old_key).await.status, StatusCode::UNAUTHORIZED);

    // A member may not create a key with more than their role.
    let member = p.register("Max", "max@example.com", None).await;
    verify_email(&p, &member).await;
    sqlx::query("update identity.org_members set role = 'member' where user_id = $1::uuid")
        .bind(&member.id)
        .execute(&pool)
        .await
        .expect("demote");
    let exceeding = p
        .post("/api/v1/api-keys", Some(&member.token), json!({"name": "x", "scopes": ["tasks:read"], "role": "admin"}))
        .await;
    assert_eq!(
        (exceeding.status, exceeding.error_code()),
        (StatusCode::FORBIDDEN, "ROLE_EXCEEDS_CREATOR"),
        "{exceeding:?}"
    );
}
