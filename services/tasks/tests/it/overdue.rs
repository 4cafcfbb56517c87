//! Overdue detection (Rules 16-17, flow 10 in part): `tasks.task.overdue` with overdue_days 0,
//! then one per further day, once per task per day across two replicas driven by a test clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use trellis_kit::jobs::TestClock;
use trellis_kit::testing::{TestCell, wait_until};
use trellis_proto::trellis::tasks::v1 as proto;

use crate::common::{Caller, cell_with, clocked_config, outbox};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(t))
}

/// The overdue_days of the task's `tasks.task.overdue` events, in order.
async fn overdue_days(cell: &TestCell, task_id: &str) -> Vec<i32> {
    outbox(cell)
        .await
        .into_iter()
        .filter(|e| e.r#type == "tasks.task.overdue")
        .filter_map(|e| e.payload.and_then(|p| p.to_msg::<proto::TaskOverdue>().ok()))
        .filter(|p| p.task_id == task_id)
        .map(|p| p.overdue_days)
        .collect()
}

async fn set_due(me: &mut Caller, task_id: &str, due: DateTime<Utc>) {
    let request = me.req(proto::UpdateTaskRequest {
        task_id: task_id.to_string(),
        due_date: Some(ts(due)),
        update_mask: Some(prost_types::FieldMask { paths: vec!["due_date".into()] }),
        ..Default::default()
    });
    me.client.update_task(request).await.unwrap_or_else(|s| panic!("setting the due date: {s:?}"));
}

/// Moves the clock and waits until the task has `expected` events, then a little longer so that
/// a duplicate would show.
async fn advance_and_expect(clock: &TestClock, by: TimeDelta, cell: &TestCell, task_id: &str, expected: &[i32]) {
    clock.advance(by);
    wait_until(Duration::from_secs(10), || async { overdue_days(cell, task_id).await.len() >= expected.len() }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(overdue_days(cell, task_id).await, expected);
}

#[tokio::test]
async fn an_overdue_task_is_announced_once_a_day_across_replicas() {
    let clock = TestClock::at(t("2026-11-22T06:00:00Z"));
    let config = clocked_config(&clock).await;
    let a = cell_with(&config).await;
    let _b = cell_with(&config).await;
    let mut me = Caller::new(&a).await;
    let task = me.create("Renew the certificate").await;
    let other = me.create("Not due").await;
    set_due(&mut me, &task.id, t("2026-11-21T06:00:00Z")).await;

    // Day 0 at the next sweep, then one per day; more sweeps on the same day add nothing.
    advance_and_expect(&clock, TimeDelta::minutes(1), &a, &task.id, &[0]).await;
    advance_and_expect(&clock, TimeDelta::minutes(5), &a, &task.id, &[0]).await;
    advance_and_expect(&clock, TimeDelta::days(1), &a, &task.id, &[0, 1]).await;
    advance_and_expect(&clock, TimeDelta::days(1), &a, &task.id, &[0, 1, 2]).await;
    advance_and_expect(&clock, TimeDelta::hours(12), &a, &task.id, &[0, 1, 2]).await;
    advance_and_expect(&clock, TimeDelta::hours(12), &a, &task.id, &[0, 1, 2, 3]).await;
    assert!(overdue_days(&a, &other.id).await.is_empty());

    // A new due date (still past) starts the count again.
    set_due(&mut me, &task.id, t("2026-11-24T06:00:00Z")).await;
    advance_and_expect(&clock, TimeDelta::minutes(1), &a, &task.id, &[0, 1, 2, 3, 0]).await;

    // A closed task is not overdue.
    let done = me.req(proto::CompleteTaskRequest { task_id: task.id.clone(), ..Default::default() });
    me.client.complete_task(done).await.unwrap_or_else(|s| panic!("{s:?}"));
    advance_and_expect(&clock, TimeDelta::days(1), &a, &task.id, &[0, 1, 2, 3, 0]).await;
}
