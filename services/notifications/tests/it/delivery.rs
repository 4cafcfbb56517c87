//! Delivery through the real event bus: tasks stages `tasks.task.assigned` in its outbox, kit's
//! relay publishes it, the router consumer stores the notification.

use std::time::{Duration, Instant};

use trellis_kit::testing::TestCell;
use trellis_proto::trellis::tasks::v1::task_service_client::TaskServiceClient;
use trellis_proto::trellis::tasks::v1::{AssignTaskRequest, CreateTaskRequest};
use uuid::Uuid;

use crate::common::{authed, inbox, token_for};

#[tokio::test]
async fn an_assignment_made_through_tasks_reaches_the_assignees_inbox_once() {
    let cell = TestCell::start(vec![
        trellis_tasks::module_with(trellis_tasks::AccessMode::OrgRoles),
        trellis_notifications::module(),
    ])
    .await;
    let (org, alice, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let token = token_for(&cell, alice, org);
    let mut tasks = TaskServiceClient::new(cell.channel("tasks").await);
    let task = tasks
        .create_task(authed(CreateTaskRequest { title: "Deliver me".to_string(), ..Default::default() }, &token))
        .await
        .expect("create")
        .into_inner()
        .task
        .expect("task");
    let request = AssignTaskRequest { task_id: task.id.clone(), assignee_id: bob.to_string(), note: String::new() };
    tasks.assign_task(authed(request, &token)).await.expect("assign");

    let deadline = Instant::now() + Duration::from_secs(15);
    let notifications = loop {
        let n = inbox(&cell, bob, org).await;
        if !n.is_empty() || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(notifications.len(), 1, "exactly one notification for Bob");
    assert_eq!(notifications[0].r#type, "tasks.task.assigned");
    assert_eq!(notifications[0].entity.clone().map(|e| e.id), Some(task.id.clone()));
    // Nothing more arrives, and the actor hears nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox(&cell, bob, org).await.len(), 1);
    assert!(inbox(&cell, alice, org).await.is_empty());
}
