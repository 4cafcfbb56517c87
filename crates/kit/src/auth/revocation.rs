//! Revoked sessions, rejected by every service within one second (ARCHITECTURE §4, identity rule 10).
//!
//! Identity commits `revoked_at`, then writes `revoked:sid:{sid}` to Redis (TTL 15 min, the life of
//! an access token) and publishes the sid on the channel [`CHANNEL`]; it also publishes
//! [`HEARTBEAT`] there every [`HEARTBEAT_INTERVAL`]. [`publish_revoked`] and [`publish_heartbeat`]
//! are the only writers of that format.
//!
//! [`Revocations`] is what a service's [`super::Authenticator`] consults:
//! - a denylist fed by the channel (and refilled from the `revoked:sid:*` keys each time the
//!   subscription is established, so nothing revoked while it was down is missed);
//! - while the feed is unhealthy (the subscription failed, or no message for [`FEED_SILENCE`]),
//!   identity's `SessionService.GetSessionStatus` for every session it sees, each answer cached for
//!   at most [`STATUS_CACHE_TTL`]; it returns to the feed once the feed has been healthy for
//!   [`FEED_RECOVERY`];
//! - only when identity cannot answer either does it fail closed with UNAVAILABLE
//!   `REVOCATION_CHECK_UNAVAILABLE` (HTTP 503), never UNAUTHENTICATED.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;

use crate::error::{Error, Result};

/// The Redis pub/sub channel of revoked sids and heartbeats.
pub const CHANNEL: &str = "trellis.revocations";
/// The payload of a heartbeat (a sid is a UUID or `key:<uuid>`, never this).
pub const HEARTBEAT: &str = "heartbeat";
/// Prefix of the Redis keys that remember revoked sids.
pub const KEY_PREFIX: &str = "revoked:sid:";
/// How long a revoked sid is remembered: the lifetime of an access token.
pub const REVOKED_TTL: Duration = Duration::from_secs(15 * 60);
/// How often identity publishes a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// A feed silent for longer than this is unhealthy.
pub const FEED_SILENCE: Duration = Duration::from_millis(500);
/// How long a feed must have been healthy again before the fallback stops.
pub const FEED_RECOVERY: Duration = Duration::from_secs(5);
/// How long one `GetSessionStatus` answer is trusted.
pub const STATUS_CACHE_TTL: Duration = Duration::from_secs(1);
/// Deadline of one `GetSessionStatus` call.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// A subscription silent for this long is torn down and re-established.
const RESUBSCRIBE_AFTER_SILENCE: Duration = Duration::from_secs(3);
/// Pause between attempts to (re)subscribe.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(200);
/// How long a denylisted sid is kept in memory (the token lifetime plus kit's leeway).
const DENYLIST_TTL: Duration = Duration::from_secs(16 * 60);

/// Records a revocation in Redis and announces it: the key first (so a subscriber that refills
/// after reconnecting finds it), then the message.
pub async fn publish_revoked<C>(conn: &mut C, sid: &str) -> redis::RedisResult<()>
where
    C: redis::aio::ConnectionLike + Send,
{
    redis::cmd("SET")
        .arg(format!("{KEY_PREFIX}{sid}"))
        .arg(1)
        .arg("EX")
        .arg(REVOKED_TTL.as_secs())
        .query_async::<()>(conn)
        .await?;
    redis::cmd("PUBLISH").arg(CHANNEL).arg(sid).query_async::<i64>(conn).await?;
    Ok(())
}

/// Publishes one heartbeat on [`CHANNEL`].
pub async fn publish_heartbeat<C>(conn: &mut C) -> redis::RedisResult<()>
where
    C: redis::aio::ConnectionLike + Send,
{
    redis::cmd("PUBLISH").arg(CHANNEL).arg(HEARTBEAT).query_async::<i64>(conn).await.map(drop)
}

/// Where session statuses come from while the feed is down.
pub trait SessionStatusSource: Send + Sync + std::fmt::Debug + 'static {
    /// Whether `sid` is active. `token` is the access token that names it: identity answers a
    /// user token about its own session, so no other credential is needed.
    fn is_active<'a>(&'a self, sid: &'a str, token: &'a str) -> BoxFuture<'a, anyhow::Result<bool>>;
}

/// identity's `SessionService.GetSessionStatus` over gRPC.
#[derive(Debug)]
pub struct IdentitySessionStatus {
    channel: tonic::transport::Channel,
}

impl IdentitySessionStatus {
    /// A source that connects lazily to `url`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(STATUS_TIMEOUT)
            .connect_lazy();
        Ok(Self { channel })
    }
}

impl SessionStatusSource for IdentitySessionStatus {
    fn is_active<'a>(&'a self, sid: &'a str, token: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            use trellis_proto::trellis::identity::v1::{
                GetSessionStatusRequest, session_service_client::SessionServiceClient,
            };
            let mut request = tonic::Request::new(GetSessionStatusRequest { sids: vec![sid.to_string()] });
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
            let response = SessionServiceClient::new(self.channel.clone()).get_session_status(request).await?;
            Ok(response.into_inner().statuses.iter().any(|s| s.sid == sid && s.active))
        })
    }
}

#[derive(Debug, Default)]
struct Feed {
    subscribed: bool,
    last_message: Option<Instant>,
    healthy_since: Option<Instant>,
}

/// The revoked-session check every service applies (see the module docs).
#[derive(Debug)]
pub struct Revocations {
    denylist: Mutex<HashMap<String, Instant>>,
    feed: Mutex<Feed>,
    cache: Mutex<HashMap<String, (Instant, bool)>>,
    status: Arc<dyn SessionStatusSource>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn revoked() -> Error {
    Error::unauthenticated("SESSION_REVOKED", "The session has been signed out")
}

impl Revocations {
    /// A checker whose fallback asks `status`. No feed runs until [`Revocations::spawn_feed`].
    pub fn new(status: Arc<dyn SessionStatusSource>) -> Arc<Self> {
        Arc::new(Self {
            denylist: Mutex::new(HashMap::new()),
            feed: Mutex::new(Feed::default()),
            cache: Mutex::new(HashMap::new()),
            status,
        })
    }

    /// A checker fed from `redis_url` with identity at `identity_url` as the fallback; the feed
    /// runs in the background until the checker is dropped.
    pub fn connect(redis_url: &str, identity_url: &str) -> anyhow::Result<Arc<Self>> {
        let this = Self::new(Arc::new(IdentitySessionStatus::new(identity_url)?));
        this.spawn_feed(redis::Client::open(redis_url)?);
        Ok(this)
    }

    /// Subscribes to [`CHANNEL`] in the background, re-subscribing after every failure.
    pub fn spawn_feed(self: &Arc<Self>, client: redis::Client) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                if let Err(e) = subscribe_once(&weak, &client).await {
                    tracing::debug!(error = format!("{e:#}"), "revocation feed interrupted");
                }
                if let Some(this) = weak.upgrade() {
                    lock(&this.feed).subscribed = false;
                }
                tokio::time::sleep(RESUBSCRIBE_BACKOFF).await;
            }
        })
    }

    /// Adds a revoked sid to the denylist.
    pub fn note_revoked(&self, sid: &str) {
        let now = Instant::now();
        let mut denylist = lock(&self.denylist);
        if denylist.len() > 10_000 {
            denylist.retain(|_, at| now.duration_since(*at) < DENYLIST_TTL);
        }
        denylist.insert(sid.to_string(), now);
        lock(&self.cache).insert(sid.to_string(), (now, false));
    }

    /// Records that the feed delivered a message (a heartbeat or a sid) just now.
    pub fn note_message(&self) {
        let now = Instant::now();
        let mut feed = lock(&self.feed);
        feed.subscribed = true;
        match feed.last_message {
            // The first subscription of this process: trusted at once (the denylist was just
            // filled from Redis).
            None => feed.healthy_since = Some(now.checked_sub(FEED_RECOVERY).unwrap_or(now)),
            // After a gap the feed must prove itself for FEED_RECOVERY again.
            Some(previous) if now.duration_since(previous) > FEED_SILENCE => feed.healthy_since = Some(now),
            Some(_) => {}
        }
        feed.last_message = Some(now);
    }

    /// Marks the subscription as lost.
    pub fn note_feed_lost(&self) {
        lock(&self.feed).subscribed = false;
    }

    /// Whether the denylist alone can be trusted right now.
    pub fn feed_healthy(&self) -> bool {
        let feed = lock(&self.feed);
        let now = Instant::now();
        feed.subscribed
            && feed.last_message.is_some_and(|t| now.duration_since(t) <= FEED_SILENCE)
            && feed.healthy_since.is_some_and(|t| now.duration_since(t) >= FEED_RECOVERY)
    }

    /// Ok when session `sid` (named by `token`) is not revoked. UNAUTHENTICATED `SESSION_REVOKED`
    /// when it is; UNAVAILABLE `REVOCATION_CHECK_UNAVAILABLE` when neither the feed nor identity
    /// can tell.
    pub async fn check(&self, sid: &str, token: &str) -> Result<()> {
        if let Some(at) = lock(&self.denylist).get(sid)
            && at.elapsed() < DENYLIST_TTL
        {
            return Err(revoked());
        }
        if self.feed_healthy() {
            return Ok(());
        }
        if let Some((at, active)) = lock(&self.cache).get(sid).copied()
            && at.elapsed() < STATUS_CACHE_TTL
        {
            return if active { Ok(()) } else { Err(revoked()) };
        }
        let answer = tokio::time::timeout(STATUS_TIMEOUT, self.status.is_active(sid, token)).await;
        match answer {
            Ok(Ok(active)) => {
                let mut cache = lock(&self.cache);
                if cache.len() > 10_000 {
                    cache.retain(|_, (at, _)| at.elapsed() < STATUS_CACHE_TTL);
                }
                cache.insert(sid.to_string(), (Instant::now(), active));
                if active { Ok(()) } else { Err(revoked()) }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "revocation feed down and session status unavailable");
                Err(unavailable())
            }
            Err(_) => {
                tracing::warn!("revocation feed down and session status timed out");
                Err(unavailable())
            }
        }
    }
}

fn unavailable() -> Error {
    Error::unavailable("REVOCATION_CHECK_UNAVAILABLE", "Sessions cannot be checked right now; retry later")
        .with_retry_after(Duration::from_secs(1))
}

/// One subscription: subscribe, refill the denylist from Redis, then consume until the
/// connection fails, goes silent, or the checker is dropped.
async fn subscribe_once(weak: &Weak<Revocations>, client: &redis::Client) -> anyhow::Result<()> {
    let connect = Duration::from_secs(2);
    let mut pubsub = tokio::time::timeout(connect, client.get_async_pubsub()).await??;
    tokio::time::timeout(connect, pubsub.subscribe(CHANNEL)).await??;
    // Sids revoked while we were not listening.
    let mut conn = tokio::time::timeout(connect, client.get_multiplexed_async_connection()).await??;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{KEY_PREFIX}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        let Some(this) = weak.upgrade() else { return Ok(()) };
        for key in keys {
            if let Some(sid) = key.strip_prefix(KEY_PREFIX) {
                this.note_revoked(sid);
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut messages = pubsub.on_message();
    loop {
        let message = match tokio::time::timeout(RESUBSCRIBE_AFTER_SILENCE, messages.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => anyhow::bail!("subscription closed"),
            Err(_) => anyhow::bail!("no message for {RESUBSCRIBE_AFTER_SILENCE:?}"),
        };
        let Some(this) = weak.upgrade() else { return Ok(()) };
        let payload: String = message.get_payload().unwrap_or_default();
        if payload != HEARTBEAT && !payload.is_empty() {
            this.note_revoked(&payload);
        }
        this.note_message();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Fake {
        active: std::sync::Mutex<Option<bool>>,
        calls: AtomicUsize,
    }

    impl SessionStatusSource for Fake {
        fn is_active<'a>(&'a self, _sid: &'a str, _token: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = *self.active.lock().expect("lock");
            Box::pin(async move { answer.ok_or_else(|| anyhow::anyhow!("identity unreachable")) })
        }
    }

    fn healthy(r: &Revocations) {
        r.note_message();
        assert!(r.feed_healthy());
    }

    #[tokio::test]
    async fn a_healthy_feed_decides_alone() {
        let fake = Arc::new(Fake::default());
        let r = Revocations::new(fake.clone());
        healthy(&r);
        r.check("s1", "t").await.expect("not revoked");
        r.note_revoked("s2");
        assert_eq!(r.check("s2", "t").await.expect_err("revoked").reason(), "SESSION_REVOKED");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0, "identity is not asked while the feed is healthy");
    }

    #[tokio::test]
    async fn without_the_feed_identity_is_asked_and_answers_are_cached_for_a_second() {
        let fake = Arc::new(Fake::default());
        *fake.active.lock().expect("lock") = Some(true);
        let r = Revocations::new(fake.clone());
        assert!(!r.feed_healthy());
        r.check("s1", "t").await.expect("active");
        r.check("s1", "t").await.expect("active (cached)");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        *fake.active.lock().expect("lock") = Some(false);
        tokio::time::sleep(STATUS_CACHE_TTL + Duration::from_millis(50)).await;
        assert_eq!(r.check("s1", "t").await.expect_err("revoked").reason(), "SESSION_REVOKED");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn it_fails_closed_with_unavailable_only_when_identity_is_unreachable_too() {
        let fake = Arc::new(Fake::default());
        let r = Revocations::new(fake);
        let e = r.check("s1", "t").await.expect_err("fail closed");
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert_eq!(e.reason(), "REVOCATION_CHECK_UNAVAILABLE");
        // A sid known to be revoked is still refused as revoked.
        r.note_revoked("s2");
        assert_eq!(r.check("s2", "t").await.expect_err("revoked").code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_silent_feed_must_recover_for_five_seconds() {
        let fake = Arc::new(Fake::default());
        *fake.active.lock().expect("lock") = Some(true);
        let r = Revocations::new(fake.clone());
        healthy(&r);
        tokio::time::sleep(FEED_SILENCE + Duration::from_millis(100)).await;
        assert!(!r.feed_healthy(), "silence makes the feed unhealthy");
        r.note_message();
        assert!(!r.feed_healthy(), "a message after a gap does not restore it at once");
        r.check("s1", "t").await.expect("asked identity");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        r.note_feed_lost();
        assert!(!r.feed_healthy());
    }
}
