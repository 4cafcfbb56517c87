//! What a service crate hands to the `trellis` binary: its name, migrations and a start function.
//!
//! `services/<name>/src/lib.rs` exposes `pub fn module(..) -> kit::Module`. The binary (or a test)
//! migrates it, connects its pool, calls [`Module::start`] with a [`Runtime`], and serves the
//! returned [`Service`]: gRPC routes, background workers (outbox relay), periodic jobs
//! ([`crate::jobs`]) and event consumers.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::db::Db;
use crate::events::{Consumer, EventBus};

/// The seven bounded contexts, in port order (50061..50067).
pub const SERVICES: [&str; 7] = ["identity", "permissions", "tasks", "crm", "documents", "finance", "notifications"];

/// The future a module's start function returns.
pub type StartFuture = BoxFuture<'static, anyhow::Result<Service>>;

/// A bounded context as the binary sees it.
pub struct Module {
    /// The context name; also its schema and the prefix of its role (`tasks`, `tasks_svc`).
    pub name: &'static str,
    /// Its embedded migrations (`sqlx::migrate!()`), applied after kit's tables.
    pub migrator: &'static Migrator,
    /// The module's authorization schema (`schema.zed`), registered with the permissions service
    /// at start-up (see [`crate::authz::Authz::register_schema`]).
    pub schema: Option<&'static str>,
    /// The API-key scope resources the module's methods declare (`tasks`, ...), as
    /// `(resource, description)`; registered with identity at start-up (spec rule 13).
    pub scope_resources: &'static [(&'static str, &'static str)],
    /// Kit components whose tables live in the module's schema (see [`crate::db::KitParts`]).
    pub kit_parts: crate::db::KitParts,
    start: Box<dyn FnOnce(Runtime) -> StartFuture + Send>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Module {
    /// A module with a start function.
    pub fn new(
        name: &'static str,
        migrator: &'static Migrator,
        start: impl FnOnce(Runtime) -> StartFuture + Send + 'static,
    ) -> Self {
        Self {
            name,
            migrator,
            schema: None,
            scope_resources: &[],
            kit_parts: crate::db::KitParts::default(),
            start: Box::new(start),
        }
    }

    /// Declares the module's `schema.zed` (`include_str!("../schema.zed")`).
    pub fn with_schema(mut self, schema: &'static str) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Declares the module's API-key scope resources (`&[("tasks", "Boards and tasks")]`).
    pub fn with_scope_resources(mut self, resources: &'static [(&'static str, &'static str)]) -> Self {
        self.scope_resources = resources;
        self
    }

    /// Mounts [`crate::collab`]: kit installs the comments, tags, entity links and activity
    /// tables in the module's schema before its own migrations.
    pub fn with_collab(mut self) -> Self {
        self.kit_parts.collab = true;
        self
    }

    /// Builds the module's service from its runtime.
    pub async fn start(self, runtime: Runtime) -> anyhow::Result<Service> {
        (self.start)(runtime).await
    }
}

/// What a module's start function receives.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The module name.
    pub name: &'static str,
    /// Its database, connected as its own role.
    pub db: Db,
    /// The shared configuration.
    pub config: Arc<Config>,
    /// Access-token verification (JWKS from identity).
    pub auth: Arc<Authenticator>,
    /// The cell's event exchange.
    pub events: EventBus,
    /// The permissions client, acting as `service:<name>` with service tokens from identity.
    pub authz: crate::authz::Authz,
    /// Cancelled on SIGTERM/Ctrl-C; workers stop when it fires.
    pub shutdown: CancellationToken,
}

/// A running module's parts.
#[derive(Default)]
pub struct Service {
    pub(crate) routes: tonic::service::RoutesBuilder,
    pub(crate) names: Vec<&'static str>,
    pub(crate) workers: Vec<(&'static str, BoxFuture<'static, anyhow::Result<()>>)>,
    pub(crate) consumers: Vec<Consumer>,
    pub(crate) jobs: Vec<crate::jobs::Job>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("names", &self.names)
            .field("consumers", &self.consumers.len())
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// An empty service (a module with no RPCs yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tonic service.
    pub fn grpc<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Adds a background worker that runs until shutdown (a relay, a scheduler).
    pub fn worker(
        mut self,
        name: &'static str,
        fut: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        self.workers.push((name, Box::pin(fut)));
        self
    }

    /// Adds an event consumer.
    pub fn consumer(mut self, consumer: Consumer) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// Adds a periodic job, run by the service's [`crate::jobs::Scheduler`] once per occurrence
    /// across all replicas (missed occurrences are caught up after a restart).
    pub fn job(mut self, job: crate::jobs::Job) -> Self {
        self.jobs.push(job);
        self
    }

    /// The fully qualified gRPC service names (for health and reflection).
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}
