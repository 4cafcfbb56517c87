//! Board rules needed by tasks today: the organization's default board and its columns.

use crate::task::Status;

/// Name of the board created for an organization on its first task.
pub const DEFAULT_BOARD_NAME: &str = "Tasks";

/// Key of the default board: its tasks are `TASK-1`, `TASK-2`, ...
pub const DEFAULT_BOARD_KEY: &str = "TASK";

/// The columns of a new board, in order, with the status each maps to.
pub const DEFAULT_COLUMNS: [(&str, Status); 5] = [
    ("Backlog", Status::Backlog),
    ("To do", Status::Todo),
    ("In progress", Status::InProgress),
    ("In review", Status::InReview),
    ("Done", Status::Done),
];

/// A task's key: the board key and the task's number (`ENG-42`).
pub fn task_key(board_key: &str, number: i32) -> String {
    format!("{board_key}-{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_board_key_and_number() {
        assert_eq!(task_key(DEFAULT_BOARD_KEY, 42), "TASK-42");
    }

    #[test]
    fn default_columns_cover_the_open_flow_and_done() {
        let statuses: Vec<Status> = DEFAULT_COLUMNS.iter().map(|(_, s)| *s).collect();
        assert_eq!(statuses, [Status::Backlog, Status::Todo, Status::InProgress, Status::InReview, Status::Done]);
    }
}
