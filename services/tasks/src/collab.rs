//! Comments, tags, entity links and activity of tasks: `kit::collab` mounted for the entity type
//! `task` (its tables live in the `tasks` schema, installed by kit, see `Module::with_collab`).
//!
//! Each operation asks [`Access`] first, then runs in one tenant transaction: the change, the
//! watchers it adds, its activity entry and its events commit together.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use trellis_kit::collab::{self, Activity, Collab, Comment, EntityRef, Link, NewComment, Tag, TagRef};
use trellis_kit::db::{Db, Tx};
use trellis_kit::paging::PageTokens;
use trellis_kit::{Error, RequestContext, Result};
use uuid::Uuid;

use crate::access::{Access, BoardPermission, TaskPermission};
use crate::error::TaskError;
use crate::events;
use crate::store::{self, TaskRow};

/// The collab component of the tasks module (`tasks.link.*` events).
pub const COLLAB: Collab = Collab::new("tasks");
/// The entity type of tasks.
pub const TASK: &str = "task";
/// The entity type of boards.
pub const BOARD: &str = "board";
/// Most tags on one task.
pub const MAX_TAGS: usize = 20;

/// A task as a collab entity.
pub fn task_ref(task_id: Uuid) -> EntityRef {
    EntityRef::new(TASK, task_id)
}

/// Records an activity entry on a task in the caller's transaction.
pub async fn record(
    tx: &mut Tx,
    ctx: &RequestContext,
    task_id: Uuid,
    action: &str,
    changes: serde_json::Value,
) -> Result<()> {
    COLLAB.record(tx, ctx.org_id()?, &task_ref(task_id), &collab::actor_of(ctx), action, changes).await
}

async fn live_task(tx: &mut Tx, task_id: Uuid) -> Result<TaskRow> {
    Ok(store::task(tx, task_id).await?.ok_or(TaskError::TaskNotFound)?)
}

async fn writable_task(tx: &mut Tx, task_id: Uuid) -> Result<TaskRow> {
    let task = store::task_for_update(tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    if task.archived {
        return Err(TaskError::BoardArchived.into());
    }
    Ok(task)
}

fn comment_not_found() -> Error {
    Error::not_found("NOT_FOUND", "The comment does not exist").with_metadata("resource", "comment")
}

fn not_author() -> Error {
    Error::permission_denied("NOT_COMMENT_AUTHOR", "Only the author may change this comment")
}

/// Where a page of comments or activity ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    at: DateTime<Utc>,
    id: Uuid,
}

/// Which page a list asks for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    /// Normalised page size.
    pub size: u32,
    /// The caller's page token.
    pub token: &'a str,
}

/// A page of rows and the token of the next.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Comments on a task (Rule 15: the author and mentioned users who can view become watchers).
pub async fn create_comment(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    body: &str,
    parent_id: Option<Uuid>,
) -> Result<Comment> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    let org_id = ctx.org_id()?;
    let author = ctx.user_id_opt();
    let mut tx = db.tenant_tx(ctx).await?;
    let task = writable_task(&mut tx, task_id).await?;
    let mut visible = Vec::new();
    for user in collab::mentions(body) {
        if Some(user) != author && access.user_can_view_board(ctx, user, task.board_id).await? {
            visible.push(user);
        }
    }
    let new = NewComment { author_id: author, body, parent_id, mentions: &visible };
    let comment = COLLAB.add_comment(&mut tx, org_id, &task_ref(task_id), new).await?;
    if let Some(author) = author {
        store::add_watcher(&mut tx, org_id, task_id, author, "comment").await?;
    }
    for user in &visible {
        store::add_watcher(&mut tx, org_id, task_id, *user, "mention").await?;
    }
    let participants = match comment.parent_id {
        Some(root) => {
            COLLAB.thread_participants(&mut tx, root).await?.into_iter().filter(|p| Some(*p) != author).collect()
        }
        None => Vec::new(),
    };
    let watcher_ids: Vec<Uuid> = store::watchers(&mut tx, task_id).await?.iter().map(|w| w.user_id).collect();
    events::comment_changed(&mut tx, ctx, &task, &watcher_ids, &comment, &participants, "created").await?;
    record(&mut tx, ctx, task_id, "commented", json!({"comment_id": comment.id})).await?;
    tx.commit().await?;
    tracing::info!(task_id = %task_id, comment_id = %comment.id, mentions = visible.len(), "comment created");
    Ok(comment)
}

/// A task's comments, oldest first.
pub async fn list_comments(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    tokens: &PageTokens,
    task_id: Uuid,
    q: &str,
    page: PageRequest<'_>,
) -> Result<Page<Comment>> {
    let PageRequest { size: page_size, token: page_token } = page;
    access.task(ctx, task_id, TaskPermission::View).await?;
    let hash = PageTokens::query_hash(&["tasks.ListComments", &task_id.to_string(), q.trim()]);
    let cursor: Option<Cursor> = tokens.decode(&hash, page_token)?;
    let mut tx = db.tenant_tx(ctx).await?;
    live_task(&mut tx, task_id).await?;
    let q = Some(q.trim()).filter(|q| !q.is_empty());
    let mut items =
        COLLAB.comments(&mut tx, &task_ref(task_id), q, cursor.map(|c| (c.at, c.id)), i64::from(page_size) + 1).await?;
    tx.commit().await?;
    Ok(paged(&mut items, page_size, tokens, &hash, |c| Cursor { at: c.created_at, id: c.id }))
}

fn paged<T: Clone>(
    items: &mut Vec<T>,
    page_size: u32,
    tokens: &PageTokens,
    hash: &str,
    cursor: impl Fn(&T) -> Cursor,
) -> Page<T> {
    let next_page_token = if items.len() > page_size as usize {
        items.truncate(page_size as usize);
        items.last().map(|last| tokens.encode(hash, &cursor(last))).unwrap_or_default()
    } else {
        String::new()
    };
    Page { items: std::mem::take(items), next_page_token }
}

/// Edits a comment (its author only).
pub async fn update_comment(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    comment_id: Uuid,
    body: &str,
) -> Result<Comment> {
    access.task(ctx, task_id, TaskPermission::View).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let task = writable_task(&mut tx, task_id).await?;
    let existing = COLLAB.comment(&mut tx, &task_ref(task_id), comment_id).await?.ok_or_else(comment_not_found)?;
    if existing.deleted_at.is_some() {
        return Err(comment_not_found());
    }
    if existing.author_id.is_none() || existing.author_id != ctx.user_id_opt() {
        return Err(not_author());
    }
    let mut visible = Vec::new();
    for user in collab::mentions(body) {
        if Some(user) != existing.author_id && access.user_can_view_board(ctx, user, task.board_id).await? {
            visible.push(user);
        }
    }
    let comment = COLLAB.edit_comment(&mut tx, comment_id, body, &visible).await?;
    let watcher_ids: Vec<Uuid> = store::watchers(&mut tx, task_id).await?.iter().map(|w| w.user_id).collect();
    events::comment_changed(&mut tx, ctx, &task, &watcher_ids, &comment, &[], "updated").await?;
    tx.commit().await?;
    Ok(comment)
}

/// Deletes a comment (soft): its author, or a manager of the board.
pub async fn delete_comment(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    comment_id: Uuid,
) -> Result<()> {
    access.task(ctx, task_id, TaskPermission::View).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let task = writable_task(&mut tx, task_id).await?;
    let existing = COLLAB.comment(&mut tx, &task_ref(task_id), comment_id).await?.ok_or_else(comment_not_found)?;
    if existing.deleted_at.is_some() {
        tx.commit().await?;
        return Ok(());
    }
    let is_author = existing.author_id.is_some() && existing.author_id == ctx.user_id_opt();
    if !is_author {
        access.board(ctx, task.board_id, BoardPermission::Manage).await.map_err(|_| not_author())?;
    }
    COLLAB.delete_comment(&mut tx, comment_id).await?;
    let watcher_ids: Vec<Uuid> = store::watchers(&mut tx, task_id).await?.iter().map(|w| w.user_id).collect();
    events::comment_changed(&mut tx, ctx, &task, &watcher_ids, &existing, &[], "deleted").await?;
    tx.commit().await?;
    Ok(())
}

/// Creates a tag of the organization.
pub async fn create_tag(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    name: &str,
    color: Option<&str>,
    category: Option<&str>,
) -> Result<Tag> {
    access.create_board(ctx).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let tag = COLLAB.create_tag(&mut tx, ctx.org_id()?, name, color, category).await?;
    tx.commit().await?;
    Ok(tag)
}

/// Renames a tag or changes its color or category.
pub async fn update_tag(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    tag_id: Uuid,
    changes: &trellis_kit::collab::TagChanges<'_>,
) -> Result<Tag> {
    access.create_board(ctx).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let tag = COLLAB.update_tag(&mut tx, tag_id, changes).await?;
    tx.commit().await?;
    Ok(tag)
}

/// The organization's tags.
pub async fn tags(db: &Db, ctx: &RequestContext) -> Result<Vec<Tag>> {
    let mut tx = db.tenant_tx(ctx).await?;
    let tags = COLLAB.tags(&mut tx).await?;
    tx.commit().await?;
    Ok(tags)
}

/// Deletes a tag everywhere.
pub async fn delete_tag(db: &Db, access: &dyn Access, ctx: &RequestContext, tag_id: Uuid) -> Result<()> {
    access.create_board(ctx).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    COLLAB.delete_tag(&mut tx, tag_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Tags a task (idempotent); returns its tags.
pub async fn tag_task(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    tag: TagRef,
) -> Result<Vec<Tag>> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    writable_task(&mut tx, task_id).await?;
    let entity = task_ref(task_id);
    let before = COLLAB.entity_tags(&mut tx, &entity).await?.len();
    let tag = COLLAB.tag(&mut tx, ctx.org_id()?, &entity, tag, MAX_TAGS).await?;
    let tags = COLLAB.entity_tags(&mut tx, &entity).await?;
    if tags.len() > before {
        record(&mut tx, ctx, task_id, "tagged", json!({"tag": tag.name})).await?;
    }
    tx.commit().await?;
    Ok(tags)
}

/// Removes a tag from a task (idempotent); returns its tags.
pub async fn untag_task(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    tag_id: Uuid,
) -> Result<Vec<Tag>> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    writable_task(&mut tx, task_id).await?;
    let entity = task_ref(task_id);
    if COLLAB.untag(&mut tx, &entity, tag_id).await? {
        record(&mut tx, ctx, task_id, "untagged", json!({"tag_id": tag_id})).await?;
    }
    let tags = COLLAB.entity_tags(&mut tx, &entity).await?;
    tx.commit().await?;
    Ok(tags)
}

/// Links a task to a task or a board the caller can view. Other entity types are resolved by
/// their module's EntityService, which this service does not call yet: UNKNOWN_ENTITY_TYPE.
pub async fn create_link(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    target: EntityRef,
    relationship: &str,
) -> Result<Link> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    match target.entity_type.as_str() {
        TASK if target.id == task_id => return Err(Error::validation("target.id", "must be another entity")),
        TASK => access.task(ctx, target.id, TaskPermission::View).await?,
        BOARD => access.board(ctx, target.id, BoardPermission::View).await?,
        other => {
            return Err(Error::invalid_argument(
                "UNKNOWN_ENTITY_TYPE",
                format!("Entities of type {other:?} cannot be linked in this cell"),
            )
            .with_field("target.type", "unknown or not enabled"));
        }
    }
    let mut tx = db.tenant_tx(ctx).await?;
    writable_task(&mut tx, task_id).await?;
    let exists = match target.entity_type.as_str() {
        TASK => store::task(&mut tx, target.id).await?.is_some(),
        _ => store::board(&mut tx, target.id, false).await?.is_some(),
    };
    if !exists {
        return Err(Error::not_found("NOT_FOUND", "The link target does not exist")
            .with_metadata("resource", target.entity_type.clone()));
    }
    let link = COLLAB.create_link(&mut tx, ctx, &task_ref(task_id), &target, relationship).await?;
    let details = json!({"link_id": link.id, "target_type": target.entity_type, "target_id": target.id});
    record(&mut tx, ctx, task_id, "linked", details).await?;
    tx.commit().await?;
    Ok(link)
}

/// A task's links in both directions.
pub async fn links(db: &Db, access: &dyn Access, ctx: &RequestContext, task_id: Uuid) -> Result<Vec<Link>> {
    access.task(ctx, task_id, TaskPermission::View).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    live_task(&mut tx, task_id).await?;
    let links = COLLAB.links(&mut tx, &task_ref(task_id)).await?;
    tx.commit().await?;
    Ok(links)
}

/// Deletes a link of a task.
pub async fn delete_link(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    link_id: Uuid,
) -> Result<()> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    writable_task(&mut tx, task_id).await?;
    let link = COLLAB.delete_link(&mut tx, ctx, &task_ref(task_id), link_id).await?;
    record(&mut tx, ctx, task_id, "unlinked", json!({"link_id": link.id})).await?;
    tx.commit().await?;
    Ok(())
}

/// A task's activity, newest first.
pub async fn activity(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    tokens: &PageTokens,
    task_id: Uuid,
    page: PageRequest<'_>,
) -> Result<Page<Activity>> {
    let PageRequest { size: page_size, token: page_token } = page;
    access.task(ctx, task_id, TaskPermission::View).await?;
    let hash = PageTokens::query_hash(&["tasks.ListTaskActivity", &task_id.to_string()]);
    let cursor: Option<Cursor> = tokens.decode(&hash, page_token)?;
    let mut tx = db.tenant_tx(ctx).await?;
    live_task(&mut tx, task_id).await?;
    let mut items =
        COLLAB.activity(&mut tx, &task_ref(task_id), cursor.map(|c| (c.at, c.id)), i64::from(page_size) + 1).await?;
    tx.commit().await?;
    Ok(paged(&mut items, page_size, tokens, &hash, |a| Cursor { at: a.created_at, id: a.id }))
}
