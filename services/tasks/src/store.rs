//! Every query of the tasks service. Each runs inside a tenant transaction ([`Tx`] from
//! `Db::tenant_tx`), so Row-Level Security scopes it to the caller's organization even where a
//! query names no `org_id`. Inserts pass the organization explicitly; the policies' WITH CHECK
//! rejects any other.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use trellis_kit::Result;
use trellis_kit::db::Tx;
use trellis_kit::filter::{Filter, Order, SortKey};
use uuid::Uuid;

use crate::access::Visible;
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
    /// Completion notes.
    pub resolution_notes: String,
    /// Estimate in minutes.
    pub estimate_minutes: Option<i32>,
    /// Set while in the trash.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The delete batch, while in the trash.
    pub delete_batch_id: Option<Uuid>,
    /// An unsatisfied finish_to_start / start_to_start dependency.
    pub is_blocked: bool,
    /// An unsatisfied finish_to_finish / start_to_finish dependency.
    pub completion_blocked: bool,
    /// The board refuses moves into full columns.
    pub enforce_wip_limits: bool,
    /// The board refuses starting or finishing blocked tasks.
    pub enforce_dependencies: bool,
    /// Who completed it.
    pub completed_by: Option<Uuid>,
    /// Sum of finished time entries.
    pub tracked_seconds: i64,
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

    /// Live, open and past its due date (Rule 16).
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.deleted_at.is_none()
            && !matches!(self.status.as_str(), "done" | "cancelled")
            && self.due_date.is_some_and(|due| due < now)
    }
}

/// SQL predicate: dependency `d` on live-or-deleted blocker `a` is unsatisfied (Rule 9; deleted
/// blockers count as satisfied). Mirrors [`crate::dependency::satisfied`].
pub const UNSATISFIED: &str = "(a.deleted_at is null and a.status not in ('done', 'cancelled') \
     and (d.type in ('finish_to_start', 'finish_to_finish') or a.started_at is null))";

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
#[derive(Debug, Clone)]
pub struct TaskSelection {
    /// Only this board.
    pub board_id: Option<Uuid>,
    /// Only this assignee.
    pub assignee_id: Option<Uuid>,
    /// Only these statuses (stored names; empty = all).
    pub statuses: Vec<String>,
    /// Only these priorities (stored names; empty = all).
    pub priorities: Vec<String>,
    /// Only direct subtasks of this task.
    pub parent_id: Option<Uuid>,
    /// Subtasks too.
    pub include_subtasks: bool,
    /// Closed (done, cancelled) tasks too.
    pub include_closed: bool,
    /// The caller's AIP-160 filter (empty = everything).
    pub filter: Filter,
    /// Full-text search.
    pub search: Option<Search>,
    /// Only tasks whose [start or due, due or start] interval meets [from, to].
    pub range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Only tasks carrying any of these tags (lowercase names; empty = all).
    pub tags: Vec<String>,
    /// Only what the caller may view.
    pub visible: Visible,
}

/// Restricts a query over tasks `t` to what the caller may view: tasks of the visible boards,
/// plus those the caller created or is assigned.
pub fn push_visible_tasks(q: &mut QueryBuilder<'_, Postgres>, visible: &Visible) {
    if let Visible::Some { boards, user } = visible {
        q.push(" and (t.board_id = any(").push_bind(boards.clone()).push(")");
        if let Some(user) = user {
            q.push(" or t.created_by = ").push_bind(*user).push(" or t.assignee_id = ").push_bind(*user);
        }
        q.push(")");
    }
}

/// Restricts a query over boards (column `id`, or `alias.id`) to the visible ones.
fn push_visible_boards(q: &mut QueryBuilder<'_, Postgres>, visible: &Visible, id_column: &str) {
    if let Visible::Some { boards, .. } = visible {
        q.push(format!(" and {id_column} = any(")).push_bind(boards.clone()).push(")");
    }
}

/// A full-text query, split for the SQL (see `task::search_of`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Words before the last (websearch syntax), or the whole query when the last word is not
    /// matched by prefix.
    pub words: String,
    /// The last word, matched as a prefix.
    pub prefix: Option<String>,
    /// A task key the query equals (board key, number): that task ranks first.
    pub key: Option<(String, i32)>,
}

/// How a page of tasks is ordered and where it starts.
#[derive(Debug, Clone)]
pub enum PageOrder<'a> {
    /// By a declared field then id, after the previous page's last (key, id).
    Sorted {
        /// The order.
        order: &'a Order,
        /// The last row of the previous page.
        after: Option<(SortKey, Uuid)>,
    },
    /// By search rank (key match, rank, updated_at, id), skipping `offset` rows.
    Ranked {
        /// Rows of the previous pages.
        offset: i64,
    },
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
    /// Parent task, for a subtask.
    pub parent_id: Option<Uuid>,
    /// Nesting depth (0 = top level).
    pub depth: i16,
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
     t.resolution_notes, t.estimate_minutes, t.deleted_at, t.delete_batch_id, \
     exists (select 1 from tasks.dependencies d join tasks.tasks a on a.id = d.depends_on_id \
         where d.task_id = t.id and d.type in ('finish_to_start', 'start_to_start') and a.deleted_at is null \
         and a.status not in ('done', 'cancelled') and (d.type = 'finish_to_start' or a.started_at is null)) as is_blocked, \
     exists (select 1 from tasks.dependencies d join tasks.tasks a on a.id = d.depends_on_id \
         where d.task_id = t.id and d.type in ('finish_to_finish', 'start_to_finish') and a.deleted_at is null \
         and a.status not in ('done', 'cancelled') and (d.type = 'finish_to_finish' or a.started_at is null)) \
         as completion_blocked, \
     coalesce((b.settings->>'enforce_wip_limits')::bool, false) as enforce_wip_limits, \
     coalesce((b.settings->>'enforce_dependencies')::bool, false) as enforce_dependencies, t.completed_by, \
     t.tracked_seconds, t.version, t.created_at, t.updated_at \
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

/// A board's columns in order, each with the greatest position among its live tasks: what a new
/// task needs to be placed at the end of its column, in one round trip.
pub async fn board_columns_with_last_positions(tx: &mut Tx, board_id: Uuid) -> Result<Vec<(Column, Option<String>)>> {
    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "select c.id, c.status, (select max(t.position) from tasks.tasks t where t.board_id = c.board_id \
         and t.column_id = c.id and t.deleted_at is null) from tasks.board_columns c where c.board_id = $1 \
         order by c.position, c.id",
    )
    .bind(board_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, status, last)| Status::parse(&status).map(|status| (Column { id, status }, last)))
        .collect())
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

/// Inserts a task (without watchers).
pub async fn insert_task(tx: &mut Tx, task: &NewTaskRow<'_>) -> Result<()> {
    // A data-modifying CTE runs once even when no watcher row comes out of it.
    insert_task_with_watchers(tx, task, &[]).await.map(|_| ())
}

/// Inserts a new task together with its first watchers (`(user, reason)`, the first reason of a
/// user counts) in one statement, and returns those watchers oldest first: one round trip while
/// the board's number lock is held instead of one per write and a read-back.
pub async fn insert_task_with_watchers(
    tx: &mut Tx,
    task: &NewTaskRow<'_>,
    watchers: &[(Uuid, &str)],
) -> Result<Vec<WatcherRow>> {
    let users: Vec<Uuid> = watchers.iter().map(|(u, _)| *u).collect();
    let reasons: Vec<String> = watchers.iter().map(|(_, r)| (*r).to_string()).collect();
    let mut rows: Vec<WatcherRow> = sqlx::query_as(
        "with inserted as (insert into tasks.tasks (id, org_id, board_id, column_id, number, title, description, \
         status, priority, assignee_id, created_by, position, started_at, completed_at, completed_by, parent_id, \
         depth) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         case when $8 = 'in_progress' then now() end, case when $8 = 'done' then now() end, \
         case when $8 = 'done' then $13::uuid end, $14, $15) returning id, org_id) \
         insert into tasks.watchers (org_id, task_id, user_id, reason) \
         select i.org_id, i.id, w.user_id, w.reason from inserted i \
         cross join unnest($16::uuid[], $17::text[]) with ordinality as w(user_id, reason, n) order by w.n \
         on conflict do nothing returning user_id, reason, created_at",
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
    .bind(task.parent_id)
    .bind(task.depth)
    .bind(&users)
    .bind(&reasons)
    .fetch_all(&mut **tx)
    .await?;
    rows.sort_by_key(|w| (w.created_at, w.user_id));
    Ok(rows)
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

/// Whether a task has an unsatisfied finish-to-start or start-to-start blocker (`is_blocked`).
pub const IS_BLOCKED_SQL: &str = "exists (select 1 from tasks.dependencies d join tasks.tasks a on a.id = d.depends_on_id \
     where d.task_id = t.id and d.type in ('finish_to_start', 'start_to_start') and a.deleted_at is null \
     and a.status not in ('done', 'cancelled') and (d.type = 'finish_to_start' or a.started_at is null))";

/// Whether a task is overdue (Rule 16): open and due before now.
pub const IS_OVERDUE_SQL: &str =
    "(t.due_date is not null and t.due_date < now() and t.status not in ('done', 'cancelled'))";

const COUNT_FROM: &str =
    "select count(*) from tasks.tasks t join tasks.boards b on b.org_id = t.org_id and b.id = t.board_id";

fn push_tsquery(q: &mut QueryBuilder<'_, Postgres>, search: &Search) {
    match (&search.prefix, search.words.trim().is_empty()) {
        (Some(prefix), true) => {
            q.push("to_tsquery('simple', ").push_bind(format!("{prefix}:*")).push(")");
        }
        (Some(prefix), false) => {
            q.push("(websearch_to_tsquery('simple', ").push_bind(search.words.clone());
            q.push(") && to_tsquery('simple', ").push_bind(format!("{prefix}:*")).push("))");
        }
        (None, _) => {
            q.push("websearch_to_tsquery('simple', ").push_bind(search.words.clone()).push(")");
        }
    }
}

fn push_key_match(q: &mut QueryBuilder<'_, Postgres>, key: &(String, i32)) {
    q.push("(b.key = ").push_bind(key.0.clone()).push(" and t.number = ").push_bind(key.1).push(")");
}

fn push_selection(q: &mut QueryBuilder<'_, Postgres>, selection: &TaskSelection) {
    q.push(" where t.deleted_at is null");
    push_visible_tasks(q, &selection.visible);
    match selection.parent_id {
        Some(parent_id) => {
            q.push(" and t.parent_id = ").push_bind(parent_id);
        }
        None if !selection.include_subtasks => {
            q.push(" and t.parent_id is null");
        }
        None => {}
    }
    if !selection.statuses.is_empty() {
        q.push(" and t.status = any(").push_bind(selection.statuses.clone()).push(")");
    }
    if !selection.include_closed {
        q.push(" and t.status not in ('done', 'cancelled')");
    }
    if !selection.priorities.is_empty() {
        q.push(" and t.priority = any(").push_bind(selection.priorities.clone()).push(")");
    }
    if let Some(board_id) = selection.board_id {
        q.push(" and t.board_id = ").push_bind(board_id);
    }
    if let Some(assignee_id) = selection.assignee_id {
        q.push(" and t.assignee_id = ").push_bind(assignee_id);
    }
    if let Some((from, to)) = selection.range {
        q.push(" and coalesce(t.start_date, t.due_date) <= ").push_bind(to);
        q.push(" and coalesce(t.due_date, t.start_date) >= ").push_bind(from);
    }
    if let Some(search) = &selection.search {
        q.push(" and (t.search @@ ");
        push_tsquery(q, search);
        if let Some(key) = &search.key {
            q.push(" or ");
            push_key_match(q, key);
        }
        q.push(")");
    }
    if !selection.tags.is_empty() {
        q.push(
            " and exists (select 1 from tasks.entity_tags et join tasks.tags g on g.org_id = et.org_id \
            and g.id = et.tag_id where et.entity_type = 'task' and et.entity_id = t.id and lower(g.name) = any(",
        );
        q.push_bind(selection.tags.clone()).push("))");
    }
    selection.filter.push_and(q);
}

/// A task carries the tag named `$` (ignoring case): the `tags` field of the ListTasks filter.
pub const HAS_TAG_SQL: &str = "exists (select 1 from tasks.entity_tags et join tasks.tags g on g.org_id = et.org_id \
     and g.id = et.tag_id where et.entity_type = 'task' and et.entity_id = t.id and lower(g.name) = lower($))";

/// A page of live tasks of a selection in `order`, at most `limit` rows.
pub async fn tasks_page(
    tx: &mut Tx,
    selection: &TaskSelection,
    order: &PageOrder<'_>,
    limit: i64,
) -> Result<Vec<TaskRow>> {
    let mut q = QueryBuilder::<Postgres>::new(TASK_SELECT);
    push_selection(&mut q, selection);
    match order {
        PageOrder::Sorted { order, after } => {
            if let Some((key, id)) = after {
                order.push_after(&mut q, "t.id", key, *id);
            }
            order.push_order(&mut q, "t.id");
            q.push(" limit ").push_bind(limit);
        }
        PageOrder::Ranked { offset } => {
            q.push(" order by ");
            if let Some(key) = selection.search.as_ref().and_then(|s| s.key.as_ref()) {
                push_key_match(&mut q, key);
                q.push(" desc, ");
            }
            if let Some(search) = &selection.search {
                q.push("ts_rank(t.search, ");
                push_tsquery(&mut q, search);
                q.push(") desc, ");
            }
            q.push("t.updated_at desc, t.id desc limit ").push_bind(limit).push(" offset ").push_bind(*offset);
        }
    }
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// How many tasks a selection holds.
pub async fn count_tasks(tx: &mut Tx, selection: &TaskSelection) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new(COUNT_FROM);
    push_selection(&mut q, selection);
    Ok(q.build_query_scalar().fetch_one(&mut **tx).await?)
}

/// Tasks of a selection with (`dated`) or without any date, by first date then id (undated:
/// by position), at most `limit`: the calendar and gantt views.
pub async fn tasks_by_date(tx: &mut Tx, selection: &TaskSelection, dated: bool, limit: i64) -> Result<Vec<TaskRow>> {
    let mut q = QueryBuilder::<Postgres>::new(TASK_SELECT);
    push_selection(&mut q, selection);
    if dated {
        q.push(" and (t.start_date is not null or t.due_date is not null)");
        q.push(" order by coalesce(t.start_date, t.due_date), t.id");
    } else {
        q.push(" and t.start_date is null and t.due_date is null order by t.position, t.id");
    }
    q.push(" limit ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// A dependency of the gantt view with its live blocker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GanttDependencyRow {
    /// Dependency id.
    pub id: Uuid,
    /// The dependent.
    pub task_id: Uuid,
    /// The blocker.
    pub depends_on_id: Uuid,
    /// Type (stored name).
    pub kind: String,
    /// Lag in days.
    pub lag_days: i32,
    /// The blocker's board.
    pub board_id: Uuid,
    /// The blocker's board key.
    pub board_key: String,
    /// The blocker's number.
    pub number: i32,
    /// The blocker's title.
    pub title: String,
    /// The blocker's status.
    pub status: String,
    /// The blocker's planned start.
    pub start_date: Option<DateTime<Utc>>,
    /// The blocker's due date.
    pub due_date: Option<DateTime<Utc>>,
}

/// The dependencies of `task_ids` on live blockers.
pub async fn gantt_dependencies(tx: &mut Tx, task_ids: &[Uuid]) -> Result<Vec<GanttDependencyRow>> {
    Ok(sqlx::query_as(
        "select d.id, d.task_id, d.depends_on_id, d.type as kind, d.lag_days, a.board_id, b.key as board_key, \
         a.number, a.title, a.status, a.start_date, a.due_date \
         from tasks.dependencies d join tasks.tasks a on a.id = d.depends_on_id \
         join tasks.boards b on b.org_id = a.org_id and b.id = a.board_id \
         where d.task_id = any($1) and a.deleted_at is null order by d.task_id, d.id",
    )
    .bind(task_ids)
    .fetch_all(&mut **tx)
    .await?)
}

/// Counts over a whole selection (ListTasks `include_aggregations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregations {
    /// Tasks per status.
    pub by_status: Vec<(String, i64)>,
    /// Tasks per priority.
    pub by_priority: Vec<(String, i64)>,
    /// Open tasks past their due date.
    pub overdue_count: i64,
    /// Open tasks due in the current ISO week of the time zone.
    pub due_this_week: i64,
    /// Tasks completed in the current ISO week of the time zone.
    pub completed_this_week: i64,
}

/// Whether Postgres knows the IANA time zone `name`. The names of the IANA database (which
/// Postgres ships as well) answer without a query: `pg_timezone_names` reads the whole time zone
/// directory on every call, milliseconds on each ListTasks.
pub async fn time_zone_exists(tx: &mut Tx, name: &str) -> Result<bool> {
    if name.parse::<chrono_tz::Tz>().is_ok() {
        return Ok(true);
    }
    Ok(sqlx::query_scalar("select exists (select 1 from pg_timezone_names where name = $1)")
        .bind(name)
        .fetch_one(&mut **tx)
        .await?)
}

/// Aggregations of a selection; weeks are ISO weeks (Monday first) in `time_zone` (known).
pub async fn aggregations(tx: &mut Tx, selection: &TaskSelection, time_zone: &str) -> Result<Aggregations> {
    let mut out = Aggregations::default();
    for (column, target) in [("t.status", &mut out.by_status), ("t.priority", &mut out.by_priority)] {
        let mut q = QueryBuilder::<Postgres>::new("select ");
        q.push(column)
            .push(", count(*) from tasks.tasks t join tasks.boards b on b.org_id = t.org_id and b.id = t.board_id");
        push_selection(&mut q, selection);
        q.push(" group by 1 order by 1");
        *target = q.build_query_as::<(String, i64)>().fetch_all(&mut **tx).await?;
    }
    let mut q = QueryBuilder::<Postgres>::new("with week as (select (date_trunc('week', now() at time zone ");
    q.push_bind(time_zone.to_string()).push(") at time zone ").push_bind(time_zone.to_string());
    q.push(") as starts, ((date_trunc('week', now() at time zone ").push_bind(time_zone.to_string());
    q.push(") + interval '7 days') at time zone ").push_bind(time_zone.to_string()).push(") as ends) ");
    q.push("select count(*) filter (where ").push(IS_OVERDUE_SQL).push("), ");
    q.push(
        "count(*) filter (where t.status not in ('done', 'cancelled') and t.due_date >= week.starts \
        and t.due_date < week.ends), ",
    );
    q.push("count(*) filter (where t.completed_at >= week.starts and t.completed_at < week.ends) ");
    q.push("from week, tasks.tasks t join tasks.boards b on b.org_id = t.org_id and b.id = t.board_id");
    push_selection(&mut q, selection);
    let (overdue, due, completed): (i64, i64, i64) = q.build_query_as().fetch_one(&mut **tx).await?;
    out.overdue_count = overdue;
    out.due_this_week = due;
    out.completed_this_week = completed;
    Ok(out)
}

// ---- Boards -------------------------------------------------------------------------------

/// A board row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardRow {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Task key prefix.
    pub key: String,
    /// Description.
    pub description: String,
    /// Default rendering.
    pub view_type: String,
    /// org | private.
    pub visibility: String,
    /// Owning team.
    pub team_id: Option<Uuid>,
    /// Settings object.
    pub settings: serde_json::Value,
    /// The organization's default board.
    pub is_default: bool,
    /// Creator.
    pub created_by: Option<Uuid>,
    /// Archived since.
    pub archived_at: Option<DateTime<Utc>>,
    /// In the trash since.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The delete batch.
    pub delete_batch_id: Option<Uuid>,
    /// Version.
    pub version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// A column with its live top-level task count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ColumnRow {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Stored status.
    pub status: String,
    /// Fractional key.
    pub position: String,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// WIP limit.
    pub wip_limit: Option<i32>,
    /// Live top-level tasks.
    pub task_count: i64,
}

const BOARD_SELECT: &str = "select id, name, key, description, view_type, visibility, team_id, settings, is_default, \
     created_by, archived_at, deleted_at, delete_batch_id, version, created_at, updated_at from tasks.boards";

/// What inserting a board needs.
#[derive(Debug, Clone)]
pub struct NewBoardRow<'a> {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub org_id: Uuid,
    /// Name.
    pub name: &'a str,
    /// Key.
    pub key: &'a str,
    /// Description.
    pub description: &'a str,
    /// View type.
    pub view_type: &'a str,
    /// Visibility.
    pub visibility: &'a str,
    /// Team.
    pub team_id: Option<Uuid>,
    /// Settings.
    pub settings: serde_json::Value,
    /// Creator.
    pub created_by: Option<Uuid>,
}

/// Inserts a board; `Ok(false)` when its key is taken by a live board.
pub async fn insert_board(tx: &mut Tx, b: &NewBoardRow<'_>) -> Result<bool> {
    let done = sqlx::query(
        "insert into tasks.boards (id, org_id, name, key, description, view_type, visibility, team_id, settings, \
         created_by) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict (org_id, key) where deleted_at is null \
         do nothing",
    )
    .bind(b.id)
    .bind(b.org_id)
    .bind(b.name)
    .bind(b.key)
    .bind(b.description)
    .bind(b.view_type)
    .bind(b.visibility)
    .bind(b.team_id)
    .bind(&b.settings)
    .bind(b.created_by)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A live board (`trashed` = a board in the trash instead).
pub async fn board(tx: &mut Tx, board_id: Uuid, trashed: bool) -> Result<Option<BoardRow>> {
    let filter = if trashed { "deleted_at is not null" } else { "deleted_at is null" };
    Ok(sqlx::query_as(&format!("{BOARD_SELECT} where id = $1 and {filter}"))
        .bind(board_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// A live (or trashed) board, locked until commit: changes to one board take turns.
pub async fn board_locked(tx: &mut Tx, board_id: Uuid, trashed: bool) -> Result<Option<BoardRow>> {
    let filter = if trashed { "deleted_at is not null" } else { "deleted_at is null" };
    Ok(sqlx::query_as(&format!("{BOARD_SELECT} where id = $1 and {filter} for update"))
        .bind(board_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// A board's columns in order with their live top-level task counts.
pub async fn column_rows(tx: &mut Tx, board_id: Uuid) -> Result<Vec<ColumnRow>> {
    Ok(sqlx::query_as(
        "select c.id, c.name, c.status, c.position, c.color, c.wip_limit, \
         (select count(*) from tasks.tasks t where t.board_id = c.board_id and t.column_id = c.id \
          and t.deleted_at is null and t.parent_id is null) as task_count \
         from tasks.board_columns c where c.board_id = $1 order by c.position, c.id",
    )
    .bind(board_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Live boards by name after `cursor` (name, id).
pub async fn boards_page(
    tx: &mut Tx,
    visible: &Visible,
    archived: bool,
    cursor: Option<(String, Uuid)>,
    limit: i64,
) -> Result<Vec<BoardRow>> {
    let mut q = QueryBuilder::<Postgres>::new(BOARD_SELECT);
    q.push(" where deleted_at is null and (archived_at is not null) = ").push_bind(archived);
    push_visible_boards(&mut q, visible, "id");
    if let Some((name, id)) = cursor {
        q.push(" and (name, id) > (").push_bind(name).push(", ").push_bind(id).push(")");
    }
    q.push(" order by name, id limit ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// Trashed boards the caller may see, most recently deleted first, after (deleted_at, id) of
/// the previous page.
pub async fn trashed_boards_page(
    tx: &mut Tx,
    visible: &Visible,
    cursor: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<BoardRow>> {
    let mut q = QueryBuilder::<Postgres>::new(BOARD_SELECT);
    q.push(" where deleted_at is not null");
    push_visible_boards(&mut q, visible, "id");
    if let Some((deleted_at, id)) = cursor {
        q.push(" and (deleted_at, id) < (").push_bind(deleted_at).push(", ").push_bind(id).push(")");
    }
    q.push(" order by deleted_at desc, id desc limit ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// Every task of a board, live or trashed, parents before their subtasks.
pub async fn all_board_tasks(tx: &mut Tx, board_id: Uuid) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as(&format!("{TASK_SELECT} where t.board_id = $1 order by t.depth, t.id"))
        .bind(board_id)
        .fetch_all(&mut **tx)
        .await?)
}

/// Deletes a trashed board for good with its columns, recurrence rules (and their scheduled
/// work) and automations (and their runs); its tasks must be purged first.
pub async fn purge_board(tx: &mut Tx, board_id: Uuid) -> Result<()> {
    sqlx::query(
        "delete from tasks.scheduled_work where kind = 'recurrence' \
         and ref_id in (select id from tasks.recurrence_rules where board_id = $1)",
    )
    .bind(board_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("delete from tasks.recurrence_rules where board_id = $1").bind(board_id).execute(&mut **tx).await?;
    sqlx::query("delete from tasks.automations where board_id = $1").bind(board_id).execute(&mut **tx).await?;
    sqlx::query("delete from tasks.boards where id = $1 and deleted_at is not null")
        .bind(board_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// How many live boards are (or are not) archived.
pub async fn count_boards(tx: &mut Tx, visible: &Visible, archived: bool) -> Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("select count(*) from tasks.boards where deleted_at is null");
    q.push(" and (archived_at is not null) = ").push_bind(archived);
    push_visible_boards(&mut q, visible, "id");
    Ok(q.build_query_scalar().fetch_one(&mut **tx).await?)
}

/// Writes a board's editable fields; `Ok(false)` when the new key is taken.
pub async fn write_board(tx: &mut Tx, b: &BoardRow) -> Result<bool> {
    let result = sqlx::query(
        "update tasks.boards set name = $2, key = $3, description = $4, view_type = $5, visibility = $6, \
         team_id = $7, settings = $8, version = version + 1, updated_at = now() where id = $1",
    )
    .bind(b.id)
    .bind(&b.name)
    .bind(&b.key)
    .bind(&b.description)
    .bind(&b.view_type)
    .bind(&b.visibility)
    .bind(b.team_id)
    .bind(&b.settings)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if trellis_kit::db::violated_constraint(&e) == Some("boards_org_key") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Archives (`true`) or unarchives a board.
pub async fn set_archived(tx: &mut Tx, board_id: Uuid, archived: bool) -> Result<()> {
    sqlx::query(
        "update tasks.boards set archived_at = case when $2 then coalesce(archived_at, now()) end, \
         version = version + case when (archived_at is not null) = $2 then 0 else 1 end, updated_at = now() \
         where id = $1",
    )
    .bind(board_id)
    .bind(archived)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves a board and its live tasks to the trash under one batch id.
pub async fn trash_board(tx: &mut Tx, board_id: Uuid, batch: Uuid) -> Result<()> {
    sqlx::query(
        "update tasks.tasks set deleted_at = now(), delete_batch_id = $2 where board_id = $1 and deleted_at is null",
    )
    .bind(board_id)
    .bind(batch)
    .execute(&mut **tx)
    .await?;
    sqlx::query("update tasks.boards set deleted_at = now(), delete_batch_id = $2, updated_at = now() where id = $1")
        .bind(board_id)
        .bind(batch)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Brings a trashed board back with the tasks of its batch; `Ok(false)` when its key was reused.
pub async fn restore_board(tx: &mut Tx, board_id: Uuid, batch: Uuid) -> Result<bool> {
    let result = sqlx::query(
        "update tasks.boards set deleted_at = null, delete_batch_id = null, updated_at = now() where id = $1",
    )
    .bind(board_id)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(_) => {}
        Err(e) if trellis_kit::db::violated_constraint(&e) == Some("boards_org_key") => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    restore_batch(tx, batch).await?;
    Ok(true)
}

/// A column as ConfigureColumns writes it.
#[derive(Debug, Clone)]
pub struct ColumnWrite {
    /// Id (existing or new).
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Position.
    pub position: String,
    /// Color.
    pub color: Option<String>,
    /// WIP limit.
    pub wip_limit: Option<i32>,
}

/// Inserts or updates a column of a board.
pub async fn upsert_column(tx: &mut Tx, org_id: Uuid, board_id: Uuid, c: &ColumnWrite) -> Result<()> {
    sqlx::query(
        "insert into tasks.board_columns (id, org_id, board_id, name, status, position, color, wip_limit) \
         values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (id) do update set name = excluded.name, \
         status = excluded.status, position = excluded.position, color = excluded.color, \
         wip_limit = excluded.wip_limit, updated_at = now()",
    )
    .bind(c.id)
    .bind(org_id)
    .bind(board_id)
    .bind(&c.name)
    .bind(c.status.as_str())
    .bind(&c.position)
    .bind(&c.color)
    .bind(c.wip_limit)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many tasks (live or trashed) sit in a column.
pub async fn tasks_in_column_count(tx: &mut Tx, column_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from tasks.tasks where column_id = $1")
        .bind(column_id)
        .fetch_one(&mut **tx)
        .await?)
}

/// Moves every task of column `from` to the end of column `to` (keeping their order) and gives
/// them the status of `to`.
pub async fn move_column_tasks(tx: &mut Tx, from: Uuid, to: Uuid, status: Status, after: Option<&str>) -> Result<()> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("select id from tasks.tasks where column_id = $1 order by position, id for update")
            .bind(from)
            .fetch_all(&mut **tx)
            .await?;
    let mut last = after.map(str::to_string);
    for id in ids {
        let position = crate::position::after(last.as_deref());
        sqlx::query(
            "update tasks.tasks set column_id = $2, position = $3, status = $4, \
             started_at = case when $4 = 'in_progress' then coalesce(started_at, now()) else started_at end, \
             completed_at = case when $4 = 'done' then coalesce(completed_at, now()) end, \
             completed_by = case when $4 = 'done' then completed_by end, \
             version = version + 1, updated_at = now() where id = $1",
        )
        .bind(id)
        .bind(to)
        .bind(&position)
        .bind(status.as_str())
        .execute(&mut **tx)
        .await?;
        last = Some(position);
    }
    Ok(())
}

/// Deletes a column (its tasks moved away first).
pub async fn delete_column(tx: &mut Tx, column_id: Uuid) -> Result<()> {
    sqlx::query("delete from tasks.board_columns where id = $1").bind(column_id).execute(&mut **tx).await?;
    Ok(())
}

// ---- Task changes -------------------------------------------------------------------------

/// Writes the editable state of a task (from a [`TaskRow`] changed in memory) and bumps its
/// version. started_at is set on the first entry into in_progress; completed_at follows done.
pub async fn write_task(tx: &mut Tx, t: &TaskRow) -> Result<()> {
    sqlx::query(
        "update tasks.tasks set title = $2, description = $3, status = $4, priority = $5, assignee_id = $6, \
         start_date = $7, due_date = $8, estimate_minutes = $9, column_id = $10, position = $11, \
         resolution_notes = $12, \
         started_at = case when $4 = 'in_progress' then coalesce(started_at, now()) else started_at end, \
         completed_at = case when $4 = 'done' then coalesce(completed_at, now()) end, \
         completed_by = case when $4 = 'done' then (case when status = 'done' then completed_by else $13 end) end, \
         version = version + 1, updated_at = now() where id = $1",
    )
    .bind(t.id)
    .bind(&t.title)
    .bind(&t.description)
    .bind(&t.status)
    .bind(&t.priority)
    .bind(t.assignee_id)
    .bind(t.start_date)
    .bind(t.due_date)
    .bind(t.estimate_minutes)
    .bind(t.column_id)
    .bind(&t.position)
    .bind(&t.resolution_notes)
    .bind(t.completed_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The (id, position) of a column's live tasks in order.
pub async fn column_order(tx: &mut Tx, column_id: Uuid) -> Result<Vec<(Uuid, String)>> {
    Ok(sqlx::query_as(
        "select id, position from tasks.tasks where column_id = $1 and deleted_at is null order by position, id",
    )
    .bind(column_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Sets a task's position (re-keying a column).
pub async fn set_position(tx: &mut Tx, task_id: Uuid, position: &str) -> Result<()> {
    sqlx::query("update tasks.tasks set position = $2 where id = $1")
        .bind(task_id)
        .bind(position)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Live top-level tasks in a column, except `except`.
pub async fn wip_count(tx: &mut Tx, column_id: Uuid, except: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from tasks.tasks where column_id = $1 and deleted_at is null and parent_id is null \
         and id <> $2",
    )
    .bind(column_id)
    .bind(except)
    .fetch_one(&mut **tx)
    .await?)
}

/// A column's status and WIP limit.
pub async fn column(tx: &mut Tx, board_id: Uuid, column_id: Uuid) -> Result<Option<(String, Option<i32>)>> {
    Ok(sqlx::query_as("select status, wip_limit from tasks.board_columns where board_id = $1 and id = $2")
        .bind(board_id)
        .bind(column_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The live descendants of a task (not the task itself).
pub async fn live_descendants(tx: &mut Tx, task_id: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "with recursive sub(id) as (select id from tasks.tasks where parent_id = $1 and deleted_at is null \
         union select t.id from tasks.tasks t join sub on t.parent_id = sub.id where t.deleted_at is null) \
         select id from sub",
    )
    .bind(task_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Moves tasks to the trash under one batch id.
pub async fn trash_tasks(tx: &mut Tx, ids: &[Uuid], batch: Uuid) -> Result<()> {
    sqlx::query(
        "update tasks.tasks set deleted_at = now(), delete_batch_id = $2, version = version + 1 \
         where id = any($1) and deleted_at is null",
    )
    .bind(ids)
    .bind(batch)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Brings back every task of a delete batch; their ids.
pub async fn restore_batch(tx: &mut Tx, batch: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "update tasks.tasks set deleted_at = null, delete_batch_id = null, version = version + 1, updated_at = now() \
         where delete_batch_id = $1 returning id",
    )
    .bind(batch)
    .fetch_all(&mut **tx)
    .await?)
}

/// A trashed task, locked.
pub async fn trashed_task(tx: &mut Tx, task_id: Uuid) -> Result<Option<TaskRow>> {
    Ok(sqlx::query_as(&format!("{TASK_SELECT} where t.id = $1 and t.deleted_at is not null for update of t"))
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Trashed tasks, most recently deleted first, after (deleted_at, id) of the previous page.
pub async fn trashed_tasks(
    tx: &mut Tx,
    visible: &Visible,
    board_id: Option<Uuid>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<TaskRow>> {
    let mut q = QueryBuilder::<Postgres>::new(TASK_SELECT);
    q.push(" where t.deleted_at is not null");
    push_visible_tasks(&mut q, visible);
    if let Some(board_id) = board_id {
        q.push(" and t.board_id = ").push_bind(board_id);
    }
    if let Some((at, id)) = after {
        q.push(" and (t.deleted_at, t.id) < (").push_bind(at).push(", ").push_bind(id).push(")");
    }
    q.push(" order by t.deleted_at desc, t.id desc limit ").push_bind(limit);
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// A trashed task's descendants (all trashed: a live task never sits under a trashed one).
pub async fn all_descendants(tx: &mut Tx, task_id: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "with recursive sub(id) as (select id from tasks.tasks where parent_id = $1 \
         union select t.id from tasks.tasks t join sub on t.parent_id = sub.id) select id from sub",
    )
    .bind(task_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Deletes tasks for good: their time entries stay with no task (Rule 24); checklists,
/// dependencies and watchers cascade. One statement, so parent links are checked at its end.
pub async fn purge_tasks(tx: &mut Tx, ids: &[Uuid]) -> Result<u64> {
    sqlx::query("update tasks.time_entries set task_id = null where task_id = any($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("delete from tasks.tasks where id = any($1)").bind(ids).execute(&mut **tx).await?;
    Ok(done.rows_affected())
}

/// A live board's name and open top-level task count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardSummaryRow {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Live open top-level tasks.
    pub open_tasks: i64,
}

const BOARD_SUMMARY: &str = "select b.id, b.name, (select count(*) from tasks.tasks t where t.board_id = b.id \
     and t.deleted_at is null and t.parent_id is null and t.status not in ('done', 'cancelled')) as open_tasks \
     from tasks.boards b";

/// Live boards by id (any order).
pub async fn board_summaries(tx: &mut Tx, ids: &[Uuid]) -> Result<Vec<BoardSummaryRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(&format!("{BOARD_SUMMARY} where b.id = any($1) and b.deleted_at is null"))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?)
}

/// Live boards whose name contains `q` or whose key is `q` (ignoring case), key match first.
pub async fn search_boards(tx: &mut Tx, visible: &Visible, q: &str, limit: i64) -> Result<Vec<BoardSummaryRow>> {
    let pattern = format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let mut query = QueryBuilder::<Postgres>::new(BOARD_SUMMARY);
    query.push(" where b.deleted_at is null and (b.name ilike ").push_bind(pattern);
    query.push(" escape '\\' or b.key = upper(").push_bind(q.to_owned()).push("))");
    push_visible_boards(&mut query, visible, "b.id");
    query.push(" order by (b.key = upper(").push_bind(q.to_owned()).push(")) desc, lower(b.name), b.id limit ");
    query.push_bind(limit);
    Ok(query.build_query_as().fetch_all(&mut **tx).await?)
}

/// Live tasks and live boards of the organization.
pub async fn entity_counts(tx: &mut Tx, visible: &Visible) -> Result<(i64, i64)> {
    let mut q = QueryBuilder::<Postgres>::new("select (select count(*) from tasks.tasks t where t.deleted_at is null");
    push_visible_tasks(&mut q, visible);
    q.push("), (select count(*) from tasks.boards b where b.deleted_at is null");
    push_visible_boards(&mut q, visible, "b.id");
    q.push(")");
    Ok(q.build_query_as().fetch_one(&mut **tx).await?)
}

/// Whether a task (by id) is live, and whether its board is live.
pub async fn parent_and_board_live(tx: &mut Tx, parent_id: Option<Uuid>, board_id: Uuid) -> Result<(bool, bool)> {
    Ok(sqlx::query_as(
        "select coalesce((select deleted_at is null from tasks.tasks where id = $1), true), \
         coalesce((select deleted_at is null from tasks.boards where id = $2), false)",
    )
    .bind(parent_id)
    .bind(board_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// Several tasks by id (live only), in no particular order.
pub async fn tasks_by_ids(tx: &mut Tx, ids: &[Uuid]) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as(&format!("{TASK_SELECT} where t.id = any($1) and t.deleted_at is null order by t.number"))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?)
}

// ---- Dependencies ---------------------------------------------------------------------------

/// A dependency with the state of its blocker and the other task's key and title.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DependencyRow {
    /// Id.
    pub id: Uuid,
    /// Dependent.
    pub task_id: Uuid,
    /// Blocker.
    pub depends_on_id: Uuid,
    /// Stored type.
    pub r#type: String,
    /// Lag.
    pub lag_days: i32,
    /// Whether the blocker satisfies it.
    pub satisfied: bool,
    /// The other task's board key.
    pub other_board_key: String,
    /// The other task's number.
    pub other_number: i32,
    /// The other task's title.
    pub other_title: String,
}

/// Serialises dependency inserts of one organization until commit (Rule 10).
pub async fn lock_dependency_graph(tx: &mut Tx, org_id: Uuid) -> Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('tasks.dependencies:' || $1::text, 0))")
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The dependency edges (dependent, blocker) reachable from `start`, at most `limit`.
pub async fn edges_from(tx: &mut Tx, start: Uuid, limit: i64) -> Result<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "with recursive r(id) as (select $1::uuid union select d.depends_on_id from tasks.dependencies d \
         join r on d.task_id = r.id) \
         select d.task_id, d.depends_on_id from tasks.dependencies d where d.task_id in (select id from r) limit $2",
    )
    .bind(start)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// A dependency to insert.
#[derive(Debug, Clone)]
pub struct NewDependency<'a> {
    /// Organization.
    pub org_id: Uuid,
    /// Id.
    pub id: Uuid,
    /// Dependent.
    pub task_id: Uuid,
    /// Blocker.
    pub depends_on_id: Uuid,
    /// Stored type.
    pub kind: &'a str,
    /// Lag in days.
    pub lag_days: i32,
    /// Creator.
    pub created_by: Option<Uuid>,
}

/// Inserts a dependency; `Ok(false)` when the pair exists.
pub async fn insert_dependency(tx: &mut Tx, d: &NewDependency<'_>) -> Result<bool> {
    let done = sqlx::query(
        "insert into tasks.dependencies (id, org_id, task_id, depends_on_id, type, lag_days, created_by) \
         values ($1, $2, $3, $4, $5, $6, $7) on conflict (task_id, depends_on_id) do nothing",
    )
    .bind(d.id)
    .bind(d.org_id)
    .bind(d.task_id)
    .bind(d.depends_on_id)
    .bind(d.kind)
    .bind(d.lag_days)
    .bind(d.created_by)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many blockers a task has.
pub async fn blocker_count(tx: &mut Tx, task_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from tasks.dependencies where task_id = $1")
        .bind(task_id)
        .fetch_one(&mut **tx)
        .await?)
}

/// Deletes a dependency of `task_id`; whether it existed.
pub async fn delete_dependency(tx: &mut Tx, task_id: Uuid, dependency_id: Uuid) -> Result<bool> {
    let done = sqlx::query("delete from tasks.dependencies where id = $1 and task_id = $2")
        .bind(dependency_id)
        .bind(task_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Changes a dependency's type and/or lag; false when the task has no such dependency.
pub async fn update_dependency(
    tx: &mut Tx,
    task_id: Uuid,
    dependency_id: Uuid,
    kind: Option<&str>,
    lag_days: Option<i32>,
) -> Result<bool> {
    let done = sqlx::query(
        "update tasks.dependencies set type = coalesce($3, type), lag_days = coalesce($4, lag_days) \
         where id = $1 and task_id = $2",
    )
    .bind(dependency_id)
    .bind(task_id)
    .bind(kind)
    .bind(lag_days)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A task's blockers (`blockers = true`) or dependents, with live other tasks only.
pub async fn dependencies_of(tx: &mut Tx, task_id: Uuid, blockers: bool) -> Result<Vec<DependencyRow>> {
    let (mine, other) = if blockers { ("task_id", "depends_on_id") } else { ("depends_on_id", "task_id") };
    Ok(sqlx::query_as(&format!(
        "select d.id, d.task_id, d.depends_on_id, d.type, d.lag_days, not {UNSATISFIED} as satisfied, \
         ob.key as other_board_key, o.number as other_number, o.title as other_title \
         from tasks.dependencies d join tasks.tasks a on a.id = d.depends_on_id \
         join tasks.tasks o on o.id = d.{other} join tasks.boards ob on ob.id = o.board_id \
         where d.{mine} = $1 and o.deleted_at is null order by d.created_at, d.id"
    ))
    .bind(task_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// For each live task in `ids`: its unsatisfied start-blocking (FS/SS) blockers.
pub async fn unsatisfied_start_blockers(tx: &mut Tx, ids: &[Uuid]) -> Result<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(&format!(
        "select d.task_id, d.depends_on_id from tasks.dependencies d join tasks.tasks a on a.id = d.depends_on_id \
         join tasks.tasks t on t.id = d.task_id \
         where d.task_id = any($1) and t.deleted_at is null and d.type in ('finish_to_start', 'start_to_start') \
         and {UNSATISFIED} order by d.created_at, d.id"
    ))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?)
}

/// Unsatisfied blockers of a task of any type (FS/SS when `start`, FF/SF otherwise).
pub async fn unsatisfied_blockers(tx: &mut Tx, task_id: Uuid, start: bool) -> Result<Vec<Uuid>> {
    let types = if start { "('finish_to_start', 'start_to_start')" } else { "('finish_to_finish', 'start_to_finish')" };
    Ok(sqlx::query_scalar(&format!(
        "select d.depends_on_id from tasks.dependencies d join tasks.tasks a on a.id = d.depends_on_id \
         where d.task_id = $1 and d.type in {types} and {UNSATISFIED} order by d.created_at, d.id"
    ))
    .bind(task_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// The dependents of any of `blocker_ids`.
pub async fn dependents(tx: &mut Tx, blocker_ids: &[Uuid]) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar("select distinct task_id from tasks.dependencies where depends_on_id = any($1)")
        .bind(blocker_ids)
        .fetch_all(&mut **tx)
        .await?)
}

/// The tasks of a delete batch.
pub async fn batch_task_ids(tx: &mut Tx, batch: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar("select id from tasks.tasks where delete_batch_id = $1")
        .bind(batch)
        .fetch_all(&mut **tx)
        .await?)
}

/// The kanban view of a selection on one board in two queries, whatever the number of columns:
/// the first `limit` tasks by position of every column (one lateral scan of the column-order
/// index per column), and how many tasks each column holds. Cancelled tasks are hidden in
/// columns not mapped to cancelled (Rule 2). Columns without tasks hold no rows.
pub async fn kanban_columns(
    tx: &mut Tx,
    selection: &TaskSelection,
    board_id: Uuid,
    limit: i64,
) -> Result<(Vec<TaskRow>, HashMap<Uuid, i64>)> {
    let cancelled_rule = " and (c.status = 'cancelled' or t.status <> 'cancelled')";
    let mut q = QueryBuilder::<Postgres>::new("select x.* from tasks.board_columns c cross join lateral (");
    q.push(TASK_SELECT);
    push_selection(&mut q, selection);
    q.push(" and t.column_id = c.id").push(cancelled_rule);
    q.push(" order by t.position, t.id limit ").push_bind(limit);
    q.push(") x where c.board_id = ").push_bind(board_id);
    q.push(" order by c.position, c.id, x.position, x.id");
    let tasks = q.build_query_as().fetch_all(&mut **tx).await?;
    // One count per column (an index-only scan of its range of the column-order index) rather
    // than a grouped count over the board, which hashes every task.
    let mut q = QueryBuilder::<Postgres>::new("select c.id, (");
    q.push(COUNT_FROM);
    push_selection(&mut q, selection);
    q.push(" and t.column_id = c.id").push(cancelled_rule);
    q.push(") from tasks.board_columns c where c.board_id = ").push_bind(board_id);
    let totals: Vec<(Uuid, i64)> = q.build_query_as().fetch_all(&mut **tx).await?;
    Ok((tasks, totals.into_iter().collect()))
}

// ---- Checklists ---------------------------------------------------------------------------

/// A checklist row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChecklistRow {
    /// Id.
    pub id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// Title.
    pub title: String,
    /// Position.
    pub position: String,
}

/// A checklist item row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChecklistItemRow {
    /// Id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Ticked.
    pub done: bool,
    /// Who ticked it.
    pub done_by: Option<Uuid>,
    /// When.
    pub done_at: Option<DateTime<Utc>>,
    /// Position.
    pub position: String,
}

/// How many checklists a task has, and the greatest position among them.
pub async fn checklist_stats(tx: &mut Tx, task_id: Uuid) -> Result<(i64, Option<String>)> {
    Ok(sqlx::query_as("select count(*), max(position) from tasks.checklists where task_id = $1")
        .bind(task_id)
        .fetch_one(&mut **tx)
        .await?)
}

/// Inserts a checklist.
pub async fn insert_checklist(tx: &mut Tx, org_id: Uuid, c: &ChecklistRow) -> Result<()> {
    sqlx::query("insert into tasks.checklists (id, org_id, task_id, title, position) values ($1, $2, $3, $4, $5)")
        .bind(c.id)
        .bind(org_id)
        .bind(c.task_id)
        .bind(&c.title)
        .bind(&c.position)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts a checklist item.
pub async fn insert_checklist_item(
    tx: &mut Tx,
    org_id: Uuid,
    checklist_id: Uuid,
    title: &str,
    position: &str,
) -> Result<()> {
    sqlx::query(
        "insert into tasks.checklist_items (id, org_id, checklist_id, title, position) values ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(checklist_id)
    .bind(title)
    .bind(position)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A checklist of a live task, locked until commit (item changes of one checklist take turns).
pub async fn checklist_locked(tx: &mut Tx, checklist_id: Uuid) -> Result<Option<ChecklistRow>> {
    Ok(sqlx::query_as(
        "select c.id, c.task_id, c.title, c.position from tasks.checklists c \
         join tasks.tasks t on t.id = c.task_id and t.deleted_at is null where c.id = $1 for update of c",
    )
    .bind(checklist_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// A task's checklists in order, as `(id, position)`.
pub async fn checklist_order(tx: &mut Tx, task_id: Uuid) -> Result<Vec<(Uuid, String)>> {
    Ok(sqlx::query_as("select id, position from tasks.checklists where task_id = $1 order by position, id")
        .bind(task_id)
        .fetch_all(&mut **tx)
        .await?)
}

/// Moves a checklist to another ordering key.
pub async fn set_checklist_position(tx: &mut Tx, checklist_id: Uuid, position: &str) -> Result<()> {
    sqlx::query("update tasks.checklists set position = $2 where id = $1")
        .bind(checklist_id)
        .bind(position)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes a checklist's title and position.
pub async fn write_checklist(tx: &mut Tx, checklist_id: Uuid, title: &str, position: &str) -> Result<()> {
    sqlx::query("update tasks.checklists set title = $2, position = $3 where id = $1")
        .bind(checklist_id)
        .bind(title)
        .bind(position)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The items of a checklist in order.
pub async fn checklist_items(tx: &mut Tx, checklist_id: Uuid) -> Result<Vec<ChecklistItemRow>> {
    Ok(sqlx::query_as(
        "select id, title, done, done_by, done_at, position from tasks.checklist_items where checklist_id = $1 \
         order by position, id",
    )
    .bind(checklist_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Sets an item's title and done flag; whether the item exists in that checklist.
pub async fn write_checklist_item(
    tx: &mut Tx,
    checklist_id: Uuid,
    item_id: Uuid,
    title: &str,
    done: bool,
    by: Option<Uuid>,
) -> Result<bool> {
    let done_rows = sqlx::query(
        "update tasks.checklist_items set title = $3, \
         done_by = case when $4 and not done then $5 when $4 then done_by end, \
         done_at = case when $4 and not done then now() when $4 then done_at end, done = $4, updated_at = now() \
         where id = $2 and checklist_id = $1",
    )
    .bind(checklist_id)
    .bind(item_id)
    .bind(title)
    .bind(done)
    .bind(by)
    .execute(&mut **tx)
    .await?;
    Ok(done_rows.rows_affected() == 1)
}

/// Deletes an item; whether it existed in that checklist.
pub async fn delete_checklist_item(tx: &mut Tx, checklist_id: Uuid, item_id: Uuid) -> Result<bool> {
    let done = sqlx::query("delete from tasks.checklist_items where id = $2 and checklist_id = $1")
        .bind(checklist_id)
        .bind(item_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a checklist with its items.
pub async fn delete_checklist(tx: &mut Tx, checklist_id: Uuid) -> Result<()> {
    sqlx::query("delete from tasks.checklists where id = $1").bind(checklist_id).execute(&mut **tx).await?;
    Ok(())
}

// ---- Time entries ---------------------------------------------------------------------------

/// A time entry row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TimeEntryRow {
    /// Id.
    pub id: Uuid,
    /// Whose time.
    pub user_id: Uuid,
    /// Task.
    pub task_id: Option<Uuid>,
    /// Board.
    pub board_id: Option<Uuid>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End; NULL while running.
    pub ended_at: Option<DateTime<Utc>>,
    /// Whole seconds.
    pub duration_seconds: Option<i32>,
    /// Description.
    pub description: String,
    /// Billable.
    pub billable: bool,
    /// timer | manual | import.
    pub source: String,
    /// Stopped by the cap.
    pub auto_stopped: bool,
}

const ENTRY_COLUMNS: &str = "id, user_id, task_id, board_id, started_at, ended_at, duration_seconds, description, \
     billable, source, auto_stopped";

/// The user's running entry (`lock` = for update).
pub async fn running_entry(tx: &mut Tx, user_id: Uuid, lock: bool) -> Result<Option<TimeEntryRow>> {
    let suffix = if lock { " for update" } else { "" };
    Ok(sqlx::query_as(&format!(
        "select {ENTRY_COLUMNS} from tasks.time_entries where user_id = $1 and ended_at is null \
         and deleted_at is null{suffix}"
    ))
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Stops a running entry.
pub async fn stop_time_entry(
    tx: &mut Tx,
    id: Uuid,
    ended_at: DateTime<Utc>,
    seconds: i32,
    auto_stopped: bool,
) -> Result<TimeEntryRow> {
    Ok(sqlx::query_as(&format!(
        "update tasks.time_entries set ended_at = $2, duration_seconds = $3, auto_stopped = $4, updated_at = now() \
         where id = $1 returning {ENTRY_COLUMNS}"
    ))
    .bind(id)
    .bind(ended_at)
    .bind(seconds)
    .bind(auto_stopped)
    .fetch_one(&mut **tx)
    .await?)
}

/// Inserts a running entry; `None` when another running entry of the user won the race.
pub async fn insert_running_entry(
    tx: &mut Tx,
    org_id: Uuid,
    user_id: Uuid,
    task: &TaskRow,
    description: &str,
    billable: bool,
) -> Result<Option<TimeEntryRow>> {
    let result = sqlx::query_as(&format!(
        "insert into tasks.time_entries (id, org_id, user_id, task_id, board_id, started_at, description, billable, \
         source) values ($1, $2, $3, $4, $5, now(), $6, $7, 'timer') returning {ENTRY_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(user_id)
    .bind(task.id)
    .bind(task.board_id)
    .bind(description)
    .bind(billable)
    .fetch_one(&mut **tx)
    .await;
    match result {
        Ok(row) => Ok(Some(row)),
        Err(e) if trellis_kit::db::violated_constraint(&e) == Some("time_entries_one_running") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Inserts a finished manual entry.
pub async fn insert_manual_entry(
    tx: &mut Tx,
    org_id: Uuid,
    user_id: Uuid,
    entry: &crate::time::ManualEntry,
    board_id: Option<Uuid>,
    seconds: i32,
) -> Result<TimeEntryRow> {
    Ok(sqlx::query_as(&format!(
        "insert into tasks.time_entries (id, org_id, user_id, task_id, board_id, started_at, ended_at, \
         duration_seconds, description, billable, source) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'manual') \
         returning {ENTRY_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(user_id)
    .bind(entry.task_id)
    .bind(board_id)
    .bind(entry.started_at)
    .bind(entry.ended_at)
    .bind(seconds)
    .bind(&entry.description)
    .bind(entry.billable)
    .fetch_one(&mut **tx)
    .await?)
}

/// tracked_seconds = the sum of the task's finished live entries (Rule 23).
pub async fn recompute_tracked(tx: &mut Tx, task_id: Uuid) -> Result<()> {
    sqlx::query(
        "update tasks.tasks set tracked_seconds = (select coalesce(sum(duration_seconds), 0) \
         from tasks.time_entries where task_id = $1 and ended_at is not null and deleted_at is null) where id = $1",
    )
    .bind(task_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One group of a time report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    /// The user, task or board.
    pub key: Option<Uuid>,
    /// Seconds.
    pub total_seconds: i64,
    /// Billable seconds.
    pub billable_seconds: i64,
    /// Entries.
    pub entry_count: i64,
}

/// Finished live entries started in [from, to), grouped.
pub async fn time_report(
    tx: &mut Tx,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group_by: crate::time::GroupBy,
    task_id: Option<Uuid>,
    user_id: Option<Uuid>,
) -> Result<Vec<ReportRow>> {
    let key = match group_by {
        crate::time::GroupBy::User => "user_id",
        crate::time::GroupBy::Task => "task_id",
        crate::time::GroupBy::Board => "board_id",
    };
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "select {key} as key, coalesce(sum(duration_seconds), 0)::bigint as total_seconds, \
         coalesce(sum(duration_seconds) filter (where billable), 0)::bigint as billable_seconds, \
         count(*) as entry_count from tasks.time_entries \
         where ended_at is not null and deleted_at is null and started_at >= "
    ));
    q.push_bind(from).push(" and started_at < ").push_bind(to);
    if let Some(task_id) = task_id {
        q.push(" and task_id = ").push_bind(task_id);
    }
    if let Some(user_id) = user_id {
        q.push(" and user_id = ").push_bind(user_id);
    }
    q.push(format!(" group by {key} order by total_seconds desc, {key}"));
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// Removes a watcher (idempotent).
pub async fn remove_watcher(tx: &mut Tx, task_id: Uuid, user_id: Uuid) -> Result<()> {
    sqlx::query("delete from tasks.watchers where task_id = $1 and user_id = $2")
        .bind(task_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
