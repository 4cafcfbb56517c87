//! ListTasks: one selection of tasks rendered as a list, a kanban board, a calendar or a gantt
//! chart, with an AIP-160 `filter`, `order_by`, full-text `q` and optional aggregations.
//!
//! The selection ([`store::TaskSelection`]) is the same for every view, so a filter means the
//! same thing everywhere. Page tokens bind every parameter of the query (kit::paging): the list
//! view pages by keyset on (order field, id), a search by offset within its ranking.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trellis_kit::db::Db;
use trellis_kit::filter::{FieldType, Filter, Order, Schema, SortKey};
use trellis_kit::paging::PageTokens;
use trellis_kit::{Error, RequestContext, Result};
use uuid::Uuid;

use crate::access::{Access, BoardPermission};
use crate::dependency::{self, Dates, DependencyType};
use crate::error::TaskError;
use crate::store::{self, Aggregations, GanttDependencyRow, PageOrder, Search, TaskRow, TaskSelection};
use crate::task::{Priority, Status};

/// Most tasks a calendar or gantt view returns (then `truncated`).
pub const VIEW_LIMIT: usize = 2_000;
/// Longest calendar range, in days.
pub const CALENDAR_MAX_DAYS: i64 = 93;

const STATUSES: &[&str] = &["backlog", "todo", "in_progress", "in_review", "blocked", "done", "cancelled"];
const PRIORITIES: &[&str] = &["low", "medium", "high", "urgent"];

/// The fields ListTasks filters and sorts by.
pub fn schema() -> &'static Schema {
    static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
        Schema::new()
            .field("status", "t.status", FieldType::Enum { values: STATUSES, ordered: false })
            .sortable_desc("priority", "t.priority", FieldType::Enum { values: PRIORITIES, ordered: true })
            .field("assignee_id", "t.assignee_id", FieldType::Uuid)
            .field("created_by", "t.created_by", FieldType::Uuid)
            .field("board_id", "t.board_id", FieldType::Uuid)
            .field("column_id", "t.column_id", FieldType::Uuid)
            .field("parent_id", "t.parent_id", FieldType::Uuid)
            .sortable("start_date", "t.start_date", FieldType::Timestamp)
            .sortable("due_date", "t.due_date", FieldType::Timestamp)
            .sortable_desc("created_at", "t.created_at", FieldType::Timestamp)
            .sortable_desc("updated_at", "t.updated_at", FieldType::Timestamp)
            .field("completed_at", "t.completed_at", FieldType::Timestamp)
            .sortable("title", "t.title", FieldType::Text)
            .sortable("number", "t.number", FieldType::Int)
            .sort_only("position", "t.position", FieldType::Text)
            .field("is_blocked", store::IS_BLOCKED_SQL, FieldType::Bool)
            .field("is_overdue", store::IS_OVERDUE_SQL, FieldType::Bool)
            .field("metadata", "t.metadata", FieldType::Map)
            .field("tags", store::HAS_TAG_SQL, FieldType::Set)
    });
    &SCHEMA
}

/// The default order: by position on one board, newest first otherwise.
pub fn default_order(board_id: Option<Uuid>) -> &'static str {
    if board_id.is_some() { "position" } else { "created_at desc" }
}

/// Splits a search query for the SQL: the last word is matched as a prefix when it is a plain
/// word (letters and digits) and the query does not end with a space; a query shaped like a task
/// key (`eng-42`) also matches that task, which then ranks first.
pub fn search_of(raw: &str) -> Option<Search> {
    let q = raw.trim();
    if q.is_empty() {
        return None;
    }
    let key = q.split_once('-').and_then(|(prefix, number)| {
        let prefix = prefix.to_ascii_uppercase();
        let valid =
            crate::board::ops::valid_key(&prefix) && !number.is_empty() && number.chars().all(|c| c.is_ascii_digit());
        valid.then(|| number.parse::<i32>().ok().map(|n| (prefix, n))).flatten()
    });
    let (rest, last) = q.rsplit_once(char::is_whitespace).unwrap_or(("", q));
    let plain = !last.is_empty() && last.chars().all(char::is_alphanumeric) && !raw.ends_with(char::is_whitespace);
    Some(if plain {
        Search { words: rest.trim().to_string(), prefix: Some(last.to_lowercase()), key }
    } else {
        Search { words: q.to_string(), prefix: None, key }
    })
}

/// Which rendering of the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Flat and paged.
    List,
    /// One group per column.
    Kanban,
    /// Tasks meeting a date range.
    Calendar,
    /// Dated tasks with their dependencies.
    Gantt,
}

impl View {
    /// From the request's `view` (empty = list).
    pub fn parse(raw: &str) -> Option<View> {
        match raw.trim() {
            "" | "list" => Some(View::List),
            "kanban" => Some(View::Kanban),
            "calendar" => Some(View::Calendar),
            "gantt" => Some(View::Gantt),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            View::List => "list",
            View::Kanban => "kanban",
            View::Calendar => "calendar",
            View::Gantt => "gantt",
        }
    }
}

/// A ListTasks query, validated.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// The rendering.
    pub view: View,
    /// Only this board.
    pub board_id: Option<Uuid>,
    /// Only this assignee (already resolved from `me`).
    pub assignee_id: Option<Uuid>,
    /// Only these statuses.
    pub statuses: Vec<Status>,
    /// Only these priorities.
    pub priorities: Vec<Priority>,
    /// Only direct subtasks of this task.
    pub parent_id: Option<Uuid>,
    /// Subtasks too.
    pub include_subtasks: bool,
    /// Closed tasks too.
    pub include_closed: bool,
    /// The AIP-160 filter.
    pub filter: Filter,
    /// The order (ignored by searches, kanban, calendar and gantt).
    pub order: Order,
    /// The raw search query (empty = none).
    pub q: String,
    /// Date range [from, to].
    pub range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Time zone of the aggregations' week (default UTC).
    pub time_zone: String,
    /// Compute aggregations.
    pub include_aggregations: bool,
    /// Any of these tag names (lowercase).
    pub tags: Vec<String>,
    /// Normalised page size.
    pub page_size: u32,
    /// The caller's page token.
    pub page_token: String,
}

/// One column of the kanban view.
#[derive(Debug, Clone)]
pub struct KanbanGroup {
    /// The column with its live top-level task count.
    pub column: store::ColumnRow,
    /// Its first tasks by position.
    pub tasks: Vec<TaskRow>,
    /// How many tasks of the filter it holds.
    pub total_size: i64,
    /// More live top-level tasks than its WIP limit.
    pub over_wip_limit: bool,
}

/// A dependency of the gantt view.
#[derive(Debug, Clone)]
pub struct GanttDependency {
    /// The dependency and its blocker.
    pub row: GanttDependencyRow,
    /// The dates break its constraint.
    pub violated: bool,
}

/// What ListTasks answers; the fields of other views stay empty.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// List, calendar and gantt (dated) tasks.
    pub tasks: Vec<TaskRow>,
    /// List view: the next page.
    pub next_page_token: String,
    /// How many tasks match (list, kanban: the sum of the columns).
    pub total_size: i64,
    /// Kanban groups.
    pub groups: Vec<KanbanGroup>,
    /// Calendar and gantt: more than [`VIEW_LIMIT`] matched.
    pub truncated: bool,
    /// With include_aggregations.
    pub aggregations: Option<Aggregations>,
    /// Gantt: dependencies of the returned tasks.
    pub dependencies: Vec<GanttDependency>,
    /// Gantt: blockers on other boards.
    pub external_blockers: Vec<GanttDependencyRow>,
    /// Gantt: undated tasks.
    pub unscheduled: Vec<TaskRow>,
}

/// Where the previous page ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Cursor {
    /// Keyset: the last row's sort key and id.
    After(SortKey, Uuid),
    /// Search ranking: rows already returned.
    Offset(i64),
}

fn selection_of(query: &ListQuery) -> TaskSelection {
    TaskSelection {
        board_id: query.board_id,
        assignee_id: query.assignee_id,
        statuses: query.statuses.iter().map(|s| s.as_str().to_string()).collect(),
        priorities: query.priorities.iter().map(|p| p.as_str().to_string()).collect(),
        parent_id: query.parent_id,
        include_subtasks: query.include_subtasks || query.parent_id.is_some(),
        include_closed: query.include_closed,
        filter: query.filter.clone(),
        search: search_of(&query.q),
        range: query.range,
        tags: query.tags.clone(),
        visible: crate::access::Visible::All,
    }
}

fn sort_key(task: &TaskRow, field: &str) -> SortKey {
    let time = |t: Option<DateTime<Utc>>| t.map_or(SortKey::Null, SortKey::Time);
    match field {
        "created_at" => SortKey::Time(task.created_at),
        "updated_at" => SortKey::Time(task.updated_at),
        "start_date" => time(task.start_date),
        "due_date" => time(task.due_date),
        "priority" => SortKey::Text(task.priority.clone()),
        "title" => SortKey::Text(task.title.clone()),
        "number" => SortKey::Int(i64::from(task.number)),
        _ => SortKey::Text(task.position.clone()),
    }
}

fn query_hash(query: &ListQuery) -> String {
    let opt = |id: Option<Uuid>| id.map(|i| i.to_string()).unwrap_or_default();
    let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
    let priorities: Vec<&str> = query.priorities.iter().map(|p| p.as_str()).collect();
    let range = query.range.map(|(f, t)| format!("{}..{}", f.to_rfc3339(), t.to_rfc3339())).unwrap_or_default();
    PageTokens::query_hash(&[
        "tasks.ListTasks.v2",
        query.view.as_str(),
        &opt(query.board_id),
        &opt(query.assignee_id),
        &statuses.join(","),
        &priorities.join(","),
        &opt(query.parent_id),
        if query.include_subtasks { "1" } else { "0" },
        if query.include_closed { "1" } else { "0" },
        &query.filter.canonical(),
        &query.order.canonical(),
        query.q.trim(),
        &range,
        &query.tags.join(","),
    ])
}

/// Runs a ListTasks query in its view.
pub async fn list(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    tokens: &PageTokens,
    query: ListQuery,
) -> Result<Listing> {
    match query.view {
        View::Kanban | View::Gantt if query.board_id.is_none() => {
            return Err(Error::validation("board_id", format!("is required for the {} view", query.view.as_str())));
        }
        View::Calendar if query.range.is_none() => {
            return Err(Error::validation("from", "from and to are required for the calendar view"));
        }
        _ => {}
    }
    let mut selection = selection_of(&query);
    match query.board_id {
        // Whoever views the board views all of its tasks.
        Some(board_id) => access.board(ctx, board_id, BoardPermission::View).await?,
        // Else the boards the caller views, plus the tasks they created or are assigned.
        None => selection.visible = access.visible(ctx).await?,
    }
    let mut tx = db.tenant_tx(ctx).await?;
    if !store::time_zone_exists(&mut tx, &query.time_zone).await? {
        return Err(Error::validation("time_zone", "is not a known IANA time zone"));
    }
    if matches!(query.view, View::Kanban | View::Gantt) {
        let board_id = query.board_id.unwrap_or_default();
        store::board(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
    }
    let mut listing = match query.view {
        View::List => page(&mut tx, tokens, &query, &selection).await?,
        View::Kanban => kanban(&mut tx, &query, &selection).await?,
        View::Calendar => {
            let (tasks, truncated) = capped(store::tasks_by_date(&mut tx, &selection, true, limit()).await?);
            Listing { total_size: tasks.len() as i64, tasks, truncated, ..Listing::default() }
        }
        View::Gantt => gantt(&mut tx, &query, &selection).await?,
    };
    if query.include_aggregations {
        listing.aggregations = Some(store::aggregations(&mut tx, &selection, &query.time_zone).await?);
    }
    tx.commit().await?;
    Ok(listing)
}

fn limit() -> i64 {
    VIEW_LIMIT as i64 + 1
}

fn capped(mut tasks: Vec<TaskRow>) -> (Vec<TaskRow>, bool) {
    let truncated = tasks.len() > VIEW_LIMIT;
    tasks.truncate(VIEW_LIMIT);
    (tasks, truncated)
}

async fn page(
    tx: &mut trellis_kit::db::Tx,
    tokens: &PageTokens,
    query: &ListQuery,
    selection: &TaskSelection,
) -> Result<Listing> {
    let hash = query_hash(query);
    let cursor: Option<Cursor> = tokens.decode(&hash, &query.page_token)?;
    let size = i64::from(query.page_size);
    let ranked = selection.search.is_some();
    let order = match (&cursor, ranked) {
        (Some(Cursor::Offset(offset)), true) => PageOrder::Ranked { offset: *offset },
        (None, true) => PageOrder::Ranked { offset: 0 },
        (Some(Cursor::After(key, id)), false) => {
            PageOrder::Sorted { order: &query.order, after: Some((key.clone(), *id)) }
        }
        (None, false) => PageOrder::Sorted { order: &query.order, after: None },
        // A token of the other kind cannot carry this query's hash unless forged.
        _ => return Err(Error::validation("page_token", "invalid or issued for other parameters")),
    };
    let mut tasks = store::tasks_page(tx, selection, &order, size + 1).await?;
    let total_size = store::count_tasks(tx, selection).await?;
    let next_page_token = if tasks.len() > query.page_size as usize {
        tasks.truncate(query.page_size as usize);
        let next = match order {
            PageOrder::Ranked { offset } => Some(Cursor::Offset(offset + size)),
            PageOrder::Sorted { order, .. } => tasks.last().map(|t| Cursor::After(sort_key(t, order.field()), t.id)),
        };
        next.map(|c| tokens.encode(&hash, &c)).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Listing { tasks, next_page_token, total_size, ..Listing::default() })
}

async fn kanban(tx: &mut trellis_kit::db::Tx, query: &ListQuery, selection: &TaskSelection) -> Result<Listing> {
    let board_id = query.board_id.unwrap_or_default();
    let columns = store::column_rows(tx, board_id).await?;
    let (rows, totals) = store::kanban_columns(tx, selection, board_id, i64::from(query.page_size)).await?;
    let mut by_column: HashMap<Uuid, Vec<TaskRow>> = HashMap::with_capacity(columns.len());
    for row in rows {
        by_column.entry(row.column_id).or_default().push(row);
    }
    let mut groups = Vec::with_capacity(columns.len());
    for column in columns {
        let tasks = by_column.remove(&column.id).unwrap_or_default();
        let total_size = totals.get(&column.id).copied().unwrap_or(0);
        let over_wip_limit = column.wip_limit.is_some_and(|limit| column.task_count > i64::from(limit));
        groups.push(KanbanGroup { column, tasks, total_size, over_wip_limit });
    }
    let total_size = groups.iter().map(|g| g.total_size).sum();
    Ok(Listing { groups, total_size, ..Listing::default() })
}

async fn gantt(tx: &mut trellis_kit::db::Tx, query: &ListQuery, selection: &TaskSelection) -> Result<Listing> {
    let board_id = query.board_id.unwrap_or_default();
    let (tasks, dated_truncated) = capped(store::tasks_by_date(tx, selection, true, limit()).await?);
    let (unscheduled, undated_truncated) = capped(store::tasks_by_date(tx, selection, false, limit()).await?);
    let dates: HashMap<Uuid, Dates> =
        tasks.iter().chain(&unscheduled).map(|t| (t.id, Dates { start: t.start_date, due: t.due_date })).collect();
    let ids: Vec<Uuid> = dates.keys().copied().collect();
    let rows = store::gantt_dependencies(tx, &ids).await?;
    let mut external_seen = HashSet::new();
    let mut external_blockers = Vec::new();
    let mut dependencies = Vec::with_capacity(rows.len());
    for row in rows {
        let blocker = Dates { start: row.start_date, due: row.due_date };
        let dependent = dates.get(&row.task_id).copied().unwrap_or_default();
        let violated = DependencyType::parse(&row.kind)
            .is_some_and(|kind| dependency::constraint_violated(kind, row.lag_days, blocker, dependent));
        if row.board_id != board_id && external_seen.insert(row.depends_on_id) {
            external_blockers.push(row.clone());
        }
        dependencies.push(GanttDependency { row, violated });
    }
    Ok(Listing {
        total_size: (tasks.len() + unscheduled.len()) as i64,
        tasks,
        unscheduled,
        truncated: dated_truncated || undated_truncated,
        dependencies,
        external_blockers,
        ..Listing::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_plain_word_is_a_prefix() {
        let s = search_of("deploy pipel").expect("search");
        assert_eq!((s.words.as_str(), s.prefix.as_deref()), ("deploy", Some("pipel")));
        let s = search_of("Deplo").expect("search");
        assert_eq!((s.words.as_str(), s.prefix.as_deref()), ("", Some("deplo")));
        let s = search_of("\"exact phrase\"").expect("search");
        assert_eq!((s.words.as_str(), s.prefix), ("\"exact phrase\"", None));
        let s = search_of("deploy ").expect("search");
        assert_eq!(s.prefix, None, "a trailing space ends the word");
        assert_eq!(search_of("   "), None);
    }

    #[test]
    fn a_query_shaped_like_a_key_names_that_task() {
        assert_eq!(search_of("eng-42").and_then(|s| s.key), Some(("ENG".to_string(), 42)));
        assert_eq!(search_of("ENG-4x").and_then(|s| s.key), None);
        assert_eq!(search_of("E-4").and_then(|s| s.key), None, "keys have 2-10 characters");
        assert_eq!(search_of("release notes").and_then(|s| s.key), None);
    }

    #[test]
    fn the_schema_declares_the_spec_fields() {
        for f in ["status", "priority", "assignee_id", "due_date", "is_blocked", "is_overdue", "metadata.team", "tags"]
        {
            schema().parse(&format!("{f}:*")).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        assert!(schema().parse("colour = red").is_err());
        assert_eq!(schema().order_by("priority", "x").expect("priority").canonical(), "priority desc");
        assert_eq!(schema().order_by("", default_order(None)).expect("default").canonical(), "created_at desc");
    }
}
