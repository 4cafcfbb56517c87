//! The gateway: the one port a client outside the cell uses.
//!
//! Everything is derived from the contract at start-up: the routes are the `google.api.http`
//! bindings of the descriptor set (`trellis_kit::descriptors::pool()`), requests and responses
//! are transcoded through `prost_reflect::DynamicMessage`, and no endpoint has a handler of its
//! own. Adding an RPC with an HTTP rule to `proto/` is all it takes to expose it.
//!
//! # Layout
//! - [`http`]: the server (HTTP/1.1 and h2c on one port), dispatch to a surface, correlation
//!   ids, security headers, `/healthz` and `/readyz`, the admin port.
//! - [`routes`]: the route table: path templates, precedence, conflicts; methods by gRPC path.
//! - [`auth`]: admission: credentials (the shared `trellis_kit::auth::Authenticator`), rate
//!   limits and API-key scopes.
//! - [`ratelimit`]: the limiters of Rule 30, GCRA in one Redis script, in-memory fallback.
//! - [`rest`]: the REST/JSON surface; [`transcode`]: JSON ⇄ `DynamicMessage`.
//! - [`sse`]: server-sent events for server-streaming GET bindings.
//! - [`grpc_web`]: gRPC-web (binary and text) translated to native gRPC.
//! - [`passthrough`]: native gRPC forwarded frame by frame.
//! - [`upstream`]: one channel per backend module; raw unary calls and HTTP/2 forwarding.
//! - [`errors`]: gRPC status → HTTP status and the error envelope, in one table.
//! - [`openapi`]: `/openapi.json`, generated from the route table at start.
//! - [`metrics`]: the `gateway_*` Prometheus families.
//!
//! A REST request flows: [`http::public`] (correlation id) → [`rest::handle`] → route lookup
//! ([`routes::RouteTable::find`]; 404/405) → module enabled? → [`auth::authenticate_counted`]
//! (401) → body ([`transcode::parse_json`]; 413/415) → [`auth::limit_and_scope`] (429, 403) → [`transcode::request_message`] (400 naming the
//! field) → [`upstream::Upstreams::unary`] to the module's backend → [`transcode::message_to_json`]
//! → 200/201 + `Location`/204/302, or [`errors::ApiError::from_status`] → the envelope.

pub mod apikeys;
pub mod auth;
pub mod cookies;
pub mod errors;
pub mod fanout;
pub mod fuzzing;
pub mod grpc_web;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod passthrough;
pub mod ratelimit;
pub mod readiness;
pub mod rest;
pub mod routes;
pub mod sse;
pub mod transcode;
pub mod upstream;

#[cfg(test)]
#[path = "../testdata/pool.rs"]
mod test_pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost_reflect::DescriptorPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trellis_kit::auth::Authenticator;
use trellis_kit::config::{Config, parse_duration};

use crate::http::{Gateway, Settings};
use crate::metrics::GatewayMetrics;
use crate::ratelimit::RateLimiter;
use crate::routes::RouteTable;
use crate::upstream::Upstreams;

/// Gateway settings.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Public listen address (REST, gRPC-web and native gRPC on one port).
    #[arg(long = "gateway-listen", env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Admin listen address (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long = "gateway-admin-listen", env = "GATEWAY_ADMIN_LISTEN", default_value = "0.0.0.0:9060")]
    pub admin_listen: String,
    /// Modules enabled in this cell, comma-separated; empty = all. identity, permissions and
    /// notifications are always on. Routes of other modules answer 404 MODULE_DISABLED.
    #[arg(long = "modules", env = "TRELLIS_MODULES", value_delimiter = ',')]
    pub modules: Vec<String>,
    /// Largest accepted request body (REST) or message (gRPC, gRPC-web), in bytes.
    #[arg(long = "body-limit-bytes", env = "BODY_LIMIT_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub body_limit_bytes: usize,
    /// Deadline of unary calls whose method declares none (`30s`, `500ms`, ...).
    #[arg(long = "default-deadline", env = "DEFAULT_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub default_deadline: Duration,
    /// Upper bound of every deadline, including those clients ask for with `grpc-timeout`.
    #[arg(long = "max-deadline", env = "MAX_DEADLINE", default_value = "60s", value_parser = parse_duration)]
    pub max_deadline: Duration,
    /// Time each module gets to answer a fan-out call (search, resolve, counts) before it is
    /// reported in `unavailable_modules`.
    #[arg(long = "fanout-timeout", env = "FANOUT_TIMEOUT", default_value = "250ms", value_parser = parse_duration)]
    pub fanout_timeout: Duration,
    /// Edge policy: CORS, proxies, HSTS, SSE and rate limits.
    #[command(flatten)]
    pub edge: Box<EdgeConfig>,
}

/// The gateway's edge policy settings (boxed inside [`GatewayConfig`] to keep it small).
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeConfig {
    /// Origins allowed to call the API from a browser, comma-separated, exact
    /// `scheme://host[:port]` (no wildcards: credentials are allowed). Empty = no cross-origin access.
    #[arg(long = "cors-allowed-origins", env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed, as CIDRs
    /// (`10.0.0.0/8,::1/128`); the client IP is the rightmost untrusted `X-Forwarded-For` entry.
    #[arg(long = "trusted-proxies", env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = http::Cidr::parse)]
    pub trusted_proxies: Vec<http::Cidr>,
    /// `max-age` of `Strict-Transport-Security` (sent only on requests that arrived over HTTPS).
    #[arg(long = "hsts-max-age", env = "HSTS_MAX_AGE", default_value_t = 31_536_000)]
    pub hsts_max_age: u64,
    /// Adds `preload` to `Strict-Transport-Security`.
    #[arg(long = "hsts-preload", env = "HSTS_PRELOAD", default_value_t = false)]
    pub hsts_preload: bool,
    /// Whether cookies (the browser refresh and CSRF cookies) carry `Secure`. `false` is for
    /// plain-HTTP development on a LAN only.
    #[arg(long = "cookie-secure", env = "COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,
    /// Idle time after which an SSE stream gets a `: ping` comment.
    #[arg(long = "sse-heartbeat", env = "SSE_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub sse_heartbeat: Duration,
    /// Open SSE streams per replica; more answer 503 with `Retry-After: 5`.
    #[arg(long = "sse-max-streams", env = "SSE_MAX_STREAMS", default_value_t = 10_000)]
    pub sse_max_streams: usize,
    /// Requests without a credential, per client IP.
    #[arg(long = "rate-limit-anonymous", env = "RATE_LIMIT_ANONYMOUS", default_value = "100/15m")]
    pub rate_limit_anonymous: ratelimit::Limit,
    /// Requests with a user token, per user, across orgs.
    #[arg(long = "rate-limit-user", env = "RATE_LIMIT_USER", default_value = "1000/1h")]
    pub rate_limit_user: ratelimit::Limit,
    /// Requests with an API key, per key: one limit, or `free=…,pro=…,enterprise=…`.
    #[arg(
        long = "rate-limit-api-key",
        env = "RATE_LIMIT_API_KEY",
        default_value = "free=100/1m,pro=1000/1m,enterprise=10000/1m"
    )]
    pub rate_limit_api_key: ratelimit::PlanLimits,
    /// Authenticated requests per org: one limit, or `free=…,pro=…,enterprise=…`.
    #[arg(
        long = "rate-limit-org",
        env = "RATE_LIMIT_ORG",
        default_value = "free=1000/1m,pro=10000/1m,enterprise=100000/1m"
    )]
    pub rate_limit_org: ratelimit::PlanLimits,
    /// Login and MFA challenge, per normalised email and per client IP (two counters).
    #[arg(long = "rate-limit-auth-login", env = "RATE_LIMIT_AUTH_LOGIN", default_value = "10/15m")]
    pub rate_limit_auth_login: ratelimit::Limit,
    /// Forgot and reset password, per client IP.
    #[arg(long = "rate-limit-auth-password-reset", env = "RATE_LIMIT_AUTH_PASSWORD_RESET", default_value = "10/1h")]
    pub rate_limit_auth_password_reset: ratelimit::Limit,
    /// Register, invitation preview and accept, per client IP.
    #[arg(long = "rate-limit-auth-register", env = "RATE_LIMIT_AUTH_REGISTER", default_value = "10/1h")]
    pub rate_limit_auth_register: ratelimit::Limit,
    /// Refresh and logout, per client IP.
    #[arg(long = "rate-limit-auth-refresh", env = "RATE_LIMIT_AUTH_REFRESH", default_value = "1000/15m")]
    pub rate_limit_auth_refresh: ratelimit::Limit,
}

impl EdgeConfig {
    /// The limits of Rule 30 with this configuration's overrides.
    pub fn rate_limits(&self) -> ratelimit::RateLimits {
        ratelimit::RateLimits {
            anonymous: self.rate_limit_anonymous,
            user: self.rate_limit_user,
            api_key: self.rate_limit_api_key,
            org: self.rate_limit_org,
            auth_login: self.rate_limit_auth_login,
            auth_password_reset: self.rate_limit_auth_password_reset,
            auth_register: self.rate_limit_auth_register,
            auth_refresh: self.rate_limit_auth_refresh,
        }
    }
}

impl GatewayConfig {
    /// Settings from the environment alone (tests), with defaults for the rest.
    pub fn from_env() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            gateway: GatewayConfig,
        }
        <Wrapper as clap::Parser>::parse_from(["gateway"]).gateway
    }

    /// Every limit raised far beyond what a test suite sends, for suites that are not about
    /// rate limits but share one Redis and one client IP.
    pub fn without_practical_rate_limits(mut self) -> Self {
        let big = ratelimit::Limit::new(1_000_000, Duration::from_secs(60));
        let plans = ratelimit::PlanLimits { free: big, pro: big, enterprise: big };
        let edge = &mut self.edge;
        edge.rate_limit_anonymous = big;
        edge.rate_limit_user = big;
        edge.rate_limit_api_key = plans;
        edge.rate_limit_org = plans;
        edge.rate_limit_auth_login = big;
        edge.rate_limit_auth_password_reset = big;
        edge.rate_limit_auth_register = big;
        edge.rate_limit_auth_refresh = big;
        self
    }

    fn enabled_modules(&self) -> Option<Vec<String>> {
        let modules: Vec<String> = self
            .modules
            .iter()
            .map(|m| m.trim().to_ascii_lowercase())
            .filter(|m| !m.is_empty() && m != "all")
            .collect();
        (!modules.is_empty()).then_some(modules)
    }
}

/// Serves the gateway on `listener` (public) and `admin` until `shutdown`, then drains.
pub async fn serve(
    config: Arc<Config>,
    gateway: GatewayConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Builder::new(config, gateway).serve(listener, admin, shutdown).await
}

/// A gateway bound to local ports by [`Builder::spawn`].
#[derive(Debug)]
pub struct Spawned {
    /// The public address.
    pub addr: SocketAddr,
    /// The admin address.
    pub admin_addr: SocketAddr,
    /// Cancel to stop the gateway.
    pub shutdown: CancellationToken,
    /// Completes when the gateway has stopped.
    pub handle: JoinHandle<anyhow::Result<()>>,
}

/// Assembles a gateway: the contract's descriptors and `config.urls` unless told otherwise.
#[derive(Debug)]
pub struct Builder {
    config: Arc<Config>,
    gateway: GatewayConfig,
    pool: Option<DescriptorPool>,
    backends: HashMap<String, String>,
    auth: Option<Arc<Authenticator>>,
}

impl Builder {
    /// A gateway for `config`'s cell.
    pub fn new(config: Arc<Config>, gateway: GatewayConfig) -> Self {
        Self { config, gateway, pool: None, backends: HashMap::new(), auth: None }
    }

    /// Routes from another descriptor pool (a superset of the contract, in tests).
    pub fn descriptors(mut self, pool: DescriptorPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The gRPC URL of a module that `config.urls` does not know.
    pub fn backend(mut self, module: &str, url: &str) -> Self {
        self.backends.insert(module.to_string(), url.to_string());
        self
    }

    /// Another credential verifier (the default fetches JWKS from identity).
    pub fn authenticator(mut self, auth: Arc<Authenticator>) -> Self {
        self.auth = Some(auth);
        self
    }

    async fn build(self, shutdown: &CancellationToken) -> anyhow::Result<Gateway> {
        let pool = self.pool.unwrap_or_else(|| trellis_kit::descriptors::pool().clone());
        let routes = RouteTable::build(&pool)?;
        let mut urls = self.backends;
        for module in routes.modules() {
            if let Some(url) = self.config.urls.get(module) {
                urls.entry(module.to_string()).or_insert_with(|| url.to_string());
            }
        }
        let mut upstreams = Upstreams::new(&urls, self.gateway.body_limit_bytes)?;
        let auth = self.auth.unwrap_or_else(|| Authenticator::new(self.config.clone()));
        let fanout = fanout::Fanout::new(
            fanout::EntityTypes::from_pool(&pool),
            upstreams.clone(),
            auth.clone(),
            self.gateway.enabled_modules(),
            self.gateway.fanout_timeout,
        );
        upstreams.insert(
            fanout::MODULE,
            fanout::in_process_channel(fanout, self.gateway.body_limit_bytes, shutdown.clone())?,
        );
        tracing::info!(routes = routes.len(), backends = urls.len(), "route table built");
        let modules = self.gateway.enabled_modules();
        let openapi = http::OpenApi::new(&openapi::document(
            &routes,
            |m| modules.as_ref().is_none_or(|e| http::ALWAYS_ON.contains(&m) || e.iter().any(|x| x == m)),
            &self.config.public_base_url,
        ));
        let limiter =
            RateLimiter::connect(self.gateway.edge.rate_limits(), &self.config.redis_url, shutdown.clone()).await;
        Ok(Gateway {
            routes,
            upstreams,
            auth,
            settings: Settings {
                body_limit: self.gateway.body_limit_bytes,
                default_deadline: self.gateway.default_deadline,
                max_deadline: self.gateway.max_deadline.max(Duration::from_millis(1)),
                modules: self.gateway.enabled_modules(),
                shutdown_grace: self.config.shutdown_grace,
                trusted_proxies: self.gateway.edge.trusted_proxies.clone(),
                sse_heartbeat: self.gateway.edge.sse_heartbeat.max(Duration::from_millis(10)),
                sse_max_streams: self.gateway.edge.sse_max_streams,
                cors_allowed_origins: self
                    .gateway
                    .edge
                    .cors_allowed_origins
                    .iter()
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
                hsts: {
                    let mut hsts = format!("max-age={}; includeSubDomains", self.gateway.edge.hsts_max_age);
                    if self.gateway.edge.hsts_preload {
                        hsts.push_str("; preload");
                    }
                    hsts
                },
                public_origin: cookies::origin_of(&self.config.public_base_url),
                cookie_secure: self.gateway.edge.cookie_secure,
            },
            limiter,
            openapi,
            active_streams: Arc::default(),
            api_keys: apikeys::ApiKeys::default(),
            metrics: GatewayMetrics::global(),
            ready: AtomicBool::new(false),
            readiness: readiness::Readiness::default(),
        })
    }

    /// Builds the route table (refusing to start on conflicts) and serves until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let gateway = Arc::new(self.build(&shutdown).await?);
        tracing::info!(public = %listener.local_addr()?, admin = %admin.local_addr()?, "gateway serving");
        serve_built(gateway, listener, admin, shutdown).await
    }

    /// Binds `127.0.0.1:0` for both ports and serves in the background; the route table is
    /// built before this returns, so a conflict fails here.
    pub async fn spawn(self) -> anyhow::Result<Spawned> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let shutdown = CancellationToken::new();
        let gateway = Arc::new(self.build(&shutdown).await?);
        let token = shutdown.clone();
        let handle = tokio::spawn(async move { serve_built(gateway, listener, admin, token).await });
        Ok(Spawned { addr, admin_addr, shutdown, handle })
    }
}

async fn serve_built(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grace = gateway.settings.shutdown_grace;
    let admin_gateway = gateway.clone();
    let admin_shutdown = CancellationToken::new();
    let admin_task = tokio::spawn(http::serve_listener(
        admin,
        move |request, peer| http::admin(admin_gateway.clone(), request, peer),
        admin_shutdown.clone(),
        grace,
    ));
    readiness::spawn_watchers(gateway.clone(), shutdown.clone());
    gateway.ready.store(true, Ordering::Release);
    let public_gateway = gateway.clone();
    let draining = gateway.clone();
    let token = shutdown.clone();
    let drain = tokio::spawn(async move {
        token.cancelled().await;
        draining.ready.store(false, Ordering::Release);
        tracing::info!("gateway draining");
    });
    http::serve_listener(
        listener,
        move |request, peer| http::public(public_gateway.clone(), request, peer),
        shutdown,
        grace,
    )
    .await;
    let _ = drain.await;
    admin_shutdown.cancel();
    let _ = admin_task.await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Starts a gateway for `config`'s cell on `127.0.0.1:0` (end-to-end tests next to a
/// `TestCell`), verifying credentials with `auth` (pass the cell's, so its test keys and
/// revocation checks apply); it stops with the test's runtime. Panics if the route table is
/// invalid. Rate limits are raised out of the way (suites share one Redis and one client IP); the
/// limits themselves are tested with [`Builder`] and explicit settings.
pub async fn spawn_for_tests(
    config: Arc<Config>,
    auth: Arc<Authenticator>,
) -> (SocketAddr, JoinHandle<anyhow::Result<()>>) {
    let spawned = Builder::new(config, GatewayConfig::from_env().without_practical_rate_limits())
        .authenticator(auth)
        .spawn()
        .await
        .unwrap_or_else(|e| panic!("starting the gateway: {e:#}"));
    (spawned.addr, spawned.handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_flatten_next_to_the_kit_config_and_read_their_variables() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            config: Config,
            #[command(flatten)]
            gateway: GatewayConfig,
        }
        <Serve as clap::CommandFactory>::command().debug_assert();
        let parsed = <Serve as clap::Parser>::parse_from([
            "serve",
            "--modules",
            "tasks,crm",
            "--body-limit-bytes",
            "1024",
            "--default-deadline",
            "250ms",
        ]);
        assert_eq!(parsed.gateway.enabled_modules(), Some(vec!["tasks".to_string(), "crm".to_string()]));
        assert_eq!(parsed.gateway.body_limit_bytes, 1024);
        assert_eq!(parsed.gateway.default_deadline, Duration::from_millis(250));
        assert_eq!(parsed.gateway.max_deadline, Duration::from_secs(60));
    }
}
