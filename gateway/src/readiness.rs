//! What `/readyz` reports: the route table, the JWKS, Redis and each backend's gRPC health.
//!
//! Two background watchers keep the answer current so `/readyz` itself never waits: the JWKS is
//! fetched at start (retried every second until it succeeds; the gateway is not ready before)
//! and then every [`JWKS_TTL`]; every enabled backend is asked `grpc.health.v1.Health/Check`
//! every [`BACKEND_INTERVAL`]. A backend that is not serving makes the gateway `degraded`, for
//! information only: it still routes, and that module's calls fail on their own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::MetadataMap;
use trellis_kit::auth::JWKS_TTL;

use crate::http::Gateway;
use crate::upstream::UpstreamError;

/// How often each backend's health is checked.
pub const BACKEND_INTERVAL: Duration = Duration::from_secs(5);
/// How long a health check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys cached before the first successful fetch.
const NOT_LOADED: usize = usize::MAX;

/// A backend as its last health check saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Serving,
    NotServing,
    Unreachable,
    /// It answers gRPC but has no health service: counted as serving.
    NoHealthService,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Serving => "serving",
            Backend::NotServing => "not_serving",
            Backend::Unreachable => "unreachable",
            Backend::NoHealthService => "no_health_service",
        }
    }

    fn healthy(self) -> bool {
        matches!(self, Backend::Serving | Backend::NoHealthService)
    }
}

/// The watchers' findings.
#[derive(Debug)]
pub struct Readiness {
    jwks_keys: AtomicUsize,
    backends: RwLock<BTreeMap<String, Backend>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { jwks_keys: AtomicUsize::new(NOT_LOADED), backends: RwLock::default() }
    }
}

impl Readiness {
    /// Keys of the last successful JWKS fetch; `None` before the first one.
    pub fn jwks_keys(&self) -> Option<usize> {
        Some(self.jwks_keys.load(Ordering::Acquire)).filter(|n| *n != NOT_LOADED)
    }

    /// The last health of every backend checked so far.
    pub fn backends(&self) -> BTreeMap<String, Backend> {
        self.backends.read().map(|b| b.clone()).unwrap_or_default()
    }

    /// Whether every backend checked so far is healthy.
    pub fn backends_healthy(&self) -> bool {
        self.backends().values().all(|b| b.healthy())
    }
}

/// Starts the JWKS and backend watchers; they stop with `shutdown`.
pub fn spawn_watchers(gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let jwks = gateway.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let wait = match jwks.auth.refresh_keys().await {
                Ok(n) => {
                    jwks.readiness.jwks_keys.store(n, Ordering::Release);
                    JWKS_TTL
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "JWKS fetch failed");
                    // Cached keys keep working through an identity outage; only the first fetch gates readiness.
                    if jwks.readiness.jwks_keys().is_some() {
                        JWKS_TTL.min(Duration::from_secs(30))
                    } else {
                        Duration::from_secs(1)
                    }
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let modules: Vec<String> = gateway
                .upstreams
                .modules()
                .into_iter()
                .filter(|m| m != crate::fanout::MODULE && gateway.module_enabled(m))
                .collect();
            let checks = modules.iter().map(|m| check(&gateway, m));
            let results = futures::future::join_all(checks).await;
            if let Ok(mut backends) = gateway.readiness.backends.write() {
                *backends = modules.into_iter().zip(results).collect();
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(BACKEND_INTERVAL) => {}
            }
        }
    });
}

/// `grpc.health.v1.Health/Check` for the whole server (empty service name).
async fn check(gateway: &Gateway, module: &str) -> Backend {
    let answer = gateway
        .upstreams
        .unary(module, "/grpc.health.v1.Health/Check", Bytes::new(), MetadataMap::new(), CHECK_TIMEOUT)
        .await;
    match answer {
        // HealthCheckResponse { status = 1 }: field 1, varint; SERVING is 1.
        Ok((_, bytes)) if bytes.as_ref() == [0x08, 0x01] => Backend::Serving,
        Ok(_) => Backend::NotServing,
        Err(UpstreamError::Status(s)) if s.code() == Code::Unimplemented => Backend::NoHealthService,
        Err(UpstreamError::Status(_)) => Backend::NotServing,
        Err(UpstreamError::Unreachable | UpstreamError::Deadline) => Backend::Unreachable,
    }
}
