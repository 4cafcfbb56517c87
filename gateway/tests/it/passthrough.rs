//! Native gRPC through the gateway's public port (h2c): generated and raw tonic clients.

use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use serde_json::json;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_types::StatusExt;
use trellis_gateway::upstream::BytesCodec;
use trellis_proto::trellis::identity::v1::GetJwksRequest;
use trellis_proto::trellis::identity::v1::token_service_client::TokenServiceClient;

use crate::common::{Harness, KID, decode, encode};

fn request(message: Vec<u8>, token: Option<&str>) -> tonic::Request<Bytes> {
    let mut request = tonic::Request::new(Bytes::from(message));
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn unary(h: &Harness, path: &'static str, message: Vec<u8>, token: Option<&str>) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(h.channel().await);
    grpc.ready().await.expect("ready");
    grpc.unary(request(message, token), PathAndQuery::from_static(path), BytesCodec).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn a_generated_client_calls_identity_through_the_gateway() {
    let h = Harness::start().await;
    let mut client = TokenServiceClient::new(h.channel().await);
    let response = client.get_jwks(GetJwksRequest {}).await.expect("GetJwks through the gateway");
    assert!(response.metadata().contains_key("x-correlation-id"));
    assert_eq!(response.into_inner().keys[0].kid, KID);
}

#[tokio::test]
async fn authenticated_calls_reach_the_backend_and_its_status_comes_back_unchanged() {
    let h = Harness::start().await;
    let token = h.token();
    let get = encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "w1"}));
    let bytes = unary(&h, "/trellis.widgets.v1.WidgetService/GetWidget", get, Some(&token)).await.expect("OK");
    assert_eq!(decode("trellis.widgets.v1.GetWidgetResponse", &bytes)["widget"]["id"], "w1");

    let missing = encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "missing"}));
    let status =
        unary(&h, "/trellis.widgets.v1.WidgetService/GetWidget", missing, Some(&token)).await.expect_err("404");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.get_error_details().error_info().map(|i| i.reason.as_str()), Some("WIDGET_NOT_FOUND"));
}

#[tokio::test]
async fn the_gateway_refuses_with_trailers_only_statuses() {
    let h = Harness::start().await;
    let get = encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "w1"}));
    let status = unary(&h, "/trellis.widgets.v1.WidgetService/GetWidget", get, None).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.get_error_details().error_info().map(|i| i.reason.as_str()), Some("UNAUTHENTICATED"));

    let status =
        unary(&h, "/trellis.widgets.v1.WidgetService/PurgeWidgets", Vec::new(), None).await.expect_err("internal");
    assert_eq!(status.code(), Code::Unimplemented);

    let status = unary(&h, "/grpc.health.v1.Health/Check", Vec::new(), None).await.expect_err("infrastructure");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_short_grpc_timeout_ends_a_slow_call_with_deadline_exceeded() {
    // A raw HTTP/2 client: tonic's would end the call itself, with CANCELLED, when its timer fires.
    let h = Harness::start().await;
    let stream = tokio::net::TcpStream::connect(h.gateway.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(connection);
    let slow = encode("trellis.widgets.v1.GetWidgetRequest", json!({"widgetId": "slow"}));
    let request = http::Request::post(format!("{}/trellis.widgets.v1.WidgetService/GetWidget", h.base))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "50m")
        .header("authorization", format!("Bearer {}", h.token()))
        .body(http_body_util::Full::new(crate::common::grpc_frame(&slow)))
        .expect("request");
    let started = std::time::Instant::now();
    let response = sender.send_request(request).await.expect("response");
    let headers = response.headers().clone();
    let trailers = response.into_body().collect().await.expect("body").trailers().cloned();
    let status = headers.get("grpc-status").or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")));
    assert_eq!(status.and_then(|s| s.to_str().ok()), Some("4"), "DEADLINE_EXCEEDED: {headers:?} {trailers:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "cut off before the backend answered");
}

#[tokio::test]
async fn streams_flow_both_ways() {
    let h = Harness::start().await;
    let token = h.token();
    let mut grpc = tonic::client::Grpc::new(h.channel().await);

    grpc.ready().await.expect("ready");
    let watch = encode("trellis.widgets.v1.WatchWidgetsRequest", json!({"count": 4}));
    let mut stream = grpc
        .server_streaming(
            request(watch, Some(&token)),
            PathAndQuery::from_static("/trellis.widgets.v1.WidgetService/WatchWidgets"),
            BytesCodec,
        )
        .await
        .expect("stream opens")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(message) = stream.message().await.expect("message") {
        ids.push(decode("trellis.widgets.v1.Widget", &message)["id"].clone());
    }
    assert_eq!(ids, vec![json!("w0"), json!("w1"), json!("w2"), json!("w3")]);

    grpc.ready().await.expect("ready");
    let uploads: Vec<Bytes> =
        (0..5).map(|i| Bytes::from(encode("trellis.widgets.v1.Widget", json!({"id": format!("u{i}")})))).collect();
    let mut upload = tonic::Request::new(tokio_stream::iter(uploads));
    upload.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"));
    let response = grpc
        .client_streaming(
            upload,
            PathAndQuery::from_static("/trellis.widgets.v1.WidgetService/UploadWidgets"),
            BytesCodec,
        )
        .await
        .expect("upload");
    assert_eq!(decode("trellis.widgets.v1.UploadWidgetsResponse", response.get_ref())["count"], 5);
}
