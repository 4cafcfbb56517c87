//! The harness: real gRPC backends on ephemeral ports and a gateway in front of them.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ed25519_dalek::SigningKey;
use futures::Stream;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};
use trellis_gateway::upstream::BytesCodec;
use trellis_gateway::{Builder, GatewayConfig, Spawned};
use trellis_kit::auth::revocation::Revocations;
use trellis_kit::auth::{Claims, jwt};
use trellis_kit::config::Config;
use trellis_proto::trellis::identity::v1::api_key_service_server::{ApiKeyService, ApiKeyServiceServer};
use trellis_proto::trellis::identity::v1::token_service_server::{TokenService, TokenServiceServer};
use trellis_proto::trellis::identity::v1::{
    GetJwksRequest, GetJwksResponse, Jwk, ResolveApiKeyRequest, ResolveApiKeyResponse, ResolvedApiKey,
};

use crate::pool::pool;

/// The key id the test identity publishes.
pub const KID: &str = "test-key-1";

/// The key test tokens are signed with.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// identity's `TokenService`, publishing [`signing_key`].
#[derive(Debug)]
struct Tokens;

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn get_jwks(&self, _: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse {
            keys: vec![Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: jwt::jwk_x(&signing_key().verifying_key()),
                kid: KID.into(),
                r#use: "sig".into(),
                alg: "EdDSA".into(),
            }],
        }))
    }

    async fn issue_service_token(
        &self,
        _: Request<trellis_proto::trellis::identity::v1::IssueServiceTokenRequest>,
    ) -> Result<Response<trellis_proto::trellis::identity::v1::IssueServiceTokenResponse>, Status> {
        Err(Status::unimplemented("not part of the fake identity"))
    }

    async fn rotate_signing_key(
        &self,
        _: Request<trellis_proto::trellis::identity::v1::RotateSigningKeyRequest>,
    ) -> Result<Response<trellis_proto::trellis::identity::v1::RotateSigningKeyResponse>, Status> {
        Err(Status::unimplemented("not part of the fake identity"))
    }
}

/// The API keys the fake identity knows: key → (key id, scopes, plan).
pub const KEYS: &[(&str, &str, &[&str], &str)] = &[
    (
        "tk_live_reader0000000000000000000000000000000",
        "0190a5a0-0000-7000-8000-000000000001",
        &["widgets:read"],
        "free",
    ),
    (
        "tk_live_writer0000000000000000000000000000000",
        "0190a5a0-0000-7000-8000-000000000002",
        &["widgets:write"],
        "pro",
    ),
    (
        "tk_live_gadgets000000000000000000000000000000",
        "0190a5a0-0000-7000-8000-000000000003",
        &["gadgets:read"],
        "free",
    ),
];
/// The org of every test key.
pub const KEY_ORG: &str = "0190a5a0-0000-7000-8000-0000000000aa";

/// identity's `ApiKeyService.ResolveApiKey`, over [`KEYS`], counting its calls.
#[derive(Debug)]
struct Keys {
    issuer: String,
    audience: String,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl ApiKeyService for Keys {
    async fn create_api_key(
        &self,
        _: Request<trellis_proto::trellis::identity::v1::CreateApiKeyRequest>,
    ) -> Result<Response<trellis_proto::trellis::identity::v1::CreateApiKeyResponse>, Status> {
        Err(Status::unimplemented("not part of the fake identity"))
    }

    async fn list_api_keys(
        &self,
        _: Request<trellis_proto::trellis::identity::v1::ListApiKeysRequest>,
    ) -> Result<Response<trellis_proto::trellis::identity::v1::ListApiKeysResponse>, Status> {
        Err(Status::unimplemented("not part of the fake identity"))
    }

    async fn get_api_key(
        &self,
        _: Request<trellis_proto::trellis::identity::v1::GetApiKeyRequest>,
    ) -> Result<Response<trellis_proto::trellis::identity::v1::GetApiKeyResponse>, Status> {
        Err(Status::unimplemented("not part of the fake identity"))
    }

    async fn revoke_api_key(
        &self,
        _: Request<trellis_proto::trellis::identity::v1::RevokeApiKeyRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("not part of the fake identity"))
    }

    async fn register_scope_resources(
        &self,
        _: Request<trellis_proto::trellis::identity::v1::RegisterScopeResourcesRequest>,
    ) -> Result<Response<trellis_proto::trellis::identity::v1::RegisterScopeResourcesResponse>, Status> {
        Err(Status::unimplemented("not part of the fake identity"))
    }

    async fn resolve_api_key(
        &self,
        request: Request<ResolveApiKeyRequest>,
    ) -> Result<Response<ResolveApiKeyResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let key = request.into_inner().key;
        let Some((_, id, scopes, plan)) = KEYS.iter().find(|(k, ..)| *k == key) else {
            return Err(trellis_kit::Error::unauthenticated("API_KEY_INVALID", "The API key is invalid").into());
        };
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: format!("api_key:{id}"),
            aud: self.audience.clone(),
            exp: now + 300,
            nbf: None,
            iat: now,
            jti: uuid::Uuid::now_v7().to_string(),
            org: Some(KEY_ORG.into()),
            sid: Some(format!("key:{id}")),
            roles: vec!["member".into()],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            plan: Some(plan.to_string()),
        };
        Ok(Response::new(ResolveApiKeyResponse {
            api_key: Some(ResolvedApiKey {
                id: id.to_string(),
                org_id: KEY_ORG.into(),
                scopes: claims.scopes.clone(),
                expires_at: None,
            }),
            access_token: jwt::sign(&claims, KID, &signing_key()),
        }))
    }
}

/// Serves the test `TokenService` and `ApiKeyService` with tonic's own server; returns its URL
/// and the number of `ResolveApiKey` calls so far.
pub async fn spawn_token_service_for(config: &Config) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind identity");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = Keys { issuer: config.jwt_issuer.clone(), audience: config.jwt_audience.clone(), calls: calls.clone() };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TokenServiceServer::new(Tokens))
            .add_service(ApiKeyServiceServer::new(keys))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), calls)
}

/// The canonical proto3 JSON of a message (camelCase, full enum names), for building replies.
fn to_json(message: &DynamicMessage) -> Value {
    serde_json::to_value(message).expect("message to json")
}

fn from_json(desc: prost_reflect::MessageDescriptor, value: Value) -> Result<Bytes, Status> {
    DynamicMessage::deserialize(desc, value)
        .map(|m| Bytes::from(m.encode_to_vec()))
        .map_err(|e| Status::internal(format!("test backend built a bad reply: {e}")))
}

fn text(message: &DynamicMessage, field: &str) -> String {
    message.get_field_by_name(field).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

async fn unary(method: MethodDescriptor, request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
    let metadata = request.metadata().clone().into_headers();
    let input = DynamicMessage::decode(method.input(), request.into_inner())
        .map_err(|e| Status::internal(format!("undecodable request: {e}")))?;
    let reply = match method.name() {
        "CreateWidget" => {
            let mut widget = to_json(&input);
            widget["id"] = json!(uuid::Uuid::now_v7().to_string());
            widget["createdAt"] = json!("2025-03-30T12:00:00.123456Z");
            json!({ "widget": widget })
        }
        "GetWidget" => match text(&input, "widget_id").as_str() {
            "missing" => {
                return Err(trellis_kit::Error::not_found("WIDGET_NOT_FOUND", "No such widget").into());
            }
            "boom" => {
                return Err(trellis_kit::Error::internal(anyhow::anyhow!("relation widgets.secret is corrupt")).into());
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                json!({ "widget": { "id": "slow" } })
            }
            id => json!({ "widget": {
                "id": id,
                "name": "Widget",
                "status": "WIDGET_STATUS_IN_REVIEW",
                "weight": "9007199254740993",
                "createdAt": "2025-03-30T12:00:00Z",
                "labels": { "k": "v" },
            }}),
        },
        "ListWidgets" => json!({ "echo": to_json(&input), "totalSize": 0 }),
        "ListWidgetKinds" => json!({ "kinds": ["round", "square"] }),
        "UpdateWidget" => to_json(&input),
        "ArchiveWidget" => json!({ "widget": { "id": text(&input, "widget_id"), "name": text(&input, "reason") } }),
        "GetCatalog" => json!({ "section": text(&input, "section") }),
        "Echo" => {
            let seen: serde_json::Map<String, Value> = metadata
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), json!(v))))
                .collect();
            json!({ "message": text(&input, "message"), "metadata": seen })
        }
        "Fail" => {
            let number = |f: &str| input.get_field_by_name(f).map(|v| v.into_owned());
            let code = number("code").and_then(|v| v.as_i32()).unwrap_or(2);
            let mut error =
                trellis_kit::Error::new(tonic::Code::from_i32(code), text(&input, "reason"), text(&input, "message"));
            if !text(&input, "field").is_empty() {
                error = error.with_field(text(&input, "field"), "is wrong");
            }
            let retry = number("retry_after_seconds").and_then(|v| v.as_i64()).unwrap_or_default();
            if retry > 0 {
                error = error.with_retry_after(Duration::from_secs(retry as u64));
            }
            return Err(error.into());
        }
        // DeleteWidget (Empty), PurgeWidgets.
        _ => json!({}),
    };
    Ok(Response::new(from_json(method.output(), reply)?))
}

type WidgetStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

async fn watch(method: MethodDescriptor, request: Request<Bytes>) -> Result<Response<WidgetStream>, Status> {
    let input = DynamicMessage::decode(method.input(), request.into_inner())
        .map_err(|e| Status::internal(format!("undecodable request: {e}")))?;
    let count = input.get_field_by_name("count").and_then(|v| v.as_i32()).unwrap_or_default();
    let output = method.output();
    let items: Vec<Result<Bytes, Status>> =
        (0..count).map(|i| from_json(output.clone(), json!({ "id": format!("w{i}") }))).collect();
    Ok(Response::new(Box::pin(tokio_stream::iter(items))))
}

async fn watch_events(method: MethodDescriptor, request: Request<Bytes>) -> Result<Response<WidgetStream>, Status> {
    let input = DynamicMessage::decode(method.input(), request.into_inner())
        .map_err(|e| Status::internal(format!("undecodable request: {e}")))?;
    let int = |f: &str| input.get_field_by_name(f).and_then(|v| v.as_i32()).unwrap_or_default();
    let after: i64 = text(&input, "last_event_id").parse().unwrap_or(0);
    let (count, idle) = (int("count"), int("idle_ms"));
    let fail = input.get_field_by_name("fail").and_then(|v| v.as_bool()).unwrap_or(false);
    let output = method.output();
    let mut items: Vec<Result<Bytes, Status>> = (0..i64::from(count))
        .map(|i| {
            let id = after + i + 1;
            let event = if id % 2 == 1 {
                json!({"eventId": id.to_string(), "widget": {"id": format!("w{id}"), "status": "WIDGET_STATUS_ACTIVE"}})
            } else {
                json!({"eventId": id.to_string(), "unreadCount": id})
            };
            from_json(output.clone(), event)
        })
        .collect();
    if fail {
        items.push(Err(trellis_kit::Error::not_found("WIDGET_NOT_FOUND", "The widget went away").into()));
    }
    let stream = tokio_stream::StreamExt::chain(
        tokio_stream::iter(items),
        futures::stream::once(async move {
            tokio::time::sleep(Duration::from_millis(idle.max(0) as u64)).await;
            Err(Status::ok("end"))
        }),
    );
    // `Status::ok` marks the end: filter it out so the stream simply finishes.
    let stream = tokio_stream::StreamExt::filter(stream, |item| !matches!(item, Err(s) if s.code() == tonic::Code::Ok));
    Ok(Response::new(Box::pin(stream)))
}

async fn upload(request: Request<Streaming<Bytes>>) -> Result<Response<Bytes>, Status> {
    let mut stream = request.into_inner();
    let mut count = 0;
    while stream.message().await?.is_some() {
        count += 1;
    }
    let output = pool().get_message_by_name("trellis.widgets.v1.UploadWidgetsResponse").expect("type");
    Ok(Response::new(from_json(output, json!({ "count": count }))?))
}

async fn route(request: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
    let path = request.uri().path().to_string();
    let service = pool().get_service_by_name("trellis.widgets.v1.WidgetService").expect("widget service");
    let Some(method) = service.methods().find(|m| format!("/{}/{}", service.full_name(), m.name()) == path) else {
        return Status::unimplemented(path).into_http();
    };
    let mut grpc = tonic::server::Grpc::new(BytesCodec);
    if method.is_client_streaming() {
        grpc.client_streaming(tower::service_fn(upload), request).await
    } else if method.name() == "WatchWidgetEvents" {
        grpc.server_streaming(tower::service_fn(move |r| watch_events(method.clone(), r)), request).await
    } else if method.is_server_streaming() {
        grpc.server_streaming(tower::service_fn(move |r| watch(method.clone(), r)), request).await
    } else {
        grpc.unary(tower::service_fn(move |r| unary(method.clone(), r)), request).await
    }
}

/// Serves `trellis.widgets.v1.WidgetService` dynamically (HTTP/2, tonic's server codec); returns its URL.
pub async fn spawn_widgets() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind widgets");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|r| async move { Ok::<_, Infallible>(route(r).await) });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// The Redis of `cargo xtask test` (rate limits); these tests need it.
pub fn redis_url() -> String {
    std::env::var("TRELLIS_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("TRELLIS_TEST_REDIS_URL is not set: run the gateway tests with `cargo xtask test -p trellis-gateway`")
    })
}

/// A URL where nothing listens.
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// A gateway over the contract plus `trellis.widgets.v1`, with identity's keys and the widget
/// backend behind it.
pub struct Harness {
    /// The running gateway.
    pub gateway: Spawned,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `http://127.0.0.1:<admin port>`.
    pub admin: String,
    /// An HTTP/1.1 client.
    pub http: reqwest::Client,
    /// The cell configuration.
    pub config: Arc<Config>,
    /// How often the gateway asked identity to resolve an API key.
    pub resolve_calls: Arc<AtomicUsize>,
}

impl Harness {
    /// Default settings.
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Settings adjusted by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut GatewayConfig)) -> Harness {
        let widgets = spawn_widgets().await;
        Self::start_on(&widgets, tune).await
    }

    /// With the widget backend at `widgets`.
    pub async fn start_on(widgets: &str, tune: impl FnOnce(&mut GatewayConfig)) -> Harness {
        Self::start_full(widgets, &redis_url(), tune).await
    }

    /// With the widget backend at `widgets` and Redis at `redis`.
    pub async fn start_full(widgets: &str, redis: &str, tune: impl FnOnce(&mut GatewayConfig)) -> Harness {
        Self::start_with_backends(widgets, redis, &[], tune).await
    }

    /// With the widget backend at `widgets`, Redis at `redis`, and more `(module, url)` backends.
    pub async fn start_with_backends(
        widgets: &str,
        redis: &str,
        backends: &[(&str, &str)],
        tune: impl FnOnce(&mut GatewayConfig),
    ) -> Harness {
        Self::launch(widgets, redis, backends, None, tune).await
    }

    /// Default settings, with revoked sessions checked by `revocations`.
    pub async fn start_with_revocations(revocations: Arc<Revocations>) -> Harness {
        let widgets = spawn_widgets().await;
        Self::launch(&widgets, &redis_url(), &[], Some(revocations), |_| {}).await
    }

    async fn launch(
        widgets: &str,
        redis: &str,
        backends: &[(&str, &str)],
        revocations: Option<Arc<Revocations>>,
        tune: impl FnOnce(&mut GatewayConfig),
    ) -> Harness {
        let mut config = Config::from_env();
        config.redis_url = redis.to_string();
        let (identity, resolve_calls) = spawn_token_service_for(&config).await;
        config.urls.identity = identity;
        config.shutdown_grace = Duration::from_secs(2);
        let config = Arc::new(config);
        let mut settings = GatewayConfig::from_env().without_practical_rate_limits();
        settings.modules = Vec::new();
        settings.default_deadline = Duration::from_secs(10);
        settings.body_limit_bytes = 10 * 1024 * 1024;
        tune(&mut settings);
        let mut builder =
            Builder::new(config.clone(), settings).descriptors(pool().clone()).backend("widgets", widgets);
        for (module, url) in backends {
            builder = builder.backend(module, url);
        }
        if let Some(revocations) = revocations {
            let auth = trellis_kit::auth::Authenticator::new(config.clone());
            auth.attach_revocations(revocations);
            builder = builder.authenticator(auth);
        }
        let gateway = builder.spawn().await.expect("the gateway starts");
        let harness = Harness {
            base: format!("http://{}", gateway.addr),
            admin: format!("http://{}", gateway.admin_addr),
            http: reqwest::Client::new(),
            config,
            gateway,
            resolve_calls,
        };
        harness.wait_ready().await;
        harness
    }

    /// Waits until `/readyz` answers 200 (the first JWKS fetch runs in the background).
    pub async fn wait_ready(&self) {
        let url = self.url("/readyz");
        trellis_kit::testing::wait_until(Duration::from_secs(10), || async {
            self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    /// A public-port URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A valid access token, adjusted by `tune`.
    pub fn token_with(&self, tune: impl FnOnce(&mut Claims)) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = Claims {
            iss: self.config.jwt_issuer.clone(),
            sub: uuid::Uuid::now_v7().to_string(),
            aud: self.config.jwt_audience.clone(),
            exp: now + 900,
            nbf: None,
            iat: now,
            jti: uuid::Uuid::now_v7().to_string(),
            org: Some(uuid::Uuid::now_v7().to_string()),
            sid: Some(uuid::Uuid::now_v7().to_string()),
            roles: vec!["member".into()],
            scopes: Vec::new(),
            plan: Some("free".into()),
        };
        tune(&mut claims);
        jwt::sign(&claims, KID, &signing_key())
    }

    /// A valid access token.
    pub fn token(&self) -> String {
        self.token_with(|_| {})
    }

    /// A tonic channel to the public port (h2c).
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.base.clone())
            .expect("url")
            .connect()
            .await
            .expect("h2c connection to the gateway")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.gateway.shutdown.cancel();
    }
}

/// A message framed for gRPC (uncompressed).
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The frames of a gRPC-web body: (flags, payload) each.
pub fn web_frames(mut body: Bytes) -> Vec<(u8, Bytes)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let flags = body.get_u8();
        let len = body.get_u32() as usize;
        assert!(body.len() >= len, "truncated gRPC-web frame");
        frames.push((flags, body.split_to(len)));
    }
    assert!(body.is_empty(), "trailing bytes after the last frame");
    frames
}

/// The trailers of a gRPC-web trailer frame as a header map.
pub fn web_trailers(payload: &[u8]) -> http::HeaderMap {
    let text = std::str::from_utf8(payload).expect("trailers are ASCII");
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').expect("name:value");
            (
                http::HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
                http::HeaderValue::from_str(value.trim()).expect("value"),
            )
        })
        .collect()
}

/// A message of the widgets package from JSON (canonical proto3 JSON), encoded.
pub fn encode(message: &str, value: Value) -> Vec<u8> {
    let desc = pool().get_message_by_name(message).unwrap_or_else(|| panic!("{message} missing"));
    DynamicMessage::deserialize(desc, value).expect("valid message").encode_to_vec()
}

/// A message of the widgets package decoded to canonical JSON.
pub fn decode(message: &str, bytes: &[u8]) -> Value {
    let desc = pool().get_message_by_name(message).unwrap_or_else(|| panic!("{message} missing"));
    to_json(&DynamicMessage::decode(desc, bytes).expect("decodable message"))
}
