//! Integration-test support: the infrastructure `cargo xtask test` starts, fresh databases, and a
//! cell of modules served in-process on real sockets, wired exactly as `trellis serve` wires them.
//!
//! `cargo xtask test` exports:
//! - `TRELLIS_TEST_DATABASE_URL`: a Postgres superuser URL (any database; tests create their own);
//! - `TRELLIS_TEST_REDIS_URL`, `TRELLIS_TEST_AMQP_URL`.
//!
//! A test that needs them and does not find them fails with a message naming `cargo xtask test`;
//! it never skips.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{Connection, Executor, PgConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{Authenticator, ChainJwks, Claims, IdentityJwks, JwksSource, PublicKey, StaticJwks};
use crate::config::Config;
use crate::grpc::{Launch, Running, launch};
use crate::module::Module;

/// The infrastructure URLs exported by `cargo xtask test`.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Postgres superuser URL.
    pub database_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs the Postgres, Redis and RabbitMQ that `cargo xtask test` starts. \
             Run the suite with `cargo xtask test` (or export the TRELLIS_TEST_* variables it prints)."
        )
    })
}

impl TestEnv {
    /// Reads the environment; panics with instructions when it is missing.
    pub fn get() -> TestEnv {
        TestEnv {
            database_url: required("TRELLIS_TEST_DATABASE_URL"),
            redis_url: required("TRELLIS_TEST_REDIS_URL"),
            amqp_url: required("TRELLIS_TEST_AMQP_URL"),
        }
    }
}

/// Replaces the database name of a Postgres URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Creates a fresh, empty database and returns its superuser URL.
pub async fn fresh_database(env: &TestEnv) -> String {
    let name = format!("t_{}", Uuid::now_v7().simple());
    let mut conn = PgConnection::connect(&env.database_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test Postgres ({e}); is `cargo xtask test` running it?"));
    conn.execute(format!("create database {name}").as_str()).await.expect("create test database");
    with_database(&env.database_url, &name)
}

/// A configuration pointing at a fresh database, with an exchange and queue prefix of its own so
/// that concurrent tests never see each other's events.
pub async fn test_config(env: &TestEnv) -> Config {
    let mut config = Config::from_env();
    let id = Uuid::now_v7().simple().to_string();
    config.database_url = fresh_database(env).await;
    config.redis_url = env.redis_url.clone();
    config.amqp_url = env.amqp_url.clone();
    config.events_exchange = format!("trellis.events.t{id}");
    config.events_queue_prefix = format!("t{id}.");
    config.service_db_password = "trellis-test".to_string();
    config.shutdown_grace = std::time::Duration::from_secs(5);
    config
}

/// A signing key the test cell's verifier trusts next to identity's JWKS, for tests of services
/// that run without identity.
#[derive(Clone)]
pub struct TestKeys {
    /// Key id.
    pub kid: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for TestKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKeys").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl TestKeys {
    /// A fresh random key.
    pub fn new() -> Self {
        Self {
            kid: format!("test-{}", Uuid::now_v7().simple()),
            key: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey { kid: self.kid.clone(), key: self.key.verifying_key() }
    }

    /// Signs arbitrary claims.
    pub fn sign(&self, claims: &Claims) -> String {
        crate::auth::jwt::sign(claims, &self.kid, &self.key)
    }

    /// A 15-minute user access token for `org` with `roles`, valid under `config`.
    pub fn user_token(&self, config: &Config, user: Uuid, org: Uuid, roles: &[&str]) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(&Claims {
            iss: config.jwt_issuer.clone(),
            sub: user.to_string(),
            aud: config.jwt_audience.clone(),
            exp: now + 900,
            nbf: None,
            iat: now,
            jti: Uuid::now_v7().to_string(),
            org: Some(org.to_string()),
            sid: Some(Uuid::now_v7().to_string()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: Vec::new(),
            plan: Some("free".to_string()),
        })
    }
}

/// Service tokens signed by the cell's test key, so modules' permissions clients work in tests
/// without identity (a 5-minute `service:<name>` token per call).
#[derive(Debug, Clone)]
pub struct TestCredentials {
    /// The key the cell's verifier trusts.
    pub keys: TestKeys,
    /// The cell's configuration (issuer, audience).
    pub config: Arc<Config>,
    /// The service name (`sub: service:<name>`).
    pub service: &'static str,
}

impl TestKeys {
    /// A 5-minute service token for `service`, acting in `org` when given.
    pub fn service_token(&self, config: &Config, service: &str, org: Option<Uuid>) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(&Claims {
            iss: config.jwt_issuer.clone(),
            sub: format!("service:{service}"),
            aud: config.jwt_audience.clone(),
            exp: now + 300,
            nbf: Some(now),
            iat: now,
            jti: Uuid::now_v7().to_string(),
            org: org.map(|o| o.to_string()),
            sid: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            plan: None,
        })
    }
}

impl crate::authz::Credentials for TestCredentials {
    fn token(&self, org: Option<Uuid>) -> crate::authz::TokenFuture<'_> {
        let token = self.keys.service_token(&self.config, self.service, org);
        Box::pin(async move { Ok(token) })
    }
}

/// Modules served in-process on ephemeral ports, sharing one fresh database and exchange.
/// Everything stops when the cell is dropped.
#[derive(Debug)]
pub struct TestCell {
    /// The configuration the modules run with (URLs point at the bound ports).
    pub config: Arc<Config>,
    /// The shared authenticator.
    pub auth: Arc<Authenticator>,
    /// The running modules by name.
    pub running: HashMap<&'static str, Running>,
    /// Cancels every module.
    pub shutdown: CancellationToken,
    /// A key the cell's verifier trusts besides identity's (see [`TestCell::token`]).
    pub keys: TestKeys,
}

impl TestCell {
    /// Migrates and starts `modules` against the test infrastructure.
    pub async fn start(modules: Vec<Module>) -> TestCell {
        let env = TestEnv::get();
        let config = test_config(&env).await;
        Self::start_with(config, modules).await
    }

    /// Migrates and starts `modules` with a prepared configuration.
    pub async fn start_with(mut config: Config, modules: Vec<Module>) -> TestCell {
        for module in &modules {
            crate::db::migrate_module(&config.database_url, module, &config.service_db_password)
                .await
                .unwrap_or_else(|e| panic!("migrating {}: {e:#}", module.name));
        }
        let mut listeners = Vec::new();
        for module in &modules {
            let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
            let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
            let url = format!("http://{}", grpc.local_addr().expect("local addr"));
            config.urls.set(module.name, url);
            listeners.push((grpc, admin));
        }
        let config = Arc::new(config);
        let keys = TestKeys::new();
        let mut sources: Vec<Arc<dyn JwksSource>> = vec![Arc::new(StaticJwks(vec![keys.public()]))];
        if let Ok(identity) = IdentityJwks::new(&config.urls.identity) {
            sources.push(Arc::new(identity));
        }
        let auth = Authenticator::with_source(&config, Arc::new(ChainJwks(sources)));
        // With identity in the cell, revoked sessions are refused as in production; cells without
        // it (services tested on their own, with test-key tokens) have nothing to ask.
        if modules.iter().any(|m| m.name == "identity") {
            let revocations = crate::auth::revocation::Revocations::connect(&config.redis_url, &config.urls.identity)
                .expect("revocation feed");
            auth.attach_revocations(revocations);
        }
        let shutdown = CancellationToken::new();
        // Schemas are registered as in a cell when the cell can accept them: permissions and
        // identity (whose `organization` every other schema builds on) both run in it.
        let register_schema =
            modules.iter().any(|m| m.name == "permissions") && modules.iter().any(|m| m.name == "identity");
        // Scope resources need only identity.
        let register_scope_resources = modules.iter().any(|m| m.name == "identity");
        let mut running = HashMap::new();
        for (module, (grpc, admin)) in modules.into_iter().zip(listeners) {
            let name = module.name;
            let credentials = Arc::new(TestCredentials { keys: keys.clone(), config: config.clone(), service: name });
            let r = launch(Launch {
                module,
                config: config.clone(),
                auth: auth.clone(),
                grpc,
                admin,
                shutdown: shutdown.clone(),
                credentials: Some(credentials),
                register_schema,
                register_scope_resources,
            })
            .await
            .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
            running.insert(name, r);
        }
        // Events published before a consumer has bound its queue would reach no queue.
        let bus = crate::events::EventBus::new(config.clone());
        assert!(
            crate::events::wait_for_consumers(&bus, std::time::Duration::from_secs(30)).await,
            "the event consumers did not bind their queues within 30 s; is RabbitMQ running?"
        );
        TestCell { config, auth, running, shutdown, keys }
    }

    /// The gRPC URL of a module.
    pub fn url(&self, module: &str) -> String {
        format!("http://{}", self.running.get(module).unwrap_or_else(|| panic!("{module} is not running")).grpc_addr)
    }

    /// A channel to a module.
    pub async fn channel(&self, module: &str) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url(module))
            .expect("valid url")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {module}: {e}"))
    }

    /// A user access token for `org` (roles: owner) signed by the cell's test key.
    pub fn token(&self, user: Uuid, org: Uuid) -> String {
        self.keys.user_token(&self.config, user, org, &["owner"])
    }

    /// A pool connected as the owner to the cell's database (for assertions on raw rows).
    pub async fn owner_pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.config.database_url).await.expect("owner pool")
    }
}

impl Drop for TestCell {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// Fault injection and polling, for tests of failure behaviour and of asynchronous effects.

pub mod bench;
mod proxy;
mod smtp;
pub use proxy::FaultProxy;
pub use smtp::{CapturedMail, SmtpCapture};

/// Polls `condition` every 50 ms until it holds; panics when it still does not after `timeout`.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) {
/// use std::time::Duration;
/// trellis_kit::testing::wait_until(Duration::from_secs(10), || async {
///     sqlx::query_scalar::<_, i64>("select count(*) from notifications.notifications")
///         .fetch_one(&pool)
///         .await
///         .is_ok_and(|n| n == 1)
/// })
/// .await;
/// # }
/// ```
pub async fn wait_until<F, Fut>(timeout: std::time::Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition still false after {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
