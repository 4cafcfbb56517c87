//! Tasks acceptance flows 11 (trash) and 13 (comments and search) through the gateway, with
//! every module running: a mention makes a colleague a watcher and is published; list search and
//! the platform search (`/api/v1/search`, fanned out by the gateway) find a task by key first;
//! counts and resolve leave out deleted tasks; a trashed parent leaves lists with its subtask, shows in the trash
//! and comes back whole.

use prost::Message;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::tasks::v1::CommentChanged;

use crate::common::Platform;

/// A JSON count (int64 may arrive as a string).
fn count(v: &Value) -> i64 {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(-1)
}

/// The mentioned users of the `tasks.comment.created` events of a task, as staged in the tasks
/// outbox for the notifications service.
async fn comment_event_mentions(p: &Platform, task_id: &str) -> Vec<String> {
    let pool = p.cell.owner_pool().await;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "select envelope from tasks.outbox where event_type = 'tasks.comment.created' order by created_at, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_else(|e| panic!("reading the tasks outbox: {e}"));
    rows.iter()
        .filter_map(|bytes| Envelope::decode(bytes.as_slice()).ok())
        .filter_map(|envelope| envelope.payload.and_then(|p| p.to_msg::<CommentChanged>().ok()))
        .filter(|event| event.entity_id == task_id)
        .flat_map(|event| event.mentioned_user_ids)
        .collect()
}

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

    // The event notifications receives names Uma among the mentioned users.
    assert_eq!(comment_event_mentions(&p, &task_id).await, vec![uma.id.clone()]);

    // The platform search fans out to tasks through the gateway: the key ranks its task first.
    assert_eq!(key, "ENG-1");
    let found = p.get("/api/v1/search?q=ENG-1&type=task", &uma.token).await;
    assert_eq!(found.status, StatusCode::OK, "{found:?}");
    assert_eq!(found.body["groups"][0]["type"], json!("task"), "{found:?}");
    assert_eq!(found.body["groups"][0]["items"][0]["id"], json!(task_id), "{found:?}");
    assert!(found.body["unavailable_modules"].as_array().is_none_or(Vec::is_empty), "{found:?}");
    let counts = p.get("/api/v1/counts", &uma.token).await;
    assert_eq!(counts.status, StatusCode::OK, "{counts:?}");
    assert_eq!(count(&counts.body["counts"]["tasks"]), 2, "{counts:?}");

    // Flow 11: deleting the parent hides it and its subtask; the trash lists it; restore.
    let sub =
        p.post(&format!("/api/v1/tasks/{task_id}/subtasks"), Some(&alice.token), json!({"title": "Press kit"})).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{sub:?}");
    let deleted = p.call(Method::DELETE, &format!("/api/v1/tasks/{task_id}"), Some(&alice.token), None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    assert_eq!(p.get(&format!("/api/v1/tasks/{task_id}"), &alice.token).await.status, StatusCode::NOT_FOUND);
    // Resolve omits the deleted task and names it missing; counts no longer include it.
    let refs = json!({"refs": [{"type": "task", "id": task_id}, {"type": "board", "id": board_id}]});
    let resolved = p.post("/api/v1/resolve", Some(&alice.token), refs).await;
    assert_eq!(resolved.status, StatusCode::OK, "{resolved:?}");
    let summaries: Vec<&str> =
        resolved.body["summaries"].as_array().map_or(vec![], |s| s.iter().filter_map(|s| s["id"].as_str()).collect());
    assert_eq!(summaries, vec![board_id.as_str()], "{resolved:?}");
    assert_eq!(resolved.body["missing"], json!([{"type": "task", "id": task_id}]), "{resolved:?}");
    let counts = p.get("/api/v1/counts?types=task", &alice.token).await;
    assert_eq!(count(&counts.body["counts"]["tasks"]), 1, "{counts:?}");
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
