//! Overdue detection (Rules 16-17): a minute sweep publishes `tasks.task.overdue` when a task
//! becomes overdue (`overdue_days` 0) and once more each further day, up to 30.
//!
//! Which tasks to look at comes from `scheduled_work` (`kind = overdue`), kept by triggers of
//! migration 0021 in the task's own transaction: due at the due date while the task is live and
//! open; removed when it closes or goes to the trash; reset when the due date changes or the task
//! closes. The sweep (a `kit::jobs` job, once across replicas) handles each due entry in a tenant
//! transaction under the task's row lock: it stages the event, records the count in
//! `overdue_days_emitted` and moves the entry a day forward, all in one commit, so an event is
//! published once per task per day whatever the number of replicas or retries.

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use trellis_kit::db::{Db, Tx};
use trellis_kit::jobs::{Job, JobRun, Schedule};
use trellis_kit::{RequestContext, Result, events as kit_events};
use trellis_proto::trellis::tasks::v1 as proto;
use uuid::Uuid;

use crate::store::{self, TaskRow};

/// Routing key of [`proto::TaskOverdue`].
pub const TASK_OVERDUE: &str = "tasks.task.overdue";
/// The last day counted.
pub const MAX_OVERDUE_DAYS: i16 = 30;
/// Entries handled per sweep.
const BATCH: i64 = 500;

/// The count to publish next: 0 when the task becomes overdue, then one more per day; `None`
/// after [`MAX_OVERDUE_DAYS`].
pub fn next_count(emitted: Option<i16>) -> Option<i16> {
    match emitted {
        None => Some(0),
        Some(n) if n < MAX_OVERDUE_DAYS => Some(n + 1),
        Some(_) => None,
    }
}

fn timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp::from(std::time::SystemTime::from(t)))
}

/// The payload of `tasks.task.overdue`.
pub fn overdue(task: &TaskRow, watcher_ids: &[Uuid], overdue_days: i16) -> proto::TaskOverdue {
    let id = |i: Option<Uuid>| i.map(|i| i.to_string()).unwrap_or_default();
    proto::TaskOverdue {
        task_id: task.id.to_string(),
        board_id: task.board_id.to_string(),
        key: task.key(),
        title: task.title.clone(),
        parent_id: id(task.parent_id),
        assignee_id: id(task.assignee_id),
        creator_id: id(task.created_by),
        watcher_ids: watcher_ids.iter().map(Uuid::to_string).collect(),
        cause: crate::events::cause(),
        due_date: timestamp(task.due_date),
        overdue_days: i32::from(overdue_days),
    }
}

async fn due_entries(tx: &mut Tx, now: DateTime<Utc>) -> Result<Vec<(Uuid, Uuid)>> {
    sqlx::query("select set_config('app.sweep', 'on', true)").execute(&mut **tx).await?;
    Ok(sqlx::query_as(
        "select org_id, ref_id from tasks.scheduled_work where kind = 'overdue' and due_at <= $1 \
         order by due_at limit $2",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&mut **tx)
    .await?)
}

async fn reschedule(tx: &mut Tx, task_id: Uuid, due_at: Option<DateTime<Utc>>) -> Result<()> {
    match due_at {
        Some(due_at) => {
            sqlx::query("update tasks.scheduled_work set due_at = $2 where kind = 'overdue' and ref_id = $1")
                .bind(task_id)
                .bind(due_at)
                .execute(&mut **tx)
                .await?
        }
        None => {
            sqlx::query("delete from tasks.scheduled_work where kind = 'overdue' and ref_id = $1")
                .bind(task_id)
                .execute(&mut **tx)
                .await?
        }
    };
    Ok(())
}

/// Publishes every due overdue event at `now`; returns how many.
pub async fn sweep(db: &Db, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut tx = db.tx().await?;
    let due = due_entries(&mut tx, now).await?;
    tx.commit().await?;
    let mut emitted = 0;
    for (org_id, task_id) in due {
        match emit(db, org_id, task_id, now).await {
            Ok(true) => emitted += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(task_id = %task_id, error = %e.message(), "overdue event failed"),
        }
    }
    Ok(emitted)
}

/// One task: stage the next `tasks.task.overdue` if it is still overdue.
async fn emit(db: &Db, org_id: Uuid, task_id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let ctx = RequestContext::system(org_id, Uuid::now_v7().to_string());
    let mut tx = db.tenant_tx(&ctx).await?;
    let task = store::task_for_update(&mut tx, task_id).await?;
    let still_due: Option<(Option<i16>, DateTime<Utc>)> = sqlx::query_as(
        "select t.overdue_days_emitted, w.due_at from tasks.tasks t \
         join tasks.scheduled_work w on w.kind = 'overdue' and w.ref_id = t.id where t.id = $1",
    )
    .bind(task_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (Some(task), Some((emitted, due_at))) = (task, still_due) else {
        reschedule(&mut tx, task_id, None).await?;
        tx.commit().await?;
        return Ok(false);
    };
    // Another replica moved it on since the sweep read it.
    if due_at > now {
        tx.commit().await?;
        return Ok(false);
    }
    let Some(count) = next_count(emitted).filter(|_| task.is_overdue(now)) else {
        reschedule(&mut tx, task_id, None).await?;
        tx.commit().await?;
        return Ok(false);
    };
    sqlx::query("update tasks.tasks set overdue_days_emitted = $2 where id = $1")
        .bind(task_id)
        .bind(count)
        .execute(&mut *tx)
        .await?;
    let watcher_ids: Vec<Uuid> = store::watchers(&mut tx, task_id).await?.iter().map(|w| w.user_id).collect();
    kit_events::stage(&mut tx, &ctx, TASK_OVERDUE, &overdue(&task, &watcher_ids, count)).await?;
    let next = (count < MAX_OVERDUE_DAYS).then(|| now + TimeDelta::days(1));
    reschedule(&mut tx, task_id, next).await?;
    tx.commit().await?;
    tracing::info!(task_id = %task_id, overdue_days = count, "task overdue");
    Ok(true)
}

/// The scheduled job: [`sweep`] every minute.
pub fn job(db: Db) -> Job {
    Job::new("tasks.overdue", Schedule::Every(std::time::Duration::from_secs(60)), move |run: JobRun| {
        let db = db.clone();
        async move {
            sweep(&db, run.now).await?;
            Ok(())
        }
        .boxed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_starts_at_zero_and_stops_after_thirty_days() {
        assert_eq!(next_count(None), Some(0));
        assert_eq!(next_count(Some(0)), Some(1));
        assert_eq!(next_count(Some(29)), Some(30));
        assert_eq!(next_count(Some(30)), None);
    }
}
