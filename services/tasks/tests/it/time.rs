//! Time tracking over gRPC: one running timer per user, manual entries, reports.

use tonic::Code;
use trellis_proto::trellis::tasks::v1::time_service_client::TimeServiceClient;
use trellis_proto::trellis::tasks::v1::{
    CreateTimeEntryRequest, GetRunningTimerRequest, GetTaskRequest, GetTimeReportRequest, StartTimerRequest,
    StopTimerRequest,
};

use crate::common::{Caller, cell, reason, violated_fields};

fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

#[tokio::test]
async fn starting_a_timer_stops_the_running_one_and_reports_add_up() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut time = TimeServiceClient::new(cell.channel("tasks").await);
    let t1 = alice.create("T1").await;
    let t2 = alice.create("T2").await;
    let start = |task: &str| StartTimerRequest { task_id: task.to_string(), ..Default::default() };

    let first = time.start_timer(alice.req(start(&t1.id))).await.expect("start T1").into_inner();
    assert!(first.stopped_entry.is_none());
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let second = time.start_timer(alice.req(start(&t2.id))).await.expect("start T2").into_inner();
    let stopped = second.stopped_entry.expect("T1's entry stopped");
    assert_eq!(stopped.task_id, t1.id);
    assert!(stopped.duration_seconds >= 1 && stopped.ended_at.is_some());
    let running = time.get_running_timer(alice.req(GetRunningTimerRequest {})).await.expect("running").into_inner();
    assert_eq!(running.entry.expect("entry").task_id, t2.id);

    time.stop_timer(alice.req(StopTimerRequest { task_id: t2.id.clone() })).await.expect("stop T2");
    let again = time.stop_timer(alice.req(StopTimerRequest { task_id: t2.id.clone() })).await.expect_err("none");
    assert_eq!((again.code(), reason(&again).as_str()), (Code::FailedPrecondition, "NO_RUNNING_TIMER"));
    let none = time.get_running_timer(alice.req(GetRunningTimerRequest {})).await.expect("running").into_inner();
    assert!(none.entry.is_none());

    let now = chrono::Utc::now();
    let bad = time
        .create_time_entry(alice.req(CreateTimeEntryRequest {
            task_id: t1.id.clone(),
            started_at: Some(ts(now - chrono::Duration::hours(1))),
            ended_at: Some(ts(now - chrono::Duration::hours(2))),
            ..Default::default()
        }))
        .await
        .expect_err("ended before started");
    assert_eq!((bad.code(), violated_fields(&bad)), (Code::InvalidArgument, vec!["ended_at".to_string()]));
    time.create_time_entry(alice.req(CreateTimeEntryRequest {
        task_id: t1.id.clone(),
        started_at: Some(ts(now - chrono::Duration::hours(3))),
        duration_seconds: 600,
        ..Default::default()
    }))
    .await
    .expect("manual");

    let t1_now = alice.client.get_task(alice.req(GetTaskRequest { task_id: t1.id.clone() })).await.expect("get");
    assert_eq!(t1_now.into_inner().task.expect("task").tracked_seconds, 600 + i64::from(stopped.duration_seconds));

    let report = time
        .get_time_report(alice.req(GetTimeReportRequest {
            from: Some(ts(now - chrono::Duration::days(1))),
            to: Some(ts(now + chrono::Duration::days(1))),
            group_by: "user".into(),
            ..Default::default()
        }))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.groups.len(), 1);
    assert_eq!(report.groups[0].key, alice.user.to_string());
    assert_eq!(report.entry_count, 3);
    assert_eq!(report.total_seconds, report.groups[0].total_seconds);
    assert!(report.total_seconds >= 602);
}

#[tokio::test]
async fn concurrent_starts_leave_exactly_one_timer_running() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let time = TimeServiceClient::new(cell.channel("tasks").await);
    let tasks = [alice.create("a").await, alice.create("b").await];
    let starts = tasks.iter().map(|t| {
        let mut client = time.clone();
        let request = alice.req(StartTimerRequest { task_id: t.id.clone(), ..Default::default() });
        async move { client.start_timer(request).await }
    });
    let results = futures::future::join_all(starts).await;
    assert!(results.iter().all(Result::is_ok), "every start succeeds (retrying once): {results:?}");
    let pool = cell.owner_pool().await;
    let running: i64 =
        sqlx::query_scalar("select count(*) from tasks.time_entries where user_id = $1 and ended_at is null")
            .bind(alice.user)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(running, 1);
}
