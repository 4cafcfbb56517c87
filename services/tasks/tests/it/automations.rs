//! Automations (flows 9 and 10, Rules 29-34): validation paths, runs driven by the service's own
//! events through RabbitMQ, loop protection at depth 3, and the overdue escalation with a test
//! clock (a change on day 3, nothing on day 4).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trellis_kit::jobs::TestClock;
use trellis_kit::testing::{TestCell, wait_until};
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::tasks::v1 as proto;
use trellis_proto::trellis::tasks::v1::automation_service_client::AutomationServiceClient;
use uuid::Uuid;

use crate::common::{Caller, cell, cell_with, clocked_config, outbox};
use crate::rest::{Rest, code};

/// Envelopes of `event_type` in the outbox.
async fn staged(cell: &TestCell, event_type: &str) -> Vec<Envelope> {
    outbox(cell).await.into_iter().filter(|e| e.r#type == event_type).collect()
}

fn payload<M: prost::Name + Default>(e: &Envelope) -> M {
    e.payload.as_ref().and_then(|p| p.to_msg::<M>().ok()).unwrap_or_else(|| panic!("payload of {}", e.r#type))
}

async fn runs(rest: &Rest, board_id: &str, automation_id: &str) -> Vec<Value> {
    let (status, body) =
        rest.call(Method::GET, &format!("/api/v1/boards/{board_id}/automations/{automation_id}/runs"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["runs"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn flow_9_automations_over_rest() {
    let cell = cell().await;
    let rest = Rest::start(&cell).await;
    let (status, board) = rest.call(Method::POST, "/api/v1/boards", Some(json!({"name": "Ops", "key": "OPS"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{board}");
    let board_id = board["board"]["id"].as_str().unwrap_or_default().to_string();
    let automations = format!("/api/v1/boards/{board_id}/automations");

    // An unknown field is refused at its path.
    let bad = json!({"name": "Bad", "trigger_event": "task.completed",
        "actions": [{"type": "set_field", "field": "colour", "value": "red"}]});
    let (status, body) = rest.call(Method::POST, &automations, Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], json!("actions[0].field"), "{body}");

    let rule = json!({
        "name": "Done is low", "trigger_event": "task.status_changed",
        "conditions": [{"field": "to_status", "op": "eq", "value": "done"}],
        "actions": [
            {"type": "notify", "target": "creator", "template": "task_done"},
            {"type": "set_field", "field": "priority", "value": "low"},
        ],
    });
    let (status, created) = rest.call(Method::POST, &automations, Some(rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let automation_id = created["automation"]["id"].as_str().unwrap_or_default().to_string();

    let (status, task) = rest
        .call(
            Method::POST,
            "/api/v1/tasks",
            Some(json!({"title": "Ship it", "board_id": board_id, "priority": "high"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let task_id = task["task"]["id"].as_str().unwrap_or_default().to_string();
    let creator = task["task"]["created_by"].as_str().unwrap_or_default().to_string();
    let (status, body) = rest.call(Method::POST, &format!("/api/v1/tasks/{task_id}/complete"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Within 5 s: a succeeded run, priority low, executed and notified (to the creator) staged.
    wait_until(Duration::from_secs(5), || async {
        runs(&rest, &board_id, &automation_id).await.iter().any(|r| r["status"] == json!("succeeded"))
    })
    .await;
    let (_, got) = rest.call(Method::GET, &format!("/api/v1/tasks/{task_id}"), None).await;
    assert_eq!(got["task"]["priority"], json!("low"), "{got}");
    let executed = staged(&cell, "tasks.automation.executed").await;
    assert_eq!(executed.len(), 1);
    let notified = staged(&cell, "tasks.automation.notified").await;
    assert_eq!(notified.len(), 1);
    let notified: proto::AutomationNotified = payload(&notified[0]);
    assert_eq!(notified.participant_ids, vec![creator]);
    assert_eq!(notified.template, "task_done");
    // The priority change was caused by the automation.
    let updated: Vec<proto::TaskUpdated> = staged(&cell, "tasks.task.updated").await.iter().map(payload).collect();
    let caused = updated.iter().find(|u| u.changed_fields.contains(&"priority".to_string()));
    assert_eq!(
        caused.and_then(|u| u.cause.clone()).map(|c| (c.automation_id, c.depth)),
        Some((automation_id.clone(), 1))
    );

    // Two rules flipping in_review ↔ in_progress stop at depth 3.
    let flip = |name: &str, from: &str, to: &str| {
        json!({"name": name, "trigger_event": "task.status_changed",
            "conditions": [{"field": "to_status", "op": "eq", "value": from}],
            "actions": [{"type": "set_field", "field": "status", "value": to}]})
    };
    let (_, a) = rest.call(Method::POST, &automations, Some(flip("Back to work", "in_review", "in_progress"))).await;
    let (_, b) = rest.call(Method::POST, &automations, Some(flip("Review again", "in_progress", "in_review"))).await;
    let ids = [
        a["automation"]["id"].as_str().unwrap_or_default().to_string(),
        b["automation"]["id"].as_str().unwrap_or_default().to_string(),
    ];
    let (_, loop_task) =
        rest.call(Method::POST, "/api/v1/tasks", Some(json!({"title": "Loop", "board_id": board_id}))).await;
    let loop_id = loop_task["task"]["id"].as_str().unwrap_or_default().to_string();
    let (status, body) =
        rest.call(Method::PATCH, &format!("/api/v1/tasks/{loop_id}"), Some(json!({"status": "in_review"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(Duration::from_secs(10), || async {
        let mut all = runs(&rest, &board_id, &ids[0]).await;
        all.extend(runs(&rest, &board_id, &ids[1]).await);
        all.iter().any(|r| r["skip_reason"] == json!("depth_limit"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut all = runs(&rest, &board_id, &ids[0]).await;
    all.extend(runs(&rest, &board_id, &ids[1]).await);
    let succeeded: Vec<i64> =
        all.iter().filter(|r| r["status"] == json!("succeeded")).map(|r| r["depth"].as_i64().unwrap_or(-1)).collect();
    let mut depths = succeeded.clone();
    depths.sort();
    assert_eq!(depths, vec![0, 1, 2], "{all:?}");
    assert!(all.iter().all(|r| r["status"] != json!("succeeded") || r["depth"].as_i64() < Some(3)));
    let (_, final_task) = rest.call(Method::GET, &format!("/api/v1/tasks/{loop_id}"), None).await;
    assert_eq!(final_task["task"]["status"], json!("in_progress"), "three flips from in_review");

    let (status, list) = rest.call(Method::GET, &automations, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["automations"].as_array().map(Vec::len), Some(3));
    let (status, body) = rest.call(Method::DELETE, &format!("{automations}/{}", ids[0]), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = rest.call(Method::DELETE, &format!("{automations}/{}", ids[0]), None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(t))
}

/// The task events (tasks.task.*) of `task_id` other than overdue, with their cause.
async fn task_changes(cell: &TestCell, task_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in outbox(cell).await {
        if !e.r#type.starts_with("tasks.task.") || e.r#type == "tasks.task.overdue" {
            continue;
        }
        if e.payload.as_ref().and_then(|p| p.to_msg::<proto::TaskUpdated>().ok()).is_some_and(|p| p.task_id == task_id)
            || e.payload
                .as_ref()
                .and_then(|p| p.to_msg::<proto::TaskAssigned>().ok())
                .is_some_and(|p| p.task_id == task_id)
        {
            out.push(e.r#type);
        }
    }
    out
}

#[tokio::test]
async fn flow_10_overdue_escalation_changes_the_task_on_day_3_and_nothing_on_day_4() {
    let clock = TestClock::at(t("2026-11-22T06:00:00Z"));
    let cell = cell_with(&clocked_config(&clock).await).await;
    let mut me = Caller::new(&cell).await;
    let board = me.board("Support", "SUP").await;
    let maintainer = Uuid::now_v7();
    let mut automations = AutomationServiceClient::new(cell.channel("tasks").await);
    let value = |v: Value| Some(trellis_tasks::automation::api::from_json(&v));
    let rule = automations
        .create_automation(me.req(proto::CreateAutomationRequest {
            board_id: board.id.clone(),
            name: "Escalate".into(),
            trigger_event: "task.overdue".into(),
            conditions: vec![proto::AutomationCondition {
                field: "overdue_days".into(),
                op: "gte".into(),
                value: value(json!(3)),
            }],
            actions: vec![
                proto::AutomationAction {
                    r#type: "reassign".into(),
                    target: "user".into(),
                    user_id: maintainer.to_string(),
                    ..Default::default()
                },
                proto::AutomationAction {
                    r#type: "set_field".into(),
                    field: "priority".into(),
                    value: value(json!("urgent")),
                    ..Default::default()
                },
            ],
        }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .automation
        .unwrap_or_default();
    // Without a team there is no team maintainer: that rule's runs fail and change nothing.
    let team_rule = automations
        .create_automation(me.req(proto::CreateAutomationRequest {
            board_id: board.id.clone(),
            name: "To the maintainer".into(),
            trigger_event: "task.overdue".into(),
            conditions: vec![],
            actions: vec![proto::AutomationAction {
                r#type: "reassign".into(),
                target: "team_maintainer".into(),
                ..Default::default()
            }],
        }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .automation
        .unwrap_or_default();

    let task = me.task_in(&board, 1, "Customer escalation").await;
    me.client
        .update_task(me.req(proto::UpdateTaskRequest {
            task_id: task.id.clone(),
            due_date: Some(ts(t("2026-11-21T06:00:00Z"))),
            update_mask: Some(prost_types::FieldMask { paths: vec!["due_date".into()] }),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"));
    let baseline = task_changes(&cell, &task.id).await.len();

    let caller = me.clone();
    let run_statuses = |automation_id: String| {
        let mut client = automations.clone();
        let me = caller.clone();
        let board_id = board.id.clone();
        async move {
            client
                .list_automation_runs(me.req(proto::ListAutomationRunsRequest {
                    board_id,
                    automation_id,
                    page_size: 100,
                }))
                .await
                .unwrap_or_else(|s| panic!("{s:?}"))
                .into_inner()
                .runs
        }
    };

    // Days 0, 1 and 2: overdue events, conditions not met, the task unchanged.
    for day in 0..3 {
        clock.advance(if day == 0 { TimeDelta::minutes(1) } else { TimeDelta::days(1) });
        wait_until(Duration::from_secs(10), || async { run_statuses(team_rule.id.clone()).await.len() == day + 1 })
            .await;
    }
    assert!(run_statuses(rule.id.clone()).await.is_empty());
    assert!(
        run_statuses(team_rule.id.clone())
            .await
            .iter()
            .all(|r| r.status == "failed" && r.error.starts_with("NO_TEAM_MAINTAINER"))
    );
    assert_eq!(task_changes(&cell, &task.id).await.len(), baseline);

    // Day 3: reassigned and urgent.
    clock.advance(TimeDelta::days(1));
    wait_until(Duration::from_secs(10), || async { run_statuses(rule.id.clone()).await.len() == 1 }).await;
    let got = me
        .client
        .get_task(me.req(proto::GetTaskRequest { task_id: task.id.clone() }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .task
        .unwrap_or_default();
    assert_eq!(got.assignee_id, maintainer.to_string());
    assert_eq!(got.priority, proto::TaskPriority::Urgent as i32);
    let after_day_3 = task_changes(&cell, &task.id).await;
    assert!(after_day_3.len() > baseline, "{after_day_3:?}");

    // Day 4: the rule runs again, changes nothing and emits no task events.
    clock.advance(TimeDelta::days(1));
    wait_until(Duration::from_secs(10), || async { run_statuses(rule.id.clone()).await.len() == 2 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let day4 = run_statuses(rule.id.clone()).await;
    assert_eq!(day4[0].status, "succeeded");
    assert!(
        day4[0]
            .actions_applied
            .as_ref()
            .is_some_and(|l| l.values.iter().all(|v| format!("{v:?}").contains("unchanged"))),
        "{:?}",
        day4[0].actions_applied
    );
    assert_eq!(task_changes(&cell, &task.id).await, after_day_3);
}

#[tokio::test]
async fn more_than_100_runs_in_5_minutes_disable_an_automation() {
    let cell = cell().await;
    let mut me = Caller::new(&cell).await;
    let board = me.board("Busy", "BSY").await;
    let mut automations = AutomationServiceClient::new(cell.channel("tasks").await);
    let rule = automations
        .create_automation(me.req(proto::CreateAutomationRequest {
            board_id: board.id.clone(),
            name: "Everything is urgent".into(),
            trigger_event: "task.created".into(),
            conditions: vec![],
            actions: vec![proto::AutomationAction {
                r#type: "set_field".into(),
                field: "priority".into(),
                value: Some(trellis_tasks::automation::api::from_json(&json!("urgent"))),
                ..Default::default()
            }],
        }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .automation
        .unwrap_or_default();
    // A hundred runs in the last minutes.
    let pool = cell.owner_pool().await;
    sqlx::query(
        "insert into tasks.automation_runs (id, org_id, automation_id, event_id, status, started_at) \
         select gen_random_uuid(), $1, $2, gen_random_uuid(), 'succeeded', now() - interval '1 minute' \
         from generate_series(1, 100)",
    )
    .bind(me.org)
    .bind(rule.id.parse::<Uuid>().unwrap_or_default())
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let task = me.task_in(&board, 1, "One more").await;
    wait_until(Duration::from_secs(5), || async { !staged(&cell, "tasks.automation.disabled").await.is_empty() }).await;
    let listed = automations
        .list_automations(me.req(proto::ListAutomationsRequest { board_id: board.id.clone() }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .automations;
    assert_eq!((listed[0].enabled, listed[0].disabled_reason.as_str()), (false, "rate_limit"));
    let disabled: proto::AutomationDisabled = payload(&staged(&cell, "tasks.automation.disabled").await[0]);
    assert_eq!(disabled.automation_id, rule.id);
    let got = me
        .client
        .get_task(me.req(proto::GetTaskRequest { task_id: task.id.clone() }))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .task
        .unwrap_or_default();
    assert_eq!(got.priority, proto::TaskPriority::Medium as i32, "the throttled run changed nothing");
}
