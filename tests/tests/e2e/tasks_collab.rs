//! Tasks acceptance flows 11 (trash) and 13 (comments and search) through the gateway, with
//! every module running: a mention makes a colleague a watcher and is published; list search
//! finds a task by key first; a trashed parent leaves lists with its subtask, shows in the trash
//! and comes back whole.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::Platform;

#[tokio::test]
async fn comments_mention_colleagues_search_finds_keys_and_the_trash_restores_subtrees() {
    let p = Platform::start().await;
    p.register("Alice", "alice.collab@example.com", None).await;
    let alice = p.login("alice.collab@example.com").await;
    let invited = p.post("/api/v1/invitations", Some(&alice.token), json!({"email": "uma.collab@example.com"})).await;
    assert!(invited.status.is_success(), "{invited:?}");
    let link = p.invitation_token("uma.collab@example.com").await;
    let uma = p.register("Uma", "uma.collab@example.com", Some(&link)).await;

    let board = p.post("/api/v1/boards", Some(&alice.token), json!({"name": "Engineering", "key": "ENG"})).await;
    assert_eq!(board.status, StatusCode::CREATED, "{board:?}");
    let board_id = board.body["board"]["id"].as_str().unwrap_or_default().to_string();
    let create = |title: &str| json!({"title": title, "board_id": board_id});
    let first = p.post("/api/v1/tasks", Some(&alice.token), create("Prepare the launch")).await;
    let task_id = first.body["task"]["id"].as_str().unwrap_or_default().to_string();
    let key = first.body["task"]["key"].as_str().unwrap_or_default().to_string();
    p.post("/api/v1/tasks", Some(&alice.token), create("Launch checklist")).await;

    // Flow 13: a comment mentioning Uma → 201, Uma becomes a watcher.
    let body = format!("@[Uma](user:{}) can you take the press kit?", uma.id);
    let comment = p.post(&format!("/api/v1/tasks/{task_id}/comments"), Some(&alice.token), json!({"body": body})).await;
    assert_eq!(comment.status, StatusCode::CREATED, "{comment:?}");
    assert_eq!(comment.body["comment"]["mentioned_user_ids"], json!([uma.id]));
    let task = p.get(&format!("/api/v1/tasks/{task_id}"), &alice.token).await;
    let watchers: Vec<&str> =
        task.body["watchers"].as_array().map_or(vec![], |w| w.iter().filter_map(|w| w["user_id"].as_str()).collect());
    assert!(watchers.contains(&uma.id.as_str()), "{watchers:?}");
    let comments = p.get(&format!("/api/v1/tasks/{task_id}/comments"), &uma.token).await;
    assert_eq!(comments.body["comments"].as_array().map(Vec::len), Some(1), "{comments:?}");

    // Search by key puts that task first; words match by prefix.
    let found = p.get(&format!("/api/v1/tasks?q={key}"), &uma.token).await;
    assert_eq!(found.body["tasks"][0]["id"], json!(task_id), "{found:?}");
    let found = p.get("/api/v1/tasks?q=launc", &uma.token).await;
    assert_eq!(found.body["total_size"], json!(2), "{found:?}");

    // Flow 11: deleting the parent hides it and its subtask; the trash lists it; restore.
    let sub =
        p.post(&format!("/api/v1/tasks/{task_id}/subtasks"), Some(&alice.token), json!({"title": "Press kit"})).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{sub:?}");
    let deleted = p.call(Method::DELETE, &format!("/api/v1/tasks/{task_id}"), Some(&alice.token), None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    assert_eq!(p.get(&format!("/api/v1/tasks/{task_id}"), &alice.token).await.status, StatusCode::NOT_FOUND);
    let listed = p.get("/api/v1/tasks?include_subtasks=true&q=press", &alice.token).await;
    assert_eq!(listed.body["total_size"], json!(0), "{listed:?}");
    let trash = p.get("/api/v1/trash/tasks", &alice.token).await;
    let trashed: Vec<&str> =
        trash.body["tasks"].as_array().map_or(vec![], |t| t.iter().filter_map(|t| t["id"].as_str()).collect());
    let sub_id = sub.body["task"]["id"].as_str().unwrap_or_default();
    assert!(trashed.contains(&task_id.as_str()) && trashed.contains(&sub_id), "the whole batch: {trash:?}");
    let restored = p.post(&format!("/api/v1/trash/tasks/{task_id}/restore"), Some(&alice.token), json!({})).await;
    assert_eq!(restored.status, StatusCode::OK, "{restored:?}");
    let listed = p.get("/api/v1/tasks?include_subtasks=true&q=press", &alice.token).await;
    assert_eq!(listed.body["total_size"], json!(1), "the subtask is back: {listed:?}");
    let activity = p.get(&format!("/api/v1/tasks/{task_id}/activity"), &alice.token).await;
    assert_eq!(activity.body["entries"][0]["action"], json!("restored"), "{activity:?}");
}
