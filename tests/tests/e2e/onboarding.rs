//! Identity acceptance flow 18 through the gateway: a fresh org's checklist, a step completed by
//! an event (creating a team), idempotent completion, and dismissal only without open required
//! steps.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::organizations::platform;

fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"].as_array().and_then(|s| s.iter().find(|x| x["id"] == json!(id))).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn onboarding_flow() {
    let (p, _checks) = platform().await;
    let ada = p.register("Ada", "ada@example.com", None).await;

    let fresh = p.get("/api/v1/onboarding/status", &ada.token).await;
    assert_eq!(fresh.status, StatusCode::OK, "{fresh:?}");
    let first = step(&fresh.body, "identity.create_first_team");
    assert_eq!(first["completed"], json!(false), "{fresh:?}");
    assert_eq!(first["required"], json!(true));

    let refused = p.post("/api/v1/onboarding/dismiss", Some(&ada.token), json!({})).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::CONFLICT, "REQUIRED_STEPS_OPEN"));

    let team = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "Eng"})).await;
    assert_eq!(team.status, StatusCode::CREATED, "{team:?}");
    let done = p
        .poll("/api/v1/onboarding/status", &ada.token, Duration::from_secs(10), |a| {
            step(&a.body, "identity.create_first_team")["completed"] == json!(true)
        })
        .await;
    let completed_at = step(&done.body, "identity.create_first_team")["completed_at"].clone();
    assert!(completed_at.is_string(), "{done:?}");
    assert_eq!(done.body["all_required_completed"], json!(true));

    let again =
        p.post("/api/v1/onboarding/complete", Some(&ada.token), json!({"step": "identity.create_first_team"})).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["step"]["completed_at"], completed_at);
    let unknown = p.post("/api/v1/onboarding/complete", Some(&ada.token), json!({"step": "nope"})).await;
    assert_eq!((unknown.status, unknown.error_code()), (StatusCode::NOT_FOUND, "UNKNOWN_STEP"));

    let dismissed = p.post("/api/v1/onboarding/dismiss", Some(&ada.token), json!({})).await;
    assert_eq!(dismissed.status, StatusCode::OK, "{dismissed:?}");
    assert_eq!(p.get("/api/v1/onboarding/status", &ada.token).await.body["dismissed"], json!(true));
}
