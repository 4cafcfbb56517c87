//! Logs, traces and metrics.
//!
//! - Logs: `tracing` with JSON lines (or human-readable text in a terminal), level from
//!   `RUST_LOG`/`LOG_LEVEL`.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP/gRPC, and
//!   the W3C `traceparent` of incoming calls and consumed events becomes the parent of their
//!   spans ([`set_parent`], [`current_traceparent`]).
//! - Metrics: one Prometheus registry per process, served on every admin port at `/metrics`;
//!   [`Metrics`] holds the RED metrics the gRPC layer records per RPC.

use std::sync::{Arc, OnceLock};

use clap::Args;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Logging and tracing settings.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// `json` (one JSON object per line) or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// Log filter (`info`, `trellis_tasks=debug,info`, ...); `RUST_LOG` wins when set.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// OTLP endpoint (gRPC) to export traces to, e.g. `http://otel-collector:4317`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` reported with traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "trellis")]
    pub service_name: String,
}

/// Installs the global subscriber (and the OTLP exporter when configured). Call once, at
/// process start; keep the returned guard alive so buffered spans are flushed on exit.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log_level))?;
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter =
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.clone()).build()?;
            let resource =
                opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
            Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("trellis")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match config.log_format.as_str() {
        "text" => registry.with(tracing_subscriber::fmt::layer().with_target(false)).try_init()?,
        "json" => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?,
        other => anyhow::bail!("LOG_FORMAT must be json or text, got {other:?}"),
    }
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(endpoint = config.otlp_endpoint.as_deref().unwrap_or_default(), "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { provider })
}

/// Flushes and stops the trace exporter when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes the W3C trace context in `headers` (`traceparent`, `tracestate`) the parent of `span`.
pub fn set_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if headers.contains_key("traceparent") {
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
        let _ = span.set_parent(cx);
    }
}

/// Makes a `traceparent` string (from an event envelope) the parent of `span`.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = traceparent.parse() {
        headers.insert("traceparent", value);
        set_parent(span, &headers);
    }
}

/// The W3C `traceparent` of the current span, empty when no trace is being recorded.
pub fn current_traceparent() -> String {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// Labels of the per-RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `tasks`, `identity`, ...
    pub module: String,
    /// `/trellis.tasks.v1.TaskService/CreateTask`
    pub method: String,
    /// gRPC status code name, e.g. `OK`, `NOT_FOUND`.
    pub code: String,
}

/// The process-wide metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    /// `grpc_server_requests_total`.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// `grpc_server_request_duration_seconds`.
    pub rpc_duration: Family<RpcLabels, Histogram>,
}

impl Metrics {
    /// The process-wide instance.
    pub fn global() -> Arc<Metrics> {
        static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
        METRICS
            .get_or_init(|| {
                let mut registry = Registry::with_prefix("trellis");
                let rpc_requests = Family::<RpcLabels, Counter>::default();
                let rpc_duration = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
                    Histogram::new([
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ])
                });
                registry.register(
                    "grpc_server_requests",
                    "RPCs handled, by method and status code",
                    rpc_requests.clone(),
                );
                registry.register("grpc_server_request_duration_seconds", "RPC latency", rpc_duration.clone());
                Arc::new(Metrics { registry: std::sync::Mutex::new(registry), rpc_requests, rpc_duration })
            })
            .clone()
    }

    /// Registers a further metric (event relay lag, consumer failures, ...).
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).register(name, help, metric);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
