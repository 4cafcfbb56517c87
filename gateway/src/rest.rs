//! The REST/JSON surface: route → module check → media types → credential → body → request
//! message → unary backend call → response message → JSON with the status of Rule 9.

use std::time::Instant;

use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prost::Message;
use prost_reflect::DynamicMessage;
use tonic::metadata::MetadataMap;

use crate::auth;
use crate::cookies;
use crate::errors::ApiError;
use crate::http::{Body, Call, Gateway, empty, forwarded};
use crate::ratelimit::Outcome;
use crate::routes::{Lookup, Success};
use crate::transcode::{self, Inbound};
use crate::upstream::UpstreamError;

/// Routes whose responses may be cached by anyone (everything else is `no-store`).
const PUBLIC_CACHE: &[(&str, &str)] = &[("/trellis.identity.v1.TokenService/GetJwks", "public, max-age=300")];

/// Serves a REST request; returns the response and the route label for metrics.
pub async fn handle(gateway: &Gateway, request: Request<Incoming>, call: &Call) -> (Response<Body>, String) {
    let mut label = "unmatched".to_string();
    let (parts, body) = request.into_parts();
    let mut rate = None;
    let mut response = match run(gateway, &parts, body, call, &mut label, &mut rate).await {
        Ok(response) => response,
        Err(error) => {
            let mut response = error.to_response(&call.correlation_id);
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    };
    if let Some(outcome) = &rate {
        outcome.apply_headers(response.headers_mut());
    }
    let response = if parts.method == Method::HEAD { response.map(|_| empty()) } else { response };
    (response, label)
}

fn accepts_json(parts: &Parts) -> bool {
    let Some(accept) = parts.headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else { return true };
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        matches!(media.as_str(), "" | "*/*" | "application/*" | "application/json")
    })
}

fn accepts_event_stream(parts: &Parts) -> bool {
    parts.headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"))
}

/// `application/json`, optionally with `charset=utf-8` (Rule 10).
fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    media.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset") && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

async fn read_body(gateway: &Gateway, parts: &Parts, body: Incoming) -> Result<Option<serde_json::Value>, ApiError> {
    let limit = gateway.settings.body_limit;
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let bytes = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::bad_request("The request body could not be read")
        }
    })?;
    let bytes = bytes.to_bytes();
    if bytes.is_empty() {
        return Ok(None);
    }
    let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !is_json(content_type) {
        return Err(ApiError::unsupported_media_type("Request bodies must be application/json (UTF-8)"));
    }
    transcode::parse_json(&bytes).map(Some)
}

async fn run(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    call: &Call,
    label: &mut String,
    rate: &mut Option<Outcome>,
) -> Result<Response<Body>, ApiError> {
    let (route, vars) = match gateway.routes.find(&parts.method, parts.uri.path()) {
        Lookup::Found(route, vars) => (route.clone(), vars),
        Lookup::BadVariable(field, why) => return Err(ApiError::validation(field, why)),
        Lookup::MethodNotAllowed(allow) => return Err(ApiError::method_not_allowed(allow)),
        Lookup::NotFound => return Err(ApiError::route_not_found()),
    };
    *label = route.label();
    let method = &route.method;
    if !gateway.module_enabled(&method.module) {
        return Err(ApiError::module_disabled(&method.module));
    }
    if method.descriptor.is_client_streaming() {
        return Err(ApiError::not_implemented("This method streams requests; call it over gRPC"));
    }
    if method.descriptor.is_server_streaming() {
        if !accepts_event_stream(parts) || route.http_method != Method::GET {
            return Err(ApiError::not_acceptable());
        }
        return crate::sse::open(gateway, &route, &vars, parts, call, rate).await;
    }
    if !accepts_json(parts) {
        return Err(ApiError::not_acceptable());
    }
    let credential = auth::authenticate_counted(gateway, &parts.headers, method, call, rate).await?;
    let body = read_body(gateway, parts, body).await?;
    let email = method
        .rate_key_field
        .as_deref()
        .and_then(|field| body.as_ref()?.get(field)?.as_str())
        .map(|email| email.trim().to_lowercase())
        .filter(|email| !email.is_empty());
    auth::limit_and_scope(gateway, method, call, credential.as_ref(), email.as_deref(), rate).await?;
    let mut message = transcode::request_message(&route, Inbound { body, path_vars: &vars, query: parts.uri.query() })?;
    let filled = cookies::fill_request(gateway, &mut message, &parts.headers)?;

    let metadata = MetadataMap::from_headers(forwarded(call, &parts.headers, credential.as_ref().map(|c| &c.header)));
    let deadline = gateway.deadline(method, None);
    let started = Instant::now();
    let result =
        gateway.upstreams.unary(&method.module, &method.path, message.encode_to_vec().into(), metadata, deadline).await;
    gateway.metrics.upstream(&method.module, started.elapsed());
    let outcome = result.map_err(|e| match e {
        UpstreamError::Status(status) => {
            let error = ApiError::from_status(&status);
            if error.status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(correlation_id = %call.correlation_id, method = %method.path, status = %status, "backend failed");
            }
            error
        }
        UpstreamError::Unreachable => ApiError::unavailable(&method.module),
        UpstreamError::Deadline => ApiError::deadline_exceeded(),
    });
    let (_, bytes) = match outcome {
        Ok(answer) => answer,
        // A refused cookie-filled refresh (expired, reused) clears the browser's cookies (Rule 28).
        Err(error) if filled.from_cookie && error.status == StatusCode::UNAUTHORIZED => {
            let mut response = error.to_response(&call.correlation_id);
            cookies::clear(gateway, response.headers_mut());
            return Ok(response);
        }
        Err(error) => return Err(error),
    };
    let mut output = DynamicMessage::decode(method.descriptor.output(), bytes).map_err(|e| {
        tracing::error!(correlation_id = %call.correlation_id, method = %method.path, error = %e, "undecodable backend response");
        ApiError::internal()
    })?;
    let mut cookie_headers = http::HeaderMap::new();
    cookies::apply_response(gateway, &method.path, &mut output, &parts.headers, filled, &mut cookie_headers);

    let mut response = match &route.success {
        Success::NoContent => {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Success::Redirect => {
            let location = output.get_field_by_name("location").and_then(|v| v.as_str().map(str::to_string));
            let location = location.and_then(|l| HeaderValue::from_str(&l).ok()).ok_or_else(|| {
                tracing::error!(correlation_id = %call.correlation_id, method = %method.path, "redirect without a location");
                ApiError::internal()
            })?;
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::FOUND;
            response.headers_mut().insert(LOCATION, location);
            response
        }
        success => {
            let json = match &route.response_body {
                Some(field) => transcode::field_json(&output, field),
                None => transcode::message_to_json(&output),
            };
            let mut response = crate::http::json(StatusCode::OK, &json);
            if let Success::Created(template) = success {
                *response.status_mut() = StatusCode::CREATED;
                let location = template.as_ref().and_then(|t| transcode::location(t, &output, &vars));
                if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                    response.headers_mut().insert(LOCATION, location);
                }
            }
            response
        }
    };
    let cache = PUBLIC_CACHE.iter().find(|(path, _)| *path == method.path).map_or("no-store", |(_, policy)| policy);
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    for (name, value) in &cookie_headers {
        response.headers_mut().append(name, value.clone());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON;charset=\"UTF-8\""));
        assert!(!is_json("application/json; charset=latin1"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
