//! Board automations (spec Rules 29-34): trigger → conditions → actions, and their run log.
//!
//! - [`rules`]: the automation model, validation with paths, condition evaluation (pure).
//! - [`engine`]: the `tasks.automations` consumer that evaluates and runs them.
//! - [`store`]: queries of automations and runs.
//! - [`api`]: the `AutomationService` handlers.
//! - here: the operations (create, list, delete, runs).

pub mod api;
pub mod engine;
pub mod rules;
pub mod store;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::types::Json;
use trellis_kit::db::Db;
use trellis_kit::error::Violations;
use trellis_kit::{Error, RequestContext, Result};
use uuid::Uuid;

use crate::access::{Access, BoardPermission};
use crate::error::TaskError;
use crate::store as task_store;
use rules::{Action, Condition};
use store::{AutomationRow, RunRow};

/// Automations per board (spec Limits).
pub const MAX_PER_BOARD: usize = 50;
/// How long runs are listed.
pub const RUNS_KEPT_DAYS: i64 = 30;

/// A CreateAutomation.
#[derive(Debug, Clone)]
pub struct NewAutomation {
    /// Board.
    pub board_id: Uuid,
    /// Name.
    pub name: String,
    /// Trigger.
    pub trigger_event: String,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Actions.
    pub actions: Vec<Action>,
}

fn not_found() -> Error {
    Error::not_found("NOT_FOUND", "The automation does not exist")
}

/// CreateAutomation: fully validated (Rules 29-31), at most 50 per board.
pub async fn create(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    mut v: Violations,
    new: NewAutomation,
) -> Result<AutomationRow> {
    access.board(ctx, new.board_id, BoardPermission::Manage).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let board = task_store::board(&mut tx, new.board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
    let columns: Vec<Uuid> = task_store::board_columns(&mut tx, new.board_id).await?.iter().map(|c| c.id).collect();
    tx.commit().await?;
    let name = new.name.trim().to_string();
    if name.is_empty() || name.chars().count() > rules::NAME_MAX {
        v.add("name", format!("must be 1 to {} characters", rules::NAME_MAX));
    }
    rules::validate(&mut v, &new.trigger_event, &new.conditions, &new.actions, &columns);
    for (i, action) in new.actions.iter().enumerate() {
        if let Some(user) = action.user_id
            && !access.user_can_view_board(ctx, user, new.board_id).await?
        {
            v.add(format!("actions[{i}].user_id"), "cannot view the board");
        }
    }
    v.finish()?;
    if board.archived_at.is_some() {
        return Err(TaskError::BoardArchived.into());
    }
    let mut tx = db.tenant_tx(ctx).await?;
    // Locks the board so two concurrent creates cannot both pass the limit.
    task_store::board_locked(&mut tx, new.board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
    if store::of_board(&mut tx, new.board_id).await?.len() >= MAX_PER_BOARD {
        return Err(Error::failed_precondition(
            "LIMIT_REACHED",
            format!("A board has at most {MAX_PER_BOARD} automations"),
        ));
    }
    let row = AutomationRow {
        id: Uuid::now_v7(),
        org_id: ctx.org_id()?,
        board_id: new.board_id,
        name,
        trigger_event: new.trigger_event,
        conditions: Json(new.conditions),
        actions: Json(new.actions),
        enabled: true,
        disabled_reason: None,
        run_count: 0,
        last_run_at: None,
        last_run_status: None,
        created_by: ctx.user_id_opt(),
        created_at: Utc::now(),
    };
    store::insert(&mut tx, &row).await?;
    let row = store::one(&mut tx, row.board_id, row.id).await?.ok_or_else(not_found)?;
    tx.commit().await?;
    tracing::info!(automation_id = %row.id, board_id = %row.board_id, trigger = %row.trigger_event, "automation created");
    Ok(row)
}

/// ListAutomations.
pub async fn list(db: &Db, access: &dyn Access, ctx: &RequestContext, board_id: Uuid) -> Result<Vec<AutomationRow>> {
    access.board(ctx, board_id, BoardPermission::Manage).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    task_store::board(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
    let rows = store::of_board(&mut tx, board_id).await?;
    tx.commit().await?;
    Ok(rows)
}

/// DeleteAutomation.
pub async fn delete(db: &Db, access: &dyn Access, ctx: &RequestContext, board_id: Uuid, id: Uuid) -> Result<()> {
    access.board(ctx, board_id, BoardPermission::Manage).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    store::one(&mut tx, board_id, id).await?.ok_or_else(not_found)?;
    store::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// ListAutomationRuns: newest first, 30 days.
pub async fn runs(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    board_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<RunRow>> {
    access.board(ctx, board_id, BoardPermission::Manage).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    store::one(&mut tx, board_id, id).await?.ok_or_else(not_found)?;
    let rows = store::runs(&mut tx, id, now - TimeDelta::days(RUNS_KEPT_DAYS), i64::from(limit)).await?;
    tx.commit().await?;
    Ok(rows)
}
