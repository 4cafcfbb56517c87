//! Task rules and the task operations: create, get, list, assign.
//!
//! Each operation runs in one tenant transaction: the change, its watchers and its events commit
//! together or not at all. Placement and text rules are pure functions, unit tested below.
//!
//! Authorization: each operation first asks [`crate::access::Access`] (`board#edit`,
//! `task#view`, `task#assign`, ...), before its transaction writes anything.

use trellis_kit::db::Db;
use trellis_kit::error::Violations;
use trellis_kit::{RequestContext, Result};
use trellis_proto::trellis::tasks::v1 as proto;
use uuid::Uuid;

use crate::access::{Access, BoardPermission, TaskPermission};
use crate::board::{DEFAULT_BOARD_KEY, DEFAULT_BOARD_NAME, DEFAULT_COLUMNS};
use crate::error::TaskError;
use crate::store::{self, Column, TaskRow, WatcherRow};
use crate::{events, position, relationships};

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
    /// The parent, for CreateSubtask (its board is used).
    pub parent_id: Option<Uuid>,
}

/// Deepest nesting level (depth 0-9, Rule 7).
pub const MAX_DEPTH: i16 = 9;

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
pub async fn create(db: &Db, access: &dyn Access, ctx: &RequestContext, mut new: NewTask) -> Result<TaskDetail> {
    let mut depth = 0i16;
    if let Some(parent_id) = new.parent_id {
        access.task(ctx, parent_id, TaskPermission::View).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let parent = store::task(&mut tx, parent_id).await?.ok_or(TaskError::TaskNotFound)?;
        tx.commit().await?;
        depth = parent.depth + 1;
        if depth > MAX_DEPTH {
            return Err(trellis_kit::Error::invalid_argument("MAX_DEPTH", "Subtasks nest at most 10 levels")
                .with_field("task_id", "is at the deepest level"));
        }
        new.board_id = Some(parent.board_id);
    }
    match new.board_id {
        Some(board_id) => access.board(ctx, board_id, BoardPermission::Edit).await?,
        // The default board: writing to it is open to every contributor of the organization.
        None => access.create_board(ctx).await?,
    }
    if let (Some(assignee), Some(board_id)) = (new.assignee_id, new.board_id)
        && !access.user_can_view_board(ctx, assignee, board_id).await?
    {
        return Err(trellis_kit::Error::invalid_argument("ASSIGNEE_NO_ACCESS", "The assignee cannot view the board")
            .with_field("assignee_id", "cannot view the board"));
    }
    let org_id = ctx.org_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    let mut access_changes = Vec::new();
    let board_id = match new.board_id {
        Some(id) => id,
        None => {
            let (id, created) = default_board(&mut tx, org_id).await?;
            if created {
                let version = relationships::next_version(&mut tx).await?;
                access_changes.push(relationships::board_placed(org_id, id, true, version));
            }
            id
        }
    };
    // Taken before the board lock below (a sequence; the task is not known to anyone yet).
    let task_version = relationships::next_version(&mut tx).await?;
    // Locks the board row: numbers and end-of-column positions of one board are handed out in
    // turn, never twice.
    let numbered = store::take_task_number(&mut tx, board_id).await?.ok_or(TaskError::BoardNotFound)?;
    if numbered.archived {
        return Err(TaskError::BoardArchived.into());
    }
    let columns_with_last = store::board_columns_with_last_positions(&mut tx, board_id).await?;
    let columns: Vec<store::Column> = columns_with_last.iter().map(|(c, _)| c.clone()).collect();
    let (column_id, status) = place(&columns, new.column_id, new.status)?;
    let last = columns_with_last.into_iter().find(|(c, _)| c.id == column_id).and_then(|(_, last)| last);
    let id = Uuid::now_v7();
    let creator = creator_id(ctx);
    let mut first_watchers: Vec<(Uuid, &str)> = Vec::with_capacity(2);
    if let Some(user) = ctx.user_id_opt() {
        first_watchers.push((user, "creator"));
    }
    if let Some(assignee) = new.assignee_id {
        first_watchers.push((assignee, "assignee"));
    }
    let watchers = store::insert_task_with_watchers(
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
            parent_id: new.parent_id,
            depth,
        },
        &first_watchers,
    )
    .await?;
    let task = store::task(&mut tx, id).await?.ok_or(TaskError::TaskNotFound)?;
    let watcher_ids: Vec<Uuid> = watchers.iter().map(|w| w.user_id).collect();
    events::task_created(&mut tx, ctx, &task, &watcher_ids).await?;
    if let Some(assignee) = task.assignee_id {
        events::task_assigned(&mut tx, ctx, &task, &watcher_ids, None, "").await?;
        tracing::info!(task_id = %id, assignee_id = %assignee, "task assigned on creation");
    }
    // task#board, task#creator and task#assignee.
    let creator_ref = relationships::subject_of(&ctx.subject);
    access_changes.push(relationships::task_placed(id, board_id, None, creator_ref.as_ref(), task_version));
    if task.assignee_id.is_some() {
        let version = relationships::next_version(&mut tx).await?;
        access_changes.push(relationships::task_assignee(id, None, task.assignee_id, version));
    }
    access.stage(&mut tx, ctx, &access_changes).await?;
    tx.commit().await?;
    access.apply(ctx, &access_changes).await;
    tracing::info!(task_id = %id, board_id = %board_id, number = task.number, "task created");
    Ok(TaskDetail { task, watchers })
}

/// The organization's default board (and whether this call created it), created on first use
/// with the default columns. Concurrent first tasks race on the unique index; the loser's insert
/// does nothing and it reads the winner's board once the winner commits.
async fn default_board(tx: &mut trellis_kit::db::Tx, org_id: Uuid) -> Result<(Uuid, bool)> {
    if let Some(id) = store::default_board_id(tx).await? {
        return Ok((id, false));
    }
    let id = Uuid::now_v7();
    if store::insert_default_board(tx, id, org_id, DEFAULT_BOARD_NAME, DEFAULT_BOARD_KEY).await? {
        for ((name, status), position) in DEFAULT_COLUMNS.iter().zip(position::sequence(DEFAULT_COLUMNS.len())) {
            store::insert_column(tx, org_id, id, name, *status, &position).await?;
        }
        tracing::info!(board_id = %id, "default board created");
        return Ok((id, true));
    }
    Ok((store::default_board_id(tx).await?.ok_or(TaskError::DefaultBoardKeyTaken)?, false))
}

/// Who is recorded as a task's creator: the user or API key; nobody for the platform.
fn creator_id(ctx: &RequestContext) -> Option<Uuid> {
    match ctx.subject {
        trellis_kit::Subject::User(id) | trellis_kit::Subject::ApiKey(id) => Some(id),
        _ => None,
    }
}

/// A live task with its watchers; another organization's task is NOT_FOUND.
pub async fn get(db: &Db, access: &dyn Access, ctx: &RequestContext, task_id: Uuid) -> Result<TaskDetail> {
    access.task(ctx, task_id, TaskPermission::View).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let task = store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    let watchers = store::watchers(&mut tx, task_id).await?;
    tx.commit().await?;
    Ok(TaskDetail { task, watchers })
}

/// Assigns (or, with `None`, unassigns) a task. The new assignee becomes a watcher. Stages
/// `tasks.task.assigned`, or `tasks.task.updated` for an unassignment; an assignment that changes
/// nothing writes and publishes nothing.
pub async fn assign(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    assignee_id: Option<Uuid>,
    note: &str,
) -> Result<TaskRow> {
    access.task(ctx, task_id, TaskPermission::Assign).await?;
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
    let version = relationships::next_version(&mut tx).await?;
    let access_changes = [relationships::task_assignee(task_id, current.assignee_id, assignee_id, version)];
    access.stage(&mut tx, ctx, &access_changes).await?;
    tx.commit().await?;
    access.apply(ctx, &access_changes).await;
    tracing::info!(task_id = %task_id, assignee_id = ?assignee_id, "task assignee changed");
    Ok(task)
}

/// Adds (`watch = true`) or removes a watcher, idempotently (spec AddWatcher / RemoveWatcher):
/// oneself needs `task#view`, another user `task#edit`, and a new watcher must be able to view
/// the board (`WATCHER_NO_ACCESS`). Returns the watchers after the change.
pub async fn set_watcher(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    user_id: Uuid,
    watch: bool,
) -> Result<Vec<WatcherRow>> {
    let permission = if ctx.user_id_opt() == Some(user_id) { TaskPermission::View } else { TaskPermission::Edit };
    access.task(ctx, task_id, permission).await?;
    let org_id = ctx.org_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    let task = store::task_for_update(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    if watch {
        if !access.user_can_view_board(ctx, user_id, task.board_id).await? {
            return Err(trellis_kit::Error::invalid_argument("WATCHER_NO_ACCESS", "The user cannot view the board")
                .with_field("user_id", "cannot view the board"));
        }
        store::add_watcher(&mut tx, org_id, task_id, user_id, "manual").await?;
    } else {
        store::remove_watcher(&mut tx, task_id, user_id).await?;
    }
    let watchers = store::watchers(&mut tx, task_id).await?;
    tx.commit().await?;
    Ok(watchers)
}

/// ListWatchers: the task's watchers, oldest first.
pub async fn watchers(db: &Db, access: &dyn Access, ctx: &RequestContext, task_id: Uuid) -> Result<Vec<WatcherRow>> {
    access.task(ctx, task_id, TaskPermission::View).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    let watchers = store::watchers(&mut tx, task_id).await?;
    tx.commit().await?;
    Ok(watchers)
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
        assert_eq!(v.optional_uuid("board_id", ""), None);
        assert_eq!(v.optional_uuid("board_id", &id.to_string()), Some(id));
        assert!(v.is_empty());
        assert_eq!(v.optional_uuid("board_id", "nope"), None);
        v.uuid("task_id", "");
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

/// Changing tasks: update, move, complete, delete, restore. Every path goes through [`save`],
/// so the status/column rules, WIP limits, enforced dependencies and events hold alike.
pub mod change {
    use std::collections::HashMap;

    use chrono::{DateTime, Utc};
    use serde_json::{Value, json};
    use trellis_kit::db::{Db, Tx};
    use trellis_kit::{Error, RequestContext, Result};
    use uuid::Uuid;

    use super::{Priority, Status};
    use crate::access::{Access, TaskPermission};
    use crate::error::TaskError;
    use crate::store::{self, TaskRow};
    use crate::{events, position};

    /// The result of a change.
    #[derive(Debug, Clone)]
    pub struct Saved {
        /// The task after the change.
        pub task: TaskRow,
        /// Its column holds more live top-level tasks than its WIP limit.
        pub wip_exceeded: bool,
        /// Tasks the change unblocked.
        pub unblocked: Vec<TaskRow>,
        /// Relationship changes staged with it, to apply after commit ([`Access::apply`]).
        pub relationships: Vec<trellis_kit::org_relationships::Change>,
    }

    /// The fields of an UpdateTask, each `Some` when named in the update mask.
    #[derive(Debug, Clone, Default)]
    pub struct TaskChanges {
        /// Title.
        pub title: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Status.
        pub status: Option<Status>,
        /// Priority.
        pub priority: Option<Priority>,
        /// Assignee.
        pub assignee_id: Option<Option<Uuid>>,
        /// Start date.
        pub start_date: Option<Option<DateTime<Utc>>>,
        /// Due date.
        pub due_date: Option<Option<DateTime<Utc>>>,
        /// Estimate.
        pub estimate_minutes: Option<Option<i32>>,
    }

    async fn watcher_ids(tx: &mut Tx, task_id: Uuid) -> Result<Vec<Uuid>> {
        Ok(store::watchers(tx, task_id).await?.iter().map(|w| w.user_id).collect())
    }

    /// For each task in `ids`: its unsatisfied start-blocking blockers (empty = not blocked).
    pub async fn blocking(tx: &mut Tx, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<Uuid>>> {
        let mut map: HashMap<Uuid, Vec<Uuid>> = ids.iter().map(|id| (*id, Vec::new())).collect();
        for (task, blocker) in store::unsatisfied_start_blockers(tx, ids).await? {
            map.entry(task).or_default().push(blocker);
        }
        Ok(map)
    }

    /// Stages `tasks.task.blocked` / `unblocked` for every task of `before` whose blocked state
    /// flipped (Rule 11); returns the tasks that became unblocked.
    pub async fn emit_transitions(
        tx: &mut Tx,
        ctx: &RequestContext,
        before: &HashMap<Uuid, Vec<Uuid>>,
    ) -> Result<Vec<TaskRow>> {
        let ids: Vec<Uuid> = before.keys().copied().collect();
        let after = blocking(tx, &ids).await?;
        let mut flipped: Vec<(Uuid, Vec<Uuid>, bool)> = Vec::new();
        for (id, was) in before {
            let now = after.get(id).cloned().unwrap_or_default();
            match (was.is_empty(), now.is_empty()) {
                (false, true) => flipped.push((*id, was.clone(), false)),
                (true, false) => flipped.push((*id, now, true)),
                _ => {}
            }
        }
        let rows = store::tasks_by_ids(tx, &flipped.iter().map(|(id, _, _)| *id).collect::<Vec<_>>()).await?;
        let mut unblocked = Vec::new();
        for row in rows {
            let Some((_, blockers, blocked)) = flipped.iter().find(|(id, _, _)| *id == row.id) else { continue };
            let watchers = watcher_ids(tx, row.id).await?;
            events::task_blocking(tx, ctx, &row, &watchers, blockers, *blocked).await?;
            if !blocked {
                unblocked.push(row);
            }
        }
        Ok(unblocked)
    }

    fn date_json(d: Option<DateTime<Utc>>) -> Value {
        d.map_or(Value::Null, |d| json!(d.to_rfc3339()))
    }

    fn id_json(id: Option<Uuid>) -> Value {
        id.map_or(Value::Null, |id| json!(id.to_string()))
    }

    /// The `tasks.task.updated` changes between two states (status, column, position and a new
    /// assignee have their own events).
    pub fn field_changes(before: &TaskRow, after: &TaskRow) -> Vec<(String, Value, Value)> {
        let mut out = Vec::new();
        let mut push = |field: &str, from: Value, to: Value| {
            if from != to {
                out.push((field.to_string(), from, to));
            }
        };
        push("title", json!(before.title), json!(after.title));
        if before.description != after.description {
            // Reported as changed, without its text.
            out.push(("description".to_string(), Value::Null, Value::Null));
        }
        let mut push = |field: &str, from: Value, to: Value| {
            if from != to {
                out.push((field.to_string(), from, to));
            }
        };
        push("priority", json!(before.priority), json!(after.priority));
        push("start_date", date_json(before.start_date), date_json(after.start_date));
        push("due_date", date_json(before.due_date), date_json(after.due_date));
        push("estimate_minutes", json!(before.estimate_minutes), json!(after.estimate_minutes));
        push("resolution_notes", json!(before.resolution_notes), json!(after.resolution_notes));
        if after.assignee_id.is_none() {
            push("assignee_id", id_json(before.assignee_id), Value::Null);
        }
        out
    }

    /// Writes `after` (a changed copy of the locked `before`) with every rule that applies to a
    /// change, and stages its events.
    pub async fn save(
        tx: &mut Tx,
        access: &dyn Access,
        ctx: &RequestContext,
        before: &TaskRow,
        mut after: TaskRow,
    ) -> Result<Saved> {
        let org_id = ctx.org_id()?;
        if before.archived {
            return Err(TaskError::BoardArchived.into());
        }
        let status_changed = before.status != after.status;
        // Rule 2: a status change by another path than MoveTask keeps a matching column, else
        // goes to the end of the first column mapped to the new status.
        if status_changed && after.column_id == before.column_id {
            let columns = store::board_columns(tx, after.board_id).await?;
            let keeps = columns.iter().any(|c| c.id == after.column_id && c.status.as_str() == after.status);
            if !keeps && let Some(target) = columns.iter().find(|c| c.status.as_str() == after.status) {
                after.column_id = target.id;
                let last = store::last_position(tx, after.board_id, target.id).await?;
                after.position = position::after(last.as_deref());
            }
        }
        // Rule 12: enforced dependencies.
        if status_changed && after.enforce_dependencies {
            if matches!(after.status.as_str(), "in_progress" | "in_review" | "done") {
                let blockers = store::unsatisfied_blockers(tx, after.id, true).await?;
                if !blockers.is_empty() {
                    return Err(TaskError::DependencyUnsatisfied(blockers).into());
                }
            }
            if after.status == "done" {
                let blockers = store::unsatisfied_blockers(tx, after.id, false).await?;
                if !blockers.is_empty() {
                    return Err(TaskError::DependencyUnsatisfied(blockers).into());
                }
            }
        }
        // Rule 6: WIP limits count live top-level tasks; moving inside a column never trips them.
        let mut wip_exceeded = false;
        if after.column_id != before.column_id
            && after.parent_id.is_none()
            && let Some((_, Some(limit))) = store::column(tx, after.board_id, after.column_id).await?
        {
            let others = store::wip_count(tx, after.column_id, after.id).await?;
            if others + 1 > i64::from(limit) {
                if after.enforce_wip_limits {
                    return Err(TaskError::WipLimitReached.into());
                }
                wip_exceeded = true;
            }
        }
        if after.assignee_id != before.assignee_id
            && let Some(assignee) = after.assignee_id
        {
            access.task(ctx, after.id, TaskPermission::Assign).await?;
            if !access.user_can_view_board(ctx, assignee, after.board_id).await? {
                return Err(Error::invalid_argument("ASSIGNEE_NO_ACCESS", "The assignee cannot view the board")
                    .with_field("assignee_id", "cannot view the board"));
            }
        }
        let unchanged = field_changes(before, &after).is_empty()
            && !status_changed
            && before.column_id == after.column_id
            && before.position == after.position
            && before.assignee_id == after.assignee_id;
        if unchanged {
            return Ok(Saved { task: before.clone(), wip_exceeded, unblocked: Vec::new(), relationships: Vec::new() });
        }
        let dependents = if status_changed { store::dependents(tx, &[after.id]).await? } else { Vec::new() };
        let blocked_before = blocking(tx, &dependents).await?;
        after.completed_by = ctx.user_id_opt();
        store::write_task(tx, &after).await?;
        if let Some(assignee) = after.assignee_id.filter(|a| Some(*a) != before.assignee_id) {
            store::add_watcher(tx, org_id, after.id, assignee, "assignee").await?;
        }
        let task = store::task(tx, after.id).await?.ok_or(TaskError::TaskNotFound)?;
        let watchers = watcher_ids(tx, task.id).await?;
        let changes = field_changes(before, &task);
        if !changes.is_empty() {
            events::task_updated(tx, ctx, &task, &watchers, &changes).await?;
        }
        if task.assignee_id.is_some() && task.assignee_id != before.assignee_id {
            events::task_assigned(tx, ctx, &task, &watchers, before.assignee_id, "").await?;
        }
        if status_changed {
            events::task_status_changed(tx, ctx, before, &task, &watchers).await?;
            if task.status == "done" {
                events::task_completed(tx, ctx, &task, &watchers).await?;
            }
        }
        let unblocked = emit_transitions(tx, ctx, &blocked_before).await?;
        let mut relationships = Vec::new();
        if task.assignee_id != before.assignee_id {
            let version = crate::relationships::next_version(tx).await?;
            relationships.push(crate::relationships::task_assignee(
                task.id,
                before.assignee_id,
                task.assignee_id,
                version,
            ));
            access.stage(tx, ctx, &relationships).await?;
        }
        Ok(Saved { task, wip_exceeded, unblocked, relationships })
    }

    async fn locked(tx: &mut Tx, task_id: Uuid, version: Option<i64>) -> Result<TaskRow> {
        let task = store::task_for_update(tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        if version.is_some_and(|v| v != task.version) {
            return Err(TaskError::VersionMismatch.into());
        }
        Ok(task)
    }

    /// UpdateTask: applies the masked fields.
    pub async fn update(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        task_id: Uuid,
        changes: TaskChanges,
        version: Option<i64>,
    ) -> Result<TaskRow> {
        access.task(ctx, task_id, TaskPermission::Edit).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let before = locked(&mut tx, task_id, version).await?;
        let mut after = before.clone();
        if let Some(v) = changes.title {
            after.title = v;
        }
        if let Some(v) = changes.description {
            after.description = v;
        }
        if let Some(v) = changes.status {
            after.status = v.as_str().to_string();
        }
        if let Some(v) = changes.priority {
            after.priority = v.as_str().to_string();
        }
        if let Some(v) = changes.assignee_id {
            after.assignee_id = v;
        }
        if let Some(v) = changes.start_date {
            after.start_date = v;
        }
        if let Some(v) = changes.due_date {
            after.due_date = v;
        }
        if let Some(v) = changes.estimate_minutes {
            after.estimate_minutes = v;
        }
        if let (Some(start), Some(due)) = (after.start_date, after.due_date)
            && due < start
        {
            return Err(Error::validation("due_date", "must not be before start_date"));
        }
        let saved = save(&mut tx, access, ctx, &before, after).await?;
        tx.commit().await?;
        access.apply(ctx, &saved.relationships).await;
        Ok(saved.task)
    }

    /// Where MoveTask places a task.
    #[derive(Debug, Clone, Default)]
    pub struct Placement {
        /// Target column; `None` = the current one.
        pub column_id: Option<Uuid>,
        /// Right after this task.
        pub after_task_id: Option<Uuid>,
        /// Right before this task.
        pub before_task_id: Option<Uuid>,
        /// An explicit key.
        pub position: Option<String>,
    }

    /// The key for a task placed between `lo` and `hi` of `order` (the column without the task);
    /// when no short key exists the column is re-keyed evenly (Rule 5) and the task's key among
    /// the new keys is returned.
    async fn key_between(tx: &mut Tx, order: &[(Uuid, String)], task_id: Uuid, index: usize) -> Result<String> {
        let lo = index.checked_sub(1).and_then(|i| order.get(i)).map(|(_, k)| k.as_str());
        let hi = order.get(index).map(|(_, k)| k.as_str());
        if let Some(key) = position::between(lo, hi).filter(|k| k.len() <= position::MAX_LEN) {
            return Ok(key);
        }
        let mut ids: Vec<Uuid> = order.iter().map(|(id, _)| *id).collect();
        ids.insert(index.min(ids.len()), task_id);
        let mut mine = String::new();
        for (id, key) in ids.iter().zip(position::sequence(ids.len())) {
            if *id == task_id {
                mine = key;
            } else {
                store::set_position(tx, *id, &key).await?;
            }
        }
        tracing::info!(task_id = %task_id, "column re-keyed");
        Ok(mine)
    }

    /// MoveTask: places the task in a column of its board and takes the column's status.
    pub async fn move_task(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        task_id: Uuid,
        placement: Placement,
        version: Option<i64>,
    ) -> Result<Saved> {
        access.task(ctx, task_id, TaskPermission::Edit).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let before = locked(&mut tx, task_id, version).await?;
        let column_id = placement.column_id.unwrap_or(before.column_id);
        let (status, _) = store::column(&mut tx, before.board_id, column_id)
            .await?
            .ok_or_else(|| Error::validation("column_id", "is not a column of the task's board"))?;
        let order: Vec<(Uuid, String)> =
            store::column_order(&mut tx, column_id).await?.into_iter().filter(|(id, _)| *id != task_id).collect();
        let index_of = |field: &str, id: Uuid| {
            order
                .iter()
                .position(|(t, _)| *t == id)
                .ok_or_else(|| Error::validation(field.to_string(), "is not a task of the target column"))
        };
        let position = match (placement.after_task_id, placement.before_task_id, placement.position) {
            (Some(after), Some(before_id), _) => {
                let a = index_of("after_task_id", after)?;
                let b = index_of("before_task_id", before_id)?;
                if a + 1 != b {
                    return Err(Error::validation("before_task_id", "must directly follow after_task_id"));
                }
                key_between(&mut tx, &order, task_id, b).await?
            }
            (Some(after), None, _) => {
                let a = index_of("after_task_id", after)?;
                key_between(&mut tx, &order, task_id, a + 1).await?
            }
            (None, Some(before_id), _) => {
                let b = index_of("before_task_id", before_id)?;
                key_between(&mut tx, &order, task_id, b).await?
            }
            (None, None, Some(key)) => key,
            (None, None, None) => position::after(order.last().map(|(_, k)| k.as_str())),
        };
        let mut after = before.clone();
        after.column_id = column_id;
        after.status = status;
        after.position = position;
        let saved = save(&mut tx, access, ctx, &before, after).await?;
        tx.commit().await?;
        access.apply(ctx, &saved.relationships).await;
        Ok(saved)
    }

    /// CompleteTask: status done with resolution notes; already done = unchanged.
    pub async fn complete(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        task_id: Uuid,
        resolution_notes: String,
    ) -> Result<Saved> {
        access.task(ctx, task_id, TaskPermission::Edit).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let before = locked(&mut tx, task_id, None).await?;
        if before.status == "done" {
            tx.commit().await?;
            return Ok(Saved { task: before, wip_exceeded: false, unblocked: Vec::new(), relationships: Vec::new() });
        }
        let mut after = before.clone();
        after.status = Status::Done.as_str().to_string();
        after.resolution_notes = resolution_notes;
        let saved = save(&mut tx, access, ctx, &before, after).await?;
        tx.commit().await?;
        access.apply(ctx, &saved.relationships).await;
        Ok(saved)
    }

    /// DeleteTask: the task and its live descendants go to the trash in one batch; their
    /// dependents may become unblocked (deleted blockers count as satisfied).
    pub async fn delete(db: &Db, access: &dyn Access, ctx: &RequestContext, task_id: Uuid) -> Result<TaskRow> {
        access.task(ctx, task_id, TaskPermission::Delete).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let task = locked(&mut tx, task_id, None).await?;
        if task.archived {
            return Err(TaskError::BoardArchived.into());
        }
        let mut ids = store::live_descendants(&mut tx, task_id).await?;
        let descendants = ids.len();
        ids.push(task_id);
        let dependents: Vec<Uuid> =
            store::dependents(&mut tx, &ids).await?.into_iter().filter(|d| !ids.contains(d)).collect();
        let before = blocking(&mut tx, &dependents).await?;
        let batch = Uuid::now_v7();
        store::trash_tasks(&mut tx, &ids, batch).await?;
        let watchers = watcher_ids(&mut tx, task_id).await?;
        events::task_trash(&mut tx, ctx, &task, &watchers, batch, descendants, false).await?;
        emit_transitions(&mut tx, ctx, &before).await?;
        let trashed = store::trashed_task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        tx.commit().await?;
        tracing::info!(task_id = %task_id, descendants, "task trashed");
        Ok(trashed)
    }

    /// RestoreTask: brings back the task's whole delete batch.
    pub async fn restore(db: &Db, access: &dyn Access, ctx: &RequestContext, task_id: Uuid) -> Result<TaskRow> {
        access.task(ctx, task_id, TaskPermission::Delete).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let task = store::trashed_task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        let batch = task.delete_batch_id.unwrap_or_else(Uuid::nil);
        let (parent_live, board_live) = store::parent_and_board_live(&mut tx, task.parent_id, task.board_id).await?;
        if !board_live {
            return Err(TaskError::BoardDeleted.into());
        }
        if !parent_live {
            let parent_batch = match task.parent_id {
                Some(parent) => store::trashed_task(&mut tx, parent).await?.and_then(|p| p.delete_batch_id),
                None => None,
            };
            if parent_batch != Some(batch) {
                return Err(TaskError::ParentDeleted.into());
            }
        }
        let batch_ids = store::batch_task_ids(&mut tx, batch).await?;
        let dependents: Vec<Uuid> =
            store::dependents(&mut tx, &batch_ids).await?.into_iter().filter(|d| !batch_ids.contains(d)).collect();
        let before = blocking(&mut tx, &dependents).await?;
        let restored = store::restore_batch(&mut tx, batch).await?;
        let task = store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
        let watchers = watcher_ids(&mut tx, task_id).await?;
        events::task_trash(&mut tx, ctx, &task, &watchers, batch, restored.len().saturating_sub(1), true).await?;
        emit_transitions(&mut tx, ctx, &before).await?;
        tx.commit().await?;
        Ok(task)
    }
}
