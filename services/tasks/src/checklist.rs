//! Checklists (spec Rule 14): a checklist is complete when it has at least one item and all are
//! done; every incomplete → complete change stages `tasks.task.checklist_completed`.

use trellis_kit::db::{Db, Tx};
use trellis_kit::{Error, RequestContext, Result};
use uuid::Uuid;

use crate::access::{Access, TaskPermission};
use crate::error::TaskError;
use crate::store::{self, ChecklistItemRow, ChecklistRow};
use crate::{events, position};

/// Most checklists of a task.
pub const MAX_CHECKLISTS: i64 = 20;
/// Most items of a checklist.
pub const MAX_ITEMS: usize = 200;

/// Whether items make a complete checklist.
pub fn is_complete(items: &[ChecklistItemRow]) -> bool {
    !items.is_empty() && items.iter().all(|i| i.done)
}

/// A checklist with its items.
#[derive(Debug, Clone)]
pub struct ChecklistView {
    /// The checklist.
    pub checklist: ChecklistRow,
    /// Its items in order.
    pub items: Vec<ChecklistItemRow>,
}

async fn editable_task(tx: &mut Tx, task_id: Uuid) -> Result<store::TaskRow> {
    let task = store::task_for_update(tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    if task.archived {
        return Err(TaskError::BoardArchived.into());
    }
    Ok(task)
}

/// CreateChecklist.
pub async fn create(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    title: String,
    items: Vec<String>,
) -> Result<ChecklistView> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    let org_id = ctx.org_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    editable_task(&mut tx, task_id).await?;
    let (count, last) = store::checklist_stats(&mut tx, task_id).await?;
    if count >= MAX_CHECKLISTS {
        return Err(TaskError::LimitReached.into());
    }
    let checklist = ChecklistRow { id: Uuid::now_v7(), task_id, title, position: position::after(last.as_deref()) };
    store::insert_checklist(&mut tx, org_id, &checklist).await?;
    for (title, key) in items.iter().zip(position::sequence(items.len())) {
        store::insert_checklist_item(&mut tx, org_id, checklist.id, title, &key).await?;
    }
    let items = store::checklist_items(&mut tx, checklist.id).await?;
    tx.commit().await?;
    Ok(ChecklistView { checklist, items })
}

/// Runs `change` on a locked checklist of an editable task, then stages
/// `tasks.task.checklist_completed` if the checklist went from incomplete to complete.
async fn change_items<F>(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    checklist_id: Uuid,
    change: F,
) -> Result<ChecklistView>
where
    F: for<'t> FnOnce(&'t mut Tx, ChecklistRow, Vec<ChecklistItemRow>) -> futures::future::BoxFuture<'t, Result<()>>,
{
    let mut tx = db.tenant_tx(ctx).await?;
    let checklist = store::checklist_locked(&mut tx, checklist_id).await?.ok_or_else(not_found)?;
    // The permission is on the checklist's task; an invisible task answers NOT_FOUND.
    access.task(ctx, checklist.task_id, TaskPermission::Edit).await?;
    let task = editable_task(&mut tx, checklist.task_id).await?;
    let before = store::checklist_items(&mut tx, checklist_id).await?;
    let was_complete = is_complete(&before);
    change(&mut tx, checklist.clone(), before).await?;
    let items = store::checklist_items(&mut tx, checklist_id).await?;
    if !was_complete && is_complete(&items) {
        let watchers: Vec<Uuid> = store::watchers(&mut tx, task.id).await?.iter().map(|w| w.user_id).collect();
        events::checklist_completed(&mut tx, ctx, &task, &watchers, &checklist, items.len()).await?;
    }
    tx.commit().await?;
    Ok(ChecklistView { checklist, items })
}

fn not_found() -> Error {
    Error::not_found("NOT_FOUND", "The checklist does not exist").with_metadata("resource", "checklist")
}

fn item_not_found() -> Error {
    Error::not_found("NOT_FOUND", "The checklist item does not exist").with_metadata("resource", "checklist_item")
}

/// CreateChecklistItem: appends an item (reopening a complete checklist silently).
pub async fn add_item(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    checklist_id: Uuid,
    title: String,
) -> Result<ChecklistView> {
    let org_id = ctx.org_id()?;
    change_items(db, access, ctx, checklist_id, move |tx, checklist, items| {
        Box::pin(async move {
            if items.len() >= MAX_ITEMS {
                return Err(TaskError::LimitReached.into());
            }
            let last = items.last().map(|i| i.position.as_str());
            store::insert_checklist_item(tx, org_id, checklist.id, &title, &position::after(last)).await
        })
    })
    .await
}

/// UpdateChecklistItem: `title` and `done` when given.
pub async fn update_item(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    checklist_id: Uuid,
    item_id: Uuid,
    title: Option<String>,
    done: Option<bool>,
) -> Result<ChecklistView> {
    let by = ctx.user_id_opt();
    change_items(db, access, ctx, checklist_id, move |tx, checklist, items| {
        Box::pin(async move {
            let item = items.iter().find(|i| i.id == item_id).ok_or_else(item_not_found)?;
            let title = title.unwrap_or_else(|| item.title.clone());
            let done = done.unwrap_or(item.done);
            if !store::write_checklist_item(tx, checklist.id, item_id, &title, done, by).await? {
                return Err(item_not_found());
            }
            Ok(())
        })
    })
    .await
}

/// DeleteChecklistItem: deleting the last open item completes the checklist.
pub async fn delete_item(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    checklist_id: Uuid,
    item_id: Uuid,
) -> Result<()> {
    change_items(db, access, ctx, checklist_id, move |tx, checklist, _| {
        Box::pin(async move {
            if !store::delete_checklist_item(tx, checklist.id, item_id).await? {
                return Err(item_not_found());
            }
            Ok(())
        })
    })
    .await
    .map(|_| ())
}

/// Where UpdateChecklist moves a checklist among its task's checklists.
#[derive(Debug, Clone, Copy, Default)]
pub struct Placement {
    /// Right after this checklist.
    pub after: Option<Uuid>,
    /// Right before this checklist.
    pub before: Option<Uuid>,
}

/// UpdateChecklist: a new title, and/or a new place among the task's checklists. When no key
/// fits between the neighbours the task's checklists are re-keyed (at most 20 rows).
pub async fn update(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    checklist_id: Uuid,
    title: Option<String>,
    placement: Option<Placement>,
) -> Result<ChecklistView> {
    let mut tx = db.tenant_tx(ctx).await?;
    let mut checklist = store::checklist_locked(&mut tx, checklist_id).await?.ok_or_else(not_found)?;
    access.task(ctx, checklist.task_id, TaskPermission::Edit).await?;
    editable_task(&mut tx, checklist.task_id).await?;
    if let Some(title) = title {
        checklist.title = title;
    }
    if let Some(placement) = placement {
        let others: Vec<(Uuid, String)> = store::checklist_order(&mut tx, checklist.task_id)
            .await?
            .into_iter()
            .filter(|(id, _)| *id != checklist_id)
            .collect();
        let index_of = |field: &str, id: Uuid| {
            others
                .iter()
                .position(|(c, _)| *c == id)
                .ok_or_else(|| Error::validation(field.to_string(), "is not another checklist of the task"))
        };
        let slot = match (placement.after, placement.before) {
            (Some(after), Some(before)) => {
                let (a, b) = (index_of("after_checklist_id", after)?, index_of("before_checklist_id", before)?);
                if a + 1 != b {
                    return Err(Error::validation("before_checklist_id", "must directly follow after_checklist_id"));
                }
                b
            }
            (Some(after), None) => index_of("after_checklist_id", after)? + 1,
            (None, Some(before)) => index_of("before_checklist_id", before)?,
            (None, None) => others.len(),
        };
        let lo = slot.checked_sub(1).map(|i| others[i].1.as_str());
        let hi = others.get(slot).map(|(_, key)| key.as_str());
        checklist.position = match position::between(lo, hi) {
            Some(key) => key,
            None => {
                // Re-key every checklist of the task, this one in its new slot.
                let keys = position::sequence(others.len() + 1);
                for (i, (id, _)) in others.iter().enumerate() {
                    let key = &keys[if i < slot { i } else { i + 1 }];
                    store::set_checklist_position(&mut tx, *id, key).await?;
                }
                keys[slot].clone()
            }
        };
    }
    store::write_checklist(&mut tx, checklist_id, &checklist.title, &checklist.position).await?;
    let items = store::checklist_items(&mut tx, checklist_id).await?;
    tx.commit().await?;
    Ok(ChecklistView { checklist, items })
}

/// DeleteChecklist with its items.
pub async fn delete(db: &Db, access: &dyn Access, ctx: &RequestContext, checklist_id: Uuid) -> Result<()> {
    let mut tx = db.tenant_tx(ctx).await?;
    let checklist = store::checklist_locked(&mut tx, checklist_id).await?.ok_or_else(not_found)?;
    access.task(ctx, checklist.task_id, TaskPermission::Edit).await?;
    editable_task(&mut tx, checklist.task_id).await?;
    store::delete_checklist(&mut tx, checklist_id).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(done: bool) -> ChecklistItemRow {
        ChecklistItemRow {
            id: Uuid::now_v7(),
            title: "x".into(),
            done,
            done_by: None,
            done_at: None,
            position: "a0".into(),
        }
    }

    #[test]
    fn complete_means_at_least_one_item_and_all_done() {
        assert!(!is_complete(&[]));
        assert!(is_complete(&[item(true), item(true)]));
        assert!(!is_complete(&[item(true), item(false)]));
    }
}
