//! `trellis.common.v1.EntityService` for the entity types `task` and `board`: summaries for
//! resolve, full-text search and counts, each limited to what the caller may view (the gateway's
//! fan-out calls it with the caller's own token).

use std::collections::HashMap;

use trellis_kit::db::Db;
use trellis_kit::filter::Filter;
use trellis_kit::{RequestContext, Result};
use uuid::Uuid;

use crate::access::{Access, BoardPermission, TaskPermission};
use crate::collab::{BOARD, TASK};
use crate::list;
use crate::store::{self, PageOrder, TaskRow, TaskSelection};

/// Most references one Resolve takes.
pub const MAX_RESOLVE: usize = 100;
/// Default and largest number of results per type of a Search.
pub const SEARCH_LIMITS: (u32, u32) = (10, 50);

/// One entity, display-ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `task` or `board`.
    pub entity_type: &'static str,
    /// Id.
    pub id: Uuid,
    /// `ENG-42 · Fix login` for a task, the name for a board.
    pub title: String,
    /// `Engineering · due 2026-07-01` for a task, `3 open tasks` for a board.
    pub subtitle: String,
    /// A task's status.
    pub status: String,
    /// `/tasks/{id}`, `/boards/{id}`.
    pub url: String,
}

/// The line under a task's title: its board and, when set, its due date.
pub fn task_subtitle(board_name: &str, due: Option<chrono::DateTime<chrono::Utc>>) -> String {
    match due {
        Some(due) => format!("{board_name} · due {}", due.format("%Y-%m-%d")),
        None => board_name.to_string(),
    }
}

fn task_summary(task: &TaskRow, board_names: &HashMap<Uuid, String>) -> Summary {
    let board = board_names.get(&task.board_id).map_or("", String::as_str);
    Summary {
        entity_type: TASK,
        id: task.id,
        title: format!("{} · {}", task.key(), task.title),
        subtitle: task_subtitle(board, task.due_date),
        status: task.status.clone(),
        url: format!("/tasks/{}", task.id),
    }
}

fn board_summary(board: &store::BoardSummaryRow) -> Summary {
    let noun = if board.open_tasks == 1 { "task" } else { "tasks" };
    Summary {
        entity_type: BOARD,
        id: board.id,
        title: board.name.clone(),
        subtitle: format!("{} open {noun}", board.open_tasks),
        status: String::new(),
        url: format!("/boards/{}", board.id),
    }
}

/// Summaries of the viewable live entities among `refs` (already validated to be tasks or
/// boards), in request order, and the references left out.
pub async fn resolve(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    refs: &[(&'static str, Uuid)],
) -> Result<(Vec<Summary>, Vec<(&'static str, Uuid)>)> {
    let mut visible = Vec::with_capacity(refs.len());
    for &(kind, id) in refs {
        let allowed = match kind {
            TASK => access.task(ctx, id, TaskPermission::View).await,
            _ => access.board(ctx, id, BoardPermission::View).await,
        };
        if allowed.is_ok() {
            visible.push((kind, id));
        }
    }
    let task_ids: Vec<Uuid> = visible.iter().filter(|(k, _)| *k == TASK).map(|(_, id)| *id).collect();
    let board_ids: Vec<Uuid> = visible.iter().filter(|(k, _)| *k == BOARD).map(|(_, id)| *id).collect();
    let mut tx = db.tenant_tx(ctx).await?;
    let tasks = store::tasks_by_ids(&mut tx, &task_ids).await?;
    let mut names_of: Vec<Uuid> = tasks.iter().map(|t| t.board_id).collect();
    names_of.extend(&board_ids);
    let boards = store::board_summaries(&mut tx, &names_of).await?;
    tx.commit().await?;
    let names: HashMap<Uuid, String> = boards.iter().map(|b| (b.id, b.name.clone())).collect();
    let tasks: HashMap<Uuid, Summary> = tasks.iter().map(|t| (t.id, task_summary(t, &names))).collect();
    let boards: HashMap<Uuid, Summary> = boards.iter().map(|b| (b.id, board_summary(b))).collect();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for &(kind, id) in refs {
        let summary = if kind == TASK { tasks.get(&id) } else { boards.get(&id) };
        match summary {
            Some(s) if visible.contains(&(kind, id)) => found.push(s.clone()),
            _ => missing.push((kind, id)),
        }
    }
    Ok((found, missing))
}

/// Search results per type, best first: for tasks an exact key first, then rank, then recency
/// (the ListTasks search); for boards a name or key match, by name.
pub async fn search(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    query: &str,
    types: &[&'static str],
    limit: u32,
    filter: Filter,
) -> Result<Vec<(&'static str, Vec<Summary>)>> {
    let visible = access.visible(ctx).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let mut groups = Vec::new();
    if types.contains(&TASK) {
        let selection = TaskSelection {
            board_id: None,
            assignee_id: None,
            statuses: Vec::new(),
            priorities: Vec::new(),
            parent_id: None,
            include_subtasks: true,
            include_closed: true,
            filter,
            search: list::search_of(query),
            range: None,
            tags: Vec::new(),
            visible: visible.clone(),
        };
        let tasks = store::tasks_page(&mut tx, &selection, &PageOrder::Ranked { offset: 0 }, i64::from(limit)).await?;
        let board_ids: Vec<Uuid> = tasks.iter().map(|t| t.board_id).collect();
        let names: HashMap<Uuid, String> =
            store::board_summaries(&mut tx, &board_ids).await?.into_iter().map(|b| (b.id, b.name)).collect();
        if !tasks.is_empty() {
            groups.push((TASK, tasks.iter().map(|t| task_summary(t, &names)).collect()));
        }
    }
    if types.contains(&BOARD) {
        let boards = store::search_boards(&mut tx, &visible, query.trim(), i64::from(limit)).await?;
        if !boards.is_empty() {
            groups.push((BOARD, boards.iter().map(board_summary).collect()));
        }
    }
    tx.commit().await?;
    Ok(groups)
}

/// Live non-deleted tasks and boards the caller can view, by collection.
pub async fn count(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    types: &[&'static str],
) -> Result<Vec<(&'static str, i64)>> {
    let visible = access.visible(ctx).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let (tasks, boards) = store::entity_counts(&mut tx, &visible).await?;
    tx.commit().await?;
    let mut out = Vec::new();
    if types.contains(&TASK) {
        out.push(("tasks", tasks));
    }
    if types.contains(&BOARD) {
        out.push(("boards", boards));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_task_subtitle_names_the_board_and_the_due_day() {
        let due = chrono::Utc.with_ymd_and_hms(2026, 7, 1, 9, 0, 0).single();
        assert_eq!(task_subtitle("Engineering", due), "Engineering · due 2026-07-01");
        assert_eq!(task_subtitle("Engineering", None), "Engineering");
    }
}
