//! gRPC-web: binary and text framing, trailers, errors with details, streaming, reachability.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use prost::Message;
use serde_json::json;
use tonic_types::StatusExt;
use trellis_proto::trellis::identity::v1::GetJwksResponse;

use crate::common::{Harness, KID, decode, encode, grpc_frame, web_frames, web_trailers};

async fn call(h: &Harness, path: &str, content_type: &str, body: Bytes, token: Option<String>) -> reqwest::Response {
    let mut request =
        h.http.post(h.url(path)).header("content-type", content_type).header("x-grpc-web", "1").body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// Splits a binary gRPC-web response into its messages and its trailers.
fn split(body: Bytes) -> (Vec<Bytes>, http::HeaderMap) {
    let mut messages = Vec::new();
    let mut trailers = None;
    for (flags, payload) in web_frames(body) {
        if flags & 0x80 != 0 {
            assert!(trailers.is_none(), "one trailers frame");
            trailers = Some(web_trailers(&payload));
        } else {
            assert!(trailers.is_none(), "the trailers frame comes last");
            messages.push(payload);
        }
    }
    (messages, trailers.expect("a trailers frame"))
}

#[tokio::test]
async fn a_unary_call_in_binary_mode_returns_the_message_then_trailers() {
    let h = Harness::start().await;
    let r = call(&h, "/trellis.identity.v1.TokenService/GetJwks", "application/grpc-web+proto", grpc_frame(&[]), None)
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/grpc-web+proto");
    assert!(r.headers().contains_key("x-correlation-id"));
    let (messages, trailers) = split(r.bytes().await.expect("body"));
    assert_eq!(trailers["grpc-status"], "0");
    let jwks = GetJwksResponse::decode(messages[0].clone()).expect("GetJwksResponse");
    assert_eq!(jwks.keys[0].kid, KID);
}

#[tokio::test]
async fn a_unary_call_in_text_mode_is_base64_per_frame() {
    let h = Harness::start().await;
    let body = Bytes::from(STANDARD.encode(grpc_frame(&[])));
    let r = call(&h, "/trellis.identity.v1.TokenService/GetJwks", "application/grpc-web-text", body, None).await;
    assert_eq!(r.headers()["content-type"], "application/grpc-web-text+proto");
    let text = r.text().await.expect("body");
    // Each frame is its own padded base64 chunk: decode chunk by chunk.
    let mut raw = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end = rest.find('=').map_or(rest.len(), |i| i + rest[i..].chars().take_while(|c| *c == '=').count());
        raw.extend(STANDARD.decode(&rest[..end]).expect("base64 chunk"));
        rest = &rest[end..];
    }
    let (messages, trailers) = split(Bytes::from(raw));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(GetJwksResponse::decode(messages[0].clone()).expect("jwks").keys.len(), 1);
}

#[tokio::test]
async fn a_backend_error_arrives_in_the_trailers_with_its_details() {
    let h = Harness::start().await;
    let request = encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "missing"}));
    let r = call(
        &h,
        "/trellis.widgets.v1.WidgetService/GetWidget",
        "application/grpc-web+proto",
        grpc_frame(&request),
        Some(h.token()),
    )
    .await;
    let (messages, trailers) = split(r.bytes().await.expect("body"));
    assert!(messages.is_empty());
    assert_eq!(trailers["grpc-status"], "5");
    let status = tonic::Status::from_header_map(&trailers).expect("a status");
    assert_eq!(status.get_error_details().error_info().map(|i| i.reason.as_str()), Some("WIDGET_NOT_FOUND"));
}

#[tokio::test]
async fn a_successful_widget_call_decodes() {
    let h = Harness::start().await;
    let request = encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "w7"}));
    let r = call(
        &h,
        "/trellis.widgets.v1.WidgetService/GetWidget",
        "application/grpc-web",
        grpc_frame(&request),
        Some(h.token()),
    )
    .await;
    let (messages, trailers) = split(r.bytes().await.expect("body"));
    assert_eq!(trailers["grpc-status"], "0");
    let widget = decode("trellis.widgets.v1.GetWidgetResponse", &messages[0]);
    assert_eq!(widget["widget"]["id"], "w7");
}

#[tokio::test]
async fn internal_methods_and_missing_credentials_are_refused_with_a_status() {
    let h = Harness::start().await;
    let r =
        call(&h, "/trellis.widgets.v1.WidgetService/PurgeWidgets", "application/grpc-web+proto", grpc_frame(&[]), None)
            .await;
    let (_, trailers) = split(r.bytes().await.expect("body"));
    assert_eq!(trailers["grpc-status"], "12", "internal methods are UNIMPLEMENTED");

    let r = call(&h, "/trellis.nope.v1.NopeService/Nope", "application/grpc-web+proto", grpc_frame(&[]), None).await;
    assert_eq!(split(r.bytes().await.expect("body")).1["grpc-status"], "12");

    let request = encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "w7"}));
    let r = call(
        &h,
        "/trellis.widgets.v1.WidgetService/GetWidget",
        "application/grpc-web+proto",
        grpc_frame(&request),
        None,
    )
    .await;
    let (_, trailers) = split(r.bytes().await.expect("body"));
    assert_eq!(trailers["grpc-status"], "16");
    let status = tonic::Status::from_header_map(&trailers).expect("a status");
    assert_eq!(status.get_error_details().error_info().map(|i| i.reason.as_str()), Some("UNAUTHENTICATED"));

    let r = call(
        &h,
        "/trellis.widgets.v1.WidgetService/UploadWidgets",
        "application/grpc-web+proto",
        grpc_frame(&[]),
        Some(h.token()),
    )
    .await;
    assert_eq!(split(r.bytes().await.expect("body")).1["grpc-status"], "12", "client streaming is UNIMPLEMENTED");
}

#[tokio::test]
async fn server_streaming_sends_every_message_then_trailers() {
    let h = Harness::start().await;
    let request = encode("trellis.widgets.v1.WatchWidgetsRequest", json!({"count": 3}));
    let r = call(
        &h,
        "/trellis.widgets.v1.WidgetService/WatchWidgets",
        "application/grpc-web+proto",
        grpc_frame(&request),
        Some(h.token()),
    )
    .await;
    let (messages, trailers) = split(r.bytes().await.expect("body"));
    assert_eq!(trailers["grpc-status"], "0");
    let ids: Vec<_> = messages.iter().map(|m| decode("trellis.widgets.v1.Widget", m)["id"].clone()).collect();
    assert_eq!(ids, vec![json!("w0"), json!("w1"), json!("w2")]);

    // Text mode re-frames the stream: every frame is a complete base64 chunk.
    let body = Bytes::from(STANDARD.encode(grpc_frame(&request)));
    let r = call(
        &h,
        "/trellis.widgets.v1.WidgetService/WatchWidgets",
        "application/grpc-web-text+proto",
        body,
        Some(h.token()),
    )
    .await;
    let text = r.text().await.expect("body");
    assert_eq!(text.matches("gAAAA").count(), 1, "one trailers frame: {text}");
}
