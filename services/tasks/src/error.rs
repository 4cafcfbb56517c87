//! What can go wrong in the tasks domain, and the one table from reason to gRPC code.
//!
//! Field validation uses [`trellis_kit::Error::validation`] (reason `VALIDATION_ERROR` with
//! BadRequest field violations); everything else is a [`TaskError`].

use tonic::Code;
use trellis_kit::Error;

/// Domain errors of the tasks service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// Another live board of the organization has the key.
    #[error("The board key is taken")]
    BoardKeyTaken,
    /// Restoring a board whose key a live board took meanwhile.
    #[error("The board key was taken while the board was in the trash")]
    BoardKeyTakenOnRestore,
    /// The caller's `version` is not the current one.
    #[error("The object was changed by someone else; reload it and try again")]
    VersionMismatch,
    /// A removed column holds tasks and no target column was named.
    #[error("The column holds tasks: name a column to move them to")]
    ColumnNotEmpty,
    /// The board enforces WIP limits and the target column is full.
    #[error("The column is at its WIP limit")]
    WipLimitReached,
    /// The default board cannot be deleted.
    #[error("The default board cannot be deleted")]
    DefaultBoard,
    /// The dependency exists already.
    #[error("The task already depends on that task")]
    DependencyExists,
    /// The dependency would close a cycle (task ids in order).
    #[error("The dependency would create a cycle")]
    DependencyCycle(Vec<uuid::Uuid>),
    /// The cycle check visited too many edges.
    #[error("The dependency graph is too large to check")]
    DependencyGraphTooLarge,
    /// The board enforces dependencies and these blockers are unsatisfied.
    #[error("The task is blocked by unfinished dependencies")]
    DependencyUnsatisfied(Vec<uuid::Uuid>),
    /// A per-object limit (blockers per task, ...) is reached.
    #[error("The limit is reached")]
    LimitReached,
    /// Restoring a task whose parent is still in the trash.
    #[error("The parent task is in the trash; restore it first")]
    ParentDeleted,
    /// Restoring a task whose board is in the trash.
    #[error("The board is in the trash; restore it first")]
    BoardDeleted,
    /// No such dependency on that task.
    #[error("The dependency does not exist")]
    DependencyNotFound,
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
    ("BOARD_KEY_TAKEN", Code::AlreadyExists),
    // The same reason when a restore finds the key reused: the board cannot come back as is.
    ("BOARD_KEY_TAKEN", Code::FailedPrecondition),
    ("VERSION_MISMATCH", Code::Aborted),
    ("COLUMN_NOT_EMPTY", Code::FailedPrecondition),
    ("WIP_LIMIT_REACHED", Code::FailedPrecondition),
    ("DEFAULT_BOARD", Code::FailedPrecondition),
    ("DEPENDENCY_EXISTS", Code::AlreadyExists),
    // ErrorInfo metadata `cycle`: the task ids of the cycle in order, comma-separated.
    ("DEPENDENCY_CYCLE", Code::FailedPrecondition),
    ("DEPENDENCY_GRAPH_TOO_LARGE", Code::FailedPrecondition),
    // ErrorInfo metadata `blocker_ids`: the unsatisfied blockers, comma-separated.
    ("DEPENDENCY_UNSATISFIED", Code::FailedPrecondition),
    ("LIMIT_REACHED", Code::FailedPrecondition),
    ("PARENT_DELETED", Code::FailedPrecondition),
    ("BOARD_DELETED", Code::FailedPrecondition),
    ("BOARD_ARCHIVED", Code::FailedPrecondition),
    ("BOARD_HAS_NO_COLUMNS", Code::FailedPrecondition),
    ("DEFAULT_BOARD_KEY_TAKEN", Code::FailedPrecondition),
];

impl TaskError {
    /// The stable reason (`ErrorInfo.reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            TaskError::TaskNotFound | TaskError::BoardNotFound | TaskError::DependencyNotFound => "NOT_FOUND",
            TaskError::BoardKeyTaken | TaskError::BoardKeyTakenOnRestore => "BOARD_KEY_TAKEN",
            TaskError::VersionMismatch => "VERSION_MISMATCH",
            TaskError::ColumnNotEmpty => "COLUMN_NOT_EMPTY",
            TaskError::WipLimitReached => "WIP_LIMIT_REACHED",
            TaskError::DefaultBoard => "DEFAULT_BOARD",
            TaskError::DependencyExists => "DEPENDENCY_EXISTS",
            TaskError::DependencyCycle(_) => "DEPENDENCY_CYCLE",
            TaskError::DependencyGraphTooLarge => "DEPENDENCY_GRAPH_TOO_LARGE",
            TaskError::DependencyUnsatisfied(_) => "DEPENDENCY_UNSATISFIED",
            TaskError::LimitReached => "LIMIT_REACHED",
            TaskError::ParentDeleted => "PARENT_DELETED",
            TaskError::BoardDeleted => "BOARD_DELETED",
            TaskError::BoardArchived => "BOARD_ARCHIVED",
            TaskError::ColumnNotOnBoard | TaskError::StatusColumnMismatch => "VALIDATION_ERROR",
            TaskError::BoardHasNoColumns => "BOARD_HAS_NO_COLUMNS",
            TaskError::DefaultBoardKeyTaken => "DEFAULT_BOARD_KEY_TAKEN",
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        match (self.field(), self) {
            (Some(_), _) => Code::InvalidArgument,
            (None, TaskError::BoardKeyTakenOnRestore) => Code::FailedPrecondition,
            (None, _) => {
                REASONS.iter().find(|(reason, _)| *reason == self.reason()).map_or(Code::Internal, |(_, code)| *code)
            }
        }
    }

    /// The kind of resource a NOT_FOUND is about (ErrorInfo metadata `resource`).
    fn resource(&self) -> Option<&'static str> {
        match self {
            TaskError::TaskNotFound => Some("task"),
            TaskError::BoardNotFound => Some("board"),
            TaskError::DependencyNotFound => Some("dependency"),
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
            (None, None) => {
                let error = Error::new(e.code(), e.reason(), e.to_string());
                match &e {
                    TaskError::DependencyCycle(ids) => error.with_metadata("cycle", join(ids)),
                    TaskError::DependencyUnsatisfied(ids) => error.with_metadata("blocker_ids", join(ids)),
                    _ => error,
                }
            }
        }
    }
}

fn join(ids: &[uuid::Uuid]) -> String {
    ids.iter().map(uuid::Uuid::to_string).collect::<Vec<_>>().join(",")
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
            TaskError::BoardKeyTaken,
            TaskError::BoardKeyTakenOnRestore,
            TaskError::VersionMismatch,
            TaskError::ColumnNotEmpty,
            TaskError::WipLimitReached,
            TaskError::DefaultBoard,
            TaskError::DependencyExists,
            TaskError::DependencyCycle(vec![uuid::Uuid::nil()]),
            TaskError::DependencyGraphTooLarge,
            TaskError::DependencyUnsatisfied(vec![]),
            TaskError::LimitReached,
            TaskError::ParentDeleted,
            TaskError::BoardDeleted,
            TaskError::DependencyNotFound,
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
