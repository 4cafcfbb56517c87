//! The task trash: listing trashed tasks and purging them for good. Trashing and restoring
//! are [`crate::task::change::delete`] and [`crate::task::change::restore`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trellis_kit::db::Db;
use trellis_kit::paging::PageTokens;
use trellis_kit::{RequestContext, Result};
use uuid::Uuid;

use crate::access::{Access, BoardPermission};
use crate::collab::{COLLAB, TASK};
use crate::error::TaskError;
use crate::events;
use crate::store::{self, TaskRow};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    deleted_at: DateTime<Utc>,
    id: Uuid,
}

/// Trashed tasks, most recently deleted first, and the next page's token.
pub async fn list(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    tokens: &PageTokens,
    board_id: Option<Uuid>,
    page_size: u32,
    page_token: &str,
) -> Result<(Vec<TaskRow>, String)> {
    let visible = match board_id {
        Some(board_id) => {
            access.board(ctx, board_id, BoardPermission::View).await?;
            crate::access::Visible::All
        }
        None => access.visible(ctx).await?,
    };
    let board = board_id.map(|b| b.to_string()).unwrap_or_default();
    let hash = PageTokens::query_hash(&["tasks.ListTrashedTasks", &board]);
    let cursor: Option<Cursor> = tokens.decode(&hash, page_token)?;
    let mut tx = db.tenant_tx(ctx).await?;
    let mut tasks = store::trashed_tasks(
        &mut tx,
        &visible,
        board_id,
        cursor.map(|c| (c.deleted_at, c.id)),
        i64::from(page_size) + 1,
    )
    .await?;
    tx.commit().await?;
    let next = if tasks.len() > page_size as usize {
        tasks.truncate(page_size as usize);
        tasks
            .last()
            .and_then(|t| t.deleted_at.map(|deleted_at| tokens.encode(&hash, &Cursor { deleted_at, id: t.id })))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((tasks, next))
}

/// Purges a trashed task and its descendants (Rule 25): checklists, dependencies and watchers
/// cascade, collab rows (comments, tags, links, activity) go, time entries stay without a task.
/// Returns how many tasks were deleted.
pub async fn purge(db: &Db, access: &dyn Access, ctx: &RequestContext, task_id: Uuid) -> Result<u64> {
    access.administer(ctx).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let task = store::trashed_task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    let mut ids = store::all_descendants(&mut tx, task_id).await?;
    let descendants = ids.len();
    ids.push(task_id);
    let watcher_ids: Vec<Uuid> = store::watchers(&mut tx, task_id).await?.iter().map(|w| w.user_id).collect();
    COLLAB.purge(&mut tx, ctx, TASK, &ids).await?;
    let purged = store::purge_tasks(&mut tx, &ids).await?;
    events::task_purged(&mut tx, ctx, &task, &watcher_ids, descendants).await?;
    tx.commit().await?;
    tracing::info!(task_id = %task_id, purged, "task purged");
    Ok(purged)
}
