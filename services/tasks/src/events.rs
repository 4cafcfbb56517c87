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
        cause: None,
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
        cause: None,
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
        cause: None,
        changed_fields: vec!["assignee_id".to_string()],
        changes: [("assignee_id".to_string(), change)].into_iter().collect(),
    }
}

/// Stages `tasks.task.created`.
pub async fn task_created(tx: &mut Tx, ctx: &RequestContext, task: &TaskRow, watcher_ids: &[Uuid]) -> Result<Uuid> {
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
    events::stage(tx, ctx, TASK_UPDATED, &unassigned(task, watcher_ids, previous)).await
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
