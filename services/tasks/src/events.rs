//! What the tasks service publishes (spec Events). Each event is staged in the outbox inside the
//! transaction of the change, so it is published if and only if the change commits.
//!
//! It consumes nothing yet; reactions to identity's events (the default board on
//! `identity.organization.created`, member removal) come with those events.

use prost_types::value::Kind;
use trellis_kit::db::Tx;
use trellis_kit::{RequestContext, Result, events};
use trellis_proto::trellis::tasks::v1 as proto;
use uuid::Uuid;

use crate::store::TaskRow;
use crate::task::{Priority, Status};

/// Routing key of [`proto::TaskCreated`].
pub const TASK_CREATED: &str = "tasks.task.created";
/// Routing key of [`proto::TaskAssigned`].
pub const TASK_ASSIGNED: &str = "tasks.task.assigned";
/// Routing key of [`proto::TaskUpdated`].
pub const TASK_UPDATED: &str = "tasks.task.updated";

tokio::task_local! {
    /// The automation run whose actions are staging events (loop protection, Rule 33).
    static CAUSE: proto::EventCause;
}

/// The cause every task event staged in this task carries: the automation run being executed
/// (see [`with_cause`]), none for people's changes.
pub fn cause() -> Option<proto::EventCause> {
    CAUSE.try_with(Clone::clone).ok()
}

/// Runs `fut` with every task event it stages carrying `cause`.
pub async fn with_cause<F: std::future::Future>(cause: proto::EventCause, fut: F) -> F::Output {
    CAUSE.scope(cause, fut).await
}

fn id(id: Option<Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

fn ids(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

fn timestamp(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp::from(std::time::SystemTime::from(t)))
}

fn status(task: &TaskRow) -> i32 {
    Status::parse(&task.status).map_or(0, |s| s.to_proto() as i32)
}

fn priority(task: &TaskRow) -> i32 {
    Priority::parse(&task.priority).map_or(0, |p| p.to_proto() as i32)
}

/// The payload of `tasks.task.created`.
pub fn created(task: &TaskRow, watcher_ids: &[Uuid]) -> proto::TaskCreated {
    proto::TaskCreated {
        task_id: task.id.to_string(),
        board_id: task.board_id.to_string(),
        key: task.key(),
        title: task.title.clone(),
        parent_id: id(task.parent_id),
        assignee_id: id(task.assignee_id),
        creator_id: id(task.created_by),
        watcher_ids: ids(watcher_ids),
        cause: cause(),
        status: status(task),
        priority: priority(task),
        column_id: task.column_id.to_string(),
        start_date: timestamp(task.start_date),
        due_date: timestamp(task.due_date),
        recurrence_rule_id: String::new(),
        cloned_from_id: String::new(),
    }
}

/// The payload of `tasks.task.assigned`.
pub fn assigned(task: &TaskRow, watcher_ids: &[Uuid], previous: Option<Uuid>, note: &str) -> proto::TaskAssigned {
    proto::TaskAssigned {
        task_id: task.id.to_string(),
        board_id: task.board_id.to_string(),
        key: task.key(),
        title: task.title.clone(),
        parent_id: id(task.parent_id),
        assignee_id: id(task.assignee_id),
        creator_id: id(task.created_by),
        watcher_ids: ids(watcher_ids),
        cause: cause(),
        previous_assignee_id: id(previous),
        note: note.to_string(),
    }
}

fn string_or_null(value: Option<Uuid>) -> prost_types::Value {
    prost_types::Value {
        kind: Some(match value {
            Some(v) => Kind::StringValue(v.to_string()),
            None => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        }),
    }
}

/// The payload of `tasks.task.updated` for an unassignment.
pub fn unassigned(task: &TaskRow, watcher_ids: &[Uuid], previous: Uuid) -> proto::TaskUpdated {
    let change = proto::FieldChange { from: Some(string_or_null(Some(previous))), to: Some(string_or_null(None)) };
    proto::TaskUpdated {
        task_id: task.id.to_string(),
        board_id: task.board_id.to_string(),
        key: task.key(),
        title: task.title.clone(),
        parent_id: id(task.parent_id),
        assignee_id: id(task.assignee_id),
        creator_id: id(task.created_by),
        watcher_ids: ids(watcher_ids),
        cause: cause(),
        changed_fields: vec!["assignee_id".to_string()],
        changes: [("assignee_id".to_string(), change)].into_iter().collect(),
    }
}

/// Stages `tasks.task.created`.
pub async fn task_created(tx: &mut Tx, ctx: &RequestContext, task: &TaskRow, watcher_ids: &[Uuid]) -> Result<Uuid> {
    let details = serde_json::json!({"status": task.status, "column_id": task.column_id, "title": task.title});
    crate::collab::record(tx, ctx, task.id, "created", details).await?;
    events::stage(tx, ctx, TASK_CREATED, &created(task, watcher_ids)).await
}

/// Stages `tasks.task.assigned`.
pub async fn task_assigned(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    previous: Option<Uuid>,
    note: &str,
) -> Result<Uuid> {
    let change = serde_json::json!({"assignee_id": {"from": previous, "to": task.assignee_id}});
    crate::collab::record(tx, ctx, task.id, "assigned", change).await?;
    events::stage(tx, ctx, TASK_ASSIGNED, &assigned(task, watcher_ids, previous, note)).await
}

/// Stages `tasks.task.updated` for an unassignment.
pub async fn task_unassigned(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    previous: Uuid,
) -> Result<Uuid> {
    let change = serde_json::json!({"assignee_id": {"from": previous, "to": null}});
    crate::collab::record(tx, ctx, task.id, "updated", change).await?;
    events::stage(tx, ctx, TASK_UPDATED, &unassigned(task, watcher_ids, previous)).await
}

/// Routing key of [`proto::TaskStatusChanged`].
pub const TASK_STATUS_CHANGED: &str = "tasks.task.status_changed";
/// Routing key of [`proto::TaskCompleted`].
pub const TASK_COMPLETED: &str = "tasks.task.completed";
/// Routing key of [`proto::TaskDeleted`].
pub const TASK_DELETED: &str = "tasks.task.deleted";
/// Routing key of [`proto::TaskRestored`].
pub const TASK_RESTORED: &str = "tasks.task.restored";
/// Routing key of [`proto::TaskBlocked`].
pub const TASK_BLOCKED: &str = "tasks.task.blocked";
/// Routing key of [`proto::TaskUnblocked`].
pub const TASK_UNBLOCKED: &str = "tasks.task.unblocked";
/// Routing keys of [`proto::BoardChanged`].
pub const BOARD_CREATED: &str = "tasks.board.created";
/// Board updated (fields, columns, archive state).
pub const BOARD_UPDATED: &str = "tasks.board.updated";
/// Board moved to the trash with its tasks.
pub const BOARD_DELETED: &str = "tasks.board.deleted";
/// Board restored from the trash.
pub const BOARD_RESTORED: &str = "tasks.board.restored";
/// Board deleted for good from the trash (its tasks each publish `tasks.task.purged`).
pub const BOARD_PURGED: &str = "tasks.board.purged";

/// The fields every task event carries.
struct Common {
    task_id: String,
    board_id: String,
    key: String,
    title: String,
    parent_id: String,
    assignee_id: String,
    creator_id: String,
    watcher_ids: Vec<String>,
}

fn common(task: &TaskRow, watcher_ids: &[Uuid]) -> Common {
    Common {
        task_id: task.id.to_string(),
        board_id: task.board_id.to_string(),
        key: task.key(),
        title: task.title.clone(),
        parent_id: id(task.parent_id),
        assignee_id: id(task.assignee_id),
        creator_id: id(task.created_by),
        watcher_ids: ids(watcher_ids),
    }
}

macro_rules! task_event {
    ($ty:ident, $task:expr, $watchers:expr, { $($field:ident: $value:expr),* $(,)? }) => {{
        let c = common($task, $watchers);
        proto::$ty {
            task_id: c.task_id,
            board_id: c.board_id,
            key: c.key,
            title: c.title,
            parent_id: c.parent_id,
            assignee_id: c.assignee_id,
            creator_id: c.creator_id,
            watcher_ids: c.watcher_ids,
            cause: cause(),
            $($field: $value),*
        }
    }};
}

fn json_value(value: &serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        other => Kind::StringValue(other.to_string()),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Stages `tasks.task.updated` with `changes` = field → (from, to) as JSON values.
pub async fn task_updated(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    changes: &[(String, serde_json::Value, serde_json::Value)],
) -> Result<Uuid> {
    let payload = task_event!(TaskUpdated, task, watcher_ids, {
        changed_fields: changes.iter().map(|(f, _, _)| f.clone()).collect(),
        changes: changes
            .iter()
            .map(|(f, from, to)| {
                (f.clone(), proto::FieldChange { from: Some(json_value(from)), to: Some(json_value(to)) })
            })
            .collect(),
    });
    let activity: serde_json::Map<String, serde_json::Value> =
        changes.iter().map(|(f, from, to)| (f.clone(), serde_json::json!({"from": from, "to": to}))).collect();
    crate::collab::record(tx, ctx, task.id, "updated", serde_json::Value::Object(activity)).await?;
    events::stage(tx, ctx, TASK_UPDATED, &payload).await
}

/// Stages `tasks.task.status_changed`.
pub async fn task_status_changed(
    tx: &mut Tx,
    ctx: &RequestContext,
    before: &TaskRow,
    task: &TaskRow,
    watcher_ids: &[Uuid],
) -> Result<Uuid> {
    let payload = task_event!(TaskStatusChanged, task, watcher_ids, {
        from_status: status(before),
        to_status: status(task),
        from_column_id: before.column_id.to_string(),
        to_column_id: task.column_id.to_string(),
    });
    let change = serde_json::json!({
        "status": {"from": before.status, "to": task.status},
        "column_id": {"from": before.column_id, "to": task.column_id},
    });
    crate::collab::record(tx, ctx, task.id, "status_changed", change).await?;
    events::stage(tx, ctx, TASK_STATUS_CHANGED, &payload).await
}

/// Stages `tasks.task.completed`.
pub async fn task_completed(tx: &mut Tx, ctx: &RequestContext, task: &TaskRow, watcher_ids: &[Uuid]) -> Result<Uuid> {
    let payload = task_event!(TaskCompleted, task, watcher_ids, {
        completed_by: id(task.completed_by),
        completed_at: timestamp(task.completed_at),
        tracked_seconds: task.tracked_seconds,
    });
    crate::collab::record(tx, ctx, task.id, "completed", serde_json::json!({"completed_by": task.completed_by}))
        .await?;
    events::stage(tx, ctx, TASK_COMPLETED, &payload).await
}

/// Stages `tasks.task.deleted` (`restored = false`) or `tasks.task.restored`.
pub async fn task_trash(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    batch: Uuid,
    descendants: usize,
    restored: bool,
) -> Result<Uuid> {
    let count = i32::try_from(descendants).unwrap_or(i32::MAX);
    let details = serde_json::json!({"delete_batch_id": batch, "descendant_count": descendants});
    crate::collab::record(tx, ctx, task.id, if restored { "restored" } else { "deleted" }, details).await?;
    if restored {
        let payload = task_event!(TaskRestored, task, watcher_ids, {
            delete_batch_id: batch.to_string(),
            descendant_count: count,
        });
        events::stage(tx, ctx, TASK_RESTORED, &payload).await
    } else {
        let payload = task_event!(TaskDeleted, task, watcher_ids, {
            delete_batch_id: batch.to_string(),
            descendant_count: count,
        });
        events::stage(tx, ctx, TASK_DELETED, &payload).await
    }
}

/// Stages `tasks.task.blocked` (`blocked = true`) or `tasks.task.unblocked` naming `blockers`.
pub async fn task_blocking(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    blockers: &[Uuid],
    blocked: bool,
) -> Result<Uuid> {
    if blocked {
        let payload = task_event!(TaskBlocked, task, watcher_ids, { blocker_ids: ids(blockers) });
        events::stage(tx, ctx, TASK_BLOCKED, &payload).await
    } else {
        let payload = task_event!(TaskUnblocked, task, watcher_ids, { blocker_ids: ids(blockers) });
        events::stage(tx, ctx, TASK_UNBLOCKED, &payload).await
    }
}

/// Routing key of [`proto::TaskChecklistCompleted`].
pub const TASK_CHECKLIST_COMPLETED: &str = "tasks.task.checklist_completed";

/// Stages `tasks.task.checklist_completed`.
pub async fn checklist_completed(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    checklist: &crate::store::ChecklistRow,
    item_count: usize,
) -> Result<Uuid> {
    let payload = task_event!(TaskChecklistCompleted, task, watcher_ids, {
        checklist_id: checklist.id.to_string(),
        checklist_title: checklist.title.clone(),
        item_count: i32::try_from(item_count).unwrap_or(i32::MAX),
    });
    let details = serde_json::json!({"checklist_id": checklist.id, "checklist_title": checklist.title});
    crate::collab::record(tx, ctx, task.id, "checklist_completed", details).await?;
    events::stage(tx, ctx, TASK_CHECKLIST_COMPLETED, &payload).await
}

/// Routing key of a timer start.
pub const TIMER_STARTED: &str = "tasks.timer.started";
/// Routing key of a timer stop.
pub const TIMER_STOPPED: &str = "tasks.timer.stopped";
/// Routing key of a manual entry.
pub const TIME_ENTRY_CREATED: &str = "tasks.time_entry.created";

/// Stages `tasks.timer.started` / `tasks.timer.stopped`.
pub async fn timer(
    tx: &mut Tx,
    ctx: &RequestContext,
    routing_key: &str,
    entry: &crate::store::TimeEntryRow,
) -> Result<Uuid> {
    let payload = proto::TimerChanged {
        entry_id: entry.id.to_string(),
        user_id: entry.user_id.to_string(),
        task_id: id(entry.task_id),
        started_at: timestamp(Some(entry.started_at)),
        duration_seconds: entry.duration_seconds.unwrap_or_default(),
        auto_stopped: entry.auto_stopped,
    };
    events::stage(tx, ctx, routing_key, &payload).await
}

/// Stages `tasks.time_entry.created`.
pub async fn time_entry_created(tx: &mut Tx, ctx: &RequestContext, entry: &crate::store::TimeEntryRow) -> Result<Uuid> {
    let payload = proto::TimeEntryChanged {
        entry_id: entry.id.to_string(),
        user_id: entry.user_id.to_string(),
        task_id: id(entry.task_id),
        board_id: id(entry.board_id),
        duration_seconds: entry.duration_seconds.unwrap_or_default(),
        billable: entry.billable,
        source: entry.source.clone(),
    };
    events::stage(tx, ctx, TIME_ENTRY_CREATED, &payload).await
}

/// Stages a board event (`routing_key` one of the BOARD_* keys).
pub async fn board_changed(
    tx: &mut Tx,
    ctx: &RequestContext,
    routing_key: &str,
    board: &crate::store::BoardRow,
    changed_fields: &[&str],
) -> Result<Uuid> {
    let payload = proto::BoardChanged {
        board_id: board.id.to_string(),
        name: board.name.clone(),
        key: board.key.clone(),
        changed_fields: changed_fields.iter().map(|f| (*f).to_string()).collect(),
    };
    events::stage(tx, ctx, routing_key, &payload).await
}

/// Routing key of [`proto::TaskPurged`].
pub const TASK_PURGED: &str = "tasks.task.purged";

/// Stages `tasks.task.purged`.
pub async fn task_purged(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    descendants: usize,
) -> Result<Uuid> {
    let payload = task_event!(TaskPurged, task, watcher_ids, {
        delete_batch_id: id(task.delete_batch_id),
        descendant_count: i32::try_from(descendants).unwrap_or(i32::MAX),
    });
    events::stage(tx, ctx, TASK_PURGED, &payload).await
}

/// Routing keys of [`proto::CommentChanged`].
pub const COMMENT_CREATED: &str = "tasks.comment.created";

/// Stages `tasks.comment.<verb>` (created, updated, deleted).
pub async fn comment_changed(
    tx: &mut Tx,
    ctx: &RequestContext,
    task: &TaskRow,
    watcher_ids: &[Uuid],
    comment: &trellis_kit::collab::Comment,
    participants: &[Uuid],
    verb: &str,
) -> Result<Uuid> {
    let payload = task_event!(CommentChanged, task, watcher_ids, {
        comment_id: comment.id.to_string(),
        entity_type: comment.entity_type.clone(),
        entity_id: comment.entity_id.to_string(),
        author_id: id(comment.author_id),
        comment_parent_id: id(comment.parent_id),
        mentioned_user_ids: ids(&comment.mentions),
        participant_ids: ids(participants),
        excerpt: comment.body.chars().take(200).collect(),
    });
    events::stage(tx, ctx, &format!("tasks.comment.{verb}"), &payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> TaskRow {
        let now = chrono::Utc::now();
        TaskRow {
            id: Uuid::now_v7(),
            board_id: Uuid::now_v7(),
            board_key: "ENG".to_string(),
            archived: false,
            column_id: Uuid::now_v7(),
            parent_id: None,
            number: 42,
            title: "Ship it".to_string(),
            description: String::new(),
            status: "todo".to_string(),
            priority: "high".to_string(),
            assignee_id: Some(Uuid::now_v7()),
            created_by: Some(Uuid::now_v7()),
            position: "a0".to_string(),
            depth: 0,
            start_date: None,
            due_date: Some(now),
            started_at: None,
            completed_at: None,
            watcher_count: 2,
            resolution_notes: String::new(),
            estimate_minutes: None,
            deleted_at: None,
            delete_batch_id: None,
            is_blocked: false,
            completion_blocked: false,
            enforce_wip_limits: false,
            enforce_dependencies: false,
            completed_by: None,
            tracked_seconds: 0,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn payloads_carry_the_common_task_fields() {
        let task = row();
        let watchers = [task.created_by.unwrap_or_default(), task.assignee_id.unwrap_or_default()];
        let c = created(&task, &watchers);
        assert_eq!((c.key.as_str(), c.title.as_str()), ("ENG-42", "Ship it"));
        assert_eq!(c.status, proto::TaskStatus::Todo as i32);
        assert_eq!(c.priority, proto::TaskPriority::High as i32);
        assert_eq!(c.watcher_ids.len(), 2);
        assert!(c.due_date.is_some() && c.start_date.is_none());
        assert_eq!(c.parent_id, "");

        let previous = Uuid::now_v7();
        let a = assigned(&task, &watchers, Some(previous), "please");
        assert_eq!(a.assignee_id, task.assignee_id.unwrap_or_default().to_string());
        assert_eq!(a.previous_assignee_id, previous.to_string());
        assert_eq!((a.note.as_str(), a.creator_id.is_empty()), ("please", false));
    }

    #[test]
    fn an_unassignment_reports_the_assignee_change() {
        let mut task = row();
        let previous = task.assignee_id.take().unwrap_or_default();
        let u = unassigned(&task, &[], previous);
        assert_eq!(u.changed_fields, ["assignee_id"]);
        assert_eq!(u.assignee_id, "");
        let change = &u.changes["assignee_id"];
        assert_eq!(change.from.as_ref().and_then(|v| v.kind.clone()), Some(Kind::StringValue(previous.to_string())));
        assert!(matches!(change.to.as_ref().and_then(|v| v.kind.clone()), Some(Kind::NullValue(_))));
    }
}
