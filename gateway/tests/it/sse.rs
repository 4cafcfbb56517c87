//! Server-sent events (Rules 44–47) for the server-streaming `WatchWidgetEvents`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::Harness;

/// One parsed event: (id, event, data) or a comment.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event { id: Option<String>, event: String, data: Value },
    Comment(String),
}

fn parse(text: &str) -> Vec<Item> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            if let Some(comment) = block.strip_prefix(": ") {
                return Item::Comment(comment.trim().to_string());
            }
            let (mut id, mut event, mut data) = (None, String::new(), Value::Null);
            for line in block.lines() {
                let (key, value) = line.split_once(": ").expect("field: value");
                match key {
                    "id" => id = Some(value.to_string()),
                    "event" => event = value.to_string(),
                    "data" => data = serde_json::from_str(value).expect("one line of JSON"),
                    other => panic!("unexpected field {other}"),
                }
            }
            Item::Event { id, event, data }
        })
        .collect()
}

fn events(items: &[Item]) -> Vec<(Option<String>, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event { id, event, .. } => Some((id.clone(), event.clone())),
            Item::Comment(_) => None,
        })
        .collect()
}

async fn open(h: &Harness, query: &str, token: &str) -> reqwest::Response {
    h.http
        .get(h.url(&format!("/api/v1/widgets/events?{query}")))
        .header("accept", "text/event-stream")
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn each_message_is_an_event_with_its_oneof_case_and_id() {
    let h = Harness::start().await;
    let r = open(&h, "count=3", &h.token()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    assert_eq!(r.headers()["x-frame-options"], "DENY", "security headers on SSE too");
    assert!(r.headers().contains_key("x-ratelimit-limit"), "opening a stream counts once");
    let items = parse(&r.text().await.expect("body"));
    assert_eq!(
        events(&items),
        vec![
            (Some("1".into()), "widget".into()),
            (Some("2".into()), "unread_count".into()),
            (Some("3".into()), "widget".into())
        ]
    );
    let Item::Event { data, .. } = &items[0] else { panic!("an event") };
    assert_eq!(data["id"], "w1");
    assert_eq!(data["status"], "active", "data is the transcoder's JSON");
    let Item::Event { data, .. } = &items[1] else { panic!("an event") };
    assert_eq!(data, &json!(2));
}

#[tokio::test]
async fn last_event_id_resumes_from_the_header_or_the_query() {
    let h = Harness::start().await;
    let r = h
        .http
        .get(h.url("/api/v1/widgets/events?count=2"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "4")
        .bearer_auth(h.token())
        .send()
        .await
        .expect("request");
    let ids: Vec<_> = events(&parse(&r.text().await.expect("body"))).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![Some("5".to_string()), Some("6".to_string())]);
    let r = open(&h, "count=1&last_event_id=10", &h.token()).await;
    assert_eq!(events(&parse(&r.text().await.expect("body")))[0].0.as_deref(), Some("11"));
}

#[tokio::test]
async fn without_the_event_stream_accept_header_it_is_406() {
    let h = Harness::start().await;
    let r = h
        .http
        .get(h.url("/api/v1/widgets/events"))
        .header("accept", "application/json")
        .bearer_auth(h.token())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["code"], "NOT_ACCEPTABLE");
}

#[tokio::test]
async fn a_backend_error_becomes_an_error_event_and_the_stream_closes() {
    let h = Harness::start().await;
    let r = open(&h, "count=1&fail=true", &h.token()).await;
    let items = parse(&r.text().await.expect("body"));
    assert_eq!(events(&items).len(), 2);
    let Item::Event { event, data, .. } = items.last().expect("last") else { panic!("an event") };
    assert_eq!(event, "error");
    assert_eq!(data["error"]["code"], "WIDGET_NOT_FOUND");
    assert!(data["error"]["correlation_id"].is_string());
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let h = Harness::start_with(|s| s.edge.sse_heartbeat = Duration::from_millis(150)).await;
    let r = open(&h, "count=1&idle_ms=700", &h.token()).await;
    let items = parse(&r.text().await.expect("body"));
    let pings = items.iter().filter(|i| **i == Item::Comment("ping".into())).count();
    assert!(pings >= 2, "{items:?}");
}

#[tokio::test]
async fn the_access_token_query_parameter_authenticates_sse_only() {
    let h = Harness::start().await;
    let token = h.token();
    let r = h
        .http
        .get(h.url(&format!("/api/v1/widgets/events?count=1&access_token={token}")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(events(&parse(&r.text().await.expect("body"))).len(), 1);
    // Two credentials are refused.
    let r = open(&h, &format!("count=1&access_token={token}"), &token).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // No credential at all.
    let r = h
        .http
        .get(h.url("/api/v1/widgets/events?count=1"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Elsewhere it is an unknown query parameter.
    let r = h.http.get(h.url(&format!("/api/v1/widgets/w1?access_token={token}"))).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_expiring_mid_stream_ends_it_with_token_expired() {
    let h = Harness::start().await;
    let token = h.token_with(|c| c.exp = chrono::Utc::now().timestamp() + 2);
    let started = Instant::now();
    let r = open(&h, "count=1&idle_ms=20000", &token).await;
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("stream ends") {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    assert!(started.elapsed() < Duration::from_secs(8), "closed at exp, not at the backend's end");
    let items = parse(&text);
    let Item::Event { event, data, .. } = items.last().expect("last") else { panic!("an event") };
    assert_eq!(event, "error");
    assert_eq!(data["error"]["code"], "TOKEN_EXPIRED");
}

#[tokio::test]
async fn streams_beyond_the_replica_limit_get_503_with_retry_after() {
    let h = Harness::start_with(|s| s.edge.sse_max_streams = 1).await;
    let first = open(&h, "count=1&idle_ms=3000", &h.token()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open(&h, "count=1", &h.token()).await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()["retry-after"], "5");
    // Closing the first frees the slot.
    drop(first);
    let mut reopened = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        reopened = open(&h, "count=1", &h.token()).await.status();
        if reopened == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reopened, StatusCode::OK);
}

/// Every session is active unless the denylist says otherwise (the feed's job in a cell).
#[derive(Debug)]
struct AllActive;

impl trellis_kit::auth::revocation::SessionStatusSource for AllActive {
    fn is_active<'a>(&'a self, _: &'a str, _: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async { Ok(true) })
    }
}

#[tokio::test]
async fn a_revoked_session_ends_its_stream_within_a_second() {
    let revocations = trellis_kit::auth::revocation::Revocations::new(std::sync::Arc::new(AllActive));
    let h = Harness::start_with_revocations(revocations.clone()).await;
    let sid = uuid::Uuid::now_v7().to_string();
    let token = h.token_with(|c| c.sid = Some(sid.clone()));
    let response = open(&h, "count=1&idle_ms=10000", &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    // The stream flows while the session is active.
    let first = body.next().await.expect("a first frame").expect("bytes");
    assert!(!first.is_empty());
    revocations.note_revoked(&sid);
    let revoked_at = Instant::now();
    let mut text = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(5), body.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
    }
    let elapsed = revoked_at.elapsed();
    let items = parse(&text);
    let last = items.iter().rev().find_map(|i| match i {
        Item::Event { event, data, .. } => Some((event.clone(), data.clone())),
        Item::Comment(_) => None,
    });
    let (event, data) = last.expect("an error event ends the stream");
    assert_eq!(event, "error", "{text}");
    assert_eq!(data["error"]["code"], "SESSION_REVOKED", "{data}");
    assert!(elapsed < Duration::from_secs(3), "the stream ended after {elapsed:?}");
}
