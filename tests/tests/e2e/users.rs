//! The current user through the gateway: `GET /users/me` after sign-up (flow 1) and
//! `PATCH /users/me` with the mask derived from the body, deactivation (flow 14) and the export
//! (flow 15).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{PASSWORD, Platform};

#[tokio::test]
async fn the_current_user_reads_and_updates_their_profile() {
    let p = Platform::start().await;
    let ada = p.register("Ada", "ada@example.com", None).await;

    let me = p.get("/api/v1/users/me", &ada.token).await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.body["email"], "ada@example.com");
    assert_eq!(me.body["active_organization"]["role"], "owner");
    assert_eq!(me.body["active_organization"]["name"], "Ada's workspace");

    let bad = p
        .call(
            Method::PATCH,
            "/api/v1/users/me",
            Some(&ada.token),
            Some(json!({"timezone": "Mars/Base", "locale": "pt-BR"})),
        )
        .await;
    assert_eq!((bad.status, bad.error_code()), (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"));
    assert_eq!(bad.body["error"]["details"][0]["field"], "timezone");

    let good = p
        .call(
            Method::PATCH,
            "/api/v1/users/me",
            Some(&ada.token),
            Some(json!({"last_name": "Lovelace", "timezone": "Europe/London"})),
        )
        .await;
    assert_eq!(good.status, StatusCode::OK, "{good:?}");
    assert_eq!(good.body["name"], "Ada Lovelace");
    let me = p.get("/api/v1/users/me", &ada.token).await;
    assert_eq!((me.body["timezone"].as_str(), me.body["locale"].as_str()), (Some("Europe/London"), Some("en")));

    let own = p.get(&format!("/api/v1/users/{}", ada.id), &ada.token).await;
    assert_eq!((own.status, own.body["name"].as_str()), (StatusCode::OK, Some("Ada Lovelace")));
    let bob = p.register("Bob", "bob@example.com", None).await;
    let stranger = p.get(&format!("/api/v1/users/{}", bob.id), &ada.token).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deactivation_needs_a_transfer_first_and_then_signs_the_user_out_everywhere() {
    let p = Platform::start().await;
    let owner = p.register("Olive", "olive@example.com", None).await;
    let invited = p.post("/api/v1/invitations", Some(&owner.token), json!({"email": "mia@example.com"})).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    let token = p.invitation_token("mia@example.com").await;
    let mia = p.register("Mia", "mia@example.com", Some(&token)).await;
    let second = p.login("mia@example.com").await;

    let body = json!({"confirmation": "DEACTIVATE", "password": PASSWORD});
    let refused = p.post("/api/v1/users/me/deactivate", Some(&owner.token), body.clone()).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::CONFLICT, "OWNERSHIP_TRANSFER_REQUIRED"));

    assert_eq!(p.get("/api/v1/tasks", &mia.token).await.status, StatusCode::OK);
    let done = p.post("/api/v1/users/me/deactivate", Some(&mia.token), body).await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert!(done.body["erase_after"].is_string());
    for token in [&mia.token, &second.token] {
        let gone = p.poll("/api/v1/tasks", token, Duration::from_secs(1), |a| a.status == StatusCode::UNAUTHORIZED);
        assert_eq!(gone.await.status, StatusCode::UNAUTHORIZED, "every session ends within a second");
    }
    let login = p.post("/api/v1/auth/login", None, json!({"email": "mia@example.com", "password": PASSWORD})).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn past_the_window_a_deleted_account_is_erased_and_leaves_the_organization() {
    let mut settings = trellis_identity::IdentityConfig::from_env().expect("identity settings");
    settings.org_purge_interval = Duration::from_millis(200);
    let p = Platform::start_with_identity(Some(settings)).await;
    let owner = p.register("Olive", "olive@example.com", None).await;
    let invited = p.post("/api/v1/invitations", Some(&owner.token), json!({"email": "mia@example.com"})).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    let token = p.invitation_token("mia@example.com").await;
    let mia = p.register("Mia", "mia@example.com", Some(&token)).await;
    let org = crate::organizations::org_of(&p, &owner.token);

    let deleted =
        p.call(Method::DELETE, "/api/v1/users/me", Some(&mia.token), Some(json!({"password": PASSWORD}))).await;
    assert!(deleted.status.is_success(), "{deleted:?}");

    // The test clock: the 30 days have passed.
    let db = p.cell.owner_pool().await;
    sqlx::query("update identity.users set erase_after = now() - interval '1 minute' where id = $1::uuid")
        .bind(&mia.id)
        .execute(&db)
        .await
        .expect("test clock");
    let status = || async {
        let s: String = sqlx::query_scalar("select status from identity.users where id = $1::uuid")
            .bind(&mia.id)
            .fetch_one(&db)
            .await
            .expect("status");
        s == "erased"
    };
    trellis_kit::testing::wait_until(Duration::from_secs(10), status).await;
    let members = p.get(&format!("/api/v1/organizations/{org}/members"), &owner.token).await;
    let ids: Vec<&str> =
        members.body["members"].as_array().expect("members").iter().filter_map(|m| m["user_id"].as_str()).collect();
    assert_eq!(ids, [owner.id.as_str()], "{members:?}");
    let (email, name, status): (String, String, String) =
        sqlx::query_as("select email, first_name, status from identity.users where id = $1::uuid")
            .bind(&mia.id)
            .fetch_one(&db)
            .await
            .expect("user");
    assert_eq!(
        (email, name.as_str(), status.as_str()),
        (format!("erased+{}@invalid", mia.id), "Deleted user", "erased")
    );
    let login = p.post("/api/v1/auth/login", None, json!({"email": "mia@example.com", "password": PASSWORD})).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    // The address is free again.
    p.register("Mia", "mia@example.com", None).await;
}

/// Flow 15: `GET /users/me/export` is JSON with the profile, memberships, sessions, teams and
/// settings, and no field holds a hash, a secret or a token.
#[tokio::test]
async fn the_export_is_json_with_the_callers_data_and_no_hash_secret_or_token() {
    let (p, _checks) = crate::organizations::platform().await;
    let ada = p.register("Ada", "ada.export@example.com", None).await;
    let eng = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "eng"})).await;
    assert_eq!(eng.status, StatusCode::CREATED, "{eng:?}");
    let week = json!({"scope": "user", "namespace": "general", "key": "week_start", "value": "saturday"});
    let set = p.call(Method::PUT, "/api/v1/settings", Some(&ada.token), Some(week)).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    let again = p.login("ada.export@example.com").await;

    let export = p.get("/api/v1/users/me/export", &ada.token).await;
    assert_eq!(export.status, StatusCode::OK, "{export:?}");
    let doc = &export.body;
    assert_eq!(
        (doc["profile"]["id"].as_str(), doc["profile"]["email"].as_str()),
        (Some(ada.id.as_str()), Some("ada.export@example.com"))
    );
    let memberships = doc["memberships"].as_array().expect("memberships");
    assert_eq!(memberships.len(), 1, "{doc}");
    let own = &memberships[0];
    assert_eq!((own["role"].as_str(), own["personal"].as_bool()), (Some("owner"), Some(true)));
    assert_eq!((own["teams"][0]["name"].as_str(), own["teams"][0]["role"].as_str()), (Some("eng"), Some("maintainer")));
    assert_eq!(own["settings"][0]["key"], "week_start");
    assert_eq!(own["settings"][0]["value"], "saturday");
    assert_eq!(doc["sessions"].as_array().map(Vec::len), Some(2), "{doc}");
    assert!(doc["sessions"][0]["session"]["user_agent"].is_string(), "{doc}");

    let text = doc.to_string();
    for secret in [PASSWORD, ada.token.as_str(), again.token.as_str(), "$argon2"] {
        assert!(!text.contains(secret), "the export holds {secret}");
    }
    for field in ["hash", "secret", "token"] {
        assert!(!text.contains(field), "a field named like {field} in {text}");
    }
}
