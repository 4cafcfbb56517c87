//! Edge policy: CORS (Rule 37), security headers (Rule 38), client IP behind trusted proxies
//! (Rule 36), and one test per row of the error mapping table.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Harness, encode, grpc_frame, web_frames, web_trailers};

const ALLOWED: &str = "http://localhost:5173";

async fn cors_harness() -> Harness {
    Harness::start_with(|s| {
        s.edge.cors_allowed_origins = vec![ALLOWED.to_string(), "http://localhost:3000/".to_string()];
        s.edge.trusted_proxies = vec![trellis_gateway::http::Cidr::parse("127.0.0.1/32").expect("cidr")];
    })
    .await
}

fn access_control_headers(r: &reqwest::Response) -> Vec<String> {
    r.headers().keys().map(|k| k.as_str().to_string()).filter(|k| k.starts_with("access-control-")).collect()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_the_policy() {
    let h = cors_harness().await;
    for origin in [ALLOWED, "http://localhost:3000"] {
        let r = h
            .http
            .request(reqwest::Method::OPTIONS, h.url("/api/v1/widgets"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
            .await
            .expect("preflight");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let header = |name: &str| r.headers()[name].to_str().expect("ascii").to_string();
        assert_eq!(header("access-control-allow-origin"), origin);
        assert_eq!(header("access-control-allow-credentials"), "true");
        assert_eq!(header("access-control-max-age"), "86400");
        assert_eq!(header("access-control-allow-methods"), "GET, POST, PUT, PATCH, DELETE");
        for allowed in ["Authorization", "Content-Type", "X-CSRF-Token", "Last-Event-ID", "grpc-timeout"] {
            assert!(header("access-control-allow-headers").contains(allowed), "{allowed}");
        }
        assert_eq!(header("vary"), "Origin");
        assert_eq!(header("x-frame-options"), "DENY", "security headers on preflights too");
    }
}

#[tokio::test]
async fn a_preflight_from_another_origin_is_403_without_cors_headers() {
    let h = cors_harness().await;
    for origin in ["https://evil.test", "http://localhost:5174", "http://LOCALHOST:5173", "null"] {
        let r = h
            .http
            .request(reqwest::Method::OPTIONS, h.url("/api/v1/widgets"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(access_control_headers(&r), Vec::<String>::new(), "{origin}");
        let body: Value = r.json().await.expect("envelope");
        assert_eq!(body["error"]["code"], "CORS_ORIGIN_DENIED");
    }
}

#[tokio::test]
async fn simple_requests_get_cors_headers_only_for_allowed_origins() {
    let h = cors_harness().await;
    let r = h.http.post(h.url("/api/v1/echo")).header("origin", ALLOWED).json(&json!({})).send().await.expect("ok");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED);
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let exposed = r.headers()["access-control-expose-headers"].to_str().expect("ascii");
    for name in ["X-Correlation-Id", "X-RateLimit-Remaining", "Retry-After", "grpc-status-details-bin", "Location"] {
        assert!(exposed.contains(name), "{name} exposed");
    }
    // Errors carry them too, so scripts can read the envelope.
    let r = h.http.get(h.url("/api/v1/nope")).header("origin", ALLOWED).send().await.expect("404");
    assert_eq!(r.headers()["access-control-allow-origin"], ALLOWED);
    // Another origin: processed, but without CORS headers, so the browser hides the answer.
    let r = h
        .http
        .post(h.url("/api/v1/echo"))
        .header("origin", "https://evil.test")
        .json(&json!({}))
        .send()
        .await
        .expect("ok");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(access_control_headers(&r), Vec::<String>::new());
    assert_eq!(r.headers()["vary"], "Origin");
}

#[tokio::test]
async fn without_an_allow_list_nothing_is_cross_origin() {
    let h = Harness::start().await;
    let r = h
        .http
        .request(reqwest::Method::OPTIONS, h.url("/api/v1/widgets"))
        .header("origin", ALLOWED)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

fn assert_security_headers(r: &reqwest::Response, hsts: bool) {
    let h = r.headers();
    let what = r.status();
    let csp = h["content-security-policy"].to_str().expect("ascii");
    assert_eq!(csp, "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin", "{what}");
    assert_eq!(h["permissions-policy"], "geolocation=(), microphone=(), camera=()", "{what}");
    assert_eq!(h["cross-origin-opener-policy"], "same-origin", "{what}");
    assert_eq!(h["cross-origin-resource-policy"], "same-site", "{what}");
    assert!(!h.contains_key("server") && !h.contains_key("x-powered-by"), "{what}");
    assert_eq!(
        h.get("strict-transport-security").map(|v| v.to_str().expect("ascii").to_string()),
        hsts.then(|| "max-age=31536000; includeSubDomains".to_string()),
        "{what}"
    );
}

#[tokio::test]
async fn security_headers_are_on_every_kind_of_response_and_hsts_only_over_https() {
    let h = Harness::start_with(|s| {
        s.edge.trusted_proxies = vec![trellis_gateway::http::Cidr::parse("127.0.0.1/32").expect("cidr")];
        s.edge.rate_limit_anonymous = "1/1m".parse().expect("limit");
    })
    .await;
    let https =
        |r: reqwest::RequestBuilder| r.header("x-forwarded-proto", "https").header("x-forwarded-for", "192.0.2.77");
    let token = h.token();
    let ok = https(h.http.get(h.url("/api/v1/widgets/w1")).bearer_auth(&token)).send().await.expect("200");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["cache-control"], "no-store", "authenticated responses are not cached");
    assert_security_headers(&ok, true);
    let not_found = https(h.http.get(h.url("/api/v1/nope"))).send().await.expect("404");
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    assert_security_headers(&not_found, true);
    let internal = https(h.http.get(h.url("/api/v1/widgets/boom")).bearer_auth(&token)).send().await.expect("500");
    assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_security_headers(&internal, true);
    let _ = https(h.http.post(h.url("/api/v1/echo")).json(&json!({}))).send().await.expect("first");
    let limited = https(h.http.post(h.url("/api/v1/echo")).json(&json!({}))).send().await.expect("429");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_security_headers(&limited, true);
    let web = https(
        h.http
            .post(h.url("/trellis.widgets.v1.WidgetService/GetWidget"))
            .header("content-type", "application/grpc-web+proto")
            .bearer_auth(&token)
            .body(grpc_frame(&encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "w1"})))),
    )
    .send()
    .await
    .expect("grpc-web");
    assert_security_headers(&web, true);
    // Plain HTTP, or a forwarded proto from a peer that is not a trusted proxy: no HSTS.
    let plain = h.http.get(h.url("/api/v1/nope")).send().await.expect("plain");
    assert_security_headers(&plain, false);
    let untrusted = Harness::start().await;
    let spoofed =
        untrusted.http.get(untrusted.url("/api/v1/nope")).header("x-forwarded-proto", "https").send().await.expect("x");
    assert_security_headers(&spoofed, false);
}

#[tokio::test]
async fn hsts_preload_is_added_when_configured() {
    let h = Harness::start_with(|s| {
        s.edge.trusted_proxies = vec![trellis_gateway::http::Cidr::parse("127.0.0.0/8").expect("cidr")];
        s.edge.hsts_preload = true;
        s.edge.hsts_max_age = 600;
    })
    .await;
    let r = h.http.get(h.url("/healthz")).header("x-forwarded-proto", "https").send().await.expect("ok");
    assert_eq!(r.headers()["strict-transport-security"], "max-age=600; includeSubDomains; preload");
}

async fn seen_client_ip(h: &Harness, forwarded_for: Option<&str>) -> String {
    let mut request = h.http.post(h.url("/api/v1/echo")).json(&json!({"message": "ip"}));
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    let body: Value = request.send().await.expect("echo").json().await.expect("json");
    body["metadata"]["x-client-ip"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_client_ip_is_the_rightmost_untrusted_forwarded_entry() {
    let h = Harness::start_with(|s| {
        s.edge.trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]
            .iter()
            .map(|c| trellis_gateway::http::Cidr::parse(c).expect("cidr"))
            .collect();
    })
    .await;
    assert_eq!(seen_client_ip(&h, Some("203.0.113.5")).await, "203.0.113.5");
    assert_eq!(seen_client_ip(&h, Some("198.51.100.1, 203.0.113.5, 10.1.2.3")).await, "203.0.113.5");
    assert_eq!(seen_client_ip(&h, Some("203.0.113.5, garbage, 10.0.0.9")).await, "203.0.113.5", "malformed skipped");
    assert_eq!(seen_client_ip(&h, Some("2001:db8::7")).await, "2001:db8::7");
    assert_eq!(seen_client_ip(&h, None).await, "127.0.0.1");
    // A peer that is not a trusted proxy cannot choose its IP.
    let untrusted = Harness::start().await;
    assert_eq!(seen_client_ip(&untrusted, Some("203.0.113.5")).await, "127.0.0.1");
}

#[test]
fn cidrs_parse_and_match_both_families() {
    use trellis_gateway::http::Cidr;
    let net = Cidr::parse("10.0.0.0/8").expect("v4");
    assert!(net.contains("10.255.0.1".parse().expect("ip")));
    assert!(!net.contains("11.0.0.1".parse().expect("ip")));
    assert!(net.contains("::ffff:10.1.1.1".parse().expect("mapped")), "IPv4-mapped peers match IPv4 networks");
    let v6 = Cidr::parse("2001:db8::/32").expect("v6");
    assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
    assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
    assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
    assert!(Cidr::parse("0.0.0.0/0").expect("all").contains("8.8.8.8".parse().expect("ip")));
    assert!(Cidr::parse("192.0.2.1").expect("bare").contains("192.0.2.1".parse().expect("ip")));
    for bad in ["10.0.0.0/33", "nope", "::/129", "10.0.0.0/x"] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// The error mapping table, one row per test: a backend status → HTTP status, default code and
// headers on REST, and the same status unchanged on gRPC-web.
// ---------------------------------------------------------------------------------------------

async fn assert_row(code: i32, http: u16, default_code: &str) {
    let h = Harness::start().await;
    let r = h
        .http
        .post(h.url("/api/v1/fail"))
        .header("x-correlation-id", "row-1")
        .json(&json!({"code": code, "message": "the service said so"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), http, "gRPC code {code}");
    assert_eq!(r.headers()["x-correlation-id"], "row-1");
    let headers = r.headers().clone();
    let body: Value = r.json().await.expect("envelope");
    let error = &body["error"];
    assert_eq!(error["code"], default_code, "{body}");
    assert_eq!(error["correlation_id"], "row-1");
    assert!(error["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    if http == 500 {
        assert_eq!(error["message"], "An internal error occurred");
        assert_eq!(error["details"], json!([]));
    } else {
        assert_eq!(error["message"], "the service said so");
    }
    if http == 401 {
        assert_eq!(headers["www-authenticate"], r#"Bearer realm="trellis""#);
    }
    if http == 503 {
        assert_eq!(headers["retry-after"], "1");
    }

    let web = h
        .http
        .post(h.url("/trellis.widgets.v1.WidgetService/Fail"))
        .header("content-type", "application/grpc-web+proto")
        .body(grpc_frame(&encode("trellis.widgets.v1.FailRequest", json!({"code": code, "message": "m"}))))
        .send()
        .await
        .expect("grpc-web");
    let frames = web_frames(web.bytes().await.expect("body"));
    let trailers = web_trailers(&frames.last().expect("trailers").1);
    assert_eq!(trailers["grpc-status"], code.to_string().as_str(), "a service's status reaches gRPC clients unchanged");
}

macro_rules! rows {
    ($($name:ident: $code:expr => $http:expr, $default:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                assert_row($code, $http, $default).await;
            }
        )*
    };
}

rows! {
    row_invalid_argument_is_400_validation_error: 3 => 400, "VALIDATION_ERROR";
    row_out_of_range_is_400_out_of_range: 11 => 400, "OUT_OF_RANGE";
    row_failed_precondition_is_409: 9 => 409, "FAILED_PRECONDITION";
    row_aborted_is_409_conflict: 10 => 409, "CONFLICT";
    row_already_exists_is_409: 6 => 409, "ALREADY_EXISTS";
    row_unauthenticated_is_401_with_a_challenge: 16 => 401, "UNAUTHENTICATED";
    row_permission_denied_is_403_forbidden: 7 => 403, "FORBIDDEN";
    row_not_found_is_404: 5 => 404, "NOT_FOUND";
    row_resource_exhausted_is_429: 8 => 429, "RATE_LIMIT_EXCEEDED";
    row_cancelled_is_499: 1 => 499, "CLIENT_CLOSED_REQUEST";
    row_deadline_exceeded_is_504: 4 => 504, "DEADLINE_EXCEEDED";
    row_unimplemented_is_501: 12 => 501, "NOT_IMPLEMENTED";
    row_unavailable_is_503_with_retry_after: 14 => 503, "SERVICE_UNAVAILABLE";
    row_internal_is_500_without_details: 13 => 500, "INTERNAL_ERROR";
    row_unknown_is_500_without_details: 2 => 500, "INTERNAL_ERROR";
    row_data_loss_is_500_without_details: 15 => 500, "INTERNAL_ERROR";
}

#[tokio::test]
async fn row_ok_is_200() {
    let h = Harness::start().await;
    let r = h.http.post(h.url("/api/v1/echo")).json(&json!({"message": "m"})).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["message"], "m");
}
