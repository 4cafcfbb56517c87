//! What every response carries, the health and metrics endpoints, and start-up.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::Harness;

#[tokio::test]
async fn health_and_readiness_answer_on_both_ports_and_metrics_only_on_admin() {
    let h = Harness::start().await;
    for base in [&h.base, &h.admin] {
        let r = h.http.get(format!("{base}/healthz")).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<serde_json::Value>().await.expect("json"), json!({"status": "ok"}));
        let r = h.http.get(format!("{base}/readyz")).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        let ready = r.json::<serde_json::Value>().await.expect("json");
        // The harness's other modules have no backend running, so the cell is degraded but ready.
        assert!(ready["status"] == "ready" || ready["status"] == "degraded", "{ready}");
        assert_eq!(ready["checks"]["jwks"], "ok (1 keys)", "{ready}");
    }
    // One request so the counters have a sample.
    h.http.get(h.url("/.well-known/jwks.json")).send().await.expect("request");
    let r = h.http.get(format!("{}/metrics", h.admin)).send().await.expect("request");
    let text = r.text().await.expect("text");
    assert!(text.contains("trellis_gateway_requests_total"), "{text}");
    assert!(text.contains(r#"route="GET /.well-known/jwks.json""#), "routes are labelled by template");
    let r = h.http.get(h.url("/metrics")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_a_correlation_id() {
    let h = Harness::start().await;
    let responses = [
        h.http.get(h.url("/.well-known/jwks.json")).send().await.expect("200"),
        h.http.get(h.url("/api/v1/nope")).header("x-correlation-id", "bad id!").send().await.expect("404"),
        h.http.get(h.url("/api/v1/widgets/boom")).bearer_auth(h.token()).send().await.expect("500"),
        h.http.get(format!("{}/healthz", h.admin)).send().await.expect("admin"),
    ];
    for r in responses {
        let headers = r.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{}", r.status());
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "strict-origin-when-cross-origin");
        assert!(headers.contains_key("content-security-policy"));
        assert!(!headers.contains_key("server"));
        let id = headers["x-correlation-id"].to_str().expect("ascii");
        assert_eq!(uuid::Uuid::parse_str(id).map(|u| u.get_version_num()), Ok(7), "generated or replaced: {id}");
    }
}

#[tokio::test]
async fn readiness_turns_off_when_shutdown_begins_and_the_gateway_stops() {
    let h = Harness::start().await;
    h.gateway.shutdown.cancel();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !h.gateway.handle.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(stopped.is_ok(), "the gateway stops after shutdown");
    assert!(h.http.get(h.url("/healthz")).send().await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn spawn_for_tests_serves_the_contract() {
    let config = Arc::new(trellis_kit::config::Config::from_env());
    let auth = trellis_kit::auth::Authenticator::new(config.clone());
    let (addr, handle) = trellis_gateway::spawn_for_tests(config, auth).await;
    let r = reqwest::get(format!("http://{addr}/healthz")).await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let r = reqwest::get(format!("http://{addr}/api/v1/nope")).await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    handle.abort();
}

/// A backend that reports SERVING on `grpc.health.v1`.
async fn serving_backend() -> String {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn readiness_reports_the_jwks_redis_and_every_backends_health() {
    use crate::common::{dead_url, redis_url, spawn_widgets};
    let (serving, dead) = (serving_backend().await, dead_url().await);
    let widgets = spawn_widgets().await;
    let h = Harness::start_with_backends(&widgets, &redis_url(), &[("gadgets", &serving), ("gizmos", &dead)], |s| {
        s.modules = vec!["widgets".into(), "gadgets".into(), "gizmos".into()];
    })
    .await;
    let readyz = || async {
        h.http.get(h.url("/readyz")).send().await.expect("readyz").json::<serde_json::Value>().await.expect("json")
    };
    trellis_kit::testing::wait_until(std::time::Duration::from_secs(10), || async {
        readyz().await["checks"]["backends"].get("gizmos").is_some()
    })
    .await;
    let ready = readyz().await;
    let backends = &ready["checks"]["backends"];
    assert_eq!(backends["gadgets"], "serving", "{ready}");
    assert_eq!(backends["gizmos"], "unreachable", "{ready}");
    assert!(backends.get("tasks").is_none(), "disabled modules are not checked: {ready}");
    assert_eq!(ready["status"], "degraded", "a backend down is reported, still ready: {ready}");
    assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
}

#[tokio::test]
async fn the_gateway_is_not_ready_before_it_has_the_token_keys() {
    use crate::common::{dead_url, redis_url};
    let mut config = trellis_kit::config::Config::from_env();
    config.redis_url = redis_url();
    config.urls.identity = dead_url().await;
    let gateway = trellis_gateway::Builder::new(Arc::new(config), trellis_gateway::GatewayConfig::from_env())
        .spawn()
        .await
        .expect("the gateway starts");
    let http = reqwest::Client::new();
    for base in [gateway.addr, gateway.admin_addr] {
        let r = http.get(format!("http://{base}/readyz")).send().await.expect("readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["status"], "not_ready", "{body}");
        assert_eq!(body["checks"]["jwks"], "not loaded", "{body}");
    }
    gateway.shutdown.cancel();
}
