//! Time tracking (spec Rules 21-23): one running timer per user per organization, manual entries,
//! tracked_seconds kept in the same transaction as each entry change, and reports.

use chrono::{DateTime, Duration, Utc};
use trellis_kit::db::{Db, Tx};
use trellis_kit::{Error, RequestContext, Result};
use uuid::Uuid;

use crate::access::{Access, TaskPermission};
use crate::error::TaskError;
use crate::events;
use crate::store::{self, TimeEntryRow};

/// Longest entry, in seconds (24 h).
pub const MAX_SECONDS: i64 = 86_400;

/// How a running timer ends at `now` (Rule 22): whole seconds, at least 1; a timer past 24 h
/// stops at started_at + 24 h and is marked auto-stopped.
pub fn finish(started_at: DateTime<Utc>, now: DateTime<Utc>) -> (DateTime<Utc>, i32, bool) {
    let millis = (now - started_at).num_milliseconds();
    let seconds = ((millis + 500) / 1000).max(1);
    if seconds >= MAX_SECONDS {
        return (started_at + Duration::seconds(MAX_SECONDS), MAX_SECONDS as i32, true);
    }
    let ended = if now > started_at { now } else { started_at + Duration::seconds(1) };
    (ended, i32::try_from(seconds).unwrap_or(1), false)
}

async fn stop_running(tx: &mut Tx, ctx: &RequestContext, running: TimeEntryRow) -> Result<TimeEntryRow> {
    let (ended, seconds, auto) = finish(running.started_at, Utc::now());
    let stopped = store::stop_time_entry(tx, running.id, ended, seconds, auto).await?;
    if let Some(task_id) = stopped.task_id {
        store::recompute_tracked(tx, task_id).await?;
    }
    events::timer(tx, ctx, events::TIMER_STOPPED, &stopped).await?;
    Ok(stopped)
}

/// StartTimer: stops the caller's running timer and starts one on the task, in one transaction.
/// Of two concurrent starts one wins the unique index; the other retries once.
pub async fn start(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    task_id: Uuid,
    description: String,
    billable: bool,
) -> Result<(TimeEntryRow, Option<TimeEntryRow>)> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    match try_start(db, ctx, task_id, &description, billable).await {
        Err(e) if e.reason() == "TIMER_RACE" => try_start(db, ctx, task_id, &description, billable).await,
        other => other,
    }
}

async fn try_start(
    db: &Db,
    ctx: &RequestContext,
    task_id: Uuid,
    description: &str,
    billable: bool,
) -> Result<(TimeEntryRow, Option<TimeEntryRow>)> {
    let user_id = ctx.user_id()?;
    let org_id = ctx.org_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    let task = store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?;
    if task.archived {
        return Err(TaskError::BoardArchived.into());
    }
    let stopped = match store::running_entry(&mut tx, user_id, true).await? {
        Some(running) => Some(stop_running(&mut tx, ctx, running).await?),
        None => None,
    };
    let entry = store::insert_running_entry(&mut tx, org_id, user_id, &task, description, billable)
        .await?
        .ok_or_else(|| Error::aborted("TIMER_RACE", "Another timer started at the same time"))?;
    events::timer(&mut tx, ctx, events::TIMER_STARTED, &entry).await?;
    tx.commit().await?;
    Ok((entry, stopped))
}

/// StopTimer: the caller's running timer on this task.
pub async fn stop(db: &Db, access: &dyn Access, ctx: &RequestContext, task_id: Uuid) -> Result<TimeEntryRow> {
    access.task(ctx, task_id, TaskPermission::Edit).await?;
    let user_id = ctx.user_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    let running = store::running_entry(&mut tx, user_id, true)
        .await?
        .filter(|e| e.task_id == Some(task_id))
        .ok_or_else(|| Error::failed_precondition("NO_RUNNING_TIMER", "No timer of yours runs on this task"))?;
    let stopped = stop_running(&mut tx, ctx, running).await?;
    tx.commit().await?;
    Ok(stopped)
}

/// GetRunningTimer.
pub async fn running(db: &Db, ctx: &RequestContext) -> Result<Option<TimeEntryRow>> {
    let user_id = ctx.user_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    let entry = store::running_entry(&mut tx, user_id, false).await?;
    tx.commit().await?;
    Ok(entry)
}

/// A validated manual entry.
#[derive(Debug, Clone)]
pub struct ManualEntry {
    /// The task.
    pub task_id: Option<Uuid>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: DateTime<Utc>,
    /// Description.
    pub description: String,
    /// Billable.
    pub billable: bool,
}

/// Checks a manual entry's times (Rule 22): the end from ended_at or duration, after the start,
/// at most 24 h long and at most one minute in the future.
pub fn manual_times(
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    duration_seconds: i32,
    now: DateTime<Utc>,
) -> std::result::Result<(DateTime<Utc>, i32), (&'static str, &'static str)> {
    let ended = match ended_at {
        Some(ended) => ended,
        None if (1..=MAX_SECONDS as i32).contains(&duration_seconds) => {
            started_at + Duration::seconds(i64::from(duration_seconds))
        }
        None => return Err(("duration_seconds", "give ended_at, or a duration of 1-86400 seconds")),
    };
    if ended <= started_at {
        return Err(("ended_at", "must be after started_at"));
    }
    let seconds = (ended - started_at).num_seconds().max(1);
    if seconds > MAX_SECONDS {
        return Err(("ended_at", "an entry lasts at most 24 hours"));
    }
    if ended > now + Duration::minutes(1) {
        return Err(("ended_at", "must not be in the future"));
    }
    Ok((ended, i32::try_from(seconds).unwrap_or(1)))
}

/// CreateTimeEntry (manual).
pub async fn create_manual(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    entry: ManualEntry,
) -> Result<TimeEntryRow> {
    if let Some(task_id) = entry.task_id {
        access.task(ctx, task_id, TaskPermission::Edit).await?;
    }
    let user_id = ctx.user_id()?;
    let org_id = ctx.org_id()?;
    let seconds = i32::try_from((entry.ended_at - entry.started_at).num_seconds().max(1)).unwrap_or(1);
    let mut tx = db.tenant_tx(ctx).await?;
    let board_id = match entry.task_id {
        Some(task_id) => Some(store::task(&mut tx, task_id).await?.ok_or(TaskError::TaskNotFound)?.board_id),
        None => None,
    };
    let row = store::insert_manual_entry(&mut tx, org_id, user_id, &entry, board_id, seconds).await?;
    if let Some(task_id) = row.task_id {
        store::recompute_tracked(&mut tx, task_id).await?;
    }
    events::time_entry_created(&mut tx, ctx, &row).await?;
    tx.commit().await?;
    Ok(row)
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The entry's user.
    User,
    /// The entry's task.
    Task,
    /// The entry's board.
    Board,
}

/// GetTimeReport: (groups of (key, total, billable, count), grand totals).
pub async fn report(
    db: &Db,
    ctx: &RequestContext,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group_by: GroupBy,
    task_id: Option<Uuid>,
    user_id: Option<Uuid>,
) -> Result<Vec<store::ReportRow>> {
    let mut tx = db.tenant_tx(ctx).await?;
    let rows = store::time_report(&mut tx, from, to, group_by, task_id, user_id).await?;
    tx.commit().await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_rounds_to_whole_seconds_and_caps_at_a_day() {
        let t0 = Utc::now();
        assert_eq!(finish(t0, t0 + Duration::milliseconds(1_600)).1, 2);
        assert_eq!(finish(t0, t0 + Duration::milliseconds(200)).1, 1, "at least one second");
        let (ended, seconds, auto) = finish(t0, t0 + Duration::hours(30));
        assert_eq!((ended, seconds, auto), (t0 + Duration::hours(24), 86_400, true));
    }

    #[test]
    fn manual_entries_need_an_end_after_the_start_and_not_in_the_future() {
        let now = Utc::now();
        let start = now - Duration::hours(2);
        assert_eq!(manual_times(start, None, 600, now), Ok((start + Duration::seconds(600), 600)));
        assert_eq!(manual_times(start, Some(start - Duration::seconds(1)), 0, now).map_err(|e| e.0), Err("ended_at"));
        assert_eq!(manual_times(start, None, 0, now).map_err(|e| e.0), Err("duration_seconds"));
        assert_eq!(manual_times(now, Some(now + Duration::minutes(5)), 0, now).map_err(|e| e.0), Err("ended_at"));
        assert!(manual_times(start - Duration::hours(30), Some(start), 0, now).is_err());
    }
}
