//! The HTTP server: one port for HTTP/1.1 and cleartext HTTP/2 (prior knowledge), the dispatch
//! of each request to its surface, and what every response carries (correlation id, security
//! headers).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use trellis_kit::auth::Authenticator;
use trellis_kit::context::CORRELATION_ID;

use crate::errors::ApiError;
use crate::metrics::{GatewayMetrics, Surface};
use crate::ratelimit::RateLimiter;
use crate::routes::{MethodInfo, RouteTable};
use crate::upstream::Upstreams;
use crate::{grpc_web, passthrough, rest};

/// Errors carried by response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

/// What the gateway knows about one request before it reaches a surface.
#[derive(Debug, Clone)]
pub struct Call {
    /// The incoming `X-Correlation-Id` when valid, else a fresh UUIDv7 (Rule 40).
    pub correlation_id: String,
    /// The W3C trace context sent to the backend: the caller's trace continued, or a new one.
    pub traceparent: String,
    /// The client address (Rule 36): the peer, or what a trusted proxy says it is.
    pub client_ip: IpAddr,
    /// Whether the request arrived over HTTPS (a trusted proxy's `X-Forwarded-Proto: https`).
    pub secure: bool,
    /// When the request arrived.
    pub started: Instant,
}

impl Call {
    fn new(headers: &HeaderMap, peer: SocketAddr, trusted: &[Cidr]) -> Self {
        let peer_ip = peer.ip().to_canonical();
        let via_proxy = trusted.iter().any(|c| c.contains(peer_ip));
        let secure = via_proxy
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        Self {
            correlation_id: correlation_id(headers),
            traceparent: traceparent(headers),
            client_ip: if via_proxy { client_ip(peer_ip, headers, trusted) } else { peer_ip },
            secure,
            started: Instant::now(),
        }
    }
}

/// An IP network, `10.0.0.0/8` or `::1/128` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr[/prefix]`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let network: IpAddr = addr.parse().map_err(|_| format!("invalid address in {s:?}"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("invalid prefix in {s:?}"))?,
        };
        Ok(Cidr { network: network.to_canonical(), prefix })
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let (net, net_len) = bits(self.network);
        let (addr, addr_len) = bits(ip);
        if net_len != addr_len {
            return false;
        }
        let prefix = u32::from(self.prefix);
        let mask =
            if prefix == 0 { 0 } else { u128::MAX << (u32::from(net_len) - prefix) << (128 - u32::from(net_len)) };
        net & mask == addr & mask
    }
}

/// The client of a request from a trusted proxy: the rightmost `X-Forwarded-For` entry that is
/// not itself a trusted proxy; malformed entries are skipped (Rule 36).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let entries: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|e| {
            let e = e.trim();
            e.parse::<IpAddr>()
                .ok()
                .or_else(|| e.parse::<SocketAddr>().ok().map(|a| a.ip()))
                .map(|ip| ip.to_canonical())
        })
        .collect();
    entries.iter().rev().find(|ip| !trusted.iter().any(|c| c.contains(**ip))).copied().unwrap_or(peer)
}

fn valid_correlation_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The correlation id of a request: the caller's when it matches `^[A-Za-z0-9._-]{1,64}$`,
/// otherwise a new UUIDv7.
pub fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get(CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| valid_correlation_id(id))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A `traceparent` for the backend call: the caller's trace id with a new span id for this hop,
/// or a new sampled trace.
pub fn traceparent(headers: &HeaderMap) -> String {
    let span: u64 = rand::random::<u64>().max(1);
    let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| {
        let parts: Vec<&str> = v.trim().split('-').collect();
        match parts.as_slice() {
            [version, trace, parent, flags]
                if is_lower_hex(version, 2)
                    && *version != "ff"
                    && is_lower_hex(trace, 32)
                    && trace.bytes().any(|b| b != b'0')
                    && is_lower_hex(parent, 16)
                    && is_lower_hex(flags, 2) =>
            {
                Some(format!("00-{trace}-{span:016x}-{flags}"))
            }
            _ => None,
        }
    });
    incoming.unwrap_or_else(|| {
        let trace: u128 = rand::random::<u128>().max(1);
        format!("00-{trace:032x}-{span:016x}-01")
    })
}

/// Request headers that never reach a backend (Rule 13): hop-by-hop, cookies, and the prefixes
/// only the gateway may set.
fn is_stripped(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "cookie"
            | "content-length"
            | "authorization"
            | "traceparent"
            | "tracestate"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | CORRELATION_ID
    ) || name.starts_with("x-internal-")
        || name.starts_with("x-trellis-")
        || name.starts_with("x-client-")
}

/// The metadata every backend call carries (Rule 13): the verified credential, correlation id,
/// trace context, client IP and user agent, and `accept-language`.
pub fn forwarded(call: &Call, incoming: &HeaderMap, credential: Option<&HeaderValue>) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(credential) = credential {
        out.insert(http::header::AUTHORIZATION, credential.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&call.correlation_id) {
        out.insert(CORRELATION_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&call.traceparent) {
        out.insert("traceparent", v);
    }
    if let Some(v) = incoming.get("tracestate") {
        out.insert("tracestate", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&call.client_ip.to_string()) {
        out.insert("x-client-ip", v);
    }
    if let Some(v) = incoming.get(USER_AGENT) {
        out.insert("x-client-user-agent", v.clone());
    }
    if let Some(v) = incoming.get(http::header::ACCEPT_LANGUAGE) {
        out.insert(http::header::ACCEPT_LANGUAGE, v.clone());
    }
    out
}

/// The headers of a gRPC call forwarded frame by frame: the caller's metadata minus hop-by-hop
/// headers, cookies, `authorization` and the `x-internal-*`/`x-trellis-*`/`x-client-*` prefixes,
/// plus [`forwarded`].
pub fn forwarded_grpc(call: &Call, incoming: &HeaderMap, credential: Option<&HeaderValue>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len() + 6);
    for (name, value) in incoming {
        if !is_stripped(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out.extend(forwarded(call, incoming, credential));
    out
}

/// Adds what every response carries: `X-Correlation-Id` and the security headers (Rule 38),
/// with `Strict-Transport-Security` when the request came over HTTPS.
pub fn common_headers(headers: &mut HeaderMap, correlation_id: &str, hsts: Option<&str>) {
    if let Some(hsts) = hsts.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert("strict-transport-security", hsts);
    }
    if let Ok(v) = HeaderValue::from_str(correlation_id) {
        headers.insert("x-correlation-id", v);
    }
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ("permissions-policy", "geolocation=(), microphone=(), camera=()"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-site"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.remove("server");
    headers.remove("x-powered-by");
}

/// Settings the surfaces read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest request body or message.
    pub body_limit: usize,
    /// Deadline of unary calls without one of their own.
    pub default_deadline: Duration,
    /// Upper bound of any deadline.
    pub max_deadline: Duration,
    /// Enabled modules; `None` = all.
    pub modules: Option<Vec<String>>,
    /// How long in-flight requests get after shutdown.
    pub shutdown_grace: Duration,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Idle time before an SSE `: ping`.
    pub sse_heartbeat: Duration,
    /// Open SSE streams per replica.
    pub sse_max_streams: usize,
    /// Origins allowed cross-origin access (exact match).
    pub cors_allowed_origins: Vec<String>,
    /// The `Strict-Transport-Security` value.
    pub hsts: String,
    /// `scheme://host[:port]` of `PUBLIC_BASE_URL`, trusted for cookie refreshes like the CORS list.
    pub public_origin: String,
    /// Whether cookies carry `Secure`.
    pub cookie_secure: bool,
}

/// The OpenAPI document, serialised once, with its `ETag`.
#[derive(Debug)]
pub struct OpenApi {
    body: Bytes,
    etag: HeaderValue,
}

impl OpenApi {
    /// Serialises `document` (sorted keys) and hashes it.
    pub fn new(document: &serde_json::Value) -> Self {
        use sha2::Digest;
        let body = Bytes::from(serde_json::to_vec(document).unwrap_or_default());
        let digest = sha2::Sha256::digest(&body);
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Self { body, etag }
    }
}

/// `GET /openapi.json`: public, limited like any anonymous request, `ETag` + `If-None-Match`.
async fn openapi(gateway: &Gateway, request: &Request<Incoming>, call: &Call) -> Response<Body> {
    let check = gateway.limiter.limits().anonymous(call.client_ip);
    let decision = gateway.limiter.check(std::slice::from_ref(&check)).await;
    let mut response = match &decision {
        Some(d) if !d.allowed => {
            gateway.metrics.rate_limited(d.headline.limiter.name());
            ApiError::rate_limited(&d.headline).to_response(&call.correlation_id)
        }
        _ => {
            let fresh = request
                .headers()
                .get(http::header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == gateway.openapi.etag || t.trim() == "*"));
            let mut response = if fresh {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            } else {
                let mut r = Response::new(full(gateway.openapi.body.clone()));
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
                r
            };
            response.headers_mut().insert(http::header::ETAG, gateway.openapi.etag.clone());
            response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            response
        }
    };
    if let Some(d) = decision {
        d.headline.apply_headers(response.headers_mut());
    }
    if request.method() == Method::HEAD {
        response = response.map(|_| empty());
    }
    response
}

/// The modules every cell runs whatever `TRELLIS_MODULES` says.
pub const ALWAYS_ON: [&str; 4] = ["identity", "permissions", "notifications", "gateway"];

/// The shared state of a running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Routes and methods.
    pub routes: RouteTable,
    /// Backend channels.
    pub upstreams: Upstreams,
    /// Credential verification.
    pub auth: Arc<Authenticator>,
    /// Limits and deadlines.
    pub settings: Settings,
    /// Gateway metrics.
    pub metrics: &'static GatewayMetrics,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// `/openapi.json`, built at start.
    pub openapi: OpenApi,
    /// Open SSE streams.
    pub active_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Resolved API keys.
    pub api_keys: crate::apikeys::ApiKeys,
    /// False before start-up completes and from the moment shutdown begins.
    pub ready: AtomicBool,
    /// JWKS and backend health, kept current by background watchers.
    pub readiness: crate::readiness::Readiness,
}

impl Gateway {
    /// Whether `module` is enabled in this cell (Rule 42).
    pub fn module_enabled(&self, module: &str) -> bool {
        match &self.settings.modules {
            None => true,
            Some(enabled) => ALWAYS_ON.contains(&module) || enabled.iter().any(|m| m == module),
        }
    }

    /// The deadline of a unary call (Rule 15): the method's own or the default, lowered by the
    /// caller's `grpc-timeout`, never above the maximum.
    pub fn deadline(&self, method: &MethodInfo, requested: Option<Duration>) -> Duration {
        let base = method.timeout.unwrap_or(self.settings.default_deadline);
        requested.map_or(base, |r| r.min(base)).min(self.settings.max_deadline)
    }
}

fn classify(request: &Request<Incoming>) -> Surface {
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if content_type.starts_with("application/grpc-web") {
        Surface::GrpcWeb
    } else if content_type.starts_with("application/grpc") {
        Surface::Grpc
    } else {
        Surface::Rest
    }
}

fn health() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

fn readiness(gateway: &Gateway) -> Response<Body> {
    let redis = gateway.limiter.redis_available();
    let jwks = gateway.readiness.jwks_keys();
    let backends: serde_json::Map<String, serde_json::Value> =
        gateway.readiness.backends().into_iter().map(|(m, b)| (m, b.as_str().into())).collect();
    let checks = serde_json::json!({
        "routes": format!("{} loaded", gateway.routes.len()),
        "jwks": jwks.map_or_else(|| "not loaded".to_string(), |n| format!("ok ({n} keys)")),
        "redis": if redis { "ok" } else { "unavailable: rate limits are per replica" },
        "backends": backends,
    });
    // Not ready before start-up completes, before the first JWKS, and while draining.
    if !gateway.ready.load(Ordering::Acquire) || jwks.is_none() {
        return json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "not_ready", "checks": checks}));
    }
    let status = if redis && gateway.readiness.backends_healthy() { "ready" } else { "degraded" };
    json(StatusCode::OK, &serde_json::json!({"status": status, "checks": checks}))
}

/// CORS request headers browsers may send (Rule 37).
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, X-Correlation-Id, X-CSRF-Token, Last-Event-ID, X-Grpc-Web, X-User-Agent, grpc-timeout";
/// Response headers scripts may read.
const CORS_EXPOSE_HEADERS: &str = "X-Correlation-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, \
    Retry-After, X-CSRF-Token, Location, grpc-status, grpc-message, grpc-status-details-bin";

impl Gateway {
    /// The request's `Origin` when it is on the allow-list (exact scheme, host and port).
    fn allowed_origin<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let origin = headers.get(http::header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.settings.cors_allowed_origins.iter().any(|o| o == text).then_some(origin)
    }
}

fn is_preflight(request: &Request<Incoming>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(http::header::ORIGIN)
        && request.headers().contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A CORS preflight: 204 with the policy for an allowed origin, else 403 CORS_ORIGIN_DENIED
/// without any `Access-Control-*` header. Never rate limited (Rule 34).
fn preflight(gateway: &Gateway, request: &Request<Incoming>, call: &Call) -> Response<Body> {
    let Some(origin) = gateway.allowed_origin(request.headers()) else {
        tracing::info!(security = true, origin = ?request.headers().get(http::header::ORIGIN), "CORS preflight denied");
        return ApiError::cors_origin_denied().to_response(&call.correlation_id);
    };
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers
        .insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"));
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(CORS_ALLOW_HEADERS));
    headers.insert(http::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    headers.append(http::header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Serves one request on the public port.
pub async fn public(gateway: Arc<Gateway>, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let call = Call::new(request.headers(), peer, &gateway.settings.trusted_proxies);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let origin = gateway.allowed_origin(request.headers()).cloned();
    let has_origin = request.headers().contains_key(http::header::ORIGIN);
    let (surface, (mut response, label)) = match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/healthz") => (Surface::Rest, (health(), path.clone())),
        (&Method::GET | &Method::HEAD, "/readyz") => (Surface::Rest, (readiness(&gateway), path.clone())),
        (&Method::GET | &Method::HEAD, "/openapi.json") => {
            (Surface::Rest, (openapi(&gateway, &request, &call).await, path.clone()))
        }
        _ if is_preflight(&request) => (Surface::Rest, (preflight(&gateway, &request, &call), "preflight".to_string())),
        _ => match classify(&request) {
            Surface::GrpcWeb => (Surface::GrpcWeb, grpc_web::handle(&gateway, request, &call).await),
            Surface::Grpc => (Surface::Grpc, passthrough::handle(&gateway, request, &call).await),
            Surface::Rest => (Surface::Rest, rest::handle(&gateway, request, &call).await),
        },
    };
    if let Some(origin) = origin
        && !response.headers().contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        let headers = response.headers_mut();
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(CORS_EXPOSE_HEADERS));
    }
    if has_origin && !response.headers().get_all(http::header::VARY).iter().any(|v| v == "Origin") {
        response.headers_mut().append(http::header::VARY, HeaderValue::from_static("Origin"));
    }
    common_headers(response.headers_mut(), &call.correlation_id, call.secure.then_some(gateway.settings.hsts.as_str()));
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| response.status().as_u16().to_string());
    gateway.metrics.request(&label, method.as_str(), surface, &status, call.started.elapsed());
    tracing::debug!(
        correlation_id = %call.correlation_id,
        method = %method,
        route = %label,
        status = %status,
        elapsed_ms = call.started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Serves one request on the admin port: `/healthz`, `/readyz`, `/metrics`.
pub async fn admin(gateway: Arc<Gateway>, request: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let correlation_id = correlation_id(request.headers());
    let mut response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => health(),
        (&Method::GET, "/readyz") => readiness(&gateway),
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(full(trellis_kit::telemetry::Metrics::global().encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        _ => ApiError::route_not_found().to_response(&correlation_id),
    };
    common_headers(response.headers_mut(), &correlation_id, None);
    response
}

/// Accepts connections on `listener` until `shutdown`, serving HTTP/1.1 and h2c on each, then
/// lets in-flight requests finish for up to `grace`.
pub async fn serve_listener<F, Fut>(listener: TcpListener, handler: F, shutdown: CancellationToken, grace: Duration)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30))
        .max_header_list_size(16 * 1024);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(request, peer).await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("connections still open after the shutdown grace period"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value")))
            .collect()
    }

    #[test]
    fn a_valid_correlation_id_is_kept_and_an_invalid_one_replaced() {
        assert_eq!(correlation_id(&headers(&[("x-correlation-id", "abc-1.2_3")])), "abc-1.2_3");
        for bad in ["bad id!", "", &"x".repeat(65)] {
            let id = correlation_id(&headers(&[("x-correlation-id", bad)]));
            assert_eq!(uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()), Ok(7), "{bad:?} → {id}");
        }
        assert_eq!(uuid::Uuid::parse_str(&correlation_id(&HeaderMap::new())).map(|u| u.get_version_num()), Ok(7));
    }

    #[test]
    fn a_trace_is_continued_with_a_new_span_or_started() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let next = traceparent(&headers(&[("traceparent", incoming)]));
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(next.ends_with("-01"));
        assert_ne!(next, incoming);
        let fresh = traceparent(&headers(&[("traceparent", "garbage")]));
        assert_eq!(fresh.len(), 55);
        assert!(!fresh.contains("4bf92f35"));
    }

    #[test]
    fn internal_client_and_hop_by_hop_headers_never_reach_a_backend() {
        let call = Call {
            correlation_id: "c1".into(),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            client_ip: "10.0.0.7".parse().expect("ip"),
            secure: false,
            started: Instant::now(),
        };
        let incoming = headers(&[
            ("x-internal-user", "admin"),
            ("x-trellis-org", "other"),
            ("x-client-ip", "1.2.3.4"),
            ("cookie", "a=b"),
            ("connection", "close"),
            ("authorization", "Bearer stale"),
            ("x-custom", "kept"),
            ("user-agent", "curl/8"),
        ]);
        let out = forwarded_grpc(&call, &incoming, None);
        for gone in ["x-internal-user", "x-trellis-org", "cookie", "connection", "authorization"] {
            assert!(!out.contains_key(gone), "{gone} must be stripped");
        }
        assert_eq!(out["x-client-ip"], "10.0.0.7");
        assert_eq!(out["x-custom"], "kept");
        assert_eq!(out["x-client-user-agent"], "curl/8");
        assert_eq!(out["x-correlation-id"], "c1");
    }

    #[test]
    fn every_response_gets_the_security_headers() {
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("hyper"));
        common_headers(&mut h, "c1", None);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-correlation-id"], "c1");
        assert!(!h["content-security-policy"].to_str().expect("ascii").contains("unsafe-inline"));
        assert!(!h.contains_key("server"));
    }
}
