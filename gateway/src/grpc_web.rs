//! gRPC-web for browsers: `POST /{package}.{Service}/{Method}` with `application/grpc-web[+proto]`
//! (binary) or `application/grpc-web-text[+proto]` (base64 per frame), over HTTP/1.1 or HTTP/2.
//!
//! The request's frames are forwarded to the backend as native gRPC without decoding; the
//! response's data frames stream back and its trailers become a final frame flagged `0x80`
//! (`grpc-status`, `grpc-message`, `grpc-status-details-bin`). Unary and server-streaming
//! methods are served; client streaming cannot be expressed by browsers and answers
//! UNIMPLEMENTED. Reachability and credentials follow the same rules as every surface. Unary
//! methods that carry the browser refresh cookie (Rule 29) are the exception: their message is
//! decoded and re-encoded so the cookie and CSRF handling of `cookies` applies.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prost::Message;
use prost_reflect::DynamicMessage;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::auth;
use crate::cookies;
use crate::errors::ApiError;
use crate::http::{Body, BoxError, Call, Gateway, forwarded_grpc, full};
use crate::ratelimit::Outcome;
use crate::upstream::{UpstreamError, format_grpc_timeout, parse_grpc_timeout};

/// Binary or base64 text framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web[+proto]`.
    Binary,
    /// `application/grpc-web-text[+proto]`.
    Text,
}

impl Mode {
    fn from_content_type(content_type: &str) -> Option<Mode> {
        let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match media.as_str() {
            "application/grpc-web" | "application/grpc-web+proto" => Some(Mode::Binary),
            "application/grpc-web-text" | "application/grpc-web-text+proto" => Some(Mode::Text),
            _ => None,
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Mode::Binary => "application/grpc-web+proto",
            Mode::Text => "application/grpc-web-text+proto",
        })
    }

    fn encode(self, frame: Bytes) -> Bytes {
        match self {
            Mode::Binary => frame,
            Mode::Text => Bytes::from(STANDARD.encode(&frame)),
        }
    }
}

/// The trailers frame: flag `0x80`, length, then `name:value\r\n` lines.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in trailers {
        block.put_slice(name.as_str().as_bytes());
        block.put_u8(b':');
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(0x80);
    frame.put_u32(block.len() as u32);
    frame.put_slice(&block);
    frame.freeze()
}

fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    trailers
}

/// A complete gRPC-web response that is only a status.
fn status_response(mode: Mode, status: &Status) -> Response<Body> {
    let mut response = Response::new(full(mode.encode(trailer_frame(&status_trailers(status)))));
    response.headers_mut().insert(CONTENT_TYPE, mode.content_type());
    response
}

const TEXT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a text-mode body: base64 chunks, each possibly padded, concatenated.
fn decode_text(body: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let mut rest = clean.as_slice();
    while !rest.is_empty() {
        let end = match rest.iter().position(|&b| b == b'=') {
            Some(i) => i + rest[i..].iter().take_while(|&&b| b == b'=').count(),
            None => rest.len(),
        };
        out.extend(TEXT.decode(&rest[..end]).ok()?);
        rest = &rest[end..];
    }
    Some(out)
}

/// Serves a gRPC-web request; returns the response and the method path for metrics.
pub async fn handle(gateway: &Gateway, request: Request<Incoming>, call: &Call) -> (Response<Body>, String) {
    let label = match gateway.routes.method(request.uri().path()) {
        Some(method) => method.path.clone(),
        None => "unmatched".to_string(),
    };
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(mode) = Mode::from_content_type(content_type) else {
        let error = ApiError::unsupported_media_type("gRPC-web requests must be application/grpc-web[-text][+proto]");
        return (error.to_response(&call.correlation_id), label);
    };
    let mut rate = None;
    let mut response = match run(gateway, request, call, mode, &mut rate).await {
        Ok(response) => response,
        Err(error) => status_response(mode, &error.to_status()),
    };
    if let Some(outcome) = &rate {
        outcome.apply_headers(response.headers_mut());
    }
    (response, label)
}

async fn run(
    gateway: &Gateway,
    request: Request<Incoming>,
    call: &Call,
    mode: Mode,
    rate: &mut Option<Outcome>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let method = gateway.routes.method(&path).filter(|m| m.external).ok_or_else(ApiError::not_external)?.clone();
    if request.method() != Method::POST {
        return Err(ApiError::method_not_allowed(vec![Method::POST]));
    }
    if !gateway.module_enabled(&method.module) {
        return Err(ApiError::module_disabled(&method.module));
    }
    if method.descriptor.is_client_streaming() {
        return Err(ApiError::not_implemented("Client streaming is not available over gRPC-web"));
    }
    let (parts, body) = request.into_parts();
    let credential = auth::authenticate_counted(gateway, &parts.headers, &method, call, rate).await?;
    auth::limit_and_scope(gateway, &method, call, credential.as_ref(), None, rate).await?;
    let credential = credential.map(|c| c.header);

    // The body: every frame of the request, bounded by the limit (base64 inflates text by 4/3).
    let limit = gateway.settings.body_limit;
    let wire_limit = match mode {
        Mode::Binary => limit + 5,
        Mode::Text => (limit + 5) / 3 * 4 + 8,
    };
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > wire_limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let bytes = Limited::new(body, wire_limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::bad_request("The request body could not be read")
            }
        })?
        .to_bytes();
    let frames = match mode {
        Mode::Binary => bytes,
        Mode::Text => Bytes::from(decode_text(&bytes).ok_or_else(|| ApiError::bad_request("The body is not base64"))?),
    };

    // The backend request: native gRPC with the caller's metadata, minus what gRPC-web adds.
    let mut headers = forwarded_grpc(call, &parts.headers, credential.as_ref());
    for name in ["accept", "x-grpc-web", "x-user-agent", "origin", "referer", "grpc-timeout"] {
        headers.remove(name);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    let unary = method.is_unary();
    let deadline = unary.then(|| {
        let requested = parts.headers.get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        gateway.deadline(&method, requested)
    });
    if let Some(deadline) = deadline
        && let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(deadline))
    {
        headers.insert("grpc-timeout", v);
    }
    if cookies::involved(&method.descriptor, &method.path) && unary {
        let deadline = deadline.unwrap_or(gateway.settings.default_deadline);
        return cookie_call(gateway, &method, &parts.headers, headers, frames, mode, deadline).await;
    }
    let mut outgoing = Request::new(tonic::body::Body::new(http_body_util::Full::new(frames)));
    *outgoing.method_mut() = Method::POST;
    *outgoing.uri_mut() = parts.uri.clone();
    *outgoing.version_mut() = http::Version::HTTP_2;
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
    Ok(web_response(response, mode))
}

/// A unary call of a method that carries a cookie-annotated field (Rule 29): the message is
/// decoded so the cookie can fill the request and the response field can move into a cookie,
/// exactly as on REST, then re-encoded.
async fn cookie_call(
    gateway: &Gateway,
    method: &crate::routes::MethodInfo,
    incoming: &HeaderMap,
    mut headers: HeaderMap,
    frames: Bytes,
    mode: Mode,
    deadline: std::time::Duration,
) -> Result<Response<Body>, ApiError> {
    let bad = || ApiError::bad_request("The body is not one gRPC-web message frame");
    if frames.len() < 5 || frames[0] != 0 {
        return Err(bad());
    }
    let len = (&frames[1..5]).get_u32() as usize;
    let payload = frames.get(5..5 + len).filter(|_| frames.len() == 5 + len).ok_or_else(bad)?;
    let mut message = DynamicMessage::decode(method.descriptor.input(), payload)
        .map_err(|_| ApiError::bad_request("The request message could not be decoded"))?;
    let filled = cookies::fill_request(gateway, &mut message, incoming)?;
    for name in [CONTENT_TYPE.as_str(), TE.as_str(), "grpc-timeout"] {
        headers.remove(name);
    }
    let metadata = MetadataMap::from_headers(headers);
    let answer =
        gateway.upstreams.unary(&method.module, &method.path, message.encode_to_vec().into(), metadata, deadline).await;
    let mut response_headers = HeaderMap::new();
    let body = match answer {
        Ok((_, bytes)) => {
            let mut output = DynamicMessage::decode(method.descriptor.output(), bytes).map_err(|e| {
                tracing::error!(method = %method.path, error = %e, "undecodable backend response");
                ApiError::internal()
            })?;
            cookies::apply_response(gateway, &method.path, &mut output, incoming, filled, &mut response_headers);
            let encoded = output.encode_to_vec();
            let mut frame = BytesMut::with_capacity(5 + encoded.len());
            frame.put_u8(0);
            frame.put_u32(encoded.len() as u32);
            frame.put_slice(&encoded);
            let mut out = BytesMut::from(mode.encode(frame.freeze()).as_ref());
            out.put_slice(&mode.encode(trailer_frame(&status_trailers(&Status::ok("")))));
            out.freeze()
        }
        Err(e) => {
            let status = match e {
                UpstreamError::Status(status) => status,
                UpstreamError::Unreachable => ApiError::unavailable(&method.module).to_status(),
                UpstreamError::Deadline => ApiError::deadline_exceeded().to_status(),
            };
            if filled.from_cookie && status.code() == tonic::Code::Unauthenticated {
                cookies::clear(gateway, &mut response_headers);
            }
            mode.encode(trailer_frame(&status_trailers(&status)))
        }
    };
    let mut response = Response::new(full(body));
    *response.headers_mut() = response_headers;
    response.headers_mut().insert(CONTENT_TYPE, mode.content_type());
    Ok(response)
}

/// The gRPC status an HTTP error status stands for (gRPC's HTTP-to-gRPC mapping).
fn status_of_http(status: StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    Status::new(code, format!("backend answered HTTP {}", status.as_u16()))
}

/// Turns a native gRPC response into a gRPC-web one.
fn web_response(response: http::Response<tonic::body::Body>, mode: Mode) -> Response<Body> {
    let (parts, body) = response.into_parts();
    if parts.status != StatusCode::OK {
        return status_response(mode, &status_of_http(parts.status));
    }
    let trailers_only = parts.headers.contains_key("grpc-status");
    let mut headers = HeaderMap::new();
    let mut status_headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        match name.as_str() {
            "content-type" | "content-length" | "te" | "trailer" | "transfer-encoding" => {}
            "grpc-status" | "grpc-message" | "grpc-status-details-bin" => {
                status_headers.append(name.clone(), value.clone());
            }
            _ => {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let body = if trailers_only {
        full(mode.encode(trailer_frame(&status_headers)))
    } else {
        WebBody { inner: body, mode, buffer: BytesMut::new(), done: false }.boxed_unsync()
    };
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response.headers_mut().insert(CONTENT_TYPE, mode.content_type());
    response
}

/// Re-frames a native gRPC response body for gRPC-web: data as is (base64 per frame in text
/// mode), trailers as a final `0x80` frame.
struct WebBody {
    inner: tonic::body::Body,
    mode: Mode,
    /// Text mode: bytes of an incomplete frame.
    buffer: BytesMut,
    done: bool,
}

impl WebBody {
    /// Complete frames at the front of the buffer, each base64-encoded on its own.
    fn complete_text_frames(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        loop {
            if self.buffer.len() < 5 {
                break;
            }
            let len = (&self.buffer[1..5]).get_u32() as usize;
            if self.buffer.len() < 5 + len {
                break;
            }
            let frame = self.buffer.split_to(5 + len).freeze();
            out.put_slice(STANDARD.encode(&frame).as_bytes());
        }
        out.freeze()
    }
}

impl http_body::Body for WebBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let trailers = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match this.mode {
                        Mode::Binary => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Mode::Text => {
                            this.buffer.extend_from_slice(&data);
                            let ready = this.complete_text_frames();
                            if ready.is_empty() {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(ready))));
                        }
                    },
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => trailers,
                        Err(_) => continue,
                    },
                },
                Some(Err(status)) => status_trailers(&status),
                None => status_trailers(&Status::unknown("the backend closed the stream without a status")),
            };
            this.done = true;
            return Poll::Ready(Some(Ok(Frame::data(this.mode.encode(trailer_frame(&trailers))))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_select_the_mode() {
        assert_eq!(Mode::from_content_type("application/grpc-web"), Some(Mode::Binary));
        assert_eq!(Mode::from_content_type("application/grpc-web+proto"), Some(Mode::Binary));
        assert_eq!(Mode::from_content_type("application/grpc-web-text"), Some(Mode::Text));
        assert_eq!(Mode::from_content_type("application/grpc-web-text+proto; charset=x"), Some(Mode::Text));
        assert_eq!(Mode::from_content_type("application/grpc-web+json"), None);
    }

    #[test]
    fn trailer_frames_carry_the_status_lines() {
        let frame = trailer_frame(&status_trailers(&Status::not_found("no such task")));
        assert_eq!(frame[0], 0x80);
        let len = (&frame[1..5]).get_u32() as usize;
        let text = std::str::from_utf8(&frame[5..]).expect("ascii");
        assert_eq!(len, text.len());
        assert!(text.contains("grpc-status:5\r\n"));
        assert!(text.contains("grpc-message:no%20such%20task\r\n"));
    }

    #[test]
    fn text_bodies_decode_concatenated_padded_chunks() {
        let a = STANDARD.encode([0u8, 0, 0, 0, 1, 7]);
        let b = STANDARD.encode([1u8, 2]);
        let joined = format!("{a}{b}");
        assert_eq!(decode_text(joined.as_bytes()), Some(vec![0, 0, 0, 0, 1, 7, 1, 2]));
        assert_eq!(decode_text(b"!!!"), None);
    }
}
