//! The browser refresh cookie and CSRF protection (Rules 26–29) against the real identity module.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};
use trellis_kit::testing::TestCell;

const PASSWORD: &str = "vM7#qLp2-zRt9&wXk";

struct Browser {
    _cell: TestCell,
    base: String,
    origin: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        let cell = TestCell::start(vec![trellis_identity::module()]).await;
        let (addr, _handle) = trellis_gateway::spawn_for_tests(cell.config.clone(), cell.auth.clone()).await;
        let origin = trellis_gateway::cookies::origin_of(&cell.config.public_base_url);
        Browser { _cell: cell, base: format!("http://{addr}"), origin, http: reqwest::Client::new() }
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: Value) -> (StatusCode, HeaderMap, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.json().await.unwrap_or(Value::Null))
    }
}

/// The `Set-Cookie` line of cookie `name`.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn value(set_cookie: &str) -> String {
    set_cookie.split(';').next().and_then(|p| p.split_once('=')).map(|(_, v)| v.to_string()).unwrap_or_default()
}

async fn signed_up(b: &Browser) -> String {
    let email = format!("cookie-{}@example.test", uuid::Uuid::now_v7().simple());
    let (status, _, body) =
        b.post("/api/v1/auth/register", &[], json!({"email": email, "password": PASSWORD, "first_name": "Ada"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    email
}

#[tokio::test]
async fn a_browser_keeps_the_refresh_token_in_an_http_only_cookie_guarded_by_csrf() {
    let b = Browser::start().await;
    let email = signed_up(&b).await;

    // A native client (no Origin) gets the refresh token in JSON and no cookie.
    let (status, headers, body) =
        b.post("/api/v1/auth/login", &[], json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert!(set_cookie(&headers, "trellis_refresh").is_none());

    // A browser (Origin) gets it as an HttpOnly cookie, blanked in the body, with a CSRF cookie.
    let origin = [("origin", b.origin.clone())];
    let (status, headers, body) =
        b.post("/api/v1/auth/login", &origin, json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("refresh_token").is_none_or(|t| t == ""), "the token stays out of scripts' reach: {body}");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    let refresh = set_cookie(&headers, "trellis_refresh").expect("refresh cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/v1/auth", "Max-Age=2592000"] {
        assert!(refresh.contains(attribute), "{attribute} in {refresh}");
    }
    let csrf_cookie = set_cookie(&headers, "trellis_csrf").expect("csrf cookie");
    assert!(!csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"), "{csrf_cookie}");
    let csrf = value(&csrf_cookie);
    assert_eq!(headers.get("x-csrf-token").and_then(|v| v.to_str().ok()), Some(csrf.as_str()));
    let r1 = value(&refresh);
    let cookies = format!("trellis_refresh={r1}; trellis_csrf={csrf}");

    // Without the CSRF header, or from another origin, nothing reaches identity: 403 CSRF_FAILED.
    for headers in [
        vec![("origin", b.origin.clone()), ("cookie", cookies.clone())],
        vec![("origin", b.origin.clone()), ("cookie", cookies.clone()), ("x-csrf-token", "forged".into())],
        vec![("origin", "https://evil.example".into()), ("cookie", cookies.clone()), ("x-csrf-token", csrf.clone())],
    ] {
        let (status, _, body) = b.post("/api/v1/auth/refresh", &headers, json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], "CSRF_FAILED", "{body}");
    }

    // With both checks passing, the cookie fills the request and the response rotates it.
    let good = vec![("origin", b.origin.clone()), ("cookie", cookies.clone()), ("x-csrf-token", csrf.clone())];
    let (status, headers, body) = b.post("/api/v1/auth/refresh", &good, json!({})).await;
    assert_eq!(status, StatusCode::OK, "the CSRF checks did not consume R1: {body}");
    let r2 = value(&set_cookie(&headers, "trellis_refresh").expect("rotated cookie"));
    assert!(!r2.is_empty() && r2 != r1, "rotated");
    let csrf2 = value(&set_cookie(&headers, "trellis_csrf").expect("new csrf cookie"));

    // Replaying R1 is reuse: 401, and both cookies are cleared.
    let (status, headers, body) = b.post("/api/v1/auth/refresh", &good, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    for name in ["trellis_refresh", "trellis_csrf"] {
        let cleared = set_cookie(&headers, name).unwrap_or_else(|| panic!("{name} cleared"));
        assert!(cleared.contains("Max-Age=0") && value(&cleared).is_empty(), "{cleared}");
    }

    // A fresh login, then logout (with the access token) clears both cookies.
    let (_, headers, body) = b.post("/api/v1/auth/login", &origin, json!({"email": email, "password": PASSWORD})).await;
    let access = body["access_token"].as_str().expect("access token").to_string();
    let (r3, csrf3) = (
        value(&set_cookie(&headers, "trellis_refresh").expect("cookie")),
        value(&set_cookie(&headers, "trellis_csrf").expect("csrf")),
    );
    assert_ne!(csrf3, csrf2, "every session gets its own CSRF token");
    let logout = vec![
        ("origin", b.origin.clone()),
        ("cookie", format!("trellis_refresh={r3}; trellis_csrf={csrf3}")),
        ("x-csrf-token", csrf3.clone()),
    ];
    let with_token = [logout.clone(), vec![("authorization", format!("Bearer {access}"))]].concat();
    let (status, headers, body) = b.post("/api/v1/auth/logout", &with_token, json!({})).await;
    assert!(status.is_success(), "{status}: {body}");
    let cleared = set_cookie(&headers, "trellis_refresh").expect("cleared on logout");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _, body) = b.post("/api/v1/auth/refresh", &logout, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session is gone: {body}");
}

/// A gRPC-web binary call: (response headers, message payload if any, grpc-status).
async fn grpc_web(
    b: &Browser,
    method: &str,
    message: Vec<u8>,
    headers: &[(&str, String)],
) -> (HeaderMap, Option<bytes::Bytes>, String) {
    let mut request = b
        .http
        .post(format!("{}/trellis.identity.v1.AuthService/{method}", b.base))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(crate::common::grpc_frame(&message));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("request");
    let headers = response.headers().clone();
    let frames = crate::common::web_frames(response.bytes().await.expect("body"));
    let data = frames.iter().find(|(flags, _)| *flags == 0).map(|(_, p)| p.clone());
    let trailers = frames.iter().find(|(flags, _)| *flags == 0x80).map(|(_, p)| crate::common::web_trailers(p));
    let status = trailers
        .and_then(|t| t.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_string))
        .unwrap_or_else(|| headers.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("").to_string());
    (headers, data, status)
}

#[tokio::test]
async fn grpc_web_browsers_get_the_same_cookie_handling() {
    use prost::Message;
    use trellis_proto::trellis::identity::v1::{LoginRequest, LoginResponse, RefreshRequest, RefreshResponse};
    let b = Browser::start().await;
    let email = signed_up(&b).await;
    let login = LoginRequest { email: email.clone(), password: PASSWORD.into() }.encode_to_vec();
    let (headers, data, status) = grpc_web(&b, "Login", login, &[("origin", b.origin.clone())]).await;
    assert_eq!(status, "0");
    let answer = LoginResponse::decode(data.expect("a message")).expect("LoginResponse");
    assert!(answer.refresh_token.is_empty() && !answer.access_token.is_empty(), "the token moved to the cookie");
    let r1 = value(&set_cookie(&headers, "trellis_refresh").expect("refresh cookie"));
    let csrf = value(&set_cookie(&headers, "trellis_csrf").expect("csrf cookie"));
    let cookies = format!("trellis_refresh={r1}; trellis_csrf={csrf}");

    let refresh = RefreshRequest::default().encode_to_vec();
    let forged = [("origin", b.origin.clone()), ("cookie", cookies.clone()), ("x-csrf-token", "forged".into())];
    let (_, _, status) = grpc_web(&b, "Refresh", refresh.clone(), &forged).await;
    assert_eq!(status, "7", "PERMISSION_DENIED (CSRF_FAILED)");
    let good = [("origin", b.origin.clone()), ("cookie", cookies), ("x-csrf-token", csrf)];
    let (headers, data, status) = grpc_web(&b, "Refresh", refresh.clone(), &good).await;
    assert_eq!(status, "0");
    let answer = RefreshResponse::decode(data.expect("a message")).expect("RefreshResponse");
    assert!(answer.refresh_token.is_empty() && !answer.access_token.is_empty());
    let r2 = value(&set_cookie(&headers, "trellis_refresh").expect("rotated cookie"));
    assert_ne!(r1, r2);
    // Reusing R1 is refused and clears the cookies.
    let (headers, _, status) = grpc_web(&b, "Refresh", refresh, &good).await;
    assert_eq!(status, "16", "UNAUTHENTICATED");
    assert!(set_cookie(&headers, "trellis_refresh").is_some_and(|c| c.contains("Max-Age=0")));
}
