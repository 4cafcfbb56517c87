//! Fixed-window rate limits counted in Redis, shared by every replica of a service.
//!
//! `RateLimiter::hit(key, limit, window)` counts one attempt; past `limit` attempts within the
//! window it answers RESOURCE_EXHAUSTED `RATE_LIMITED` with RetryInfo (the time left in the
//! window), which the gateway turns into HTTP 429 with `Retry-After`. Keys are namespaced so that
//! cells (and test cells) sharing one Redis never count each other's attempts.
//!
//! When Redis cannot be reached the limiter lets the attempt through and logs a warning: limits
//! protect against abuse, and the callers that need a hard bound (identity's lockout) keep one in
//! Postgres.

use std::time::Duration;

use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Counts attempts in Redis.
pub struct RateLimiter {
    client: redis::Client,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    namespace: String,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// INCR, set the expiry on the first hit, and return the count and the time left (ms).
const SCRIPT: &str = "local n = redis.call('INCR', KEYS[1]) \
    if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
    local ttl = redis.call('PTTL', KEYS[1]) \
    if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) ttl = tonumber(ARGV[1]) end \
    return {n, ttl}";

impl RateLimiter {
    /// A limiter on the Redis at `url`; every key is prefixed with `rl:{namespace}`.
    pub fn new(url: &str, namespace: &str) -> anyhow::Result<Self> {
        Ok(Self { client: redis::Client::open(url)?, conn: Mutex::new(None), namespace: namespace.to_string() })
    }

    async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn =
            tokio::time::timeout(Duration::from_secs(1), self.client.get_multiplexed_async_connection()).await??;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Counts one attempt on `key`: RATE_LIMITED (with the time left) past `limit` in `window`.
    pub async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<()> {
        let full = format!("rl:{}{key}", self.namespace);
        let counted = async {
            let mut conn = self.connection().await?;
            let (count, ttl_ms): (u64, i64) = redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(1)
                .arg(&full)
                .arg(window.as_millis().max(1) as u64)
                .query_async(&mut conn)
                .await?;
            anyhow::Ok((count, ttl_ms))
        };
        match tokio::time::timeout(Duration::from_secs(1), counted).await {
            Ok(Ok((count, ttl_ms))) if count > u64::from(limit) => {
                let retry_after = Duration::from_millis(ttl_ms.max(1000) as u64);
                Err(Error::rate_limited(Duration::from_secs(retry_after.as_secs().max(1))))
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "rate limiter unavailable; attempt allowed");
                *self.conn.lock().await = None;
                Ok(())
            }
            Err(_) => {
                tracing::warn!("rate limiter timed out; attempt allowed");
                *self.conn.lock().await = None;
                Ok(())
            }
        }
    }
}
