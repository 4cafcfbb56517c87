//! API keys (Rule 18): `tk_live_…` exchanged through identity's `ResolveApiKey` (a fake identity
//! here), cached, scoped; unknown keys are 401 INVALID_API_KEY.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Harness, KEYS};

fn reader() -> &'static str {
    KEYS[0].0
}

fn writer() -> &'static str {
    KEYS[1].0
}

async fn code(r: reqwest::Response) -> String {
    r.json::<Value>().await.expect("json")["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_key_is_exchanged_for_an_access_token_the_backend_receives() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/api/v1/widgets/w1")).bearer_auth(reader()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    // A public method forwards the exchanged token, never the key.
    let r = h
        .http
        .post(h.url("/api/v1/echo"))
        .bearer_auth(reader())
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .expect("request");
    let body: Value = r.json().await.expect("json");
    let forwarded = body["metadata"]["authorization"].as_str().unwrap_or_default();
    assert!(forwarded.starts_with("Bearer ey"), "{forwarded}");
    assert!(!forwarded.contains("tk_live_"), "the key itself never reaches a backend");
    assert_eq!(h.resolve_calls.load(Ordering::SeqCst), 1, "the second use came from the cache");
}

#[tokio::test]
async fn a_key_needs_the_method_scope() {
    let h = Harness::start().await;
    let r = h.http.post(h.url("/api/v1/widgets")).bearer_auth(reader()).json(&json!({"name": "A"})).send().await;
    let r = r.expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "SCOPE_MISSING");
    assert_eq!(body["error"]["metadata"]["required_scope"], "widgets:write");
    let r = h.http.post(h.url("/api/v1/widgets")).bearer_auth(writer()).json(&json!({"name": "A"})).send().await;
    assert_eq!(r.expect("request").status(), StatusCode::CREATED);
    let r = h.http.get(h.url("/api/v1/widget-prefs")).bearer_auth(writer()).send().await.expect("request");
    assert_eq!((r.status(), code(r).await), (StatusCode::FORBIDDEN, "USER_TOKEN_REQUIRED".to_string()));
}

#[tokio::test]
async fn an_unknown_key_is_401_invalid_api_key_and_remembered() {
    let h = Harness::start().await;
    let random = format!("tk_live_{}", uuid::Uuid::now_v7().simple());
    for _ in 0..3 {
        let r = h.http.get(h.url("/api/v1/widgets/w1")).bearer_auth(&random).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(code(r).await, "INVALID_API_KEY");
    }
    assert_eq!(h.resolve_calls.load(Ordering::SeqCst), 1, "invalid keys are cached negatively");
    // On a public method the bad key is dropped, not rejected.
    let r = h.http.post(h.url("/api/v1/echo")).bearer_auth(&random).json(&json!({})).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn keys_work_over_grpc_web_too() {
    let h = Harness::start().await;
    let r = h
        .http
        .post(h.url("/trellis.widgets.v1.WidgetService/GetWidget"))
        .header("content-type", "application/grpc-web+proto")
        .bearer_auth(reader())
        .body(crate::common::grpc_frame(&crate::common::encode(
            "trellis.widgets.v1.GetWidgetRequest",
            json!({"widgetId": "w1"}),
        )))
        .send()
        .await
        .expect("request");
    let frames = crate::common::web_frames(r.bytes().await.expect("body"));
    let trailers = crate::common::web_trailers(&frames.last().expect("trailers").1);
    assert_eq!(trailers["grpc-status"], "0");
}
