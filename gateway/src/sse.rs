//! Server-sent events for server-streaming methods (spec Rules 44–47).
//!
//! A GET binding of a server-streaming method, asked for with `Accept: text/event-stream`, opens
//! the backend stream and writes one event per message:
//! - `event:` is the set case of the message's oneof (`notification`, `unread_count`), or the
//!   snake_case message name when it has none; `data:` is that value as one line of JSON;
//! - `id:` is the field marked `(trellis.common.v1.sse_id)` (on the message, or on the message
//!   of the set case);
//! - `: ping` after `SSE_HEARTBEAT` without data;
//! - a backend error, the credential's `exp`, or the revocation of its session (re-checked every
//!   second through kit's revocation check) ends the stream with `event: error` carrying the
//!   envelope (`SESSION_REVOKED` for a revoked session).
//!
//! `Last-Event-ID` (header, or `last_event_id` in the query) fills the request's `last_event_id`;
//! `access_token` in the query is accepted here only, because `EventSource` cannot send headers.
//! Streams have no deadline, count once toward the rate limits, and are bounded per replica by
//! `SSE_MAX_STREAMS`. A client that goes away drops the body, which cancels the backend stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use tonic::Code;
use tonic::metadata::MetadataMap;
use trellis_kit::auth::revocation::Revocations;

use crate::auth;
use crate::errors::ApiError;
use crate::http::{Body, BoxError, Call, Gateway, forwarded};
use crate::ratelimit::Outcome;
use crate::routes::Route;
use crate::transcode::{self, Inbound};
use crate::upstream::UpstreamError;

/// Holds one slot of `SSE_MAX_STREAMS` until the stream ends.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take_slot(active: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
    let previous = active.fetch_add(1, Ordering::AcqRel);
    let slot = Slot(active.clone());
    (previous < max).then_some(slot)
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn sse_id(message: &DynamicMessage) -> Option<String> {
    let desc = message.descriptor();
    let ext = desc.parent_pool().get_extension_by_name("trellis.common.v1.sse_id")?;
    for field in desc.fields() {
        let options = field.options();
        if options.has_extension(&ext) && options.get_extension(&ext).as_bool() == Some(true) {
            return match message.get_field(&field).as_ref() {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::String(_) => None,
                Value::I64(n) => Some(n.to_string()),
                Value::U64(n) => Some(n.to_string()),
                Value::I32(n) => Some(n.to_string()),
                Value::U32(n) => Some(n.to_string()),
                _ => None,
            };
        }
    }
    None
}

/// The SSE frame of one streamed message (Rule 45).
pub fn event(message: &DynamicMessage) -> String {
    let desc = message.descriptor();
    let case = desc
        .oneofs()
        .filter(|o| !o.is_synthetic())
        .flat_map(|o| o.fields().collect::<Vec<_>>())
        .find(|f| message.has_field(f));
    let (name, data) = match &case {
        Some(field) => (field.name().to_string(), transcode::field_json(message, field)),
        None => (snake_case(desc.name()), transcode::message_to_json(message)),
    };
    let id = sse_id(message).or_else(|| {
        let field = case.as_ref()?;
        message.get_field(field).as_message().and_then(sse_id)
    });
    let mut out = String::new();
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(&id.replace(['\r', '\n'], ""));
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(&name);
    out.push_str("\ndata: ");
    out.push_str(&serde_json::to_string(&data).unwrap_or_default());
    out.push_str("\n\n");
    out
}

/// `event: error` with the envelope.
pub fn error_event(error: &ApiError, correlation_id: &str) -> String {
    format!("event: error\ndata: {}\n\n", serde_json::to_string(&error.envelope(correlation_id)).unwrap_or_default())
}

fn token_expired() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, "TOKEN_EXPIRED", "The access token has expired")
}

fn streams_exhausted() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Code::Unavailable,
        "SERVICE_UNAVAILABLE",
        "Too many open streams on this server; retry later",
    );
    e.retry_after = Some(5);
    e
}

/// How often an open stream re-checks that its session is not revoked.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(1);

/// The session behind a stream, re-checked every [`REVOCATION_CHECK`].
struct Session {
    revocations: Arc<Revocations>,
    sid: String,
    token: String,
    next_check: tokio::time::Instant,
}

struct State {
    stream: tonic::Streaming<Bytes>,
    output: MessageDescriptor,
    heartbeat: Duration,
    expires: Option<tokio::time::Instant>,
    session: Option<Session>,
    correlation_id: String,
    done: bool,
    _slot: Slot,
}

async fn next_frame(mut state: State) -> Option<(Result<Frame<Bytes>, BoxError>, State)> {
    if state.done {
        return None;
    }
    loop {
        let expiry = async {
            match state.expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let revocation_due = async {
            match &state.session {
                Some(session) => tokio::time::sleep_until(session.next_check).await,
                None => std::future::pending().await,
            }
        };
        let text = tokio::select! {
            biased;
            () = expiry => {
                state.done = true;
                error_event(&token_expired(), &state.correlation_id)
            }
            () = revocation_due => {
                let Some(session) = state.session.as_mut() else { continue };
                session.next_check = tokio::time::Instant::now() + REVOCATION_CHECK;
                match session.revocations.check(&session.sid, &session.token).await {
                    // A revoked session ends the stream (ARCHITECTURE §4: within one second).
                    Err(e) if e.code() == Code::Unauthenticated => {
                        state.done = true;
                        error_event(&ApiError::from_kit(e), &state.correlation_id)
                    }
                    // While neither the feed nor identity can tell, an open stream stays open.
                    _ => continue,
                }
            }
            message = state.stream.message() => match message {
                Ok(Some(bytes)) => match DynamicMessage::decode(state.output.clone(), bytes) {
                    Ok(message) => event(&message),
                    Err(e) => {
                        tracing::error!(correlation_id = %state.correlation_id, error = %e, "undecodable streamed message");
                        state.done = true;
                        error_event(&ApiError::internal(), &state.correlation_id)
                    }
                },
                Ok(None) => return None,
                Err(status) => {
                    state.done = true;
                    error_event(&ApiError::from_status(&status), &state.correlation_id)
                }
            },
            () = tokio::time::sleep(state.heartbeat) => ": ping\n\n".to_string(),
        };
        return Some((Ok(Frame::data(Bytes::from(text))), state));
    }
}

fn event_stream_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Splits the SSE-only parameters off the query: (`access_token`, `last_event_id`, the rest).
fn split_query(query: Option<&str>) -> (Option<String>, Option<String>, String) {
    let mut token = None;
    let mut last = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "access_token" => token = Some(value.into_owned()),
            "last_event_id" => last = Some(value.into_owned()),
            _ => {
                rest.append_pair(&key, &value);
            }
        }
    }
    (token, last, rest.finish())
}

/// Opens an SSE stream for `route`.
pub async fn open(
    gateway: &Gateway,
    route: &Route,
    vars: &[(String, String)],
    parts: &Parts,
    call: &Call,
    rate: &mut Option<Outcome>,
) -> Result<Response<Body>, ApiError> {
    let method = &route.method;
    let (query_token, query_last, query) = split_query(parts.uri.query());
    let mut headers: HeaderMap = parts.headers.clone();
    if let Some(token) = query_token {
        if headers.contains_key(AUTHORIZATION) {
            return Err(ApiError::bad_request("Send one credential: the Authorization header or access_token"));
        }
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError::invalid_token())?;
        headers.insert(AUTHORIZATION, value);
    }
    let credential = auth::authenticate_counted(gateway, &headers, method, call, rate).await?;
    auth::limit_and_scope(gateway, method, call, credential.as_ref(), None, rate).await?;
    let slot = take_slot(&gateway.active_streams, gateway.settings.sse_max_streams).ok_or_else(streams_exhausted)?;

    let mut message = transcode::request_message(
        route,
        Inbound { body: None, path_vars: vars, query: (!query.is_empty()).then_some(query.as_str()) },
    )?;
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(query_last)
        .filter(|id| !id.is_empty());
    if let Some(id) = last_event_id
        && let Some(field) = message.descriptor().get_field_by_name("last_event_id")
    {
        message.set_field(&field, Value::String(id));
    }

    // The stream ends at the credential's expiry (Rule 46), or when its session is revoked.
    let mut expires = None;
    let mut session = None;
    if let Some(credential) = &credential
        && let Some(token) = credential.header.to_str().ok().and_then(|v| v.split_once(' ')).map(|(_, t)| t.trim())
        && let Ok(claims) = gateway.auth.verify(token).await
    {
        let left = claims.exp - chrono::Utc::now().timestamp();
        expires = Some(tokio::time::Instant::now() + Duration::from_secs(left.max(0) as u64));
        if let (Some(revocations), Some(sid)) = (gateway.auth.revocations(), claims.sid) {
            session = Some(Session {
                revocations: revocations.clone(),
                sid,
                token: token.to_string(),
                next_check: tokio::time::Instant::now() + REVOCATION_CHECK,
            });
        }
    }

    let metadata = MetadataMap::from_headers(forwarded(call, &parts.headers, credential.as_ref().map(|c| &c.header)));
    let opened = gateway
        .upstreams
        .server_streaming(&method.module, &method.path, message.encode_to_vec().into(), metadata)
        .await;
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => {
            let error = match e {
                UpstreamError::Status(status) => ApiError::from_status(&status),
                UpstreamError::Unreachable => ApiError::unavailable(&method.module),
                UpstreamError::Deadline => ApiError::deadline_exceeded(),
            };
            let body = crate::http::full(error_event(&error, &call.correlation_id));
            return Ok(event_stream_response(body));
        }
    };
    let state = State {
        stream,
        output: method.descriptor.output(),
        heartbeat: gateway.settings.sse_heartbeat,
        expires,
        session,
        correlation_id: call.correlation_id.clone(),
        done: false,
        _slot: slot,
    };
    let body = StreamBody::new(futures::stream::unfold(state, next_frame)).boxed_unsync();
    Ok(event_stream_response(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_become_snake_case_event_names() {
        assert_eq!(snake_case("Widget"), "widget");
        assert_eq!(snake_case("UnreadCount"), "unread_count");
    }

    #[test]
    fn the_query_loses_its_sse_parameters() {
        let (token, last, rest) = split_query(Some("access_token=abc&count=2&last_event_id=7&x=a%20b"));
        assert_eq!(token.as_deref(), Some("abc"));
        assert_eq!(last.as_deref(), Some("7"));
        assert_eq!(rest, "count=2&x=a+b");
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let active = Arc::new(AtomicUsize::new(0));
        let first = take_slot(&active, 1).expect("first");
        assert!(take_slot(&active, 1).is_none());
        drop(first);
        assert!(take_slot(&active, 1).is_some());
        assert_eq!(active.load(Ordering::Acquire), 0);
    }

    #[test]
    fn events_carry_the_oneof_case_and_the_sse_id() {
        let pool = crate::test_pool::pool();
        let desc = pool.get_message_by_name("trellis.widgets.v1.WidgetEvent").expect("type");
        let message =
            DynamicMessage::deserialize(desc, serde_json::json!({"eventId": "9", "unreadCount": 4})).expect("message");
        assert_eq!(event(&message), "id: 9\nevent: unread_count\ndata: 4\n\n");
        let widget = pool.get_message_by_name("trellis.widgets.v1.Widget").expect("type");
        let message = DynamicMessage::deserialize(widget, serde_json::json!({"id": "w1"})).expect("message");
        let text = event(&message);
        assert!(text.starts_with("event: widget\ndata: {"), "{text}");
        assert!(!text.contains("id: "), "no sse_id field");
    }
}
