//! Serving a module: the gRPC server (health, reflection, deadlines, a concurrency limit, the
//! request context, RED metrics, graceful shutdown) and its admin HTTP port (`/healthz`,
//! `/readyz`, `/metrics`).
//!
//! [`launch`] is what `trellis serve` and the integration tests both call, so tests exercise the
//! same wiring as production.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::authz::{Authz, Credentials, ServiceTokens};
use crate::config::Config;
use crate::db::Db;
use crate::events::{self, EventBus};
use crate::module::{Module, Runtime};
use crate::telemetry::{Metrics, RpcLabels};

/// What [`launch`] needs.
#[derive(Debug)]
pub struct Launch {
    /// The module to serve.
    pub module: Module,
    /// Shared configuration.
    pub config: Arc<Config>,
    /// Credential verification.
    pub auth: Arc<Authenticator>,
    /// The bound gRPC listener.
    pub grpc: TcpListener,
    /// The bound admin listener.
    pub admin: TcpListener,
    /// Fires on shutdown.
    pub shutdown: CancellationToken,
    /// Where the module's permissions client gets its service tokens; `None`: identity's
    /// IssueServiceToken with the module's derived secret ([`crate::authz::ServiceTokens`]).
    pub credentials: Option<Arc<dyn Credentials>>,
    /// Whether to register the module's schema with the permissions service at start-up (in the
    /// background: readiness does not wait, because identity and permissions need each other).
    pub register_schema: bool,
    /// Whether to register the module's API-key scope resources with identity at start-up (in
    /// the background, retried while identity is unavailable).
    pub register_scope_resources: bool,
}

/// The longest wait between two schema-registration attempts.
pub const SCHEMA_RETRY_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A module that is serving.
#[derive(Debug)]
pub struct Running {
    /// Module name.
    pub name: &'static str,
    /// Where its gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where its admin server listens.
    pub admin_addr: SocketAddr,
    /// Completes when the module has stopped (after shutdown and draining).
    pub handle: JoinHandle<anyhow::Result<()>>,
}

/// Connects the module's pool, starts it, its outbox relay, workers and consumers, and serves
/// its gRPC and admin ports until `shutdown`.
pub async fn launch(launch: Launch) -> anyhow::Result<Running> {
    let Launch { module, config, auth, grpc, admin, shutdown, credentials, register_schema, register_scope_resources } =
        launch;
    let name = module.name;
    let schema = module.schema;
    let scope_resources = module.scope_resources;
    let db = Db::connect(name, &config.db()).await?;
    let bus = EventBus::new(config.clone());
    let credentials: Arc<dyn Credentials> = match credentials {
        Some(credentials) => credentials,
        None => Arc::new(ServiceTokens::new(&config, name)?),
    };
    let authz = Authz::new(&config.urls.permissions, credentials.clone())?;
    let runtime = Runtime {
        name,
        db: db.clone(),
        config: config.clone(),
        auth: auth.clone(),
        events: bus.clone(),
        authz: authz.clone(),
        shutdown: shutdown.clone(),
    };
    let service = module.start(runtime).await?;
    let grpc_addr = grpc.local_addr()?;
    let admin_addr = admin.local_addr()?;

    let mut tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)> = Vec::new();
    tasks.push((
        format!("{name} outbox relay"),
        tokio::spawn(events::run_relay(bus.clone(), db.clone(), shutdown.clone())),
    ));
    for consumer in service.consumers {
        let label = format!("{name} consumer {}", consumer.queue);
        tasks.push((label, tokio::spawn(events::run_consumer(bus.clone(), db.clone(), consumer, shutdown.clone()))));
    }
    if !service.jobs.is_empty() {
        let scheduler = crate::jobs::Scheduler::new(&db, config.clock.clone(), service.jobs);
        tasks.push((
            format!("{name} scheduled jobs"),
            tokio::spawn(scheduler.run(config.jobs_poll_interval, shutdown.clone())),
        ));
    }
    for (worker, fut) in service.workers {
        tasks.push((format!("{name} {worker}"), tokio::spawn(fut)));
    }
    if let (true, Some(schema)) = (register_schema, schema) {
        let stop = shutdown.clone();
        let registration = async move {
            tokio::select! {
                _ = stop.cancelled() => Ok(()),
                result = authz.register_schema(name, schema, SCHEMA_RETRY_MAX_WAIT) => match result {
                    Ok(changed) => {
                        tracing::info!(module = name, changed, "schema registered with permissions");
                        Ok(())
                    }
                    Err(e) => Err(anyhow::anyhow!("registering the schema of {name} was refused: {}", e.message())),
                },
            }
        };
        tasks.push((format!("{name} schema registration"), tokio::spawn(registration)));
    }
    if register_scope_resources && !scope_resources.is_empty() {
        let stop = shutdown.clone();
        let url = config.urls.identity.clone();
        let registration = async move {
            tokio::select! {
                _ = stop.cancelled() => Ok(()),
                result = crate::authz::register_scope_resources(&url, credentials.as_ref(), scope_resources, SCHEMA_RETRY_MAX_WAIT) => {
                    result.map_err(|e| anyhow::anyhow!("registering the scope resources of {name} was refused: {}", e.message()))?;
                    tracing::info!(module = name, "scope resources registered with identity");
                    Ok(())
                }
            }
        };
        tasks.push((format!("{name} scope-resource registration"), tokio::spawn(registration)));
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for svc in &service.names {
        health_reporter.set_service_status(*svc, ServingStatus::Serving).await;
    }
    health_reporter.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(trellis_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let mut routes = service.routes;
    routes.add_service(health_service).add_service(reflection);
    let context_layer =
        ContextLayer { auth, public: Arc::new(crate::descriptors::public_methods().clone()), module: name };
    let server = tonic::transport::Server::builder()
        .timeout(config.grpc_request_timeout)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(config.grpc_concurrency_limit))
        .layer(context_layer)
        .add_routes(routes.routes());

    let admin_router = admin_router(db.clone());
    let admin_shutdown = shutdown.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin, admin_router).with_graceful_shutdown(admin_shutdown.cancelled_owned()).await
    });

    let grpc_shutdown = shutdown.clone();
    let grace = config.shutdown_grace;
    let handle = tokio::spawn(async move {
        // Small gRPC frames must not wait for Nagle's algorithm (40 ms with a delayed ACK); tonic sets
        // TCP_NODELAY only on listeners it binds itself.
        let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
        let drain = async move {
            grpc_shutdown.cancelled().await;
            health_reporter.set_service_status("", ServingStatus::NotServing).await;
            tracing::info!(module = name, "draining");
        };
        let result = server.serve_with_incoming_shutdown(incoming, drain).await;
        for (label, task) in tasks {
            match tokio::time::timeout(grace, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(task = %label, error = format!("{e:#}"), "task failed"),
                Ok(Err(e)) => tracing::error!(task = %label, error = %e, "task panicked"),
                Err(_) => tracing::warn!(task = %label, "task did not stop within the grace period"),
            }
        }
        let _ = admin_task.await;
        tracing::info!(module = name, "stopped");
        result.map_err(anyhow::Error::from)
    });
    tracing::info!(module = name, grpc = %grpc_addr, admin = %admin_addr, "serving");
    Ok(Running { name, grpc_addr, admin_addr, handle })
}

/// `/healthz` (the process runs), `/readyz` (the database answers) and `/metrics`.
pub fn admin_router(db: Db) -> Router {
    Router::new()
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let db = db.clone();
                async move {
                    if db.ping().await {
                        (http::StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"})))
                    } else {
                        (
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"status": "not_ready", "checks": {"database": "down"}})),
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    Metrics::global().encode(),
                )
            }),
        )
}

/// Authenticates each call, attaches its [`crate::context::RequestContext`], opens a span with
/// the correlation id and records RED metrics.
#[derive(Clone, Debug)]
struct ContextLayer {
    auth: Arc<Authenticator>,
    public: Arc<HashSet<String>>,
    module: &'static str,
}

impl<S> tower::Layer<S> for ContextLayer {
    type Service = ContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ContextService { inner, layer: self.clone() }
    }
}

#[derive(Clone, Debug)]
struct ContextService<S> {
    inner: S,
    layer: ContextLayer,
}

fn is_infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, B> tower::Service<http::Request<B>> for ContextService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            if is_infrastructure(&path) {
                return inner.call(request).await;
            }
            let started = Instant::now();
            let public = layer.public.contains(&path);
            let ctx = match layer.auth.authenticate(request.headers(), public).await {
                Ok(ctx) => ctx,
                Err(e) => {
                    let status = Status::from(e);
                    record(layer.module, &path, status.code(), started);
                    return Ok(status.into_http());
                }
            };
            let span =
                tracing::info_span!("rpc", module = layer.module, method = %path, correlation_id = %ctx.correlation_id);
            request.extensions_mut().insert(ctx);
            let response = inner.call(request).instrument(span).await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from_i32)
                .unwrap_or(tonic::Code::Ok);
            record(layer.module, &path, code, started);
            Ok(response)
        })
    }
}

fn record(module: &str, method: &str, code: tonic::Code, started: Instant) {
    let metrics = Metrics::global();
    let labels =
        RpcLabels { module: module.to_string(), method: method.to_string(), code: code_name(code).to_string() };
    metrics.rpc_requests.get_or_create(&labels).inc();
    metrics.rpc_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
}

/// The canonical UPPER_SNAKE name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
