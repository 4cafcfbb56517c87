//! One error shape for every surface.
//!
//! [`ApiError`] is what a failed request ends with, whether a backend answered with a
//! `tonic::Status` ([`ApiError::from_status`], through the table in [`mapping`]) or the gateway
//! refused the request itself (route, media type, body, JSON, credential). REST renders it as the
//! envelope `{"error":{code,message,details,metadata,correlation_id,timestamp}}`; gRPC and
//! gRPC-web render it as a status whose `ErrorInfo.reason` is the envelope code
//! ([`ApiError::to_status`]). A backend's own status reaches gRPC clients unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Response, StatusCode};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use trellis_kit::error::{DOMAIN, INTERNAL_MESSAGE};

use crate::http::{Body, full};

/// HTTP 499, nginx's "client closed request" (gRPC CANCELLED).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The HTTP status and default envelope code of a gRPC code (ARCHITECTURE §6, spec error table).
pub fn mapping(code: Code) -> (StatusCode, &'static str) {
    let (status, name) = match code {
        Code::Ok => (200, "OK"),
        Code::InvalidArgument => (400, "VALIDATION_ERROR"),
        Code::OutOfRange => (400, "OUT_OF_RANGE"),
        Code::FailedPrecondition => (409, "FAILED_PRECONDITION"),
        Code::Aborted => (409, "CONFLICT"),
        Code::AlreadyExists => (409, "ALREADY_EXISTS"),
        Code::Unauthenticated => (401, "UNAUTHENTICATED"),
        Code::PermissionDenied => (403, "FORBIDDEN"),
        Code::NotFound => (404, "NOT_FOUND"),
        Code::ResourceExhausted => (429, "RATE_LIMIT_EXCEEDED"),
        Code::Cancelled => (CLIENT_CLOSED_REQUEST, "CLIENT_CLOSED_REQUEST"),
        Code::DeadlineExceeded => (504, "DEADLINE_EXCEEDED"),
        Code::Unimplemented => (501, "NOT_IMPLEMENTED"),
        Code::Unavailable => (503, "SERVICE_UNAVAILABLE"),
        Code::Internal | Code::Unknown | Code::DataLoss => (500, "INTERNAL_ERROR"),
    };
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), name)
}

/// A failed request, ready to be rendered on any surface (boxed: results stay small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(Box<ErrorBody>);

impl std::ops::Deref for ApiError {
    type Target = ErrorBody;
    fn deref(&self) -> &ErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorBody {
        &mut self.0
    }
}

/// What an [`ApiError`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// HTTP status (REST).
    pub status: StatusCode,
    /// gRPC code (gRPC and gRPC-web).
    pub grpc: Code,
    /// Envelope code, e.g. `VALIDATION_ERROR`; `ErrorInfo.reason` on gRPC.
    pub code: String,
    /// For a human.
    pub message: String,
    /// Field violations: (snake_case JSON path, message).
    pub details: Vec<(String, String)>,
    /// `ErrorInfo.metadata`.
    pub metadata: BTreeMap<String, String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
    /// `Allow` (405 only).
    pub allow: Vec<Method>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, grpc: Code, code: &str, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorBody {
            status,
            grpc,
            code: code.to_string(),
            message: message.into(),
            details: Vec::new(),
            metadata: BTreeMap::new(),
            retry_after: None,
            allow: Vec::new(),
        }))
    }

    /// Adds a field violation.
    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.details.push((field.into(), message.into()));
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_string(), value.into());
        self
    }

    /// Sets `Retry-After` (seconds).
    pub fn with_retry(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The mapping of a backend's status (spec error table).
    pub fn from_status(status: &Status) -> Self {
        let (http, default_code) = mapping(status.code());
        if http == StatusCode::INTERNAL_SERVER_ERROR {
            return Self::internal();
        }
        let details = status.get_error_details();
        let info = details.error_info();
        let reason = info.map(|i| i.reason.as_str()).filter(|r| !r.is_empty());
        let code = match (status.code(), reason) {
            // Every rate-limit 429 has one code; other RESOURCE_EXHAUSTED reasons keep theirs.
            (Code::ResourceExhausted, Some("RATE_LIMITED")) => default_code,
            (_, Some(reason)) => reason,
            (_, None) => default_code,
        };
        let message = if status.message().is_empty() { default_message(status.code()) } else { status.message() };
        let mut error = Self::new(http, status.code(), code, message);
        if let Some(bad) = details.bad_request() {
            error.details = bad.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect();
        }
        if let Some(info) = info {
            error.metadata = info.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        error.retry_after = details.retry_info().and_then(|r| r.retry_delay).map(ceil_seconds);
        if status.code() == Code::Unavailable && error.retry_after.is_none() {
            error.retry_after = Some(1);
        }
        error
    }

    /// A kit error (credential checks run in the gateway process).
    pub fn from_kit(error: trellis_kit::Error) -> Self {
        Self::from_status(&Status::from(error))
    }

    /// 500 INTERNAL_ERROR with the generic message; the cause is only ever logged.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, "INTERNAL_ERROR", INTERNAL_MESSAGE)
    }

    /// 404 ROUTE_NOT_FOUND.
    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::Unimplemented, "ROUTE_NOT_FOUND", "No route matches this path")
    }

    /// 405 METHOD_NOT_ALLOWED with `Allow`.
    pub fn method_not_allowed(allow: Vec<Method>) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unimplemented,
            "METHOD_NOT_ALLOWED",
            "This path does not accept this method",
        );
        e.allow = allow;
        e
    }

    /// 404 MODULE_DISABLED (UNIMPLEMENTED on gRPC), Rule 42.
    pub fn module_disabled(module: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Code::Unimplemented,
            "MODULE_DISABLED",
            format!("The {module} module is not enabled in this deployment"),
        )
        .with_metadata("module", module)
    }

    /// UNIMPLEMENTED for a method that is not reachable from outside the cell.
    pub fn not_external() -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, Code::Unimplemented, "NOT_IMPLEMENTED", "Method not found")
    }

    /// 501 for a binding the gateway cannot serve on this surface yet.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, Code::Unimplemented, "NOT_IMPLEMENTED", message)
    }

    /// 406 NOT_ACCEPTABLE.
    pub fn not_acceptable() -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            Code::InvalidArgument,
            "NOT_ACCEPTABLE",
            "Responses are application/json; the Accept header excludes it",
        )
    }

    /// 415 UNSUPPORTED_MEDIA_TYPE.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::InvalidArgument, "UNSUPPORTED_MEDIA_TYPE", message)
    }

    /// 413 PAYLOAD_TOO_LARGE (RESOURCE_EXHAUSTED on gRPC), Rule 39.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            "PAYLOAD_TOO_LARGE",
            format!("The request body exceeds {limit} bytes"),
        )
        .with_metadata("limit_bytes", limit.to_string())
    }

    /// 400 MALFORMED_JSON.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, "MALFORMED_JSON", message)
    }

    /// 400 VALIDATION_ERROR naming one field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, "VALIDATION_ERROR", "Request validation failed")
            .with_field(field, message)
    }

    /// 400 for a malformed request that is not about one field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, "VALIDATION_ERROR", message)
    }

    /// 401 UNAUTHENTICATED: no credential on a protected method.
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, "UNAUTHENTICATED", "Authentication required")
    }

    /// 401 INVALID_TOKEN.
    pub fn invalid_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, "INVALID_TOKEN", "The access token is invalid")
    }

    /// 401 INVALID_API_KEY.
    pub fn invalid_api_key() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, "INVALID_API_KEY", "The API key is invalid")
    }

    /// 429 RATE_LIMIT_EXCEEDED (RESOURCE_EXHAUSTED with RetryInfo on gRPC), Rule 33.
    pub fn rate_limited(outcome: &crate::ratelimit::Outcome) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::ResourceExhausted,
            "RATE_LIMIT_EXCEEDED",
            format!("Rate limit exceeded: {}", outcome.limit),
        )
        .with_metadata("limiter", outcome.limiter.name())
        .with_metadata("limit", outcome.limit.count.to_string())
        .with_metadata("window_seconds", outcome.limit.period.as_secs().max(1).to_string());
        e.retry_after = Some(outcome.retry_after_seconds());
        e
    }

    /// 403 SCOPE_MISSING (PERMISSION_DENIED on gRPC) with `required_scope`.
    pub fn scope_missing(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "SCOPE_MISSING",
            if scope.is_empty() {
                "API keys cannot call this method".to_string()
            } else {
                format!("The API key lacks the scope {scope}")
            },
        )
        .with_metadata("required_scope", scope)
    }

    /// 403 USER_TOKEN_REQUIRED: the method acts on the calling user, so API keys are refused.
    pub fn user_token_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "USER_TOKEN_REQUIRED",
            "This method needs a user's access token, not an API key",
        )
    }

    /// 403 CSRF_FAILED: a cookie would have filled a request field, but the origin is not trusted
    /// or `X-CSRF-Token` does not match the CSRF cookie (Rule 27).
    pub fn csrf_failed() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "CSRF_FAILED",
            "The request came from an untrusted origin or without a valid X-CSRF-Token",
        )
    }

    /// 403 CORS_ORIGIN_DENIED: a preflight from an origin outside the allow-list.
    pub fn cors_origin_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "CORS_ORIGIN_DENIED",
            "This origin may not call the API",
        )
    }

    /// 503 SERVICE_UNAVAILABLE: the backend cannot be reached.
    pub fn unavailable(module: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "SERVICE_UNAVAILABLE",
            format!("The {module} service is unavailable; retry later"),
        );
        e.retry_after = Some(1);
        e
    }

    /// 504 DEADLINE_EXCEEDED.
    pub fn deadline_exceeded() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            Code::DeadlineExceeded,
            "DEADLINE_EXCEEDED",
            "The request did not complete within its deadline",
        )
    }

    /// The status sent to gRPC and gRPC-web clients: the code, the message, and `ErrorInfo`
    /// (reason = envelope code), `BadRequest` and `RetryInfo` details.
    pub fn to_status(&self) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(
            self.code.clone(),
            DOMAIN,
            self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::HashMap<_, _>>(),
        );
        if !self.details.is_empty() {
            details.set_bad_request(
                self.details
                    .iter()
                    .map(|(field, message)| tonic_types::FieldViolation::new(field.clone(), message.clone()))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(seconds) = self.retry_after {
            details.set_retry_info(Some(Duration::from_secs(seconds)));
        }
        Status::with_error_details(self.grpc, self.message.clone(), details)
    }

    /// The envelope as JSON.
    pub fn envelope(&self, correlation_id: &str) -> serde_json::Value {
        let details: Vec<_> = self
            .details
            .iter()
            .map(|(field, message)| serde_json::json!({"field": field, "message": message}))
            .collect();
        serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": details,
                "metadata": self.metadata,
                "correlation_id": correlation_id,
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }
        })
    }

    /// The REST response: status, envelope, and `Allow`, `Retry-After`, `WWW-Authenticate`.
    pub fn to_response(&self, correlation_id: &str) -> Response<Body> {
        let body = serde_json::to_vec(&self.envelope(correlation_id)).unwrap_or_default();
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        if !self.allow.is_empty() {
            let allow = self.allow.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            if let Ok(value) = HeaderValue::from_str(&allow) {
                headers.insert(ALLOW, value);
            }
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = match self.code.as_str() {
                "TOKEN_EXPIRED" | "INVALID_TOKEN" => r#"Bearer realm="trellis", error="invalid_token""#,
                _ => r#"Bearer realm="trellis""#,
            };
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

fn default_message(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument | Code::OutOfRange => "The request is invalid",
        Code::FailedPrecondition => "The request conflicts with the current state",
        Code::Aborted => "The request conflicted with a concurrent change; retry",
        Code::AlreadyExists => "The resource already exists",
        Code::Unauthenticated => "Authentication required",
        Code::PermissionDenied => "Permission denied",
        Code::NotFound => "Not found",
        Code::ResourceExhausted => "Rate limit exceeded",
        Code::Cancelled => "The request was cancelled",
        Code::DeadlineExceeded => "The request did not complete within its deadline",
        Code::Unimplemented => "Not implemented",
        Code::Unavailable => "The service is unavailable; retry later",
        _ => INTERNAL_MESSAGE,
    }
}

fn ceil_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_kit::Error;

    fn http(code: Code) -> (u16, &'static str) {
        let (status, name) = mapping(code);
        (status.as_u16(), name)
    }

    #[test]
    fn ok_maps_to_200() {
        assert_eq!(http(Code::Ok), (200, "OK"));
    }
    #[test]
    fn invalid_argument_maps_to_400_validation_error() {
        assert_eq!(http(Code::InvalidArgument), (400, "VALIDATION_ERROR"));
    }
    #[test]
    fn out_of_range_maps_to_400_out_of_range() {
        assert_eq!(http(Code::OutOfRange), (400, "OUT_OF_RANGE"));
    }
    #[test]
    fn failed_precondition_maps_to_409() {
        assert_eq!(http(Code::FailedPrecondition), (409, "FAILED_PRECONDITION"));
    }
    #[test]
    fn aborted_maps_to_409_conflict() {
        assert_eq!(http(Code::Aborted), (409, "CONFLICT"));
    }
    #[test]
    fn already_exists_maps_to_409() {
        assert_eq!(http(Code::AlreadyExists), (409, "ALREADY_EXISTS"));
    }
    #[test]
    fn unauthenticated_maps_to_401() {
        assert_eq!(http(Code::Unauthenticated), (401, "UNAUTHENTICATED"));
    }
    #[test]
    fn permission_denied_maps_to_403_forbidden() {
        assert_eq!(http(Code::PermissionDenied), (403, "FORBIDDEN"));
    }
    #[test]
    fn not_found_maps_to_404() {
        assert_eq!(http(Code::NotFound), (404, "NOT_FOUND"));
    }
    #[test]
    fn resource_exhausted_maps_to_429_rate_limit_exceeded() {
        assert_eq!(http(Code::ResourceExhausted), (429, "RATE_LIMIT_EXCEEDED"));
    }
    #[test]
    fn cancelled_maps_to_499() {
        assert_eq!(http(Code::Cancelled), (499, "CLIENT_CLOSED_REQUEST"));
    }
    #[test]
    fn deadline_exceeded_maps_to_504() {
        assert_eq!(http(Code::DeadlineExceeded), (504, "DEADLINE_EXCEEDED"));
    }
    #[test]
    fn unimplemented_maps_to_501() {
        assert_eq!(http(Code::Unimplemented), (501, "NOT_IMPLEMENTED"));
    }
    #[test]
    fn unavailable_maps_to_503() {
        assert_eq!(http(Code::Unavailable), (503, "SERVICE_UNAVAILABLE"));
    }
    #[test]
    fn internal_maps_to_500() {
        assert_eq!(http(Code::Internal), (500, "INTERNAL_ERROR"));
    }
    #[test]
    fn unknown_maps_to_500() {
        assert_eq!(http(Code::Unknown), (500, "INTERNAL_ERROR"));
    }
    #[test]
    fn data_loss_maps_to_500() {
        assert_eq!(http(Code::DataLoss), (500, "INTERNAL_ERROR"));
    }

    #[test]
    fn the_reason_and_field_violations_become_code_and_details() {
        let status = Status::from(Error::validation("line_items[2].quantity", "must be positive"));
        let e = ApiError::from_status(&status);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "VALIDATION_ERROR");
        assert_eq!(e.details, vec![("line_items[2].quantity".to_string(), "must be positive".to_string())]);
    }

    #[test]
    fn a_service_reason_replaces_the_default_code_and_keeps_metadata() {
        let status =
            Status::from(Error::failed_precondition("TASK_DEPENDENCY_CYCLE", "cycle").with_metadata("task_id", "t1"));
        let e = ApiError::from_status(&status);
        assert_eq!((e.status.as_u16(), e.code.as_str()), (409, "TASK_DEPENDENCY_CYCLE"));
        assert_eq!(e.metadata.get("task_id").map(String::as_str), Some("t1"));
    }

    #[test]
    fn rate_limits_become_rate_limit_exceeded_with_retry_after() {
        let e = ApiError::from_status(&Status::from(Error::rate_limited(Duration::from_millis(2500))));
        assert_eq!((e.status.as_u16(), e.code.as_str()), (429, "RATE_LIMIT_EXCEEDED"));
        assert_eq!(e.retry_after, Some(3));
        let other = ApiError::from_status(&Status::from(Error::new(Code::ResourceExhausted, "STREAM_LIMIT", "x")));
        assert_eq!((other.status.as_u16(), other.code.as_str()), (429, "STREAM_LIMIT"));
    }

    #[test]
    fn internal_errors_never_leak_message_or_details() {
        let status = Status::from(
            Error::new(Code::DataLoss, "SECRET_REASON", "relation tasks.x is corrupt").with_field("sql", "select"),
        );
        let e = ApiError::from_status(&status);
        assert_eq!(e, ApiError::internal());
        assert_eq!(e.message, "An internal error occurred");
        assert!(e.details.is_empty() && e.metadata.is_empty());
    }

    #[test]
    fn unavailable_defaults_to_retry_after_one_second() {
        let e = ApiError::from_status(&Status::unavailable("connection refused"));
        assert_eq!((e.status.as_u16(), e.retry_after), (503, Some(1)));
    }

    #[test]
    fn unauthenticated_responses_carry_a_bearer_challenge() {
        let response = ApiError::unauthenticated().to_response("c1");
        assert_eq!(response.headers()[WWW_AUTHENTICATE], r#"Bearer realm="trellis""#);
        let response = ApiError::invalid_token().to_response("c1");
        assert_eq!(response.headers()[WWW_AUTHENTICATE], r#"Bearer realm="trellis", error="invalid_token""#);
    }

    #[test]
    fn the_envelope_has_every_key() {
        let envelope = ApiError::validation("title", "Required").envelope("abc-1");
        let error = &envelope["error"];
        assert_eq!(error["code"], "VALIDATION_ERROR");
        assert_eq!(error["details"][0]["field"], "title");
        assert_eq!(error["details"][0]["message"], "Required");
        assert_eq!(error["metadata"], serde_json::json!({}));
        assert_eq!(error["correlation_id"], "abc-1");
        let timestamp = error["timestamp"].as_str().expect("timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'));
    }

    #[test]
    fn gateway_errors_round_trip_to_grpc_with_their_reason() {
        let status = ApiError::payload_too_large(10).to_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("PAYLOAD_TOO_LARGE"));
        let status = ApiError::module_disabled("crm").to_status();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(status.get_error_details().error_info().map(|i| i.reason.as_str()), Some("MODULE_DISABLED"));
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let response = ApiError::method_not_allowed(vec![Method::GET, Method::HEAD]).to_response("c");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }
}
