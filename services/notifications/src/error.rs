//! What can go wrong in the notifications domain, and the reason → gRPC code table.

use tonic::Code;
use trellis_kit::Error;

/// Domain errors of the notifications service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// A consumer received an event type it has no route for (a binding out of step with the
    /// router); the message is retried, then dead-lettered.
    #[error("No route for event type {0}")]
    UnroutedEvent(String),
}

/// Every reason this service returns (besides kit's `VALIDATION_ERROR`, `INVALID_PAGE_TOKEN`,
/// `USER_TOKEN_REQUIRED`, `UNAUTHENTICATED` and `INTERNAL_ERROR`), with its gRPC code.
pub const REASONS: &[(&str, Code)] = &[("UNROUTED_EVENT", Code::Internal)];

impl NotificationError {
    /// The stable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            NotificationError::UnroutedEvent(_) => "UNROUTED_EVENT",
        }
    }
}

impl From<NotificationError> for Error {
    fn from(e: NotificationError) -> Self {
        let code = REASONS.iter().find(|(r, _)| *r == e.reason()).map_or(Code::Internal, |(_, c)| *c);
        Error::new(code, e.reason(), e.to_string())
    }
}
