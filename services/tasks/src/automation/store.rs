//! Queries of automations and their runs, inside tenant transactions.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use trellis_kit::Result;
use trellis_kit::db::Tx;
use uuid::Uuid;

use super::rules::{Action, Condition};

/// An automation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AutomationRow {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub org_id: Uuid,
    /// Board.
    pub board_id: Uuid,
    /// Name.
    pub name: String,
    /// Trigger.
    pub trigger_event: String,
    /// Conditions.
    pub conditions: Json<Vec<Condition>>,
    /// Actions.
    pub actions: Json<Vec<Action>>,
    /// Runs.
    pub enabled: bool,
    /// Why disabled.
    pub disabled_reason: Option<String>,
    /// Runs so far.
    pub run_count: i64,
    /// Last run.
    pub last_run_at: Option<DateTime<Utc>>,
    /// Last run status.
    pub last_run_status: Option<String>,
    /// Creator.
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

const SELECT: &str = "select id, org_id, board_id, name, trigger_event, conditions, actions, enabled, disabled_reason, \
     run_count, last_run_at, last_run_status, created_by, created_at from tasks.automations";

/// A run of the log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    /// Id.
    pub id: Uuid,
    /// Automation.
    pub automation_id: Uuid,
    /// Triggering event.
    pub event_id: Uuid,
    /// Task.
    pub task_id: Option<Uuid>,
    /// Cause depth of the event.
    pub depth: i32,
    /// succeeded | failed | skipped.
    pub status: String,
    /// Why skipped.
    pub skip_reason: Option<String>,
    /// What the actions did.
    pub actions_applied: Json<Vec<String>>,
    /// Why it failed.
    pub error: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// Duration.
    pub duration_ms: i32,
}

/// Inserts an automation.
pub async fn insert(tx: &mut Tx, a: &AutomationRow) -> Result<()> {
    sqlx::query(
        "insert into tasks.automations (id, org_id, board_id, name, trigger_event, conditions, actions, created_by) \
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.id)
    .bind(a.org_id)
    .bind(a.board_id)
    .bind(&a.name)
    .bind(&a.trigger_event)
    .bind(&a.conditions)
    .bind(&a.actions)
    .bind(a.created_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The board's automations, oldest first.
pub async fn of_board(tx: &mut Tx, board_id: Uuid) -> Result<Vec<AutomationRow>> {
    Ok(sqlx::query_as(&format!("{SELECT} where board_id = $1 order by created_at, id"))
        .bind(board_id)
        .fetch_all(&mut **tx)
        .await?)
}

/// Enabled automations of the board with this trigger, oldest first.
pub async fn triggered(tx: &mut Tx, board_id: Uuid, trigger: &str) -> Result<Vec<AutomationRow>> {
    Ok(sqlx::query_as(&format!(
        "{SELECT} where board_id = $1 and trigger_event = $2 and enabled order by created_at, id"
    ))
    .bind(board_id)
    .bind(trigger)
    .fetch_all(&mut **tx)
    .await?)
}

/// One automation of a board.
pub async fn one(tx: &mut Tx, board_id: Uuid, id: Uuid) -> Result<Option<AutomationRow>> {
    Ok(sqlx::query_as(&format!("{SELECT} where board_id = $1 and id = $2"))
        .bind(board_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Deletes an automation (its runs cascade).
pub async fn delete(tx: &mut Tx, id: Uuid) -> Result<()> {
    sqlx::query("delete from tasks.automations where id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// Records a run and the automation's counters; false when the event already had a run.
pub async fn record_run(tx: &mut Tx, org_id: Uuid, run: &RunRow) -> Result<bool> {
    let inserted = sqlx::query(
        "insert into tasks.automation_runs (id, org_id, automation_id, event_id, task_id, depth, status, skip_reason, \
         actions_applied, error, started_at, duration_ms) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         on conflict (automation_id, event_id) do nothing",
    )
    .bind(run.id)
    .bind(org_id)
    .bind(run.automation_id)
    .bind(run.event_id)
    .bind(run.task_id)
    .bind(run.depth)
    .bind(&run.status)
    .bind(&run.skip_reason)
    .bind(&run.actions_applied)
    .bind(&run.error)
    .bind(run.started_at)
    .bind(run.duration_ms)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "update tasks.automations set run_count = run_count + 1, last_run_at = $2, last_run_status = $3 where id = $1",
    )
    .bind(run.automation_id)
    .bind(run.started_at)
    .bind(&run.status)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// Whether the automation already ran for the event.
pub async fn has_run(tx: &mut Tx, automation_id: Uuid, event_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from tasks.automation_runs where automation_id = $1 and event_id = $2)",
    )
    .bind(automation_id)
    .bind(event_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// Runs of the last 30 days, newest first.
pub async fn runs(tx: &mut Tx, automation_id: Uuid, since: DateTime<Utc>, limit: i64) -> Result<Vec<RunRow>> {
    Ok(sqlx::query_as(
        "select id, automation_id, event_id, task_id, depth, status, skip_reason, actions_applied, error, started_at, \
         duration_ms from tasks.automation_runs where automation_id = $1 and started_at >= $2 \
         order by started_at desc, id desc limit $3",
    )
    .bind(automation_id)
    .bind(since)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// The board's team, if any.
pub async fn board_team(tx: &mut Tx, board_id: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar::<_, Option<Uuid>>("select team_id from tasks.boards where id = $1")
        .bind(board_id)
        .fetch_optional(&mut **tx)
        .await?
        .flatten())
}

/// The task's tag names.
pub async fn task_tags(tx: &mut Tx, task_id: Uuid) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select g.name from tasks.entity_tags et join tasks.tags g on g.id = et.tag_id \
         where et.entity_type = 'task' and et.entity_id = $1",
    )
    .bind(task_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Runs of the automation that executed actions (succeeded or failed) since `since`.
pub async fn recent_runs(tx: &mut Tx, automation_id: Uuid, since: DateTime<Utc>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from tasks.automation_runs where automation_id = $1 and started_at >= $2 \
         and status in ('succeeded', 'failed')",
    )
    .bind(automation_id)
    .bind(since)
    .fetch_one(&mut **tx)
    .await?)
}

/// Switches an automation off with a reason.
pub async fn disable(tx: &mut Tx, automation_id: Uuid, reason: &str) -> Result<()> {
    sqlx::query(
        "update tasks.automations set enabled = false, disabled_reason = $2, updated_at = now(), \
         version = version + 1 where id = $1",
    )
    .bind(automation_id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
