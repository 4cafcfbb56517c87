//! Every query of the tasks service. Each runs inside a tenant transaction ([`Tx`] from
//! `Db::tenant_tx`), so Row-Level Security scopes it to the caller's organization even where a
//! query names no `org_id`. Inserts pass the organization explicitly; the policies' WITH CHECK
//! rejects any other.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use trellis_kit::Result;
use trellis_kit::db::Tx;
use uuid::Uuid;

use crate::board::task_key;
use crate::task::{Priority, Status};

/// A column as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column id.
    pub id: Uuid,
    /// The status it maps to.
    pub status: Status,
}

/// A task as the API returns it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    /// Id.
    pub id: Uuid,
    /// Board.
    pub board_id: Uuid,
    /// The board's key (for [`TaskRow::key`]).
    pub board_key: String,
    /// Whether the board is archived.
    pub archived: bool,
    /// Column.
    pub column_id: Uuid,
    /// Parent task.
    pub parent_id: Option<Uuid>,
    /// Number within the board.
    pub number: i32,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Stored status name.
    pub status: String,
    /// Stored priority name.
    pub priority: String,
    /// Assignee.
    pub assignee_id: Option<Uuid>,
    /// Creator (user or API key).
    pub created_by: Option<Uuid>,
    /// Fractional position in the column.
    pub position: String,
    /// Nesting depth.
    pub depth: i16,
    /// Planned start.
    pub start_date: Option<DateTime<Utc>>,
    /// Due date.
    pub due_date: Option<DateTime<Utc>>,
    /// First entry into in_progress.
    pub started_at: Option<DateTime<Utc>>,
    /// Completion time.
    pub completed_at: Option<DateTime<Utc>>,
    /// Watcher count.
    pub watcher_count: i64,
    /// Version.
    pub version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

impl TaskRow {
    /// The task key (`ENG-42`).
    pub fn key(&self) -> String {
        task_key(&self.board_key, self.number)
    }
}

/// A watcher row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WatcherRow {
    /// The user.
    pub user_id: Uuid,
    /// Why (`creator`, `assignee`, ...).
    pub reason: String,
    /// Since when.
    pub created_at: DateTime<Utc>,
}

/// The filters of a task list.
#[derive(Debug, Clone, Default)]
pub struct TaskSelection {
    /// Only this board.
    pub board_id: Option<Uuid>,
    /// Only this assignee.
    pub assignee_id: Option<Uuid>,
}

/// What inserting a task needs.
#[derive(Debug, Clone)]
pub struct NewTaskRow<'a> {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub org_id: Uuid,
    /// Board.
    pub board_id: Uuid,
    /// Column.
    pub column_id: Uuid,
    /// Number from the board counter.
    pub number: i32,
    /// Title.
    pub title: &'a str,
    /// Description.
    pub description: &'a str,
    /// Status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Assignee.
    pub assignee_id: Option<Uuid>,
    /// Creator.
    pub created_by: Option<Uuid>,
    /// The user who completes it, when it is created done (Rule 1).
    pub completed_by: Option<Uuid>,
    /// Position in the column.
    pub position: String,
}

/// The number a new task takes, and the board's state, from [`take_task_number`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskNumber {
    /// The number for the new task.
    pub number: i32,
    /// Whether the board is archived.
    pub archived: bool,
}

const TASK_SELECT: &str = "select t.id, t.board_id, b.key as board_key, b.archived_at is not null as archived, \
     t.column_id, t.parent_id, t.number, t.title, t.description, t.status, t.priority, t.assignee_id, t.created_by, \
     t.position, t.depth, t.start_date, t.due_date, t.started_at, t.completed_at, \
     (select count(*) from tasks.watchers w where w.task_id = t.id) as watcher_count, \
     t.version, t.created_at, t.updated_at \
     from tasks.tasks t join tasks.boards b on b.org_id = t.org_id and b.id = t.board_id";

/// The id of the organization's default board.
pub async fn default_board_id(tx: &mut Tx) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar("select id from tasks.boards where is_default").fetch_optional(&mut **tx).await?)
}

/// Inserts the default board unless one exists (or its key is taken); whether it was inserted.
/// A concurrent insert makes this wait for that transaction and then do nothing.
pub async fn insert_default_board(tx: &mut Tx, id: Uuid, org_id: Uuid, name: &str, key: &str) -> Result<bool> {
    let inserted = sqlx::query(
        "insert into tasks.boards (id, org_id, name, key, is_default) values ($1, $2, $3, $4, true) \
         on conflict do nothing",
    )
    .bind(id)
    .bind(org_id)
    .bind(name)
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Inserts a board column.
pub async fn insert_column(
    tx: &mut Tx,
    org_id: Uuid,
    board_id: Uuid,
    name: &str,
    status: Status,
    position: &str,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into tasks.board_columns (id, org_id, board_id, name, status, position) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(org_id)
    .bind(board_id)
    .bind(name)
    .bind(status.as_str())
    .bind(position)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Takes the next task number of a live board (Rule 35), locking the board row until commit.
pub async fn take_task_number(tx: &mut Tx, board_id: Uuid) -> Result<Option<TaskNumber>> {
    Ok(sqlx::query_as(
        "update tasks.boards set next_task_number = next_task_number + 1 \
         where id = $1 and deleted_at is null \
         returning next_task_number - 1 as number, archived_at is not null as archived",
    )
    .bind(board_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// A board's columns in order.
pub async fn board_columns(tx: &mut Tx, board_id: Uuid) -> Result<Vec<Column>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select id, status from tasks.board_columns where board_id = $1 order by position, id")
            .bind(board_id)
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows.into_iter().filter_map(|(id, status)| Status::parse(&status).map(|status| Column { id, status })).collect())
}

/// The greatest position among the column's live tasks.
pub async fn last_position(tx: &mut Tx, board_id: Uuid, column_id: Uuid) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "select max(position) from tasks.tasks where board_id = $1 and column_id = $2 and deleted_at is null",
    )
    .bind(board_id)
    .bind(column_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// Inserts a task.
pub async fn insert_task(tx: &mut Tx, task: &NewTaskRow<'_>) -> Result<()> {
    sqlx::query(
        "insert into tasks.tasks (id, org_id, board_id, column_id, number, title, description, status, priority, \
         assignee_id, created_by, position, started_at, completed_at, completed_by) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         case when $8 = 'in_progress' then now() end, case when $8 = 'done' then now() end, \
         case when $8 = 'done' then $13::uuid end)",
    )
    .bind(task.id)
    .bind(task.org_id)
    .bind(task.board_id)
    .bind(task.column_id)
    .bind(task.number)
    .bind(task.title)
    .bind(task.description)
    .bind(task.status.as_str())
    .bind(task.priority.as_str())
    .bind(task.assignee_id)
    .bind(task.created_by)
    .bind(&task.position)
    .bind(task.completed_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds a watcher; a user who already watches keeps their first reason.
pub async fn add_watcher(tx: &mut Tx, org_id: Uuid, task_id: Uuid, user_id: Uuid, reason: &str) -> Result<()> {
    sqlx::query(
        "insert into tasks.watchers (org_id, task_id, user_id, reason) values ($1, $2, $3, $4) on conflict do nothing",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(user_id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A task's watchers, oldest first.
pub async fn watchers(tx: &mut Tx, task_id: Uuid) -> Result<Vec<WatcherRow>> {
    Ok(sqlx::query_as(
        "select user_id, reason, created_at from tasks.watchers where task_id = $1 order by created_at, user_id",
    )
    .bind(task_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// A live task.
pub async fn task(tx: &mut Tx, task_id: Uuid) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as(&format!("{TASK_SELECT} where t.id = $1 and t.deleted_at is null"))
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// A live task, locked until commit.
pub async fn task_for_update(tx: &mut Tx, task_id: Uuid) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as(&format!("{TASK_SELECT} where t.id = $1 and t.deleted_at is null for update of t"))
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Sets a task's assignee and bumps its version.
pub async fn set_assignee(tx: &mut Tx, task_id: Uuid, assignee_id: Option<Uuid>) -> Result<()> {
    sqlx::query(
        "update tasks.tasks set assignee_id = $2, version = version + 1, updated_at = now() \
         where id = $1 and deleted_at is null",
    )
    .bind(task_id)
    .bind(assignee_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn push_selection(q: &mut QueryBuilder<'_, Postgres>, selection: &TaskSelection) {
    q.push(" where t.deleted_at is null and t.parent_id is null");
    if let Some(board_id) = selection.board_id {
        q.push(" and t.board_id = ").push_bind(board_id);
    }
    if let Some(assignee_id) = selection.assignee_id {
        q.push(" and t.assignee_id = ").push_bind(assignee_id);
    }
}

/// Live top-level tasks, newest first, after `cursor` (created_at, id) of the previous page.
pub async fn tasks_page(
    tx: &mut Tx,
    selection: &TaskSelection,
    cursor: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<TaskRow>> {
    let mut q = QueryBuilder::<Postgres>::new(TASK_SELECT);
    push_selection(&mut q, selection);
    if let Some((created_at, id)) = cursor {
        q.push(" and (t.created_at, t.id) < (").push_bind(created_at).push(", ").push_bind(id).push(")");
    }
    q.push(" order by t.created_at desc, t.id desc limit ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// How many tasks a selection holds.
pub async fn count_tasks(tx: &mut Tx, selection: &TaskSelection) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("select count(*) from tasks.tasks t");
    push_selection(&mut q, selection);
    Ok(q.build_query_scalar().fetch_one(&mut **tx).await?)
}
