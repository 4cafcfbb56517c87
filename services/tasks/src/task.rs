//! Task rules and the task operations: create, get, list, assign.
//!
//! Each operation runs in one tenant transaction: the change, its watchers and its events commit
//! together or not at all. Placement and text rules are pure functions, unit tested below.
//!
//! Authorization: today every member of the token's organization may read, create and assign
//! the organization's tasks, and Row-Level Security keeps other organizations out. The checks of
//! the spec's Permissions section (`board#edit`, `task#view`, `task#assign`, and assignees that
//! must be able to view the board, `ASSIGNEE_NO_ACCESS`) call the permissions service, which
//! does not exist yet; they belong in these functions, before the transaction writes anything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trellis_kit::db::Db;
use trellis_kit::error::Violations;
use trellis_kit::paging::PageTokens;
use trellis_kit::{RequestContext, Result};
use trellis_proto::trellis::tasks::v1 as proto;
use uuid::Uuid;

use crate::board::{DEFAULT_BOARD_KEY, DEFAULT_BOARD_NAME, DEFAULT_COLUMNS};
use crate::error::TaskError;
use crate::store::{self, Column, TaskRow, TaskSelection, WatcherRow};
use crate::{events, position};

/// Longest title, in characters.
pub const TITLE_MAX: usize = 500;
/// Longest description, in characters.
pub const DESCRIPTION_MAX: usize = 50_000;
/// Longest assignment note, in characters.
pub const NOTE_MAX: usize = 1_000;

/// A task's status (stored as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not planned yet.
    Backlog,
    /// Planned.
    Todo,
    /// Being worked on.
    InProgress,
    /// Waiting for review.
    InReview,
    /// Waiting on something outside the board.
    Blocked,
    /// Finished.
    Done,
    /// Will not be done.
    Cancelled,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::Backlog,
        Status::Todo,
        Status::InProgress,
        Status::InReview,
        Status::Blocked,
        Status::Done,
        Status::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Backlog => "backlog",
            Status::Todo => "todo",
            Status::InProgress => "in_progress",
            Status::InReview => "in_review",
            Status::Blocked => "blocked",
            Status::Done => "done",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status with a stored name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Its wire value.
    pub fn to_proto(self) -> proto::TaskStatus {
        match self {
            Status::Backlog => proto::TaskStatus::Backlog,
            Status::Todo => proto::TaskStatus::Todo,
            Status::InProgress => proto::TaskStatus::InProgress,
            Status::InReview => proto::TaskStatus::InReview,
            Status::Blocked => proto::TaskStatus::Blocked,
            Status::Done => proto::TaskStatus::Done,
            Status::Cancelled => proto::TaskStatus::Cancelled,
        }
    }

    /// From a wire value: `Ok(None)` when unspecified, an error when unknown.
    pub fn from_proto(value: i32) -> std::result::Result<Option<Status>, prost::UnknownEnumValue> {
        let wire = proto::TaskStatus::try_from(value)?;
        Ok(Status::ALL.into_iter().find(|s| s.to_proto() == wire))
    }
}

/// A task's priority (stored as its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Low.
    Low,
    /// Medium, the default.
    Medium,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [Priority::Low, Priority::Medium, Priority::High, Priority::Urgent];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    /// The priority with a stored name.
    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Its wire value.
    pub fn to_proto(self) -> proto::TaskPriority {
        match self {
            Priority::Low => proto::TaskPriority::Low,
            Priority::Medium => proto::TaskPriority::Medium,
            Priority::High => proto::TaskPriority::High,
            Priority::Urgent => proto::TaskPriority::Urgent,
        }
    }

    /// From a wire value: medium when unspecified, an error when unknown.
    pub fn from_proto(value: i32) -> std::result::Result<Priority, prost::UnknownEnumValue> {
        let wire = proto::TaskPriority::try_from(value)?;
        Ok(Priority::ALL.into_iter().find(|p| p.to_proto() == wire).unwrap_or(Priority::Medium))
    }
}

/// Trims a text field and checks its length (in characters) and characters (Rule 28: control
/// characters other than newline and tab are rejected). Records a violation of `field` and
/// returns the trimmed text.
pub fn clean_text(v: &mut Violations, field: &str, raw: &str, min: usize, max: usize) -> String {
    let text = raw.trim();
    let len = text.chars().count();
    if len < min {
        v.add(
            field,
            if min == 1 { "must not be empty".to_string() } else { format!("needs at least {min} characters") },
        );
    } else if len > max {
        v.add(field, format!("must be at most {max} characters"));
    } else if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        v.add(field, "must not contain control characters");
    }
    text.to_string()
}

/// Parses an optional UUID field (empty = absent).
pub fn optional_id(v: &mut Violations, field: &str, raw: &str) -> Option<Uuid> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<Uuid>() {
        Ok(id) if !id.is_nil() => Some(id),
        _ => {
            v.add(field, "must be a UUID");
            None
        }
    }
}

/// Parses a required UUID field.
pub fn required_id(v: &mut Violations, field: &str, raw: &str) -> Uuid {
    if raw.trim().is_empty() {
        v.add(field, "is required");
        return Uuid::nil();
    }
    optional_id(v, field, raw).unwrap_or_else(Uuid::nil)
}

/// Where a new task goes: its column and status (spec CreateTask). `columns` are in order.
///
/// - `column_id` given: that column of the board (else `column_id` is invalid) and its status;
///   an explicit `status` must agree with it.
/// - else `status` given: the first column mapped to it, else the first column; the task keeps
///   the requested status.
/// - else the first column mapped to todo, else the first column, with that column's status.
pub fn place(
    columns: &[Column],
    column_id: Option<Uuid>,
    status: Option<Status>,
) -> std::result::Result<(Uuid, Status), TaskError> {
    let first = columns.first().ok_or(TaskError::BoardHasNoColumns)?;
    if let Some(column_id) = column_id {
        let column = columns.iter().find(|c| c.id == column_id).ok_or(TaskError::ColumnNotOnBoard)?;
        return match status {
            Some(status) if status != column.status => Err(TaskError::StatusColumnMismatch),
            _ => Ok((column.id, column.status)),
        };
    }
    if let Some(status) = status {
        let column = columns.iter().find(|c| c.status == status).unwrap_or(first);
        return Ok((column.id, status));
    }
    let column = columns.iter().find(|c| c.status == Status::Todo).unwrap_or(first);
    Ok((column.id, column.status))
}

/// A validated CreateTask.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The board; `None` = the default board.
    pub board_id: Option<Uuid>,
    /// The column, if the caller chose one.
    pub column_id: Option<Uuid>,
    /// Trimmed title.
    pub title: String,
    /// Trimmed description.
    pub description: String,
    /// Requested status.
    pub status: Option<Status>,
    /// Priority.
    pub priority: Priority,
    /// Initial assignee.
    pub assignee_id: Option<Uuid>,
}

/// A task with its watchers.
#[derive(Debug, Clone)]
pub struct TaskDetail {
    /// The task.
    pub task: TaskRow,
    /// Its watchers, oldest first.
    pub watchers: Vec<WatcherRow>,
}

/// Creates a task (spec CreateTask, Rule 35) and stages `tasks.task.created` (and
/// `tasks.task.assigned` when it has an assignee).
pub async fn create(db: &Db, ctx: &RequestContext, new: NewTask) -> Result<TaskDetail> {
    let org_id = ctx.org_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    let board_id = match new.board_id {
        Some(id) => id,
        None => default_board(&mut tx, org_id).await?,
    };
    // Locks the board row: numbers and end-of-column positions of one board are handed out in
    // turn, never twice.
    let numbered = store::take_task_number(&mut tx, board_id).await?.ok_or(TaskError::BoardNotFound)?;
    if numbered.archived {
        return Err(TaskError::BoardArchived.into());
    }
    let columns = store::board_columns(&mut tx, board_id).await?;
    let (column_id, status) = place(&columns, new.column_id, new.status)?;
    let last = store::last_position(&mut tx, board_id, column_id).await?;
    let id = Uuid::now_v7();
    let creator = creator_id(ctx);
    store::insert_task(
        &mut tx,
        &store::NewTaskRow {
            id,
            org_id,
            board_id,
            column_id,
            number: numbered.number,
            title: &new.title,
            description: &new.description,
            status,
            priority: new.priority,
            assignee_id: new.assignee_id,
            created_by: creator,
            // Entering done records the acting user; in_progress and done set their times.
            completed_by: ctx.user_id_opt(),
            position: position::after(last.as_deref()),
        },
    )
    .await?;
    if let Some(user) = ctx.user_id_opt() {
        store::add_watcher(&mut tx, org_id, id, user, "creator").await?;
    }
    if let Some(assignee) = new.assignee_id {
        store::add_watcher(&mut tx, org_id, id, assignee, "assignee").await?;
    }
    let task = store::task(&mut tx, id).await?.ok_or(TaskError::TaskNotFound)?;
    let watchers = store::watchers(&mut tx, id).await?;
    let watcher_ids: Vec<Uuid> = watchers.iter().map(|w| w.user_id).collect();
    events::task_created(&mut tx, ctx, &task, &watcher_ids).await?;
    if let Some(assignee) = task.assignee_id {
        events::task_assigned(&mut tx, ctx, &task, &watcher_ids, None, "").await?;
        tracing::info!(task_id = %id, assignee_id = %assignee, "task assigned on creation");
    }
    tx.commit().await?;
    tracing::info!(task_id = %id, board_id = %board_id, number = task.number, "task created");
    Ok(TaskDetail { task, watchers })
}

/// The organization's default board, created on first use with the default columns. Concurrent
/// first tasks race on the unique index; the loser's insert does nothing and it reads the
/// winner's board once the winner commits.
async fn default_board(tx: &mut trellis_kit::db::Tx, org_id: Uuid) -> Result<Uuid> {
    if let Some(id) = store::default_board_id(tx).await? {
        return Ok(id);
    }
    let id = Uuid::now_v7();
    if store::insert_default_board(tx, id, org_id, DEFAULT_BOARD_NAME, DEFAULT_BOARD_KEY).await? {
        for ((name, status), position) in DEFAULT_COLUMNS.iter().zip(position::sequence(DEFAULT_COLUMNS.len())) {
            store::insert_column(tx, org_id, id, name, *status, &position).await?;
        }
        tracing::info!(board_id = %id, "default board created");
        return Ok(id);
    }
    Ok(store::default_board_id(tx).await?.ok_or(TaskError::DefaultBoardKeyTaken)?)
}

/// Who is recorded as a task's creator: the user or API key; nobody for the platform.
fn creator_id(ctx: &RequestContext) -> Option<Uuid> {
    match ctx.subject {
        trellis_kit::Subject::User(id) | trellis_kit::Subject::ApiKey(id) => Some(id),
        _ => None,
    }
}

/// A live task with its watchers; another organization's task is NOT_FOUND.
pub async fn get(db: &Db, ctx: &RequestContext, task_id: Uuid) -> Result<TaskDetail> {
    let mut tx = db.tenant_tx(ctx).await?;
    let task = store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    let watchers = store::watchers(&mut tx, task_id).await?;
    tx.commit().await?;
    Ok(TaskDetail { task, watchers })
}

/// A ListTasks query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this board.
    pub board_id: Option<Uuid>,
    /// Only this assignee (already resolved from `me`).
    pub assignee_id: Option<Uuid>,
    /// Normalised page size.
    pub page_size: u32,
    /// The caller's page token.
    pub page_token: String,
}

/// One page of tasks.
#[derive(Debug, Clone)]
pub struct Page {
    /// The tasks, newest first.
    pub tasks: Vec<TaskRow>,
    /// Token of the next page, empty on the last.
    pub next_page_token: String,
    /// How many tasks match.
    pub total_size: i64,
}

/// Where the previous page ended: keyset on (created_at desc, id desc).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

/// Lists live top-level tasks, newest first.
pub async fn list(db: &Db, ctx: &RequestContext, tokens: &PageTokens, query: ListQuery) -> Result<Page> {
    let board = query.board_id.map(|b| b.to_string()).unwrap_or_default();
    let assignee = query.assignee_id.map(|a| a.to_string()).unwrap_or_default();
    let hash = PageTokens::query_hash(&["tasks.ListTasks", &board, &assignee]);
    let cursor: Option<Cursor> = tokens.decode(&hash, &query.page_token)?;
    let selection = TaskSelection { board_id: query.board_id, assignee_id: query.assignee_id };
    let mut tx = db.tenant_tx(ctx).await?;
    let mut tasks =
        store::tasks_page(&mut tx, &selection, cursor.map(|c| (c.created_at, c.id)), i64::from(query.page_size) + 1)
            .await?;
    let total_size = store::count_tasks(&mut tx, &selection).await?;
    tx.commit().await?;
    let next_page_token = if tasks.len() > query.page_size as usize {
        tasks.truncate(query.page_size as usize);
        tasks.last().map(|t| tokens.encode(&hash, &Cursor { created_at: t.created_at, id: t.id })).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Page { tasks, next_page_token, total_size })
}

/// Assigns (or, with `None`, unassigns) a task. The new assignee becomes a watcher. Stages
/// `tasks.task.assigned`, or `tasks.task.updated` for an unassignment; an assignment that changes
/// nothing writes and publishes nothing.
pub async fn assign(
    db: &Db,
    ctx: &RequestContext,
    task_id: Uuid,
    assignee_id: Option<Uuid>,
    note: &str,
) -> Result<TaskRow> {
    let org_id = ctx.org_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    let current = store::task_for_update(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    if current.archived {
        return Err(TaskError::BoardArchived.into());
    }
    if current.assignee_id == assignee_id {
        tx.commit().await?;
        return Ok(current);
    }
    store::set_assignee(&mut tx, task_id, assignee_id).await?;
    if let Some(assignee) = assignee_id {
        store::add_watcher(&mut tx, org_id, task_id, assignee, "assignee").await?;
    }
    let task = store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    let watcher_ids: Vec<Uuid> = store::watchers(&mut tx, task_id).await?.iter().map(|w| w.user_id).collect();
    match current.assignee_id {
        previous if assignee_id.is_some() => {
            events::task_assigned(&mut tx, ctx, &task, &watcher_ids, previous, note).await?;
        }
        Some(previous) => {
            events::task_unassigned(&mut tx, ctx, &task, &watcher_ids, previous).await?;
        }
        // Unassigning an unassigned task returned above as a no-op.
        None => {}
    }
    tx.commit().await?;
    tracing::info!(task_id = %task_id, assignee_id = ?assignee_id, "task assignee changed");
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        DEFAULT_COLUMNS.iter().map(|(_, status)| Column { id: Uuid::now_v7(), status: *status }).collect()
    }

    #[test]
    fn a_task_without_column_or_status_goes_to_the_first_todo_column() {
        let cols = columns();
        assert_eq!(place(&cols, None, None), Ok((cols[1].id, Status::Todo)));
    }

    #[test]
    fn without_a_todo_column_the_first_column_and_its_status_are_used() {
        let cols: Vec<Column> = columns().into_iter().filter(|c| c.status != Status::Todo).collect();
        assert_eq!(place(&cols, None, None), Ok((cols[0].id, Status::Backlog)));
    }

    #[test]
    fn a_status_picks_the_first_column_mapped_to_it() {
        let cols = columns();
        assert_eq!(place(&cols, None, Some(Status::InReview)), Ok((cols[3].id, Status::InReview)));
        // No column maps to cancelled: the first column, with the requested status.
        assert_eq!(place(&cols, None, Some(Status::Cancelled)), Ok((cols[0].id, Status::Cancelled)));
    }

    #[test]
    fn a_column_decides_the_status_and_must_belong_to_the_board() {
        let cols = columns();
        assert_eq!(place(&cols, Some(cols[2].id), None), Ok((cols[2].id, Status::InProgress)));
        assert_eq!(place(&cols, Some(cols[2].id), Some(Status::InProgress)), Ok((cols[2].id, Status::InProgress)));
        assert_eq!(place(&cols, Some(cols[2].id), Some(Status::Done)), Err(TaskError::StatusColumnMismatch));
        assert_eq!(place(&cols, Some(Uuid::now_v7()), None), Err(TaskError::ColumnNotOnBoard));
        assert_eq!(place(&[], None, None), Err(TaskError::BoardHasNoColumns));
    }

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        let mut v = Violations::default();
        assert_eq!(clean_text(&mut v, "title", "  Ship it \n", 1, TITLE_MAX), "Ship it");
        assert!(v.is_empty());
        clean_text(&mut v, "title", &"é".repeat(TITLE_MAX), 1, TITLE_MAX);
        assert!(v.is_empty(), "500 two-byte characters fit");
        for bad in ["   ", &"x".repeat(TITLE_MAX + 1), "a\u{7}b"] {
            let mut v = Violations::default();
            clean_text(&mut v, "title", bad, 1, TITLE_MAX);
            let e = v.finish().expect_err(bad);
            assert_eq!(e.violations()[0].field, "title");
        }
        let mut v = Violations::default();
        clean_text(&mut v, "description", "line\n\tindented", 0, DESCRIPTION_MAX);
        assert!(v.is_empty(), "newline and tab are allowed");
    }

    #[test]
    fn ids_are_uuids_and_empty_means_absent() {
        let mut v = Violations::default();
        let id = Uuid::now_v7();
        assert_eq!(optional_id(&mut v, "board_id", ""), None);
        assert_eq!(optional_id(&mut v, "board_id", &id.to_string()), Some(id));
        assert!(v.is_empty());
        assert_eq!(optional_id(&mut v, "board_id", "nope"), None);
        required_id(&mut v, "task_id", "");
        let e = v.finish().expect_err("two violations");
        let fields: Vec<&str> = e.violations().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["board_id", "task_id"]);
    }

    #[test]
    fn statuses_and_priorities_round_trip_through_names_and_wire_values() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(Status::from_proto(s.to_proto() as i32).ok(), Some(Some(s)));
        }
        assert_eq!(Status::from_proto(0).ok(), Some(None));
        assert!(Status::from_proto(99).is_err());
        for p in Priority::ALL {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
            assert_eq!(Priority::from_proto(p.to_proto() as i32).ok(), Some(p));
        }
        assert_eq!(Priority::from_proto(0).ok(), Some(Priority::Medium));
        assert!(Priority::from_proto(-3).is_err());
    }
}
