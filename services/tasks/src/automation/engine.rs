//! The `tasks.automations` consumer (Rules 32-34): for each task event, the enabled automations
//! of the task's board with that trigger are tested against the event and the task's current
//! state; matching actions run in order inside a savepoint of the consumer's transaction, as
//! actor `automation:<id>`, through the same `task::change::save` as people's changes. A failure
//! rolls back to the savepoint (run `failed`, error kept). Events staged by the actions carry
//! `cause {automation_id, depth + 1}`; events at depth 3 or more are not evaluated (`skipped`,
//! `depth_limit`) and a rule never runs on an event it caused (`self_trigger`); more than 100
//! runs of one rule within 5 minutes switch it off (`rate_limit`, `tasks.automation.disabled`).

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use prost::Message;
use sqlx::types::Json;
use trellis_kit::db::Tx;
use trellis_kit::events::{self as kit_events, Event, Handler};
use trellis_kit::jobs::SharedClock;
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::tasks::v1 as proto;
use uuid::Uuid;

use super::rules::{Action, DateValue, Facts};
use super::store::{self, AutomationRow, RunRow};
use crate::access::Access;
use crate::error::TaskError;
use crate::events;
use crate::store::{self as task_store, TaskRow};
use crate::task::{Priority, Status, change};

/// Events at this cause depth or deeper are not evaluated.
pub const DEPTH_LIMIT: i32 = 3;
/// Routing key of [`proto::AutomationExecuted`].
pub const AUTOMATION_EXECUTED: &str = "tasks.automation.executed";
/// Routing key of [`proto::AutomationDisabled`].
pub const AUTOMATION_DISABLED: &str = "tasks.automation.disabled";
/// More runs than this within [`RATE_WINDOW`] switch an automation off.
pub const RATE_LIMIT: i64 = 100;
/// The window of [`RATE_LIMIT`].
pub const RATE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Routing key of [`proto::AutomationNotified`].
pub const AUTOMATION_NOTIFIED: &str = "tasks.automation.notified";

/// The fields every task event starts with (tags 1-9), read from any of them.
#[derive(Clone, PartialEq, prost::Message)]
struct TaskEventHead {
    #[prost(string, tag = "1")]
    task_id: String,
    #[prost(string, tag = "2")]
    board_id: String,
    #[prost(message, optional, tag = "9")]
    cause: Option<proto::EventCause>,
}

/// What the event says, for conditions and loop protection.
#[derive(Debug, Clone, Default)]
struct EventInfo {
    task_id: Option<Uuid>,
    board_id: Option<Uuid>,
    cause: Option<proto::EventCause>,
    facts: Facts,
}

fn status_name(value: i32) -> Option<String> {
    Status::from_proto(value).ok().flatten().map(|s| s.as_str().to_string())
}

fn event_info(event: &Event) -> Option<EventInfo> {
    let any = event.envelope.payload.as_ref()?;
    let mut info = EventInfo::default();
    let head = TaskEventHead::decode(any.value.as_slice()).ok()?;
    info.task_id = head.task_id.parse().ok();
    info.board_id = head.board_id.parse().ok();
    info.cause = head.cause;
    match event.envelope.r#type.as_str() {
        "tasks.task.status_changed" => {
            let e = any.to_msg::<proto::TaskStatusChanged>().ok()?;
            info.facts.from_status = status_name(e.from_status);
            info.facts.to_status = status_name(e.to_status);
            info.facts.to_column_id = Some(e.to_column_id).filter(|c| !c.is_empty());
        }
        "tasks.task.updated" => {
            let e = any.to_msg::<proto::TaskUpdated>().ok()?;
            info.facts.changed_fields = e.changed_fields;
        }
        "tasks.task.overdue" => {
            let e = any.to_msg::<proto::TaskOverdue>().ok()?;
            info.facts.overdue_days = Some(i64::from(e.overdue_days));
        }
        _ => {}
    }
    Some(info)
}

/// The consumer's handler.
#[derive(Debug, Clone)]
pub struct Automations {
    access: Arc<dyn Access>,
    clock: SharedClock,
}

impl Automations {
    /// Evaluates automations, checking assignees with `access` and reading time from `clock`.
    pub fn new(access: Arc<dyn Access>, clock: SharedClock) -> Self {
        Self { access, clock }
    }

    /// The consumer: every task event and comment creation of this service.
    pub fn consumer(self) -> kit_events::Consumer {
        kit_events::Consumer::new("tasks.automations", &["tasks.task.*", "tasks.comment.created"], self)
    }
}

impl Handler for Automations {
    fn handle<'a>(&'a self, event: &'a Event, tx: &'a mut Tx) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.evaluate(event, tx))
    }
}

/// What a successful run produced besides its task events.
struct Outcome {
    applied: Vec<String>,
    notifications: Vec<proto::AutomationNotified>,
}

impl Automations {
    async fn evaluate(&self, event: &Event, tx: &mut Tx) -> Result<()> {
        let Some(trigger) = event.envelope.r#type.strip_prefix("tasks.") else { return Ok(()) };
        let Some(info) = event_info(event) else { return Ok(()) };
        let Some(task_id) = info.task_id else { return Ok(()) };
        let board_id = match info.board_id {
            Some(b) => b,
            None => match task_store::task(tx, task_id).await? {
                Some(t) => t.board_id,
                None => return Ok(()),
            },
        };
        let automations = store::triggered(tx, board_id, trigger).await?;
        if automations.is_empty() {
            return Ok(());
        }
        let depth = info.cause.as_ref().map_or(0, |c| c.depth);
        for automation in automations {
            if store::has_run(tx, automation.id, event.id).await? {
                continue;
            }
            let started_at = self.clock.now();
            let mut run = RunRow {
                id: Uuid::now_v7(),
                automation_id: automation.id,
                event_id: event.id,
                task_id: Some(task_id),
                depth,
                status: "skipped".into(),
                skip_reason: None,
                actions_applied: Json(Vec::new()),
                error: None,
                started_at,
                duration_ms: 0,
            };
            if depth >= DEPTH_LIMIT {
                run.skip_reason = Some("depth_limit".into());
                store::record_run(tx, event.org_id, &run).await?;
                tracing::info!(automation_id = %automation.id, depth, "automation skipped at the depth limit");
                continue;
            }
            if info.cause.as_ref().is_some_and(|c| c.automation_id == automation.id.to_string()) {
                run.skip_reason = Some("self_trigger".into());
                store::record_run(tx, event.org_id, &run).await?;
                continue;
            }
            let Some(task) = task_store::task(tx, task_id).await? else { continue };
            let mut facts = info.facts.clone();
            facts.status = Some(task.status.clone());
            facts.priority = Some(task.priority.clone());
            facts.assignee_id = task.assignee_id.map(|a| a.to_string());
            facts.column_id = Some(task.column_id.to_string());
            facts.is_subtask = task.parent_id.is_some();
            facts.title = Some(task.title.clone());
            if automation.conditions.0.iter().any(|c| c.field == "tag") {
                facts.tags = store::task_tags(tx, task.id).await?;
            }
            if !automation.conditions.0.iter().all(|c| facts.holds(c)) {
                continue;
            }

            let ctx = automation_context(event.org_id, automation.id, &event.ctx.correlation_id);
            if store::recent_runs(tx, automation.id, started_at - RATE_WINDOW).await? >= RATE_LIMIT {
                run.skip_reason = Some("throttled".into());
                store::record_run(tx, event.org_id, &run).await?;
                store::disable(tx, automation.id, "rate_limit").await?;
                let disabled = proto::AutomationDisabled {
                    automation_id: automation.id.to_string(),
                    board_id: board_id.to_string(),
                    reason: "rate_limit".into(),
                };
                kit_events::stage(tx, &ctx, AUTOMATION_DISABLED, &disabled).await?;
                tracing::warn!(automation_id = %automation.id, "automation disabled: more than {RATE_LIMIT} runs in 5 minutes");
                continue;
            }
            let clock = Instant::now();
            let cause = proto::EventCause { automation_id: automation.id.to_string(), depth: depth + 1 };
            sqlx::query("savepoint automation_run").execute(&mut **tx).await?;
            let outcome = events::with_cause(cause.clone(), self.run_actions(tx, &ctx, &automation, task.id)).await;
            run.duration_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
            match outcome {
                Ok(outcome) => {
                    sqlx::query("release savepoint automation_run").execute(&mut **tx).await?;
                    run.status = "succeeded".into();
                    run.actions_applied = Json(outcome.applied.clone());
                    store::record_run(tx, event.org_id, &run).await?;
                    let executed = proto::AutomationExecuted {
                        automation_id: automation.id.to_string(),
                        board_id: board_id.to_string(),
                        task_id: task_id.to_string(),
                        trigger_event_id: event.id.to_string(),
                        depth,
                        actions_applied: outcome.applied,
                    };
                    kit_events::stage(tx, &ctx, AUTOMATION_EXECUTED, &executed).await?;
                    for mut notified in outcome.notifications {
                        notified.cause = Some(cause.clone());
                        kit_events::stage(tx, &ctx, AUTOMATION_NOTIFIED, &notified).await?;
                    }
                    tracing::info!(automation_id = %automation.id, task_id = %task_id, depth, "automation ran");
                }
                Err(e) => {
                    sqlx::query("rollback to savepoint automation_run").execute(&mut **tx).await?;
                    if e.code() == tonic::Code::Internal || e.code() == tonic::Code::Unavailable {
                        // Infrastructure, not the rule: the delivery is retried.
                        return Err(e);
                    }
                    run.status = "failed".into();
                    run.error = Some(format!("{}: {}", e.reason(), e.message()));
                    store::record_run(tx, event.org_id, &run).await?;
                    tracing::info!(automation_id = %automation.id, reason = %e.reason(), "automation failed");
                }
            }
        }
        Ok(())
    }

    async fn run_actions(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        automation: &AutomationRow,
        task_id: Uuid,
    ) -> Result<Outcome> {
        let mut out = Outcome { applied: Vec::new(), notifications: Vec::new() };
        for (i, action) in automation.actions.0.iter().enumerate() {
            let before = task_store::task_for_update(tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
            match action.kind.as_str() {
                "notify" => {
                    let participants = self.recipients(tx, &before, action).await?;
                    out.applied.push(format!(
                        "notify {} ({})",
                        action.target.as_deref().unwrap_or(""),
                        participants.len()
                    ));
                    out.notifications.push(notified(&before, automation, action, &participants));
                }
                "set_field" | "reassign" => {
                    let after = self.changed(tx, ctx, &before, action, i).await?;
                    let saved = change::save(tx, self.access.as_ref(), ctx, &before, after).await?;
                    let changed = saved.task.version != before.version;
                    let what = match action.kind.as_str() {
                        "set_field" => format!("set_field {}", action.field.as_deref().unwrap_or("")),
                        _ => format!("reassign {}", action.target.as_deref().unwrap_or("")),
                    };
                    out.applied.push(if changed { what } else { format!("{what} (unchanged)") });
                }
                other => return Err(Error::invalid_argument("UNKNOWN_ACTION", format!("unknown action {other}"))),
            }
        }
        Ok(out)
    }

    /// The task after one set_field or reassign action.
    async fn changed(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        before: &TaskRow,
        action: &Action,
        index: usize,
    ) -> Result<TaskRow> {
        let mut after = before.clone();
        let invalid = |why: &str| {
            Error::invalid_argument("AUTOMATION_ACTION_INVALID", why.to_string())
                .with_field(format!("actions[{index}].value"), why.to_string())
        };
        if action.kind == "reassign" {
            after.assignee_id = match action.target.as_deref() {
                Some("creator") => before.created_by,
                Some("user") => action.user_id,
                Some("unassigned") => None,
                Some("team_maintainer") => Some(team_maintainer(tx, before.board_id).await?),
                _ => return Err(invalid("unknown reassign target")),
            };
            return Ok(after);
        }
        let value = &action.value;
        match action.field.as_deref() {
            Some("status") => {
                let status = value.as_str().and_then(Status::parse).ok_or_else(|| invalid("not a status"))?;
                after.status = status.as_str().to_string();
            }
            Some("priority") => {
                let priority = value.as_str().and_then(Priority::parse).ok_or_else(|| invalid("not a priority"))?;
                after.priority = priority.as_str().to_string();
            }
            Some("assignee_id") => {
                after.assignee_id = match value.as_str() {
                    None => None,
                    Some(s) => Some(s.parse().map_err(|_| invalid("not an id"))?),
                };
            }
            Some("column_id") => {
                let column: Uuid = value.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| invalid("not an id"))?;
                let (status, _) =
                    task_store::column(tx, before.board_id, column).await?.ok_or_else(|| invalid("not a column"))?;
                if column != before.column_id {
                    let last = task_store::last_position(tx, before.board_id, column).await?;
                    after.column_id = column;
                    after.position = crate::position::after(last.as_deref());
                    after.status = status;
                }
            }
            Some(field @ ("start_date" | "due_date")) => {
                let at = match value.as_str() {
                    None => None,
                    Some(s) => {
                        let date = DateValue::parse(s).ok_or_else(|| invalid("not a date"))?;
                        Some(
                            date.resolve(self.clock.now(), before.due_date)
                                .ok_or_else(|| invalid("the task has no due date"))?,
                        )
                    }
                };
                if field == "start_date" {
                    after.start_date = at;
                } else {
                    after.due_date = at;
                }
                if let (Some(start), Some(due)) = (after.start_date, after.due_date)
                    && due < start
                {
                    return Err(Error::validation("due_date", "must not be before start_date"));
                }
            }
            _ => return Err(invalid("unknown field")),
        }
        let _ = ctx;
        Ok(after)
    }

    async fn recipients(&self, tx: &mut Tx, task: &TaskRow, action: &Action) -> Result<Vec<Uuid>> {
        Ok(match action.target.as_deref() {
            Some("assignee") => task.assignee_id.into_iter().collect(),
            Some("creator") => task.created_by.into_iter().collect(),
            Some("watchers") => task_store::watchers(tx, task.id).await?.iter().map(|w| w.user_id).collect(),
            Some("user") => action.user_id.into_iter().collect(),
            _ => Vec::new(),
        })
    }
}

/// The maintainer of the board's team (Rule 34). Teams live in identity; without a team (or until
/// identity's team directory is asked) the run fails with NO_TEAM_MAINTAINER.
async fn team_maintainer(tx: &mut Tx, board_id: Uuid) -> Result<Uuid> {
    let team = store::board_team(tx, board_id).await?;
    Err(Error::failed_precondition(
        "NO_TEAM_MAINTAINER",
        if team.is_some() { "The board's team has no maintainer" } else { "The board has no team" },
    ))
}

fn notified(
    task: &TaskRow,
    automation: &AutomationRow,
    action: &Action,
    participants: &[Uuid],
) -> proto::AutomationNotified {
    let id = |i: Option<Uuid>| i.map(|i| i.to_string()).unwrap_or_default();
    proto::AutomationNotified {
        task_id: task.id.to_string(),
        board_id: task.board_id.to_string(),
        key: task.key(),
        title: task.title.clone(),
        parent_id: id(task.parent_id),
        assignee_id: id(task.assignee_id),
        creator_id: id(task.created_by),
        automation_id: automation.id.to_string(),
        automation_name: automation.name.clone(),
        template: action.template.clone().unwrap_or_default(),
        message: action.message.clone().unwrap_or_default(),
        participant_ids: participants.iter().map(Uuid::to_string).collect(),
        cause: None,
    }
}

/// The context an automation acts in: actor `automation:<id>`.
fn automation_context(org_id: Uuid, automation_id: Uuid, correlation_id: &str) -> RequestContext {
    let mut ctx = RequestContext::system(org_id, correlation_id.to_string());
    ctx.subject = Subject::Service(format!("automation:{automation_id}"));
    ctx
}
