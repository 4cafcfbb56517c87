//! Rate limits (spec Rules 30–35): GCRA in Redis, every limiter of a request in one round trip.
//!
//! Each limiter is a generic cell rate algorithm with `count` requests per `period`: the emission
//! interval is `period / count` and the tolerance is `period`, so a fresh key allows a burst of
//! `count` and then one request per interval. Redis holds the theoretical arrival time (TAT) of
//! each key at `rl:{limiter}:{key}` with a TTL of at most the period. [`SCRIPT`] reads every key
//! of a request, and writes them only when all allow it, so a request refused by one limiter
//! consumes none of the others. The clock is Redis's own (`TIME`), so replicas agree.
//!
//! When Redis cannot answer (down, or slower than [`REDIS_BUDGET`]), the same algorithm runs in
//! memory per replica, `/readyz` reports `degraded`, and no request fails because of it. While
//! Redis is marked unavailable requests go straight to memory; the ping task (every second)
//! brings Redis back.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;
use trellis_kit::config::parse_duration;
use trellis_kit::context::{RequestContext, Subject};

use crate::routes::{MethodInfo, RateClass};

/// How long a request waits for Redis before the in-memory fallback decides. Generous on
/// purpose: a slow answer under load must not split the state between Redis and memory; an
/// outage is detected by the ping task (and refused connections fail at once), after which
/// requests skip Redis entirely until it answers again.
pub const REDIS_BUDGET: Duration = Duration::from_millis(500);

/// The limiters of Rule 30.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limiter {
    /// Requests without a credential, by client IP.
    Anonymous,
    /// Requests with a user token, by user id.
    User,
    /// Requests with an API key, by key id (per plan).
    ApiKey,
    /// Every authenticated request, by org id (per plan).
    Org,
    /// Login and MFA challenge, by email and by client IP.
    AuthLogin,
    /// Forgot and reset password, by client IP.
    AuthPasswordReset,
    /// Register and invitations, by client IP.
    AuthRegister,
    /// Refresh and logout, by client IP.
    AuthRefresh,
}

impl Limiter {
    /// The name in keys, metrics and the error metadata.
    pub fn name(self) -> &'static str {
        match self {
            Limiter::Anonymous => "anonymous",
            Limiter::User => "user",
            Limiter::ApiKey => "api_key",
            Limiter::Org => "org",
            Limiter::AuthLogin => "auth_login",
            Limiter::AuthPasswordReset => "auth_password_reset",
            Limiter::AuthRegister => "auth_register",
            Limiter::AuthRefresh => "auth_refresh",
        }
    }
}

/// `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed in a full window.
    pub count: u64,
    /// The window.
    pub period: Duration,
}

impl Limit {
    /// `count` per `period`.
    pub const fn new(count: u64, period: Duration) -> Self {
        Self { count, period }
    }

    const fn per_minutes(count: u64, minutes: u64) -> Self {
        Self::new(count, Duration::from_secs(minutes * 60))
    }

    fn period_ms(self) -> f64 {
        self.period.as_secs_f64() * 1000.0
    }

    fn interval_ms(self) -> f64 {
        self.period_ms() / self.count.max(1) as f64
    }

    /// `15 minutes`, `1 hour`, `30 seconds`.
    fn window_text(self) -> String {
        let secs = self.period.as_secs();
        let (n, unit) = if secs > 0 && secs.is_multiple_of(3600) {
            (secs / 3600, "hour")
        } else if secs > 0 && secs.is_multiple_of(60) {
            (secs / 60, "minute")
        } else {
            (secs.max(1), "second")
        };
        if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests per {}", self.count, self.window_text())
    }
}

impl FromStr for Limit {
    type Err = String;

    /// `100/15m`, `1000/1h`, `10/30s`; the period takes the units of `parse_duration`, and a
    /// bare unit (`100/m`) means one of it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (count, period) = s.trim().split_once('/').ok_or_else(|| format!("invalid limit {s:?} (use N/period)"))?;
        let count: u64 = count.trim().parse().map_err(|_| format!("invalid count in {s:?}"))?;
        let period = period.trim();
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            parse_duration(period)?
        } else {
            parse_duration(&format!("1{period}"))?
        };
        if count == 0 || period.is_zero() {
            return Err(format!("a limit needs a positive count and period: {s:?}"));
        }
        Ok(Limit { count, period })
    }
}

/// A limit per plan (`free`, `pro`, `enterprise`; Rule 23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// The free plan, and tokens without a plan.
    pub free: Limit,
    /// The pro plan.
    pub pro: Limit,
    /// The enterprise plan.
    pub enterprise: Limit,
}

impl PlanLimits {
    /// The limit of `plan` (unknown plans get the free one).
    pub fn of(&self, plan: Option<&str>) -> Limit {
        match plan {
            Some("pro") => self.pro,
            Some("enterprise") => self.enterprise,
            _ => self.free,
        }
    }
}

impl FromStr for PlanLimits {
    type Err = String;

    /// `100/1m` (every plan) or `free=100/1m,pro=1000/1m,enterprise=10000/1m` (missing plans
    /// keep the first one given).
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.contains('=') {
            let limit: Limit = s.parse()?;
            return Ok(PlanLimits { free: limit, pro: limit, enterprise: limit });
        }
        let mut plans: HashMap<&str, Limit> = HashMap::new();
        let mut first = None;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (plan, limit) = part.split_once('=').ok_or_else(|| format!("invalid plan limit {part:?}"))?;
            let plan = plan.trim();
            if !matches!(plan, "free" | "pro" | "enterprise") {
                return Err(format!("unknown plan {plan:?} (free, pro, enterprise)"));
            }
            let limit: Limit = limit.parse()?;
            first.get_or_insert(limit);
            plans.insert(plan, limit);
        }
        let first = first.ok_or_else(|| format!("no limit in {s:?}"))?;
        let get = |p: &str| plans.get(p).copied().unwrap_or(first);
        Ok(PlanLimits { free: get("free"), pro: get("pro"), enterprise: get("enterprise") })
    }
}

/// The limits of every limiter (Rule 30 defaults; `RATE_LIMIT_<LIMITER>` overrides them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `anonymous`: 100 / 15 min per client IP.
    pub anonymous: Limit,
    /// `user`: 1000 / 1 h per user.
    pub user: Limit,
    /// `api_key`: free 100/min, pro 1000/min, enterprise 10000/min per key.
    pub api_key: PlanLimits,
    /// `org`: free 1000/min, pro 10000/min, enterprise 100000/min per org.
    pub org: PlanLimits,
    /// `auth_login`: 10 / 15 min per email and per client IP.
    pub auth_login: Limit,
    /// `auth_password_reset`: 10 / 1 h per client IP.
    pub auth_password_reset: Limit,
    /// `auth_register`: 10 / 1 h per client IP.
    pub auth_register: Limit,
    /// `auth_refresh`: 1000 / 15 min per client IP.
    pub auth_refresh: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            anonymous: Limit::per_minutes(100, 15),
            user: Limit::per_minutes(1000, 60),
            api_key: PlanLimits {
                free: Limit::per_minutes(100, 1),
                pro: Limit::per_minutes(1000, 1),
                enterprise: Limit::per_minutes(10_000, 1),
            },
            org: PlanLimits {
                free: Limit::per_minutes(1000, 1),
                pro: Limit::per_minutes(10_000, 1),
                enterprise: Limit::per_minutes(100_000, 1),
            },
            auth_login: Limit::per_minutes(10, 15),
            auth_password_reset: Limit::per_minutes(10, 60),
            auth_register: Limit::per_minutes(10, 60),
            auth_refresh: Limit::per_minutes(1000, 15),
        }
    }
}

/// One limiter applied to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Which limiter.
    pub limiter: Limiter,
    /// Its key (an IP, a user id, a key id, an org id or an email).
    pub key: String,
    /// Its limit.
    pub limit: Limit,
}

impl Check {
    fn redis_key(&self) -> String {
        format!("rl:{}:{}", self.limiter.name(), self.key)
    }
}

/// Who is calling, as far as the limiters care.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The resolved client IP (Rule 36).
    pub ip: IpAddr,
    /// The verified credential, if any.
    pub context: Option<&'a RequestContext>,
    /// The normalised email of an `auth_login` request, when the body names one.
    pub email: Option<&'a str>,
}

impl RateLimits {
    /// The limiters that apply to a call of `method` by `caller` (Rules 30, 31).
    pub fn checks(&self, method: &MethodInfo, caller: Caller<'_>) -> Vec<Check> {
        let ip = caller.ip.to_string();
        let mut checks = Vec::with_capacity(3);
        let auth_class = match method.rate_class {
            RateClass::Standard => None,
            RateClass::AuthLogin => Some((Limiter::AuthLogin, self.auth_login)),
            RateClass::AuthPasswordReset => Some((Limiter::AuthPasswordReset, self.auth_password_reset)),
            RateClass::AuthRegister => Some((Limiter::AuthRegister, self.auth_register)),
            RateClass::AuthRefresh => Some((Limiter::AuthRefresh, self.auth_refresh)),
        };
        if let Some((limiter, limit)) = auth_class {
            checks.push(Check { limiter, key: format!("ip:{ip}"), limit });
            if limiter == Limiter::AuthLogin
                && let Some(email) = caller.email
            {
                checks.push(Check { limiter, key: format!("email:{email}"), limit });
            }
        }
        match caller.context {
            None => {
                if auth_class.is_none() {
                    checks.push(Check { limiter: Limiter::Anonymous, key: ip, limit: self.anonymous });
                }
            }
            Some(context) => {
                let plan = context.plan.as_deref();
                match &context.subject {
                    Subject::ApiKey(id) => checks.push(Check {
                        limiter: Limiter::ApiKey,
                        key: id.to_string(),
                        limit: self.api_key.of(plan),
                    }),
                    Subject::User(id) => {
                        checks.push(Check { limiter: Limiter::User, key: id.to_string(), limit: self.user })
                    }
                    Subject::Service(name) => {
                        checks.push(Check { limiter: Limiter::User, key: format!("service:{name}"), limit: self.user })
                    }
                    Subject::Anonymous | Subject::System => {
                        if auth_class.is_none() {
                            checks.push(Check { limiter: Limiter::Anonymous, key: ip, limit: self.anonymous });
                        }
                    }
                }
                if let Some(org) = context.org_id {
                    checks.push(Check { limiter: Limiter::Org, key: org.to_string(), limit: self.org.of(plan) });
                }
            }
        }
        checks
    }

    /// The anonymous limiter alone: failed authentications count toward it (Rule 25).
    pub fn anonymous(&self, ip: IpAddr) -> Check {
        Check { limiter: Limiter::Anonymous, key: ip.to_string(), limit: self.anonymous }
    }
}

/// The state of one limiter after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The limiter.
    pub limiter: Limiter,
    /// Its limit.
    pub limit: Limit,
    /// Whether it allowed the request.
    pub allowed: bool,
    /// Requests left in the window.
    pub remaining: u64,
    /// Unix milliseconds at which the limiter is full again.
    pub reset_at_ms: i64,
    /// Milliseconds until a refused request may be retried.
    pub retry_after_ms: i64,
}

impl Outcome {
    /// `Retry-After`, in whole seconds, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        (self.retry_after_ms.max(0) as u64).div_ceil(1000).max(1)
    }

    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds, rounded up).
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit.count));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from((self.reset_at_ms.max(0) as u64).div_ceil(1000)));
    }
}

/// The verdict on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The outcome the headers describe: the refusing limiter, or else the one with the smallest
    /// remaining fraction (Rule 32).
    pub headline: Outcome,
    /// Whether the request may proceed.
    pub allowed: bool,
}

fn decide(outcomes: Vec<Outcome>) -> Option<Decision> {
    let refused = outcomes.iter().find(|o| !o.allowed).cloned();
    let allowed = refused.is_none();
    let headline = refused.or_else(|| {
        outcomes.into_iter().min_by(|a, b| {
            let fa = a.remaining as f64 / a.limit.count.max(1) as f64;
            let fb = b.remaining as f64 / b.limit.count.max(1) as f64;
            fa.total_cmp(&fb)
        })
    })?;
    Some(Decision { headline, allowed })
}

/// GCRA for every key of a request: `KEYS` are the limiter keys, `ARGV` holds the emission
/// interval and the tolerance (both ms) of each. Returns `now`, then per key `allowed`,
/// `remaining`, `reset_at` (ms) and `retry_after` (ms). Writes only when every key allows.
pub const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local out = {now}
local tats = {}
local refused = false
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tau
  if now < allow_at then
    refused = true
    table.insert(out, 0)
    table.insert(out, 0)
    table.insert(out, math.ceil(tat))
    table.insert(out, math.ceil(allow_at - now))
  else
    tats[i] = new_tat
    table.insert(out, 1)
    table.insert(out, math.floor((now + tau - new_tat) / interval))
    table.insert(out, math.ceil(new_tat))
    table.insert(out, 0)
  end
end
if not refused then
  for i = 1, n do
    redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', math.max(1, math.ceil(tats[i] - now)))
  end
end
return out
";

/// [`SCRIPT`], called by its SHA-1 digest.
static LIMIT_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(SCRIPT));

/// The in-memory GCRA used while Redis is unavailable (same arithmetic as [`SCRIPT`]).
#[derive(Debug, Default)]
struct Memory {
    tats: HashMap<String, f64>,
}

impl Memory {
    fn evaluate(&mut self, checks: &[Check], now: f64) -> Vec<Outcome> {
        if self.tats.len() > 100_000 {
            self.tats.retain(|_, tat| *tat > now);
        }
        let mut outcomes = Vec::with_capacity(checks.len());
        let mut next = Vec::with_capacity(checks.len());
        for check in checks {
            let interval = check.limit.interval_ms();
            let tau = check.limit.period_ms();
            let tat = self.tats.get(&check.redis_key()).copied().unwrap_or(now).max(now);
            let new_tat = tat + interval;
            let allow_at = new_tat - tau;
            let outcome = if now < allow_at {
                Outcome {
                    limiter: check.limiter,
                    limit: check.limit,
                    allowed: false,
                    remaining: 0,
                    reset_at_ms: tat.ceil() as i64,
                    retry_after_ms: (allow_at - now).ceil() as i64,
                }
            } else {
                next.push((check.redis_key(), new_tat));
                Outcome {
                    limiter: check.limiter,
                    limit: check.limit,
                    allowed: true,
                    remaining: ((now + tau - new_tat) / interval).floor().max(0.0) as u64,
                    reset_at_ms: new_tat.ceil() as i64,
                    retry_after_ms: 0,
                }
            };
            outcomes.push(outcome);
        }
        if outcomes.iter().all(|o| o.allowed) {
            self.tats.extend(next);
        }
        outcomes
    }
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

/// The limiter shared by every request of a replica.
pub struct RateLimiter {
    limits: RateLimits,
    connection: Arc<RwLock<Option<ConnectionManager>>>,
    redis_ok: Arc<AtomicBool>,
    memory: Mutex<Memory>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter").field("limits", &self.limits).field("redis_ok", &self.redis_ok).finish()
    }
}

impl RateLimiter {
    /// A limiter with `limits` that keeps state in memory only (no Redis).
    pub fn in_memory(limits: RateLimits) -> Self {
        Self {
            limits,
            connection: Arc::new(RwLock::new(None)),
            redis_ok: Arc::new(AtomicBool::new(false)),
            memory: Mutex::new(Memory::default()),
        }
    }

    /// A limiter backed by Redis at `url`: one connection attempt now, then in the background
    /// (retrying every second, so the gateway starts without Redis), with a ping once a second to
    /// keep `/readyz` honest.
    pub async fn connect(limits: RateLimits, url: &str, shutdown: CancellationToken) -> Self {
        let limiter = Self::in_memory(limits);
        let client = match redis::Client::open(url) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "invalid REDIS_URL; rate limits stay in memory");
                return limiter;
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(REDIS_BUDGET)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        if let Ok(Ok(manager)) = tokio::time::timeout(
            Duration::from_secs(1),
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await
            && let Ok(mut slot) = limiter.connection.write()
        {
            *slot = Some(manager);
            limiter.redis_ok.store(true, Ordering::Release);
        }
        let connection = limiter.connection.clone();
        let redis_ok = limiter.redis_ok.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let current = connection.read().ok().and_then(|c| c.clone());
                let ok = match current {
                    None => match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                        Ok(manager) => {
                            if let Ok(mut slot) = connection.write() {
                                *slot = Some(manager);
                            }
                            tracing::info!("rate limits use Redis");
                            true
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "Redis unreachable; rate limits stay in memory");
                            false
                        }
                    },
                    Some(mut manager) => {
                        let ping: redis::RedisResult<String> = tokio::time::timeout(
                            Duration::from_millis(500),
                            redis::cmd("PING").query_async(&mut manager),
                        )
                        .await
                        .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "timeout"))));
                        ping.is_ok()
                    }
                };
                if redis_ok.swap(ok, Ordering::AcqRel) != ok && !ok {
                    tracing::warn!("Redis is unavailable; rate limits fall back to memory per replica");
                }
            }
        });
        limiter
    }

    /// The configured limits.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Whether Redis answered lately (else `/readyz` is `degraded`).
    pub fn redis_available(&self) -> bool {
        self.redis_ok.load(Ordering::Acquire)
    }

    /// Evaluates `checks` together; `None` when there are none.
    pub async fn check(&self, checks: &[Check]) -> Option<Decision> {
        if checks.is_empty() {
            return None;
        }
        if self.redis_available()
            && let Some(outcomes) = self.check_redis(checks).await
        {
            return decide(outcomes);
        }
        let outcomes = match self.memory.lock() {
            Ok(mut memory) => memory.evaluate(checks, now_ms()),
            Err(_) => return None,
        };
        decide(outcomes)
    }

    async fn check_redis(&self, checks: &[Check]) -> Option<Vec<Outcome>> {
        let mut connection = self.connection.read().ok()?.clone()?;
        // EVALSHA with the script's digest: one round trip without resending the script; only
        // after a Redis restart (NOSCRIPT) is the script loaded again, once.
        let mut invocation = LIMIT_SCRIPT.prepare_invoke();
        for check in checks {
            invocation.key(check.redis_key());
        }
        for check in checks {
            invocation.arg(format!("{:.3}", check.limit.interval_ms())).arg(format!("{:.3}", check.limit.period_ms()));
        }
        let result: redis::RedisResult<Vec<i64>> =
            match tokio::time::timeout(REDIS_BUDGET, invocation.invoke_async(&mut connection)).await {
                Ok(result) => result,
                Err(_) => Err(redis::RedisError::from((redis::ErrorKind::IoError, "timeout"))),
            };
        let values = match result {
            Ok(values) if values.len() == 1 + 4 * checks.len() => values,
            Ok(values) => {
                tracing::error!(len = values.len(), "unexpected rate-limit script result");
                return None;
            }
            Err(e) => {
                if self.redis_ok.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "Redis is unavailable; rate limits fall back to memory per replica");
                }
                return None;
            }
        };
        self.redis_ok.store(true, Ordering::Release);
        Some(
            checks
                .iter()
                .zip(values[1..].chunks_exact(4))
                .map(|(check, v)| Outcome {
                    limiter: check.limiter,
                    limit: check.limit,
                    allowed: v[0] == 1,
                    remaining: v[1].max(0) as u64,
                    reset_at_ms: v[2],
                    retry_after_ms: v[3],
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(limiter: Limiter, key: &str, limit: &str) -> Check {
        Check { limiter, key: key.into(), limit: limit.parse().expect("limit") }
    }

    #[test]
    fn limits_parse_counts_and_periods() {
        assert_eq!("100/15m".parse(), Ok(Limit::per_minutes(100, 15)));
        assert_eq!("1000/1h".parse(), Ok(Limit::per_minutes(1000, 60)));
        assert_eq!("100/m".parse(), Ok(Limit::per_minutes(100, 1)));
        assert_eq!("5/30s".parse(), Ok(Limit::new(5, Duration::from_secs(30))));
        for bad in ["100", "0/1m", "10/0s", "x/1m", "10/1parsec"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
        assert_eq!(Limit::per_minutes(100, 15).to_string(), "100 requests per 15 minutes");
        assert_eq!(Limit::per_minutes(1000, 60).to_string(), "1000 requests per 1 hour");
    }

    #[test]
    fn plan_limits_parse_one_limit_or_one_per_plan() {
        let all: PlanLimits = "50/1m".parse().expect("plain");
        assert_eq!(all.of(Some("enterprise")), Limit::per_minutes(50, 1));
        let plans: PlanLimits = "free=5/1m, pro=50/1m".parse().expect("plans");
        assert_eq!(plans.of(None), Limit::per_minutes(5, 1));
        assert_eq!(plans.of(Some("pro")), Limit::per_minutes(50, 1));
        assert_eq!(plans.of(Some("enterprise")), Limit::per_minutes(5, 1));
        assert_eq!(plans.of(Some("platinum")), Limit::per_minutes(5, 1), "unknown plans are free");
        assert!("gold=5/1m".parse::<PlanLimits>().is_err());
    }

    #[test]
    fn gcra_allows_a_burst_of_count_then_one_per_interval() {
        let mut memory = Memory::default();
        let c = [check(Limiter::Anonymous, "1.2.3.4", "3/3s")];
        let t0 = 1_000_000.0;
        let remaining: Vec<u64> = (0..3).map(|_| memory.evaluate(&c, t0)[0].remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = &memory.evaluate(&c, t0)[0];
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 1000);
        assert_eq!(refused.retry_after_seconds(), 1);
        assert_eq!(refused.reset_at_ms, 1_003_000, "full again once the three emissions have passed");
        // One interval later, one more request fits.
        assert!(memory.evaluate(&c, t0 + 1000.0)[0].allowed);
        assert!(!memory.evaluate(&c, t0 + 1000.0)[0].allowed);
        // A full window later, the whole burst is back.
        assert_eq!(memory.evaluate(&c, t0 + 10_000.0)[0].remaining, 2);
    }

    #[test]
    fn a_request_refused_by_one_limiter_consumes_none_of_the_others() {
        let mut memory = Memory::default();
        let tight = check(Limiter::AuthLogin, "email:bob@x", "1/1m");
        let loose = check(Limiter::AuthLogin, "ip:1.1.1.1", "10/1m");
        assert!(memory.evaluate(&[tight.clone(), loose.clone()], 0.0).iter().all(|o| o.allowed));
        let second = memory.evaluate(&[tight, loose.clone()], 0.0);
        assert!(!second[0].allowed);
        assert_eq!(memory.evaluate(&[loose], 0.0)[0].remaining, 8, "only the first request counted");
    }

    #[test]
    fn keys_are_independent() {
        let mut memory = Memory::default();
        let a = [check(Limiter::User, "a", "1/1m")];
        let b = [check(Limiter::User, "b", "1/1m")];
        assert!(memory.evaluate(&a, 0.0)[0].allowed);
        assert!(!memory.evaluate(&a, 0.0)[0].allowed);
        assert!(memory.evaluate(&b, 0.0)[0].allowed);
    }

    #[test]
    fn the_headline_is_the_refusing_limiter_or_the_smallest_remaining_fraction() {
        let outcome = |limiter, count, remaining, allowed| Outcome {
            limiter,
            limit: Limit::per_minutes(count, 1),
            allowed,
            remaining,
            reset_at_ms: 0,
            retry_after_ms: 0,
        };
        let d = decide(vec![outcome(Limiter::User, 1000, 900, true), outcome(Limiter::Org, 100, 50, true)])
            .expect("decision");
        assert!(d.allowed);
        assert_eq!(d.headline.limiter, Limiter::Org);
        let d = decide(vec![outcome(Limiter::User, 1000, 0, false), outcome(Limiter::Org, 100, 1, true)])
            .expect("decision");
        assert!(!d.allowed);
        assert_eq!(d.headline.limiter, Limiter::User);
        assert_eq!(decide(Vec::new()), None);
    }
}
