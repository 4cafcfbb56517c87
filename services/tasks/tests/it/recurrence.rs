//! Recurrence rules (flow 8, Rules 18-20): validation, manual runs with rotation, and the
//! scheduled sweep creating each occurrence once across replicas with a test clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;
use trellis_kit::jobs::TestClock;
use trellis_kit::testing::{TestCell, wait_until};
use trellis_proto::trellis::tasks::v1 as proto;
use trellis_proto::trellis::tasks::v1::recurrence_service_client::RecurrenceServiceClient;
use uuid::Uuid;

use crate::common::{Caller, cell_with, clocked_config, outbox, reason, violated_fields};
use crate::rest::{Rest, code};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(t))
}

/// Sunday 2026-11-22 06:00 UTC.
const SUNDAY: &str = "2026-11-22T06:00:00Z";

async fn client(cell: &TestCell) -> RecurrenceServiceClient<tonic::transport::Channel> {
    RecurrenceServiceClient::new(cell.channel("tasks").await)
}

fn weekly(task_id: &str, pool: &[Uuid]) -> proto::CreateRecurrenceRuleRequest {
    proto::CreateRecurrenceRuleRequest {
        task_id: task_id.to_string(),
        cron_expression: "0 9 * * 1".into(),
        time_zone: "Europe/Berlin".into(),
        assignee_strategy: proto::AssigneeStrategy::Rotate as i32,
        assignee_pool: pool.iter().map(Uuid::to_string).collect(),
        due_offset_days: Some(2),
        include_checklists: true,
        ..Default::default()
    }
}

/// The task.created payloads of the outbox naming `rule_id`.
async fn occurrences_created(cell: &TestCell, rule_id: &str) -> Vec<proto::TaskCreated> {
    outbox(cell)
        .await
        .into_iter()
        .filter(|e| e.r#type == "tasks.task.created")
        .filter_map(|e| e.payload.and_then(|p| p.to_msg::<proto::TaskCreated>().ok()))
        .filter(|p| p.recurrence_rule_id == rule_id)
        .collect()
}

/// Scheduled occurrences of a rule, as (occurrence_at, assignee) rows read as the owner.
async fn scheduled_occurrences(cell: &TestCell, rule_id: &str) -> Vec<DateTime<Utc>> {
    let pool = cell.owner_pool().await;
    let rule: Uuid = rule_id.parse().unwrap_or_else(|e| panic!("{e}"));
    sqlx::query_scalar(
        "select occurrence_at from tasks.tasks where recurrence_rule_id = $1 and occurrence_at is not null \
         order by occurrence_at",
    )
    .bind(rule)
    .fetch_all(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_rule_runs_by_hand_with_rotation_and_refuses_bad_schedules() {
    let clock = TestClock::at(t(SUNDAY));
    let cell = cell_with(&clocked_config(&clock).await).await;
    let mut me = Caller::new(&cell).await;
    let source = me.create("Weekly report").await;
    let (u1, u2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut rules = client(&cell).await;

    let created = rules
        .create_recurrence_rule(me.req(weekly(&source.id, &[u1, u2])))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    let rule = created.rule.unwrap_or_default();
    // Next Monday 09:00 in Berlin is 08:00 UTC in November.
    assert_eq!(rule.next_run_at, Some(ts(t("2026-11-23T08:00:00Z"))));
    assert_eq!(created.next_run_times.len(), 5);
    assert_eq!(created.next_run_times[1], ts(t("2026-11-30T08:00:00Z")));
    assert_eq!(rule.template.as_ref().map(|t| t.title.as_str()), Some("Weekly report"));

    // Two manual runs: U1, then U2, each a task.created naming the rule; the schedule is unchanged.
    let mut assignees = Vec::new();
    for _ in 0..2 {
        let run = rules
            .run_recurrence_rule(me.req(proto::RunRecurrenceRuleRequest { rule_id: rule.id.clone() }))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"))
            .into_inner();
        let task = run.task.unwrap_or_default();
        assert_eq!(task.title, "Weekly report");
        assert_ne!(task.id, source.id);
        assert_eq!(task.due_date, Some(ts(t(SUNDAY) + TimeDelta::days(2))));
        assignees.push(task.assignee_id);
        assert_eq!(run.rule.and_then(|r| r.next_run_at), Some(ts(t("2026-11-23T08:00:00Z"))));
    }
    assert_eq!(assignees, vec![u1.to_string(), u2.to_string()]);
    let events = occurrences_created(&cell, &rule.id).await;
    assert_eq!(events.iter().map(|e| e.assignee_id.clone()).collect::<Vec<_>>(), assignees);

    // Every minute is too frequent; minute 61 names the field; an unknown zone names its field.
    let mut every_minute = weekly(&source.id, &[u1]);
    every_minute.cron_expression = "* * * * *".into();
    let status = rules.create_recurrence_rule(me.req(every_minute)).await.err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::InvalidArgument, "RECURRENCE_TOO_FREQUENT"));
    let mut bad_minute = weekly(&source.id, &[u1]);
    bad_minute.cron_expression = "61 * * * *".into();
    let status = rules.create_recurrence_rule(me.req(bad_minute)).await.err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["cron_expression"]);
    let mut bad_zone = weekly(&source.id, &[u1]);
    bad_zone.time_zone = "Europe/Atlantis".into();
    let status = rules.create_recurrence_rule(me.req(bad_zone)).await.err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(violated_fields(&status), vec!["time_zone"]);
    let mut no_pool = weekly(&source.id, &[]);
    no_pool.assignee_strategy = proto::AssigneeStrategy::RoundRobin as i32;
    let status = rules.create_recurrence_rule(me.req(no_pool)).await.err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(violated_fields(&status), vec!["assignee_pool"]);

    // Another organization sees no rule.
    let stranger = Caller::new(&cell).await;
    let status = rules
        .get_recurrence_rule(stranger.req(proto::GetRecurrenceRuleRequest { rule_id: rule.id.clone() }))
        .await
        .err()
        .unwrap_or_else(|| panic!("visible to another organization"));
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_due_occurrence_is_created_once_across_two_replicas_and_missed_runs_yield_one() {
    let clock = TestClock::at(t(SUNDAY));
    let config = clocked_config(&clock).await;
    let a = cell_with(&config).await;
    let b = cell_with(&config).await;
    let mut me = Caller::new(&a).await;
    let source = me.create("Water the plants").await;
    let u1 = Uuid::now_v7();
    let mut rules = client(&a).await;
    let rule = rules
        .create_recurrence_rule(me.req(weekly(&source.id, &[u1])))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .rule
        .unwrap_or_default();

    // Nothing is due yet: both replicas sweep and create nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(scheduled_occurrences(&a, &rule.id).await.is_empty());

    // Past next_run_at: both replicas keep sweeping; exactly one occurrence appears.
    clock.set(t("2026-11-23T08:00:30Z"));
    wait_until(Duration::from_secs(10), || async { !scheduled_occurrences(&a, &rule.id).await.is_empty() }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(scheduled_occurrences(&a, &rule.id).await, vec![t("2026-11-23T08:00:00Z")]);
    let events = occurrences_created(&a, &rule.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].assignee_id, u1.to_string());
    let got = rules
        .get_recurrence_rule(me.req(proto::GetRecurrenceRuleRequest { rule_id: rule.id.clone() }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .rule
        .unwrap_or_default();
    assert_eq!((got.next_run_at, got.occurrences_created), (Some(ts(t("2026-11-30T08:00:00Z"))), 1));

    // Down for three weeks (the clock jumps): one occurrence for the missed runs, then the
    // schedule continues from now.
    clock.set(t("2026-12-16T12:00:00Z"));
    wait_until(Duration::from_secs(10), || async { scheduled_occurrences(&a, &rule.id).await.len() == 2 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(scheduled_occurrences(&b, &rule.id).await, vec![t("2026-11-23T08:00:00Z"), t("2026-11-30T08:00:00Z")]);
    let got = rules
        .get_recurrence_rule(me.req(proto::GetRecurrenceRuleRequest { rule_id: rule.id.clone() }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .rule
        .unwrap_or_default();
    assert_eq!(got.next_run_at, Some(ts(t("2026-12-21T08:00:00Z"))));

    // A deleted rule creates nothing more.
    rules
        .delete_recurrence_rule(me.req(proto::DeleteRecurrenceRuleRequest { rule_id: rule.id.clone() }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    clock.set(t("2026-12-21T08:00:30Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(scheduled_occurrences(&a, &rule.id).await.len(), 2);
}

#[tokio::test]
async fn flow_8_recurrence_over_rest() {
    let clock = TestClock::at(t(SUNDAY));
    let cell = cell_with(&clocked_config(&clock).await).await;
    let rest = Rest::start(&cell).await;
    let (status, task) = rest.call(Method::POST, "/api/v1/tasks", Some(json!({"title": "Standup notes"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let task_id = task["task"]["id"].as_str().unwrap_or_default().to_string();
    let (u1, u2) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let body = json!({
        "cron_expression": "0 9 * * 1", "time_zone": "Europe/Berlin",
        "assignee_strategy": "rotate", "assignee_pool": [u1, u2],
    });
    let (status, created) = rest.call(Method::POST, &format!("/api/v1/tasks/{task_id}/recurrence"), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let next_run_at = created["rule"]["next_run_at"].as_str().map(t);
    assert_eq!(next_run_at, Some(t("2026-11-23T08:00:00Z")));
    assert_eq!(created["rule"]["assignee_strategy"], json!("rotate"));
    let rule_id = created["rule"]["id"].as_str().unwrap_or_default().to_string();

    let mut assignees = Vec::new();
    for _ in 0..2 {
        let (status, run) =
            rest.call(Method::POST, &format!("/api/v1/recurrence-rules/{rule_id}/run"), Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assignees.push(run["task"]["assignee_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(assignees, vec![u1.clone(), u2]);
    assert_eq!(occurrences_created(&cell, &rule_id).await.len(), 2);

    let too_often = json!({"cron_expression": "* * * * *", "time_zone": "UTC"});
    let (status, body) = rest.call(Method::POST, &format!("/api/v1/tasks/{task_id}/recurrence"), Some(too_often)).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "RECURRENCE_TOO_FREQUENT"));
    let bad = json!({"cron_expression": "61 * * * *"});
    let (status, body) = rest.call(Method::POST, &format!("/api/v1/tasks/{task_id}/recurrence"), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"][0]["field"], json!("cron_expression"), "{body}");

    let (status, list) = rest.call(Method::GET, "/api/v1/recurrence-rules", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["rules"].as_array().map(Vec::len), Some(1));
    let (status, _) = rest.call(Method::DELETE, &format!("/api/v1/recurrence-rules/{rule_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = rest.call(Method::GET, &format!("/api/v1/recurrence-rules/{rule_id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
