//! One error type for every service, mapped to a `tonic::Status` with rich details.
//!
//! Each service keeps a `thiserror` enum for its domain and converts it into [`Error`]. The
//! status carries an `ErrorInfo` with a stable UPPER_SNAKE `reason` (the gateway's envelope
//! `code`), `BadRequest` field violations for validation errors and `RetryInfo` for rate limits.
//! Internal errors keep their cause for the log and send only "An internal error occurred".

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error Trellis produces.
pub const DOMAIN: &str = "trellis";

/// The message every internal error is answered with; the cause is only logged.
pub const INTERNAL_MESSAGE: &str = "An internal error occurred";

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The snake_case path of the field, e.g. `line_items[2].quantity`.
    pub field: String,
    /// What is wrong with it, for a human.
    pub description: String,
}

/// An error a request can end with (boxed: results stay one pointer wide).
#[derive(Debug)]
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    code: Code,
    reason: Cow<'static, str>,
    message: String,
    violations: Vec<FieldViolation>,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
    source: Option<anyhow::Error>,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code, a stable reason and a message for the caller.
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            code,
            reason: reason.into(),
            message: message.into(),
            violations: Vec::new(),
            metadata: HashMap::new(),
            retry_after: None,
            source: None,
        }))
    }

    /// INVALID_ARGUMENT with a reason.
    pub fn invalid_argument(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, reason, message)
    }

    /// INVALID_ARGUMENT `VALIDATION_ERROR` naming one field.
    pub fn validation(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid_argument("VALIDATION_ERROR", "Request validation failed").with_field(field, description)
    }

    /// NOT_FOUND; also what another tenant's rows look like.
    pub fn not_found(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, reason, message)
    }

    /// ALREADY_EXISTS.
    pub fn already_exists(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }

    /// FAILED_PRECONDITION: the request is valid but the state does not allow it.
    pub fn failed_precondition(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    /// ABORTED: a concurrent modification.
    pub fn aborted(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::Aborted, reason, message)
    }

    /// PERMISSION_DENIED.
    pub fn permission_denied(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    /// UNAUTHENTICATED.
    pub fn unauthenticated(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, reason, message)
    }

    /// RESOURCE_EXHAUSTED `RATE_LIMITED` with `RetryInfo`.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut e = Self::new(Code::ResourceExhausted, "RATE_LIMITED", "Too many requests; retry later");
        e.0.retry_after = Some(retry_after);
        e
    }

    /// UNAVAILABLE: a dependency is down; the caller may retry.
    pub fn unavailable(reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason, message)
    }

    /// INTERNAL: the cause is logged with the correlation id and never sent.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(Code::Internal, "INTERNAL_ERROR", INTERNAL_MESSAGE);
        e.0.source = Some(cause.into());
        e
    }

    /// Adds a field violation (turns any error into one that carries `BadRequest`).
    pub fn with_field(mut self, field: impl Into<String>, description: impl Into<String>) -> Self {
        self.0.violations.push(FieldViolation { field: field.into(), description: description.into() });
        self
    }

    /// Adds an `ErrorInfo` metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds `RetryInfo`.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// The stable reason (`ErrorInfo.reason`).
    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// The message sent to the caller.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The field violations.
    pub fn violations(&self) -> &[FieldViolation] {
        &self.0.violations
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.0.code, self.0.reason, self.0.message)?;
        if let Some(source) = &self.0.source {
            write!(f, " ({source:#})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let e = *e.0;
        if let Some(source) = &e.source {
            tracing::error!(reason = %e.reason, error = format!("{source:#}"), "internal error");
        }
        let mut details = ErrorDetails::new();
        details.set_error_info(e.reason.to_string(), DOMAIN, e.metadata);
        if !e.violations.is_empty() {
            details.set_bad_request(
                e.violations
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(after) = e.retry_after {
            details.set_retry_info(Some(after));
        }
        Status::with_error_details(e.code, e.message, details)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut => Self::unavailable("DATABASE_UNAVAILABLE", "The database is busy; retry later"),
            _ => Self::internal(e),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<Error>() {
            Ok(e) => e,
            Err(e) => Self::internal(e),
        }
    }
}

/// Collects field violations, then fails with all of them at once.
///
/// ```
/// # use trellis_kit::error::Violations;
/// let mut v = Violations::default();
/// v.check(false, "title", "must be 1-500 characters");
/// assert!(v.finish().is_err());
/// ```
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records a violation of `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, description: &str) -> &mut Self {
        if !ok {
            self.add(field, description);
        }
        self
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) -> &mut Self {
        self.0.push(FieldViolation { field: field.into(), description: description.into() });
        self
    }

    /// Parses an optional UUID field: empty means absent; anything else must be a non-nil UUID,
    /// or the field is recorded as a violation.
    pub fn optional_uuid(&mut self, field: &str, raw: &str) -> Option<uuid::Uuid> {
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        match raw.parse::<uuid::Uuid>() {
            Ok(id) if !id.is_nil() => Some(id),
            _ => {
                self.add(field, "must be a UUID");
                None
            }
        }
    }

    /// Parses a required UUID field; a missing or malformed one is recorded (and the nil UUID
    /// returned, which [`Violations::finish`] then never lets through).
    pub fn uuid(&mut self, field: &str, raw: &str) -> uuid::Uuid {
        if raw.trim().is_empty() {
            self.add(field, "is required");
            return uuid::Uuid::nil();
        }
        self.optional_uuid(field, raw).unwrap_or_else(uuid::Uuid::nil)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())`, or INVALID_ARGUMENT `VALIDATION_ERROR` with every violation.
    pub fn finish(&mut self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut e = Error::invalid_argument("VALIDATION_ERROR", "Request validation failed");
        e.0.violations = std::mem::take(&mut self.0);
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_reason_and_field_violations() {
        let status: Status = Error::validation("title", "Required").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.error_info().expect("error info").reason, "VALIDATION_ERROR");
        let bad = details.bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "title");
        assert_eq!(bad.field_violations[0].description, "Required");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = Error::internal(anyhow::anyhow!("relation tasks.secret does not exist")).into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), INTERNAL_MESSAGE);
        assert!(!format!("{:?}", status.details()).contains("secret"));
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let status: Status = Error::rate_limited(Duration::from_secs(7)).into();
        let details = status.get_error_details();
        assert_eq!(details.retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(7)));
        assert_eq!(details.error_info().expect("error info").reason, "RATE_LIMITED");
    }

    #[test]
    fn uuid_fields_are_parsed_or_recorded() {
        let mut v = Violations::default();
        let id = uuid::Uuid::now_v7();
        assert_eq!(v.uuid("a", &format!(" {id} ")), id);
        assert_eq!(v.optional_uuid("b", ""), None);
        assert!(v.is_empty());
        v.uuid("c", "");
        v.optional_uuid("d", "not-a-uuid");
        v.uuid("e", "00000000-0000-0000-0000-000000000000");
        let fields: Vec<_> =
            v.finish().expect_err("three bad fields").violations().iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["c", "d", "e"]);
    }

    #[test]
    fn violations_collect_every_field() {
        let mut v = Violations::default();
        v.check(false, "a", "bad a").check(true, "b", "fine").check(false, "c", "bad c");
        let e = v.finish().expect_err("two violations");
        assert_eq!(e.violations().len(), 2);
        assert!(v.finish().is_ok(), "finish drains");
    }
}
