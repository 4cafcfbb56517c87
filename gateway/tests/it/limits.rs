//! Rate limits (Rules 30–35) against the Redis of `cargo xtask test`, one test per limiter, and
//! API-key scopes (Rule 19).
//!
//! Every test sends from its own client IP (`X-Forwarded-For` from a trusted proxy), user, key
//! and org, so tests sharing one Redis never share a counter.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use trellis_gateway::GatewayConfig;
use trellis_gateway::ratelimit::{Limit, PlanLimits};

use crate::common::{Harness, dead_url, redis_url, spawn_widgets};

fn limit(s: &str) -> Limit {
    s.parse().expect("limit")
}

fn plans(s: &str) -> PlanLimits {
    s.parse().expect("plan limits")
}

/// A documentation-range IP no other test uses.
fn fresh_ip() -> String {
    let n: u32 = rand::random();
    format!("198.{}.{}.{}", 18 + (n % 2), (n >> 8) & 0xff, (n >> 16) & 0xff)
}

async fn start(tune: impl FnOnce(&mut GatewayConfig)) -> Harness {
    Harness::start_with(|s| {
        s.edge.trusted_proxies = vec![trellis_gateway::http::Cidr::parse("127.0.0.0/8").expect("cidr")];
        tune(s);
    })
    .await
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn echo(h: &Harness, ip: &str) -> reqwest::Response {
    h.http
        .post(h.url("/api/v1/echo"))
        .header("x-forwarded-for", ip)
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .expect("request")
}

async fn get_widget(h: &Harness, ip: &str, token: &str) -> reqwest::Response {
    h.http
        .get(h.url("/api/v1/widgets/w1"))
        .header("x-forwarded-for", ip)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// Asserts a 429 of `limiter` with `Retry-After`, the rate-limit headers and the envelope.
async fn assert_limited(r: reqwest::Response, limiter: &str, count: u64, window_seconds: u64) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{limiter}");
    let retry: u64 = header(&r, "retry-after").parse().expect("Retry-After in seconds");
    assert!(retry >= 1, "Retry-After ≥ 1");
    assert_eq!(header(&r, "x-ratelimit-limit"), count.to_string());
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    let reset: i64 = header(&r, "x-ratelimit-reset").parse().expect("reset");
    assert!(reset >= chrono::Utc::now().timestamp(), "reset is a future Unix time");
    let body: Value = r.json().await.expect("envelope");
    let error = &body["error"];
    assert_eq!(error["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(error["metadata"]["limiter"], limiter);
    assert_eq!(error["metadata"]["limit"], count.to_string());
    assert_eq!(error["metadata"]["window_seconds"], window_seconds.to_string());
    assert!(error["message"].as_str().unwrap_or_default().starts_with("Rate limit exceeded: "), "{body}");
}

#[tokio::test]
async fn anonymous_requests_are_limited_per_client_ip_with_decreasing_remaining() {
    let h = start(|s| s.edge.rate_limit_anonymous = limit("3/1m")).await;
    let ip = fresh_ip();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = echo(&h, &ip).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-limit"), "3");
        remaining.push(header(&r, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    assert_limited(echo(&h, &ip).await, "anonymous", 3, 60).await;
    // Another client IP has its own counter.
    assert_eq!(echo(&h, &fresh_ip()).await.status(), StatusCode::OK);

    // The state is GCRA in Redis at rl:{limiter}:{key}, with a TTL of at most the window.
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let ttl: i64 = redis::cmd("PTTL").arg(format!("rl:anonymous:{ip}")).query_async(&mut conn).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");
}

#[tokio::test]
async fn user_tokens_are_limited_per_user_across_orgs() {
    let h = start(|s| s.edge.rate_limit_user = limit("2/1m")).await;
    let ip = fresh_ip();
    let user = uuid::Uuid::now_v7().to_string();
    let in_org = |h: &Harness| {
        let user = user.clone();
        h.token_with(move |c| c.sub = user)
    };
    assert_eq!(get_widget(&h, &ip, &in_org(&h)).await.status(), StatusCode::OK);
    // The same user in another org shares the counter.
    let r = get_widget(&h, &ip, &in_org(&h)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ratelimit-limit"), "2", "the headers describe the tightest limiter");
    assert_limited(get_widget(&h, &ip, &in_org(&h)).await, "user", 2, 60).await;
    // Another user, same IP: unaffected.
    assert_eq!(get_widget(&h, &ip, &h.token()).await.status(), StatusCode::OK);
}

fn key_token(h: &Harness, key: &str, org: &str, plan: &str, scopes: &[&str]) -> String {
    let (key, org, plan) = (key.to_string(), org.to_string(), plan.to_string());
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    h.token_with(move |c| {
        c.sub = format!("api_key:{key}");
        c.sid = Some(format!("key:{key}"));
        c.org = Some(org);
        c.plan = Some(plan);
        c.scopes = scopes;
    })
}

#[tokio::test]
async fn api_keys_are_limited_per_key_by_plan() {
    let h = start(|s| s.edge.rate_limit_api_key = plans("free=2/1m,pro=3/1m")).await;
    let ip = fresh_ip();
    let org = uuid::Uuid::now_v7().to_string();
    let key = uuid::Uuid::now_v7().to_string();
    let free = key_token(&h, &key, &org, "free", &["widgets:read"]);
    for _ in 0..2 {
        assert_eq!(get_widget(&h, &ip, &free).await.status(), StatusCode::OK);
    }
    assert_limited(get_widget(&h, &ip, &free).await, "api_key", 2, 60).await;
    // Another key of the same org has its own counter, and a pro key a bigger one.
    let pro = key_token(&h, &uuid::Uuid::now_v7().to_string(), &org, "pro", &["widgets:read"]);
    for _ in 0..3 {
        assert_eq!(get_widget(&h, &ip, &pro).await.status(), StatusCode::OK);
    }
    assert_limited(get_widget(&h, &ip, &pro).await, "api_key", 3, 60).await;
}

#[tokio::test]
async fn every_authenticated_request_counts_toward_its_org() {
    let h = start(|s| s.edge.rate_limit_org = plans("3/1m")).await;
    let ip = fresh_ip();
    let org = uuid::Uuid::now_v7().to_string();
    let member = |h: &Harness| {
        let org = org.clone();
        h.token_with(move |c| c.org = Some(org))
    };
    let (alice, bob) = (member(&h), member(&h));
    assert_eq!(get_widget(&h, &ip, &alice).await.status(), StatusCode::OK);
    assert_eq!(get_widget(&h, &ip, &bob).await.status(), StatusCode::OK);
    let key = key_token(&h, &uuid::Uuid::now_v7().to_string(), &org, "free", &["widgets:read"]);
    assert_eq!(get_widget(&h, &ip, &key).await.status(), StatusCode::OK, "API keys count too");
    assert_limited(get_widget(&h, &ip, &alice).await, "org", 3, 60).await;
    // Someone in another org is not affected.
    assert_eq!(get_widget(&h, &ip, &h.token()).await.status(), StatusCode::OK);
}

async fn sign_in(h: &Harness, ip: &str, email: &str) -> reqwest::Response {
    h.http
        .post(h.url("/api/v1/widget-auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": "whatever"}))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn logins_are_limited_per_normalised_email_across_ips_and_per_ip_across_emails() {
    let h = start(|s| {
        s.edge.rate_limit_auth_login = limit("2/15m");
        s.edge.rate_limit_anonymous = limit("1/15m");
    })
    .await;
    let email = format!("bob-{}@example.test", uuid::Uuid::now_v7().simple());
    // Rotating IPs do not help: the email counter is shared, after trimming and lowercasing.
    assert_eq!(sign_in(&h, &fresh_ip(), &email).await.status(), StatusCode::OK);
    assert_eq!(sign_in(&h, &fresh_ip(), &format!("  {}  ", email.to_uppercase())).await.status(), StatusCode::OK);
    assert_limited(sign_in(&h, &fresh_ip(), &email).await, "auth_login", 2, 900).await;
    // Rotating emails from one IP do not help either.
    let ip = fresh_ip();
    for _ in 0..2 {
        let other = format!("x-{}@example.test", uuid::Uuid::now_v7().simple());
        assert_eq!(sign_in(&h, &ip, &other).await.status(), StatusCode::OK);
    }
    assert_limited(sign_in(&h, &ip, "someone-new@example.test").await, "auth_login", 2, 900).await;
    // Auth classes replace the anonymous limiter (1/15m here, yet three logins passed).
    let ip = fresh_ip();
    assert_eq!(echo(&h, &ip).await.status(), StatusCode::OK);
    assert_eq!(
        sign_in(&h, &ip, &format!("y-{}@example.test", uuid::Uuid::now_v7().simple())).await.status(),
        StatusCode::OK
    );
}

async fn post_public(h: &Harness, path: &str, ip: &str) -> reqwest::Response {
    h.http
        .post(h.url(path))
        .header("x-forwarded-for", ip)
        .json(&json!({"email": "a@example.test"}))
        .send()
        .await
        .expect("request")
}

async fn assert_ip_class(path: &str, limiter: &str, tune: impl FnOnce(&mut GatewayConfig)) {
    let h = start(|s| {
        s.edge.rate_limit_anonymous = limit("1/1h");
        tune(s);
    })
    .await;
    let ip = fresh_ip();
    assert_eq!(post_public(&h, path, &ip).await.status(), StatusCode::OK);
    assert_eq!(post_public(&h, path, &ip).await.status(), StatusCode::OK);
    assert_limited(post_public(&h, path, &ip).await, limiter, 2, 3600).await;
    assert_eq!(post_public(&h, path, &fresh_ip()).await.status(), StatusCode::OK, "another IP");
    // The class's counter is not the anonymous one: that is still untouched.
    assert_eq!(echo(&h, &ip).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn password_resets_are_limited_per_ip() {
    assert_ip_class("/api/v1/widget-auth/reset", "auth_password_reset", |s| {
        s.edge.rate_limit_auth_password_reset = limit("2/1h")
    })
    .await;
}

#[tokio::test]
async fn registrations_are_limited_per_ip() {
    assert_ip_class("/api/v1/widget-auth/register", "auth_register", |s| {
        s.edge.rate_limit_auth_register = limit("2/1h")
    })
    .await;
}

#[tokio::test]
async fn refreshes_are_limited_per_ip() {
    assert_ip_class("/api/v1/widget-auth/refresh", "auth_refresh", |s| s.edge.rate_limit_auth_refresh = limit("2/1h"))
        .await;
}

#[tokio::test]
async fn failed_authentications_count_toward_the_anonymous_limit_of_the_ip() {
    let h = start(|s| s.edge.rate_limit_anonymous = limit("2/1m")).await;
    let ip = fresh_ip();
    for _ in 0..2 {
        assert_eq!(get_widget(&h, &ip, "not-a-token").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_limited(get_widget(&h, &ip, "still-not-a-token").await, "anonymous", 2, 60).await;
    // A valid credential from the same IP is counted per user, not per IP.
    assert_eq!(get_widget(&h, &ip, &h.token()).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_redis_limits_hold_per_replica_and_readiness_is_degraded() {
    let widgets = spawn_widgets().await;
    let h = Harness::start_full(&widgets, &dead_url().await, |s| {
        s.edge.rate_limit_anonymous = limit("2/1m");
    })
    .await;
    let r = h.http.get(h.url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), StatusCode::OK);
    let ready: Value = r.json().await.expect("json");
    assert_eq!(ready["status"], "degraded", "{ready}");
    let ip = "203.0.113.9";
    assert_eq!(echo(&h, ip).await.status(), StatusCode::OK);
    assert_eq!(echo(&h, ip).await.status(), StatusCode::OK);
    // No trusted proxies here: every request is the peer's (127.0.0.1), whatever it claims.
    assert_limited(echo(&h, "203.0.113.10").await, "anonymous", 2, 60).await;
}

#[tokio::test]
async fn grpc_callers_get_resource_exhausted_with_retry_info() {
    use tonic_types::StatusExt;
    let h = start(|s| s.edge.rate_limit_user = limit("1/1m")).await;
    let token = h.token();
    let mut grpc = tonic::client::Grpc::new(h.channel().await);
    let path = http::uri::PathAndQuery::from_static("/trellis.widgets.v1.WidgetService/GetWidget");
    let mut results = Vec::new();
    for _ in 0..2 {
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(bytes::Bytes::from(crate::common::encode(
            "trellis.widgets.v1.GetWidgetRequest",
            json!({"widgetId": "w1"}),
        )));
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        results.push(grpc.unary(request, path.clone(), trellis_gateway::upstream::BytesCodec).await);
    }
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let status = results[1].as_ref().expect_err("limited");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let details = status.get_error_details();
    assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("RATE_LIMIT_EXCEEDED"));
    assert!(details.retry_info().and_then(|r| r.retry_delay).is_some_and(|d| d >= Duration::from_secs(1)));
}

#[tokio::test]
async fn api_keys_need_the_method_scope_and_write_implies_read() {
    let h = start(|_| {}).await;
    let ip = fresh_ip();
    let org = uuid::Uuid::now_v7().to_string();
    let reader = key_token(&h, &uuid::Uuid::now_v7().to_string(), &org, "free", &["widgets:read"]);
    assert_eq!(get_widget(&h, &ip, &reader).await.status(), StatusCode::OK);
    let r = h
        .http
        .post(h.url("/api/v1/widgets"))
        .bearer_auth(&reader)
        .json(&json!({"name": "A"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "SCOPE_MISSING");
    assert_eq!(body["error"]["metadata"]["required_scope"], "widgets:write");
    let writer = key_token(&h, &uuid::Uuid::now_v7().to_string(), &org, "free", &["widgets:write"]);
    assert_eq!(get_widget(&h, &ip, &writer).await.status(), StatusCode::OK, "write implies read");
    // A method without a scope refuses keys; a user token passes.
    let archive = |token: &str| {
        h.http.post(h.url("/api/v1/widgets/w1:archive")).bearer_auth(token.to_string()).json(&json!({})).send()
    };
    let r = archive(&writer).await.expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "SCOPE_MISSING");
    assert_eq!(archive(&h.token()).await.expect("request").status(), StatusCode::OK);
}

#[tokio::test]
async fn methods_acting_on_the_user_refuse_api_keys_whatever_their_scopes() {
    let h = start(|_| {}).await;
    let org = uuid::Uuid::now_v7().to_string();
    let key = key_token(&h, &uuid::Uuid::now_v7().to_string(), &org, "free", &["widgets:write", "widget-prefs:read"]);
    let r = h.http.get(h.url("/api/v1/widget-prefs")).bearer_auth(&key).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "USER_TOKEN_REQUIRED");
    let r = h.http.get(h.url("/api/v1/widget-prefs")).bearer_auth(h.token()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
}
