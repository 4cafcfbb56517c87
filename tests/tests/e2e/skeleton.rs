//! The walking skeleton through every mechanism: identity (register, login, invitations), tasks
//! (create, assign, tenancy), the outbox and the event bus, notifications, and the gateway.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::Platform;

#[tokio::test]
async fn an_assignment_notifies_the_assignee_and_stays_inside_the_organization() {
    let p = Platform::start().await;

    // Alice signs up (her own organization) and signs in.
    p.register("Alice", "alice@example.com", None).await;
    let alice = p.login("alice@example.com").await;

    // Alice invites Bob; Bob registers through the link and joins Alice's organization.
    let invited = p.post("/api/v1/invitations", Some(&alice.token), json!({"email": "bob@example.com"})).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    let link_token = p.invitation_token("bob@example.com").await;
    let bob = p.register("Bob", "bob@example.com", Some(&link_token)).await;

    // Carol signs up in an organization of her own.
    let carol = p.register("Carol", "carol@example.com", None).await;

    // Alice creates a task and assigns it to Bob.
    let created = p.post("/api/v1/tasks", Some(&alice.token), json!({"title": "Write the launch post"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let task = &created.body["task"];
    let task_id = task["id"].as_str().unwrap_or_else(|| panic!("no task id in {created:?}")).to_string();
    assert_eq!(created.location.as_deref(), Some(format!("/api/v1/tasks/{task_id}").as_str()));
    assert_eq!(task["key"], "TASK-1");
    assert_eq!(task["status"], "todo", "enums are short lowercase names");

    let assigned =
        p.post(&format!("/api/v1/tasks/{task_id}/assign"), Some(&alice.token), json!({"assignee_id": bob.id})).await;
    assert_eq!(assigned.status, StatusCode::OK, "{assigned:?}");
    assert_eq!(assigned.body["task"]["assignee_id"], bob.id.as_str());

    // Bob's inbox shows the assignment once the event has travelled through the bus.
    let inbox = p
        .poll("/api/v1/notifications", &bob.token, Duration::from_secs(10), |a| {
            a.body["notifications"].as_array().is_some_and(|n| !n.is_empty())
        })
        .await;
    assert_eq!(inbox.status, StatusCode::OK, "{inbox:?}");
    let notifications = inbox.body["notifications"].as_array().cloned().unwrap_or_default();
    assert_eq!(notifications.len(), 1, "{inbox:?}");
    let n = &notifications[0];
    assert_eq!((n["type"].as_str(), n["reason"].as_str()), (Some("tasks.task.assigned"), Some("assigned")));
    assert_eq!(n["entity"]["type"], "task");
    assert_eq!(n["entity"]["id"], task_id.as_str());
    assert_eq!(n["actor"]["id"], alice.id.as_str());
    assert!(n["title"].as_str().is_some_and(|t| t.contains("Write the launch post")), "{n}");

    // Still exactly one a moment later (no duplicate delivery), and none for Alice, the actor.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = p.get("/api/v1/notifications", &bob.token).await;
    assert_eq!(again.body["notifications"].as_array().map(Vec::len), Some(1), "{again:?}");
    let alices = p.get("/api/v1/notifications", &alice.token).await;
    assert_eq!(alices.status, StatusCode::OK, "{alices:?}");
    assert!(alices.body["notifications"].as_array().is_none_or(Vec::is_empty), "{alices:?}");

    // Bob, in Alice's organization, sees the task; Carol's organization does not have it.
    let bobs_view = p.get(&format!("/api/v1/tasks/{task_id}"), &bob.token).await;
    assert_eq!(bobs_view.status, StatusCode::OK, "{bobs_view:?}");
    let carols_view = p.get(&format!("/api/v1/tasks/{task_id}"), &carol.token).await;
    assert_eq!(carols_view.status, StatusCode::NOT_FOUND, "{carols_view:?}");
    assert_eq!(carols_view.error_code(), "NOT_FOUND", "{carols_view:?}");
    let carols_list = p.get("/api/v1/tasks", &carol.token).await;
    assert_eq!(carols_list.status, StatusCode::OK, "{carols_list:?}");
    assert!(carols_list.body["tasks"].as_array().is_none_or(Vec::is_empty), "{carols_list:?}");
}
