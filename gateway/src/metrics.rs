//! Gateway metrics, registered once in the process-wide registry of `trellis_kit::telemetry`
//! and served at `/metrics` on the admin port. Routes are labelled by template, never by raw path.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use trellis_kit::telemetry::Metrics;

/// The surface a request arrived on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Surface {
    /// REST/JSON (and the gateway's own routes).
    Rest,
    /// gRPC-web.
    GrpcWeb,
    /// Native gRPC.
    Grpc,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    surface: Surface,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: String,
    method: String,
    surface: Surface,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The gateway's metric families.
#[derive(Debug)]
pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram>,
    upstream: Family<ServiceLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Family<LimiterLabels, Counter>,
    fanout_errors: Family<ModuleLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabels {
    limiter: String,
}

fn latency_buckets() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

impl GatewayMetrics {
    /// The process-wide instance (registered on first use).
    pub fn global() -> &'static GatewayMetrics {
        static METRICS: OnceLock<GatewayMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let metrics = GatewayMetrics {
                requests: Family::default(),
                duration: Family::new_with_constructor(latency_buckets),
                upstream: Family::new_with_constructor(latency_buckets),
                auth_failures: Family::default(),
                rate_limited: Family::default(),
                fanout_errors: Family::default(),
            };
            let registry = Metrics::global();
            registry.register(
                "gateway_requests",
                "Requests by route template, method, surface and status",
                metrics.requests.clone(),
            );
            registry.register(
                "gateway_request_duration_seconds",
                "Time from request to response headers",
                metrics.duration.clone(),
            );
            registry.register(
                "gateway_upstream_duration_seconds",
                "Time spent in backend calls, by service",
                metrics.upstream.clone(),
            );
            registry.register(
                "gateway_auth_failures",
                "Rejected credentials, by reason",
                metrics.auth_failures.clone(),
            );
            registry.register(
                "gateway_rate_limited",
                "Requests refused by a rate limiter, by limiter",
                metrics.rate_limited.clone(),
            );
            registry.register(
                "gateway_fanout_module_errors",
                "Fan-out calls to a module that failed or timed out, by module",
                metrics.fanout_errors.clone(),
            );
            metrics
        })
    }

    /// Records a finished request.
    pub fn request(&self, route: &str, method: &str, surface: Surface, status: &str, elapsed: Duration) {
        let labels =
            RequestLabels { route: route.to_string(), method: method.to_string(), surface, status: status.to_string() };
        self.requests.get_or_create(&labels).inc();
        let labels = DurationLabels { route: labels.route, method: labels.method, surface };
        self.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Records a backend call.
    pub fn upstream(&self, service: &str, elapsed: Duration) {
        self.upstream.get_or_create(&ServiceLabels { service: service.to_string() }).observe(elapsed.as_secs_f64());
    }

    /// Records a rejected credential.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Records a request refused by `limiter`.
    pub fn rate_limited(&self, limiter: &str) {
        self.rate_limited.get_or_create(&LimiterLabels { limiter: limiter.to_string() }).inc();
    }

    /// Records a fan-out call to `module` that failed or timed out.
    pub fn fanout_module_error(&self, module: &str) {
        self.fanout_errors.get_or_create(&ModuleLabels { module: module.to_string() }).inc();
    }
}
