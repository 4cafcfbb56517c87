//! What can go wrong in the tasks domain, and the one table from reason to gRPC code.
//!
//! Field validation uses [`trellis_kit::Error::validation`] (reason `VALIDATION_ERROR` with
//! BadRequest field violations); everything else is a [`TaskError`].

use tonic::Code;
use trellis_kit::Error;

/// Domain errors of the tasks service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// No live task with that id in the caller's organization.
    #[error("The task does not exist")]
    TaskNotFound,
    /// No live board with that id in the caller's organization.
    #[error("The board does not exist")]
    BoardNotFound,
    /// The board is archived and read-only.
    #[error("The board is archived")]
    BoardArchived,
    /// The requested column is not one of the board's columns.
    #[error("column_id is not a column of the board")]
    ColumnNotOnBoard,
    /// Both a column and a status were given, and the column maps to another status.
    #[error("status does not match the status of column_id")]
    StatusColumnMismatch,
    /// The board has no columns to place a task in.
    #[error("The board has no columns")]
    BoardHasNoColumns,
    /// The default board's key is held by another board, so the default board cannot be created.
    #[error("The key of the default board is taken by another board")]
    DefaultBoardKeyTaken,
}

/// Every reason this service returns (besides kit's `VALIDATION_ERROR`, `INVALID_PAGE_TOKEN`,
/// `UNAUTHENTICATED` and `INTERNAL_ERROR`), with its gRPC code. The gateway maps the code to an
/// HTTP status and the reason becomes the envelope's `code`.
pub const REASONS: &[(&str, Code)] = &[
    // ErrorInfo metadata `resource` names what was not found (`task`, `board`). Another
    // organization's rows answer exactly like missing ones.
    ("NOT_FOUND", Code::NotFound),
    ("BOARD_ARCHIVED", Code::FailedPrecondition),
    ("BOARD_HAS_NO_COLUMNS", Code::FailedPrecondition),
    ("DEFAULT_BOARD_KEY_TAKEN", Code::FailedPrecondition),
];

impl TaskError {
    /// The stable reason (`ErrorInfo.reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            TaskError::TaskNotFound | TaskError::BoardNotFound => "NOT_FOUND",
            TaskError::BoardArchived => "BOARD_ARCHIVED",
            TaskError::ColumnNotOnBoard | TaskError::StatusColumnMismatch => "VALIDATION_ERROR",
            TaskError::BoardHasNoColumns => "BOARD_HAS_NO_COLUMNS",
            TaskError::DefaultBoardKeyTaken => "DEFAULT_BOARD_KEY_TAKEN",
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self.field() {
            Some(_) => Code::InvalidArgument,
            None => {
                REASONS.iter().find(|(reason, _)| *reason == self.reason()).map_or(Code::Internal, |(_, code)| *code)
            }
        }
    }

    /// The kind of resource a NOT_FOUND is about (ErrorInfo metadata `resource`).
    fn resource(&self) -> Option<&'static str> {
        match self {
            TaskError::TaskNotFound => Some("task"),
            TaskError::BoardNotFound => Some("board"),
            _ => None,
        }
    }

    /// The request field a validation error names.
    fn field(&self) -> Option<&'static str> {
        match self {
            TaskError::ColumnNotOnBoard => Some("column_id"),
            TaskError::StatusColumnMismatch => Some("status"),
            _ => None,
        }
    }
}

impl From<TaskError> for Error {
    fn from(e: TaskError) -> Self {
        match (e.field(), e.resource()) {
            (Some(field), _) => Error::validation(field, e.to_string()),
            (None, Some(resource)) => {
                Error::new(e.code(), e.reason(), e.to_string()).with_metadata("resource", resource)
            }
            (None, None) => Error::new(e.code(), e.reason(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_listed_reason_or_a_field() {
        for e in [
            TaskError::TaskNotFound,
            TaskError::BoardNotFound,
            TaskError::BoardArchived,
            TaskError::ColumnNotOnBoard,
            TaskError::StatusColumnMismatch,
            TaskError::BoardHasNoColumns,
            TaskError::DefaultBoardKeyTaken,
        ] {
            let kit: Error = e.clone().into();
            assert_ne!(kit.code(), Code::Internal, "{e:?} has no code");
            if kit.code() == Code::InvalidArgument {
                assert_eq!(kit.reason(), "VALIDATION_ERROR");
                assert_eq!(kit.violations().len(), 1);
            } else {
                assert!(REASONS.contains(&(kit.reason(), kit.code())), "{e:?} missing from REASONS");
            }
        }
    }
}
