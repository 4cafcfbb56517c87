//! The fan-out endpoints (search, resolve, counts) over two fake modules, `gadgets` and `gizmos`,
//! each a real `trellis.common.v1.EntityService` on its own port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use trellis_proto::trellis::common::v1 as common;
use trellis_proto::trellis::common::v1::entity_service_server::{EntityService, EntityServiceServer};
use trellis_proto::trellis::gateway::v1 as pb;
use trellis_proto::trellis::gateway::v1::fanout_service_client::FanoutServiceClient;

use crate::common::{Harness, KEYS, redis_url, spawn_widgets};

/// One fake module: answers for one entity type, optionally slowly or with an error, and
/// remembers the calls it got (method and `authorization`).
#[derive(Debug, Clone)]
struct Module {
    ty: &'static str,
    collection: &'static str,
    rank: f64,
    delay: Duration,
    fail: bool,
    count: i64,
    calls: Arc<Mutex<Vec<(&'static str, String)>>>,
}

impl Module {
    fn new(ty: &'static str, collection: &'static str, rank: f64) -> Self {
        Self { ty, collection, rank, delay: Duration::ZERO, fail: false, count: 7, calls: Arc::default() }
    }

    async fn enter<T>(&self, method: &'static str, request: &Request<T>) -> Result<(), Status> {
        let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        self.calls.lock().expect("calls").push((method, auth));
        tokio::time::sleep(self.delay).await;
        if self.fail { Err(Status::internal("broken module")) } else { Ok(()) }
    }

    fn summary(&self, id: &str, rank: f64) -> common::EntitySummary {
        common::EntitySummary {
            id: id.into(),
            r#type: self.ty.into(),
            title: format!("{} {id}", self.ty),
            url: format!("/{}/{id}", self.collection),
            rank,
            ..Default::default()
        }
    }

    fn calls(&self) -> Vec<(&'static str, String)> {
        self.calls.lock().expect("calls").clone()
    }
}

#[tonic::async_trait]
impl EntityService for Module {
    async fn resolve(
        &self,
        request: Request<common::ResolveRequest>,
    ) -> Result<Response<common::ResolveResponse>, Status> {
        self.enter("resolve", &request).await?;
        // Known ids start with `k`; answered in reverse order, so the gateway must restore it.
        let (known, missing): (Vec<_>, Vec<_>) =
            request.into_inner().refs.into_iter().partition(|r| r.id.starts_with('k'));
        let summaries = known.iter().rev().map(|r| self.summary(&r.id, 0.0)).collect();
        Ok(Response::new(common::ResolveResponse { summaries, missing }))
    }

    async fn search(
        &self,
        request: Request<common::SearchRequest>,
    ) -> Result<Response<common::SearchResponse>, Status> {
        self.enter("search", &request).await?;
        let req = request.into_inner();
        let items = (0..req.limit.min(3))
            .map(|i| self.summary(&format!("{}-{}", req.query, i), self.rank - f64::from(i) / 100.0))
            .collect();
        Ok(Response::new(common::SearchResponse {
            groups: vec![
                common::SearchGroup { r#type: self.ty.into(), items },
                // A type nobody asked this module about is dropped by the gateway.
                common::SearchGroup { r#type: "stowaway".into(), items: vec![self.summary("s", 99.0)] },
            ],
        }))
    }

    async fn count(&self, request: Request<common::CountRequest>) -> Result<Response<common::CountResponse>, Status> {
        self.enter("count", &request).await?;
        Ok(Response::new(common::CountResponse { counts: [(self.collection.to_string(), self.count)].into() }))
    }
}

async fn serve(module: Module) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EntityServiceServer::new(module))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

struct Cell {
    harness: Harness,
    gadgets: Module,
    gizmos: Module,
}

async fn cell(gadgets: Module, gizmos: Module) -> Cell {
    let (g, z) = (serve(gadgets.clone()).await, serve(gizmos.clone()).await);
    let widgets = spawn_widgets().await;
    let harness = Harness::start_with_backends(&widgets, &redis_url(), &[("gadgets", &g), ("gizmos", &z)], |s| {
        s.fanout_timeout = Duration::from_millis(200);
    })
    .await;
    Cell { harness, gadgets, gizmos }
}

impl Cell {
    async fn get(&self, path: &str, credential: &str) -> (u16, Value) {
        let response =
            self.harness.http.get(self.harness.url(path)).bearer_auth(credential).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, credential: &str, body: Value) -> (u16, Value) {
        let response = self
            .harness
            .http
            .post(self.harness.url(path))
            .bearer_auth(credential)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn list(v: &Value, field: &str) -> Vec<Value> {
    v.get(field).and_then(Value::as_array).cloned().unwrap_or_default()
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    list(v, field).iter().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

/// `key` of every item of the list `field`.
fn pluck(v: &Value, field: &str, key: &str) -> Vec<String> {
    list(v, field).iter().filter_map(|i| i[key].as_str().map(str::to_string)).collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(-1)
}

#[tokio::test]
async fn search_orders_groups_by_best_rank_with_the_callers_token() {
    let c = cell(Module::new("gadget", "gadgets", 0.5), Module::new("gizmo", "gizmos", 0.9)).await;
    let token = c.harness.token();
    let (status, body) = c.get("/api/v1/search?q=%20lamp%20&type=gadget,gizmo&limit=2", &token).await;
    assert_eq!(status, 200, "{body}");
    let groups = list(&body, "groups");
    assert_eq!(pluck(&body, "groups", "type"), ["gizmo", "gadget"], "best rank first, stowaway groups dropped: {body}");
    assert_eq!(
        pluck(&groups[0], "items", "id"),
        ["lamp-0", "lamp-1"],
        "trimmed query, the limit passed through: {body}"
    );
    assert!(strings(&body, "unavailable_modules").is_empty(), "{body}");
    for module in [&c.gadgets, &c.gizmos] {
        assert_eq!(module.calls(), vec![("search", format!("Bearer {token}"))], "one call with the caller's token");
    }

    // Repeated `type` parameters work like a comma list; one type calls one module.
    let (status, body) = c.get("/api/v1/search?q=lamp&type=gadget&type=gadget", &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list(&body, "groups").len(), 1, "{body}");
    assert_eq!(c.gizmos.calls().len(), 1, "gizmos was not asked again");
}

#[tokio::test]
async fn search_validates_the_query_the_types_and_the_limit() {
    let c = cell(Module::new("gadget", "gadgets", 0.5), Module::new("gizmo", "gizmos", 0.9)).await;
    let token = c.harness.token();
    let long = "x".repeat(201);
    for (path, field, code) in [
        ("/api/v1/search?q=%20%20", "q", "VALIDATION_ERROR"),
        (&format!("/api/v1/search?q={long}") as &str, "q", "VALIDATION_ERROR"),
        ("/api/v1/search?q=a&limit=-1", "limit", "VALIDATION_ERROR"),
        ("/api/v1/search?q=a&type=gadget,doohickey", "type", "UNKNOWN_ENTITY_TYPE"),
    ] {
        let (status, body) = c.get(path, &token).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(pluck(&body["error"], "details", "field"), [field], "{path}: {body}");
        if code != "VALIDATION_ERROR" {
            assert_eq!(body["error"]["code"], code, "{path}: {body}");
        }
    }
    assert!(c.gadgets.calls().is_empty() && c.gizmos.calls().is_empty(), "nothing reached a module");
    let (status, _) = c.get("/api/v1/search?q=lamp", "not-a-token").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_slow_or_broken_module_is_named_and_all_failing_is_unavailable() {
    let slow = Module { delay: Duration::from_secs(2), ..Module::new("gizmo", "gizmos", 0.9) };
    let c = cell(Module::new("gadget", "gadgets", 0.5), slow).await;
    let token = c.harness.token();
    let (status, body) = c.get("/api/v1/search?q=lamp&type=gadget,gizmo", &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(strings(&body, "unavailable_modules"), ["gizmos"], "{body}");
    assert_eq!(list(&body, "groups").len(), 1, "{body}");
    let (status, body) = c.get("/api/v1/counts?types=gadget,gizmo", &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(int(&body["counts"]["gadgets"]), 7, "{body}");
    assert!(body["counts"].get("gizmos").is_none(), "{body}");
    assert_eq!(strings(&body, "unavailable_modules"), ["gizmos"], "{body}");

    let broken = Module { fail: true, ..Module::new("gadget", "gadgets", 0.5) };
    let slow = Module { delay: Duration::from_secs(2), ..Module::new("gizmo", "gizmos", 0.9) };
    let c = cell(broken, slow).await;
    let (status, body) = c.get("/api/v1/search?q=lamp&type=gadget,gizmo", &token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "MODULES_UNAVAILABLE", "{body}");
}

#[tokio::test]
async fn resolve_keeps_request_order_collapses_duplicates_and_hides_what_is_missing() {
    let c = cell(Module::new("gadget", "gadgets", 0.5), Module::new("gizmo", "gizmos", 0.9)).await;
    let token = c.harness.token();
    let refs = json!({"refs": [
        {"type": "gizmo", "id": "k1"},
        {"type": "gadget", "id": "k2"},
        {"type": "gadget", "id": "nope"},
        {"type": "gizmo", "id": "k1"},
        {"type": "gadget", "id": "k3"},
    ]});
    let (status, body) = c.post("/api/v1/resolve", &token, refs).await;
    assert_eq!(status, 200, "{body}");
    let found: Vec<(String, String)> = list(&body, "summaries")
        .iter()
        .map(|s| (s["type"].as_str().unwrap_or("").to_string(), s["id"].as_str().unwrap_or("").to_string()))
        .collect();
    let expected = [("gizmo", "k1"), ("gadget", "k2"), ("gadget", "k3")].map(|(t, i)| (t.to_string(), i.to_string()));
    assert_eq!(found, expected, "{body}");
    assert_eq!(list(&body, "missing"), vec![json!({"type": "gadget", "id": "nope"})], "{body}");

    // `{type, ids}` is the same request for one type.
    let (status, body) = c.post("/api/v1/resolve", &token, json!({"type": "gadget", "ids": ["k9", "x"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list(&body, "summaries").len(), 1, "{body}");
    assert_eq!(list(&body, "missing"), vec![json!({"type": "gadget", "id": "x"})], "{body}");

    for bad in [
        json!({"refs": [{"type": "doohickey", "id": "k1"}]}),
        json!({"refs": []}),
        json!({"type": "gadget", "ids": (0..101).map(|i| format!("k{i}")).collect::<Vec<_>>()}),
    ] {
        let (status, body) = c.post("/api/v1/resolve", &token, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn api_keys_reach_only_the_modules_they_may_read() {
    let c = cell(Module::new("gadget", "gadgets", 0.5), Module::new("gizmo", "gizmos", 0.9)).await;
    let key = KEYS.iter().find(|k| k.2 == ["gadgets:read"]).expect("a gadgets key").0;
    let (status, body) = c.get("/api/v1/search?q=lamp&type=gadget,gizmo", key).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pluck(&body, "groups", "type"), ["gadget"], "{body}");
    assert!(c.gizmos.calls().is_empty(), "the key may not read gizmos, so gizmos was never called");
    let (status, body) = c.post("/api/v1/resolve", key, json!({"refs": [{"type": "gizmo", "id": "k1"}]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list(&body, "missing").len(), 1, "an unreadable type looks missing: {body}");
    assert!(c.gizmos.calls().is_empty());
}

#[tokio::test]
async fn the_fanout_answers_native_grpc_like_every_other_method() {
    let c = cell(Module::new("gadget", "gadgets", 0.5), Module::new("gizmo", "gizmos", 0.9)).await;
    let mut client = FanoutServiceClient::new(c.harness.channel().await);
    let mut request = Request::new(pb::CountsRequest { types: vec!["gadget".into(), "gizmo".into()] });
    request.metadata_mut().insert("authorization", format!("Bearer {}", c.harness.token()).parse().expect("header"));
    let counts = client.counts(request).await.expect("counts over gRPC").into_inner();
    assert_eq!(counts.counts.get("gadgets"), Some(&7));
    assert_eq!(counts.counts.get("gizmos"), Some(&7));
    let status = client.counts(pb::CountsRequest::default()).await.expect_err("no credential");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
