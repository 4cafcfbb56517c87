//! REST/JSON: routing, transcoding both ways, status codes, errors and credentials.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Harness, dead_url};

async fn body(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn creating_a_widget_answers_201_with_location_and_shaped_json() {
    let h = Harness::start().await;
    let response = h
        .http
        .post(h.url("/api/v1/widgets"))
        .bearer_auth(h.token())
        .json(&json!({"name": "A", "status": "active", "weight": 12, "due_at": "2025-03-30T14:00:00+02:00", "tags": ["x"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().expect("ascii").to_string();
    assert_eq!(response.headers()["content-type"], "application/json; charset=utf-8");
    let json = body(response).await;
    let widget = &json["widget"];
    let id = widget["id"].as_str().expect("id");
    assert_eq!(location, format!("/api/v1/widgets/{id}"));
    assert_eq!(widget["name"], "A");
    assert_eq!(widget["status"], "active");
    assert_eq!(widget["weight"], "12", "int64 is a string");
    assert_eq!(widget["due_at"], "2025-03-30T12:00:00.000Z");
    assert_eq!(widget["created_at"], "2025-03-30T12:00:00.123Z");
    assert_eq!(widget["tags"], json!(["x"]));
    assert_eq!(widget["visible"], false, "scalars are present with their default");
    assert_eq!(widget["parts"], json!([]), "repeated fields are present");
    assert!(widget.get("note").is_none(), "unset optional fields are omitted");
    assert!(widget.get("dimensions").is_none(), "unset messages are omitted");
}

#[tokio::test]
async fn enums_are_accepted_by_full_name_and_refused_when_unknown() {
    let h = Harness::start().await;
    let full = h
        .http
        .post(h.url("/api/v1/widgets"))
        .bearer_auth(h.token())
        .json(&json!({"name": "A", "status": "WIDGET_STATUS_IN_REVIEW"}))
        .send()
        .await
        .expect("request");
    assert_eq!(full.status(), StatusCode::CREATED);
    assert_eq!(body(full).await["widget"]["status"], "in_review");

    let bad = h
        .http
        .post(h.url("/api/v1/widgets"))
        .bearer_auth(h.token())
        .json(&json!({"name": "A", "status": "highest"}))
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let json = body(bad).await;
    assert_eq!(error_code(&json), "VALIDATION_ERROR");
    assert_eq!(json["error"]["details"][0]["field"], "status");
    assert_eq!(json["error"]["details"][0]["message"], "must be one of: active, in_review, retired");
}

#[tokio::test]
async fn an_unknown_json_field_is_a_400_naming_it() {
    let h = Harness::start().await;
    let response = h
        .http
        .post(h.url("/api/v1/widgets"))
        .bearer_auth(h.token())
        .header("x-correlation-id", "abc-1")
        .json(&json!({"name": "A", "colour": "red"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["x-correlation-id"], "abc-1");
    let json = body(response).await;
    assert_eq!(error_code(&json), "VALIDATION_ERROR");
    assert_eq!(json["error"]["details"], json!([{"field": "colour", "message": "unknown field"}]));
    assert_eq!(json["error"]["correlation_id"], "abc-1");
    assert_eq!(json["error"]["metadata"], json!({}));
    let timestamp = json["error"]["timestamp"].as_str().expect("timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{timestamp}");
}

#[tokio::test]
async fn malformed_json_wrong_media_types_and_large_bodies_are_refused() {
    let h = Harness::start_with(|gw| gw.body_limit_bytes = 1024).await;
    let token = h.token();
    let send = |content_type: &'static str, body: Vec<u8>| {
        h.http.post(h.url("/api/v1/widgets")).bearer_auth(&token).header("content-type", content_type).body(body).send()
    };
    let r = send("application/json", br#"{"name":"#.to_vec()).await.expect("request");
    assert_eq!(
        (r.status(), error_code(&body(r).await).to_string()),
        (StatusCode::BAD_REQUEST, "MALFORMED_JSON".into())
    );
    let r = send("application/json", br#"{"name":"a","name":"b"}"#.to_vec()).await.expect("request");
    assert_eq!(error_code(&body(r).await), "MALFORMED_JSON", "duplicate keys");
    let r = send("text/plain", b"name=a".to_vec()).await.expect("request");
    assert_eq!(
        (r.status(), error_code(&body(r).await).to_string()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE".into())
    );
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(1024));
    let r = send("application/json", big.into_bytes()).await.expect("request");
    assert_eq!(
        (r.status(), error_code(&body(r).await).to_string()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE".into())
    );
    // A chunked body (no Content-Length) is cut off at the limit too.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 200])));
    let r = h
        .http
        .post(h.url("/api/v1/widgets"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = h
        .http
        .get(h.url("/api/v1/widgets/w1"))
        .bearer_auth(&token)
        .header("accept", "text/html")
        .send()
        .await
        .expect("request");
    assert_eq!(
        (r.status(), error_code(&body(r).await).to_string()),
        (StatusCode::NOT_ACCEPTABLE, "NOT_ACCEPTABLE".into())
    );
}

#[tokio::test]
async fn path_variables_are_decoded_and_a_literal_route_wins() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/api/v1/widgets/a%20b")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let json = body(r).await;
    assert_eq!(json["widget"]["id"], "a b");
    assert_eq!(json["widget"]["status"], "in_review");
    assert_eq!(json["widget"]["weight"], "9007199254740993");
    assert_eq!(json["widget"]["labels"], json!({"k": "v"}));

    let r = h.http.get(h.url("/api/v1/widgets/kinds")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(body(r).await, json!({"kinds": ["round", "square"]}));

    let r = h.http.get(h.url("/api/v1/widgets/a%2Fb")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"]["details"][0]["field"], "widget_id");

    let r = h
        .http
        .post(h.url("/api/v1/widgets/w9:archive"))
        .bearer_auth(h.token())
        .json(&json!({"reason": "old"}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        body(r).await["widget"],
        json!({"id": "w9", "name": "old", "weight": "0", "count": 0, "visible": false, "ratio": 0.0, "blob": "", "tags": [], "labels": {}, "parts": [], "history": [], "display_name": ""})
    );
}

#[tokio::test]
async fn query_parameters_fill_the_request() {
    let h = Harness::start().await;
    let r = h
        .http
        .get(h.url("/api/v1/widgets?page_size=2&filter.status=active&ids=a&ids=b&since=2025-01-02&_=17"))
        .bearer_auth(h.token())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let echo = &body(r).await["echo"];
    assert_eq!(echo["page_size"], 2);
    assert_eq!(echo["filter"]["status"], "active");
    assert_eq!(echo["ids"], json!(["a", "b"]));
    assert_eq!(echo["since"], "2025-01-02T00:00:00.000Z");

    let r = h.http.get(h.url("/api/v1/widgets?colour=red")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"]["details"][0]["field"], "colour");
}

#[tokio::test]
async fn patch_derives_the_update_mask_and_delete_answers_204() {
    let h = Harness::start().await;
    let r = h
        .http
        .patch(h.url("/api/v1/widgets/w1"))
        .bearer_auth(h.token())
        .json(&json!({"name": "B", "due_at": null}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let json = body(r).await;
    let mut mask: Vec<&str> = json["update_mask"].as_str().expect("mask").split(',').collect();
    mask.sort_unstable();
    assert_eq!(mask, vec!["due_at", "name"]);
    assert_eq!(json["widget"]["id"], "w1");

    let r = h
        .http
        .patch(h.url("/api/v1/widgets/w1"))
        .bearer_auth(h.token())
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = h.http.delete(h.url("/api/v1/widgets/w1")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn an_unknown_path_is_404_and_a_wrong_method_405_with_allow() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/api/v1/nope")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body(r).await), "ROUTE_NOT_FOUND");

    let r = h.http.put(h.url("/api/v1/widgets")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
    assert_eq!(error_code(&body(r).await), "METHOD_NOT_ALLOWED");

    let r = h.http.delete(h.url("/.well-known/jwks.json")).send().await.expect("request");
    assert_eq!(r.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn protected_routes_need_a_valid_credential() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/api/v1/widgets/w1")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="trellis""#);
    assert_eq!(error_code(&body(r).await), "UNAUTHENTICATED");

    let r = h.http.get(h.url("/api/v1/widgets/w1")).bearer_auth("not-a-token").send().await.expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], r#"Bearer realm="trellis", error="invalid_token""#);
    assert_eq!(error_code(&body(r).await), "INVALID_TOKEN");

    let expired = h.token_with(|c| c.exp = chrono::Utc::now().timestamp() - 120);
    let r = h.http.get(h.url("/api/v1/widgets/w1")).bearer_auth(expired).send().await.expect("request");
    assert_eq!(error_code(&body(r).await), "TOKEN_EXPIRED");

    let r = h.http.get(h.url("/api/v1/widgets/w1")).bearer_auth("tk_live_abcdef").send().await.expect("request");
    assert_eq!(error_code(&body(r).await), "INVALID_API_KEY");
}

#[tokio::test]
async fn public_routes_drop_invalid_credentials_and_forward_valid_ones() {
    let h = Harness::start().await;
    let echo = |auth: Option<String>| {
        let mut request = h
            .http
            .post(h.url("/api/v1/echo"))
            .header("x-internal-user", "admin")
            .header("x-trellis-org", "someone-else")
            .header("x-client-ip", "1.2.3.4")
            .header("cookie", "session=1")
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .header("user-agent", "it/1")
            .json(&json!({"message": "hi"}));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let r = echo(Some("Bearer garbage".into())).await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let correlation = r.headers()["x-correlation-id"].to_str().expect("ascii").to_string();
    let seen = body(r).await["metadata"].clone();
    assert!(seen.get("authorization").is_none(), "an invalid credential is dropped: {seen}");
    for stripped in ["x-internal-user", "x-trellis-org", "cookie"] {
        assert!(seen.get(stripped).is_none(), "{stripped} must not reach the backend: {seen}");
    }
    assert_eq!(seen["x-client-ip"], "127.0.0.1");
    assert_eq!(seen["x-client-user-agent"], "it/1");
    assert_eq!(seen["x-correlation-id"], correlation.as_str());
    let traceparent = seen["traceparent"].as_str().expect("traceparent");
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{traceparent}");
    assert!(seen["grpc-timeout"].as_str().is_some(), "the deadline is forwarded: {seen}");
    assert_eq!(uuid::Uuid::parse_str(&correlation).map(|u| u.get_version_num()), Ok(7));

    let token = h.token();
    let r = echo(Some(format!("Bearer {token}"))).await.expect("request");
    assert_eq!(body(r).await["metadata"]["authorization"], format!("Bearer {token}"));
}

#[tokio::test]
async fn backend_statuses_map_to_http_and_the_envelope() {
    let h = Harness::start().await;
    let fail = |request: Value| h.http.post(h.url("/api/v1/fail")).json(&request).send();

    let r = fail(json!({"code": 5, "reason": "WIDGET_GONE", "message": "gone"})).await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let json = body(r).await;
    assert_eq!((error_code(&json), json["error"]["message"].as_str()), ("WIDGET_GONE", Some("gone")));

    let r = fail(json!({"code": 3, "reason": "VALIDATION_ERROR", "message": "bad", "field": "parts[2].quantity"}))
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body(r).await["error"]["details"], json!([{"field": "parts[2].quantity", "message": "is wrong"}]));

    let r = fail(json!({"code": 8, "reason": "RATE_LIMITED", "message": "slow down", "retry_after_seconds": 7}))
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(error_code(&body(r).await), "RATE_LIMIT_EXCEEDED");

    let r = fail(json!({"code": 9, "reason": "TEAM_FULL", "message": "full"})).await.expect("request");
    assert_eq!((r.status(), error_code(&body(r).await).to_string()), (StatusCode::CONFLICT, "TEAM_FULL".into()));

    let r = fail(json!({"code": 16, "reason": "TOKEN_EXPIRED", "message": "expired"})).await.expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));

    let r = fail(json!({"code": 14, "reason": "DATABASE_UNAVAILABLE", "message": "busy"})).await.expect("request");
    assert_eq!((r.status(), r.headers()["retry-after"].to_str().ok()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));

    let r = fail(json!({"code": 15, "reason": "TABLE_GONE", "message": "relation x is gone", "field": "sql"}))
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let json = body(r).await;
    assert_eq!(error_code(&json), "INTERNAL_ERROR");
    assert_eq!(json["error"]["message"], "An internal error occurred");
    assert_eq!(json["error"]["details"], json!([]));

    let r = h.http.get(h.url("/api/v1/widgets/boom")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!r.text().await.expect("text").contains("secret"), "internal causes never leak");

    let r = h.http.get(h.url("/api/v1/widgets/missing")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(
        (r.status(), error_code(&body(r).await).to_string()),
        (StatusCode::NOT_FOUND, "WIDGET_NOT_FOUND".into())
    );
}

#[tokio::test]
async fn a_slow_backend_is_cut_off_at_the_deadline() {
    let h = Harness::start_with(|gw| gw.default_deadline = Duration::from_millis(300)).await;
    let r = h.http.get(h.url("/api/v1/widgets/slow")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&body(r).await), "DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn an_unreachable_backend_is_503() {
    let h = Harness::start_on(&dead_url().await, |_| {}).await;
    let r = h.http.get(h.url("/api/v1/widgets/w1")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let json = body(r).await;
    assert_eq!(error_code(&json), "SERVICE_UNAVAILABLE");
    assert_eq!(json["error"]["message"], "The widgets service is unavailable; retry later");
}

#[tokio::test]
async fn routes_of_a_disabled_module_are_404_module_disabled_for_everyone() {
    let h = Harness::start_with(|gw| gw.modules = vec!["tasks".into()]).await;
    let r = h.http.get(h.url("/api/v1/widgets/w1")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let json = body(r).await;
    assert_eq!(error_code(&json), "MODULE_DISABLED");
    assert_eq!(json["error"]["metadata"], json!({"module": "widgets"}));
    // identity is always on.
    let r = h.http.get(h.url("/.well-known/jwks.json")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn jwks_is_public_cacheable_and_answers_head() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/.well-known/jwks.json")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let json = body(r).await;
    assert_eq!(json["keys"][0]["kid"], crate::common::KID);
    assert_eq!(json["keys"][0]["kty"], "OKP");
    assert_eq!(json["keys"][0]["use"], "sig");

    let r = h.http.head(h.url("/.well-known/jwks.json")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn streaming_methods_are_not_served_as_plain_json() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/api/v1/widgets:watch")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn rest_works_over_h2c_on_the_same_port() {
    let h = Harness::start().await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let r = client.get(h.url("/.well-known/jwks.json")).send().await.expect("request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::OK);
    let r = client.get(h.url("/api/v1/catalog/a/b%20c")).send().await.expect("request");
    assert_eq!(body(r).await, json!({"section": "a/b c"}));
}
