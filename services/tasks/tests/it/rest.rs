//! The acceptance flows through the gateway's REST transcoding, the way a browser calls them.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trellis_gateway::{Builder, GatewayConfig};
use trellis_kit::testing::TestCell;
use uuid::Uuid;

use crate::common::cell;

pub(crate) struct Rest {
    http: reqwest::Client,
    base: String,
    token: String,
    _gateway: trellis_gateway::Spawned,
}

impl Rest {
    pub(crate) async fn start(cell: &TestCell) -> Rest {
        let gateway = Builder::new(cell.config.clone(), GatewayConfig::from_env())
            .authenticator(cell.auth.clone())
            .spawn()
            .await
            .unwrap_or_else(|e| panic!("starting the gateway: {e:#}"));
        Rest {
            http: reqwest::Client::new(),
            base: format!("http://{}", gateway.addr),
            token: cell.token(Uuid::now_v7(), Uuid::now_v7()),
            _gateway: gateway,
        }
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }
}

pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn boards_tasks_moves_and_dependencies_over_rest() {
    let cell = cell().await;
    let rest = Rest::start(&cell).await;

    // Flow 1: board with five columns; the key again is a conflict; QA added in the given order.
    let (status, board) =
        rest.call(Method::POST, "/api/v1/boards", Some(json!({"name": "Engineering", "key": "ENG"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{board}");
    let board = &board["board"];
    let columns = board["columns"].as_array().cloned().unwrap_or_default();
    assert_eq!(columns.len(), 5);
    let (status, body) = rest.call(Method::POST, "/api/v1/boards", Some(json!({"name": "Again", "key": "ENG"}))).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "BOARD_KEY_TAKEN"));
    let board_id = board["id"].as_str().unwrap_or_default().to_string();
    let mut list: Vec<Value> =
        columns.iter().map(|c| json!({"id": c["id"], "name": c["name"], "status": c["status"]})).collect();
    list.insert(4, json!({"name": "QA", "status": "in_review", "wip_limit": 1}));
    let (status, body) =
        rest.call(Method::PATCH, &format!("/api/v1/boards/{board_id}/columns"), Some(json!({"columns": list}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> =
        body["board"]["columns"].as_array().map_or(vec![], |c| c.iter().filter_map(|c| c["name"].as_str()).collect());
    assert_eq!(names, ["Backlog", "To do", "In progress", "In review", "QA", "Done"]);

    // Flow 2: a task in To do gets key ENG-1; a 501-character title is a 400 naming `title`.
    let todo = columns[1]["id"].as_str().unwrap_or_default();
    let create = |title: String| json!({"title": title, "board_id": board_id, "column_id": todo});
    let (status, a) = rest.call(Method::POST, "/api/v1/tasks", Some(create("A".into()))).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!((a["task"]["key"].as_str(), a["task"]["status"].as_str()), (Some("ENG-1"), Some("todo")));
    let (status, body) = rest.call(Method::POST, "/api/v1/tasks", Some(create("x".repeat(501)))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"][0]["field"], "title");
    let (_, b) = rest.call(Method::POST, "/api/v1/tasks", Some(create("B".into()))).await;
    let a_id = a["task"]["id"].as_str().unwrap_or_default().to_string();
    let b_id = b["task"]["id"].as_str().unwrap_or_default().to_string();

    // Flow 3: a move into In progress after nothing (end of column).
    let progress = columns[2]["id"].as_str().unwrap_or_default();
    let (status, moved) =
        rest.call(Method::PATCH, &format!("/api/v1/tasks/{a_id}/move"), Some(json!({"column_id": progress}))).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["task"]["status"], "in_progress");
    assert!(moved["task"]["started_at"].is_string());

    // Flow 5: dependencies, cycle 409, duplicate 409, self 400; completion unblocks.
    let dep = |blocker: &str| json!({"depends_on_id": blocker, "type": "finish_to_start", "lag_days": 2});
    let (status, body) = rest.call(Method::POST, &format!("/api/v1/tasks/{b_id}/dependencies"), Some(dep(&a_id))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["task"]["is_blocked"], true);
    let (status, body) = rest.call(Method::POST, &format!("/api/v1/tasks/{a_id}/dependencies"), Some(dep(&b_id))).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "DEPENDENCY_CYCLE"));
    let (status, body) = rest.call(Method::POST, &format!("/api/v1/tasks/{b_id}/dependencies"), Some(dep(&a_id))).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "DEPENDENCY_EXISTS"));
    let (status, _) = rest.call(Method::POST, &format!("/api/v1/tasks/{b_id}/dependencies"), Some(dep(&b_id))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = rest.call(Method::POST, &format!("/api/v1/tasks/{a_id}/complete"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unblocked_tasks"][0]["id"], b_id.as_str());

    // Flow 14: two PATCHes with one version: one 200, one 409 VERSION_MISMATCH.
    let version = b["task"]["version"].clone();
    let patch = |title: &str| json!({"title": title, "version": version});
    let path = format!("/api/v1/tasks/{b_id}");
    let (first, second) = tokio::join!(
        rest.call(Method::PATCH, &path, Some(patch("one"))),
        rest.call(Method::PATCH, &path, Some(patch("two")))
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let loser = if first.0 == StatusCode::CONFLICT { &first.1 } else { &second.1 };
    assert_eq!(code(loser), "VERSION_MISMATCH");

    // Flow 11 (part): DELETE → 200 with deleted_at, GET → 404, restore → 200.
    let (status, body) = rest.call(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["task"]["deleted_at"].is_string());
    assert_eq!(rest.call(Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    let (status, _) = rest.call(Method::POST, &format!("/api/v1/trash/tasks/{b_id}/restore"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest.call(Method::GET, &path, None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn lists_filter_sort_search_and_render_views_over_rest() {
    let cell = cell().await;
    let rest = Rest::start(&cell).await;
    let (_, board) =
        rest.call(Method::POST, "/api/v1/boards", Some(json!({"name": "Engineering", "key": "ENG"}))).await;
    let board_id = board["board"]["id"].as_str().unwrap_or_default().to_string();
    let mut ids = Vec::new();
    for title in ["Deploy pipeline", "Write docs", "Fix login"] {
        let (status, task) =
            rest.call(Method::POST, "/api/v1/tasks", Some(json!({"title": title, "board_id": board_id}))).await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        ids.push(task["task"]["id"].as_str().unwrap_or_default().to_string());
    }
    let due = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let (status, body) = rest
        .call(Method::PATCH, &format!("/api/v1/tasks/{}", ids[2]), Some(json!({"priority": "urgent", "due_date": due})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let get = |query: String| {
        let path = format!("/api/v1/tasks?{query}");
        let rest = &rest;
        async move { rest.call(Method::GET, &path, None).await }
    };
    let titles = |body: &Value, key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .map_or(vec![], |t| t.iter().filter_map(|t| t["title"].as_str().map(String::from)).collect())
    };
    let (status, body) = get("filter=priority%20%3E%3D%20high&order_by=title".into()).await;
    assert_eq!((status, titles(&body, "tasks")), (StatusCode::OK, vec!["Fix login".to_string()]), "{body}");
    let (status, body) = get("order_by=title%20desc".into()).await;
    assert_eq!(
        (status, titles(&body, "tasks")),
        (StatusCode::OK, vec!["Write docs".into(), "Fix login".into(), "Deploy pipeline".into()])
    );
    let (status, body) = get("q=deplo".into()).await;
    assert_eq!((status, titles(&body, "tasks")), (StatusCode::OK, vec!["Deploy pipeline".to_string()]));
    let (status, body) = get("q=ENG-2&include_aggregations=true".into()).await;
    assert_eq!(titles(&body, "tasks").first().map(String::as_str), Some("Write docs"), "{status} {body}");
    let from = chrono::Utc::now().to_rfc3339().replace('+', "%2B");
    let to = (chrono::Utc::now() + chrono::Duration::days(7)).to_rfc3339().replace('+', "%2B");
    let (status, body) = get(format!("view=calendar&from={from}&to={to}")).await;
    assert_eq!((status, titles(&body, "tasks")), (StatusCode::OK, vec!["Fix login".to_string()]), "{body}");
    let (status, body) = get(format!("view=gantt&board_id={board_id}")).await;
    assert_eq!(
        (status, titles(&body, "tasks"), titles(&body, "unscheduled").len()),
        (StatusCode::OK, vec!["Fix login".to_string()], 2)
    );
    let (status, body) = get("filter=colour%3Dred".into()).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"));
    assert_eq!(body["error"]["details"][0]["field"], "filter", "{body}");
    let (status, body) = get("include_closed=false&include_aggregations=true".into()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["aggregations"]["by_status"]["todo"], 3, "{body}");
}
