//! Native gRPC (`application/grpc` over HTTP/2): routed by service name to the owning module's
//! backend, frames forwarded in both directions without decoding (every streaming mode, with
//! HTTP/2 flow control end to end, trailers preserved).
//!
//! The gateway decides only from the method path: an unknown or internal method (no
//! `google.api.http` rule) is UNIMPLEMENTED, a disabled module UNIMPLEMENTED `MODULE_DISABLED`,
//! and credentials follow the same rules as REST. Its own refusals are trailers-only responses
//! carrying `ErrorInfo`; a backend's status reaches the client unchanged.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TE};
use http::{HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::auth;
use crate::errors::ApiError;
use crate::http::{Body, BoxError, Call, Gateway, empty, forwarded_grpc};
use crate::ratelimit::Outcome;
use crate::upstream::{UpstreamError, format_grpc_timeout, parse_grpc_timeout};

/// Serves a native gRPC call; returns the response and the method path for metrics.
pub async fn handle(gateway: &Gateway, request: Request<Incoming>, call: &Call) -> (Response<Body>, String) {
    let label = match gateway.routes.method(request.uri().path()) {
        Some(method) => method.path.clone(),
        None => "unmatched".to_string(),
    };
    let mut rate = None;
    let mut response = match run(gateway, request, call, &mut rate).await {
        Ok(response) => response,
        Err(error) => trailers_only(&error.to_status()),
    };
    if let Some(outcome) = &rate {
        outcome.apply_headers(response.headers_mut());
    }
    (response, label)
}

/// A response that is only a status (HTTP 200, `grpc-status` in the headers).
fn trailers_only(status: &tonic::Status) -> Response<Body> {
    let mut response = Response::new(empty());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if status.add_header(response.headers_mut()).is_err() {
        response.headers_mut().insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    response
}

async fn run(
    gateway: &Gateway,
    request: Request<Incoming>,
    call: &Call,
    rate: &mut Option<Outcome>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let method = gateway.routes.method(&path).filter(|m| m.external).ok_or_else(ApiError::not_external)?.clone();
    if request.version() != Version::HTTP_2 {
        return Err(ApiError::unsupported_media_type("gRPC needs HTTP/2"));
    }
    if !gateway.module_enabled(&method.module) {
        return Err(ApiError::module_disabled(&method.module));
    }
    let (parts, body) = request.into_parts();
    let credential = auth::authenticate_counted(gateway, &parts.headers, &method, call, rate).await?;
    auth::limit_and_scope(gateway, &method, call, credential.as_ref(), None, rate).await?;
    let credential = credential.map(|c| c.header);
    let limit = gateway.settings.body_limit;
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64 + 5) {
        return Err(ApiError::payload_too_large(limit));
    }

    let mut headers = forwarded_grpc(call, &parts.headers, credential.as_ref());
    headers.insert(TE, HeaderValue::from_static("trailers"));
    // Unary calls get the deadline of Rule 15; streams have none (Rule 47).
    let deadline = method.is_unary().then(|| {
        let requested = parts.headers.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        gateway.deadline(&method, requested)
    });
    if let Some(deadline) = deadline
        && let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(deadline))
    {
        headers.insert("grpc-timeout", v);
    }
    let mut outgoing = Request::new(tonic::body::Body::new(body));
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = parts.uri;
    *outgoing.version_mut() = Version::HTTP_2;
    *outgoing.headers_mut() = headers;

    let forward = gateway.upstreams.forward(&method.module, outgoing);
    let result = match deadline {
        Some(deadline) => tokio::time::timeout(deadline, forward).await.unwrap_or(Err(UpstreamError::Deadline)),
        None => forward.await,
    };
    let response = result.map_err(|e| match e {
        UpstreamError::Status(status) => ApiError::from_status(&status),
        UpstreamError::Unreachable => ApiError::unavailable(&method.module),
        UpstreamError::Deadline => ApiError::deadline_exceeded(),
    })?;
    Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
}
