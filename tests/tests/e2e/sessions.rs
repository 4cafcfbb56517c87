//! Identity acceptance flows 3 and 4 through the gateway: refresh rotation and reuse, logout,
//! the session list, and revocation reaching another service (tasks) within one second.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{PASSWORD, Platform};

/// Login over REST: (access token, refresh token).
async fn login(p: &Platform, email: &str) -> (String, String) {
    let a = p.post("/api/v1/auth/login", None, json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let at = a.body["access_token"].as_str().expect("access token").to_string();
    let rt = a.body["refresh_token"].as_str().expect("refresh token").to_string();
    (at, rt)
}

/// Polls `GET /api/v1/tasks` until it answers 401; fails after 1 s.
async fn tasks_refuse_within_a_second(p: &Platform, token: &str) {
    let answer = p.poll("/api/v1/tasks", token, Duration::from_secs(1), |a| a.status == StatusCode::UNAUTHORIZED).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "tasks still accepts the revoked token: {answer:?}");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session_everywhere() {
    let p = Platform::start().await;
    p.register("Rita", "rita@example.com", None).await;
    let (access, r1) = login(&p, "rita@example.com").await;
    assert_eq!(p.get("/api/v1/tasks", &access).await.status, StatusCode::OK);

    let rotated = p.post("/api/v1/auth/refresh", None, json!({"refresh_token": r1})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{rotated:?}");
    let r2 = rotated.body["refresh_token"].as_str().expect("r2").to_string();
    assert_ne!(r1, r2);
    let reused = p.post("/api/v1/auth/refresh", None, json!({"refresh_token": r1})).await;
    assert_eq!((reused.status, reused.error_code()), (StatusCode::UNAUTHORIZED, "REFRESH_TOKEN_REUSED"));
    let after = p.post("/api/v1/auth/refresh", None, json!({"refresh_token": r2})).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    tasks_refuse_within_a_second(&p, &access).await;
}

#[tokio::test]
async fn sessions_are_listed_and_revoking_or_logging_out_ends_them_everywhere() {
    let p = Platform::start().await;
    p.register("Lena", "lena@example.com", None).await;
    let (a, _) = login(&p, "lena@example.com").await;
    let (b, b_refresh) = login(&p, "lena@example.com").await;

    let listed = p.get("/api/v1/users/me/sessions", &b).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    let sessions = listed.body["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 3, "registration, a and b: {listed:?}");
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == json!(true)).collect();
    assert_eq!(current.len(), 1);
    // a's session, as a itself sees it.
    let mine = p.get("/api/v1/users/me/sessions", &a).await;
    let a_id = mine.body["sessions"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["current"] == json!(true)))
        .and_then(|s| s["id"].as_str())
        .expect("a's session")
        .to_string();
    assert_ne!(current[0]["id"].as_str(), Some(a_id.as_str()));

    let deleted = p.call(Method::DELETE, &format!("/api/v1/users/me/sessions/{a_id}"), Some(&b), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    tasks_refuse_within_a_second(&p, &a).await;
    let remaining = p.get("/api/v1/users/me/sessions", &b).await;
    assert_eq!(remaining.body["sessions"].as_array().map(Vec::len), Some(2));

    let out = p.post("/api/v1/auth/logout", Some(&b), json!({})).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{out:?}");
    tasks_refuse_within_a_second(&p, &b).await;
    let refreshed = p.post("/api/v1/auth/refresh", None, json!({"refresh_token": b_refresh})).await;
    assert_eq!(refreshed.status, StatusCode::UNAUTHORIZED);

    let (c, _) = login(&p, "lena@example.com").await;
    let (d, _) = login(&p, "lena@example.com").await;
    let all = p.post("/api/v1/auth/logout-all", Some(&c), json!({})).await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    tasks_refuse_within_a_second(&p, &c).await;
    tasks_refuse_within_a_second(&p, &d).await;
}
