//! The result cache of Check (spec rules 4, 6 and 23; ADR 0023).
//!
//! Each replica keeps, in process, `(org, resource, permission, subject) → (result, revision,
//! computed_at, keys read)`. An entry is served only when it satisfies the request's consistency:
//! - `minimize_latency`: computed at most `max_staleness` ago;
//! - `at_least_as_fresh(t)`: computed on a snapshot whose revision is ≥ `t`;
//! - `fully_consistent`: never (the fresh result still fills the cache).
//!
//! Invalidation is revision-aware rather than a delete: every write records, per org, the
//! `(type, id, relation)` keys it changed and its revision; an entry is void when one of the keys
//! it read changed at a revision above its own. So a write that commits while an older evaluation
//! is still filling the cache can never be masked by it. Writes made by this replica apply at once;
//! other replicas' writes arrive on the Redis channel [`CHANNEL`] (and the staleness bound holds
//! when that channel lags). Rows of the platform scope invalidate entries of every org.
//!
//! A schema change clears everything ([`CheckCache::clear`]). Memory is bounded by an estimate of
//! each entry's size; the least recently used entries go first (second-chance queue).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::eval::{ObjectRef, SubjectRef};
use crate::store::PLATFORM_ORG;

/// The Redis pub/sub channel of invalidations.
pub const CHANNEL: &str = "trellis.permissions.invalidate";
/// How long an entry lives at most, whatever the consistency asked.
pub const TTL: Duration = Duration::from_secs(30);
/// Pause between attempts to (re)subscribe.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(500);

/// Cache settings (`PERMISSIONS_MAX_STALENESS`, `PERMISSIONS_CACHE_BYTES`).
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// How old a `minimize_latency` answer may be (default 5 s, at most 30 s).
    pub max_staleness: Duration,
    /// The memory bound (default 256 MiB); 0 disables the cache.
    pub max_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { max_staleness: Duration::from_secs(5), max_bytes: 256 << 20 }
    }
}

impl CacheSettings {
    /// Reads `PERMISSIONS_MAX_STALENESS` (seconds, fractions allowed) and
    /// `PERMISSIONS_CACHE_BYTES`, falling back to the defaults.
    pub fn from_env() -> Self {
        let mut s = Self::default();
        if let Some(secs) = std::env::var("PERMISSIONS_MAX_STALENESS").ok().and_then(|v| v.parse::<f64>().ok()) {
            s.max_staleness = Duration::from_secs_f64(secs.clamp(0.0, 30.0));
        }
        if let Some(bytes) = std::env::var("PERMISSIONS_CACHE_BYTES").ok().and_then(|v| v.parse().ok()) {
            s.max_bytes = bytes;
        }
        s
    }
}

/// What the request accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    MinimizeLatency,
    AtLeast(i64),
    Full,
}

/// A relation read by an evaluation: `(type, id, relation)`.
pub type ReadKey = (String, String, String);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    org: Uuid,
    resource: ObjectRef,
    permission: String,
    subject: SubjectRef,
}

#[derive(Debug)]
struct Entry {
    has: bool,
    revision: i64,
    /// When the snapshot the answer was computed on began.
    computed_at: Instant,
    reads: Arc<[ReadKey]>,
    bytes: usize,
    /// Tick of the last hit (for the second-chance queue).
    used: u64,
    /// A refresh of this entry is under way ([`CheckCache::claim_refresh`]).
    refreshing: bool,
}

#[derive(Debug, Default)]
struct OrgChanges {
    /// The newest revision each key changed at, and when that was learned.
    changed: HashMap<ReadKey, (i64, Instant)>,
    /// The newest revision of the org this replica knows of.
    known: i64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    queue: VecDeque<(Key, u64)>,
    bytes: usize,
    tick: u64,
    orgs: HashMap<Uuid, OrgChanges>,
    last_prune: Option<Instant>,
}

/// An invalidation message on [`CHANNEL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    pub org_id: Uuid,
    pub revision: i64,
    pub keys: Vec<ReadKey>,
    /// The merged schema changed: every entry goes, and replicas reload the schema.
    #[serde(default)]
    pub schema: bool,
}

/// Hit and miss counters (for tests and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

/// The per-replica Check cache.
#[derive(Debug)]
pub struct CheckCache {
    settings: CacheSettings,
    inner: Mutex<Inner>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
    publisher: tokio::sync::Mutex<Option<(redis::Client, Option<redis::aio::MultiplexedConnection>)>>,
    schema_dirty: std::sync::atomic::AtomicBool,
}

fn size_of(key: &Key, reads: &[ReadKey]) -> usize {
    let k = key.resource.ty.len() + key.resource.id.len() + key.permission.len() + key.subject.ty.len();
    let r: usize = reads.iter().map(|(a, b, c)| a.len() + b.len() + c.len() + 72).sum();
    200 + k + key.subject.id.len() + key.subject.relation.len() + r
}

impl CheckCache {
    pub fn new(settings: CacheSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            inner: Mutex::new(Inner::default()),
            hits: Default::default(),
            misses: Default::default(),
            publisher: tokio::sync::Mutex::new(None),
            schema_dirty: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// A cached answer that satisfies `freshness`: `(has, revision)`.
    pub fn get(
        &self,
        org: Uuid,
        resource: &ObjectRef,
        permission: &str,
        subject: &SubjectRef,
        freshness: Freshness,
    ) -> Option<(bool, i64)> {
        use std::sync::atomic::Ordering::Relaxed;
        if freshness == Freshness::Full || self.settings.max_bytes == 0 {
            return None;
        }
        let key = Key { org, resource: resource.clone(), permission: permission.to_owned(), subject: subject.clone() };
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.tick += 1;
        let tick = inner.tick;
        let found = inner.entries.get_mut(&key).and_then(|e| {
            let age = now.saturating_duration_since(e.computed_at);
            let fresh_enough = match freshness {
                Freshness::MinimizeLatency => age <= self.settings.max_staleness,
                Freshness::AtLeast(t) => e.revision >= t && age <= TTL,
                Freshness::Full => false,
            };
            if !fresh_enough || voided(&inner.orgs, org, e) {
                return None;
            }
            e.used = tick;
            Some((e.has, e.revision))
        });
        if found.is_some() {
            self.hits.fetch_add(1, Relaxed)
        } else {
            self.misses.fetch_add(1, Relaxed)
        };
        found
    }

    /// Whether the caller should recompute an entry that was just served under
    /// `minimize_latency`: true once per entry when it has used three quarters of
    /// `max_staleness`, so that a key in steady use is refreshed in the background before it
    /// expires instead of making a request wait for a re-evaluation. The refreshed answer is
    /// stored with [`CheckCache::put`]; if the refresh fails the entry simply expires.
    pub fn claim_refresh(&self, org: Uuid, resource: &ObjectRef, permission: &str, subject: &SubjectRef) -> bool {
        let key = Key { org, resource: resource.clone(), permission: permission.to_owned(), subject: subject.clone() };
        let threshold = self.settings.max_staleness.mul_f64(0.75);
        let mut inner = self.lock();
        match inner.entries.get_mut(&key) {
            Some(e) if !e.refreshing && e.computed_at.elapsed() >= threshold => {
                e.refreshing = true;
                true
            }
            _ => false,
        }
    }

    /// Gives back a claimed refresh that was not started (a later hit claims it again).
    pub fn release_refresh(&self, org: Uuid, resource: &ObjectRef, permission: &str, subject: &SubjectRef) {
        let key = Key { org, resource: resource.clone(), permission: permission.to_owned(), subject: subject.clone() };
        if let Some(e) = self.lock().entries.get_mut(&key) {
            e.refreshing = false;
        }
    }

    /// Stores a fresh answer computed on a snapshot at `revision`, begun at `snapshot_at`, that
    /// read `reads`. Its age counts from `snapshot_at`.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        org: Uuid,
        resource: &ObjectRef,
        permission: &str,
        subject: &SubjectRef,
        (has, revision): (bool, i64),
        snapshot_at: Instant,
        reads: Vec<ReadKey>,
    ) {
        if self.settings.max_bytes == 0 {
            return;
        }
        let key = Key { org, resource: resource.clone(), permission: permission.to_owned(), subject: subject.clone() };
        let reads: Arc<[ReadKey]> = reads.into();
        let bytes = size_of(&key, &reads);
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(old) = inner.entries.get(&key)
            && old.revision > revision
        {
            return;
        }
        inner.tick += 1;
        let tick = inner.tick;
        let entry = Entry { has, revision, computed_at: snapshot_at, reads, bytes, used: tick, refreshing: false };
        if let Some(old) = inner.entries.insert(key.clone(), entry) {
            inner.bytes -= old.bytes;
        } else {
            inner.queue.push_back((key, tick));
        }
        inner.bytes += bytes;
        let org = inner.orgs.entry(org).or_default();
        org.known = org.known.max(revision);
        while inner.bytes > self.settings.max_bytes {
            let Some((k, queued)) = inner.queue.pop_front() else { break };
            let Some(e) = inner.entries.get(&k) else { continue };
            if e.used > queued && Instant::now().saturating_duration_since(e.computed_at) <= TTL {
                // Used since it was queued: a second chance.
                let used = e.used;
                inner.queue.push_back((k, used));
                continue;
            }
            if let Some(e) = inner.entries.remove(&k) {
                inner.bytes -= e.bytes;
            }
        }
    }

    /// Whether a schema change was announced since the schema was last loaded.
    pub fn schema_dirty(&self) -> bool {
        self.schema_dirty.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Clears the schema-change mark (the caller reloads the schema).
    pub fn take_schema_dirty(&self) -> bool {
        self.schema_dirty.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Announces a schema change made through this replica.
    pub async fn schema_changed(&self) {
        self.written(Invalidation { org_id: PLATFORM_ORG, revision: 0, keys: Vec::new(), schema: true }).await;
    }

    /// Applies a write: the keys changed at `revision` in `org`.
    pub fn invalidate(&self, inv: &Invalidation) {
        if inv.schema {
            self.schema_dirty.store(true, std::sync::atomic::Ordering::Release);
            self.clear();
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let org = inner.orgs.entry(inv.org_id).or_default();
        org.known = org.known.max(inv.revision);
        for k in &inv.keys {
            let slot = org.changed.entry(k.clone()).or_insert((inv.revision, now));
            if slot.0 <= inv.revision {
                *slot = (inv.revision, now);
            }
        }
        // Changes older than the TTL cannot void a live entry any more.
        if inner.last_prune.is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(1)) {
            inner.last_prune = Some(now);
            for o in inner.orgs.values_mut() {
                o.changed.retain(|_, (_, at)| now.saturating_duration_since(*at) <= TTL + Duration::from_secs(1));
            }
            inner.entries.retain(|_, e| now.saturating_duration_since(e.computed_at) <= TTL);
            let live: usize = inner.entries.values().map(|e| e.bytes).sum();
            inner.bytes = live;
            let Inner { queue, entries, .. } = &mut *inner;
            queue.retain(|(k, _)| entries.contains_key(k));
        }
    }

    /// The newest revision of `org` this replica has seen (0 if none).
    pub fn known_revision(&self, org: Uuid) -> i64 {
        self.lock().orgs.get(&org).map(|o| o.known).unwrap_or(0)
    }

    /// Drops every entry (schema change).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.queue.clear();
        inner.bytes = 0;
    }

    pub fn stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            entries: self.lock().entries.len(),
        }
    }

    /// Applies a local write and announces it to the other replicas. A failed publish is logged:
    /// the staleness bound still holds on the others.
    pub async fn written(&self, inv: Invalidation) {
        self.invalidate(&inv);
        let mut publisher = self.publisher.lock().await;
        let Some((client, conn)) = publisher.as_mut() else { return };
        let Ok(payload) = serde_json::to_string(&inv) else { return };
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection()).await {
                Ok(Ok(c)) => *conn = Some(c),
                _ => {
                    tracing::warn!(org_id = %inv.org_id, "cannot reach Redis to publish a cache invalidation");
                    return;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let sent: redis::RedisResult<i64> = tokio::time::timeout(
                Duration::from_secs(1),
                redis::cmd("PUBLISH").arg(CHANNEL).arg(&payload).query_async(c),
            )
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::IoError, "publish timed out"))));
            if let Err(e) = sent {
                tracing::warn!(org_id = %inv.org_id, error = %e, "publishing a cache invalidation failed");
                *conn = None;
            }
        }
    }

    /// Publishes this replica's writes on, and applies the others' from, Redis at `redis_url`.
    pub async fn connect_redis(self: &Arc<Self>, redis_url: &str) -> anyhow::Result<()> {
        let client = redis::Client::open(redis_url)?;
        *self.publisher.lock().await = Some((client.clone(), None));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                if let Err(e) = subscribe_once(&weak, &client).await {
                    tracing::debug!(error = format!("{e:#}"), "cache invalidation feed interrupted");
                }
                tokio::time::sleep(RESUBSCRIBE_BACKOFF).await;
            }
        });
        Ok(())
    }
}

fn voided(orgs: &HashMap<Uuid, OrgChanges>, org: Uuid, e: &Entry) -> bool {
    // The org's own changes are compared by revision; the platform scope has revisions of its own,
    // so its changes void every entry whose snapshot began before the change was learned.
    let changed_after = |changes: Option<&OrgChanges>, platform: bool| {
        changes.is_some_and(|c| {
            !c.changed.is_empty()
                && e.reads.iter().any(|k| {
                    c.changed
                        .get(k)
                        .is_some_and(|(rev, at)| if platform { *at >= e.computed_at } else { *rev > e.revision })
                })
        })
    };
    changed_after(orgs.get(&org), false) || (org != PLATFORM_ORG && changed_after(orgs.get(&PLATFORM_ORG), true))
}

async fn subscribe_once(weak: &Weak<CheckCache>, client: &redis::Client) -> anyhow::Result<()> {
    let connect = Duration::from_secs(2);
    let mut pubsub = tokio::time::timeout(connect, client.get_async_pubsub()).await??;
    tokio::time::timeout(connect, pubsub.subscribe(CHANNEL)).await??;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let Some(this) = weak.upgrade() else { return Ok(()) };
        let payload: String = message.get_payload().unwrap_or_default();
        match serde_json::from_str::<Invalidation>(&payload) {
            Ok(inv) => this.invalidate(&inv),
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed cache invalidation"),
        }
    }
    anyhow::bail!("subscription closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Uuid, ObjectRef, SubjectRef) {
        (Uuid::now_v7(), ObjectRef::new("test_document", "spec"), SubjectRef::new("user", "vera"))
    }

    fn read(ty: &str, id: &str, rel: &str) -> ReadKey {
        (ty.into(), id.into(), rel.into())
    }

    #[test]
    fn an_entry_in_use_is_claimed_for_refresh_once_when_three_quarters_stale() {
        let staleness = Duration::from_millis(400);
        let cache = CheckCache::new(CacheSettings { max_staleness: staleness, ..Default::default() });
        let (org, r, s) = keys();
        assert!(!cache.claim_refresh(org, &r, "view", &s), "nothing cached");
        cache.put(org, &r, "view", &s, (true, 5), Instant::now(), vec![read("test_document", "spec", "viewer")]);
        assert!(!cache.claim_refresh(org, &r, "view", &s), "fresh");
        std::thread::sleep(staleness.mul_f64(0.8));
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), Some((true, 5)), "still served");
        assert!(cache.claim_refresh(org, &r, "view", &s), "claimed");
        assert!(!cache.claim_refresh(org, &r, "view", &s), "claimed once");
        cache.release_refresh(org, &r, "view", &s);
        assert!(cache.claim_refresh(org, &r, "view", &s), "claimed again after a release");
        // The refreshed answer replaces it; the next claim waits for it to age again.
        cache.put(org, &r, "view", &s, (false, 6), Instant::now(), vec![read("test_document", "spec", "viewer")]);
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), Some((false, 6)));
        assert!(!cache.claim_refresh(org, &r, "view", &s));
    }

    #[test]
    fn an_entry_serves_only_requests_it_is_fresh_enough_for() {
        let cache = CheckCache::new(CacheSettings::default());
        let (org, r, s) = keys();
        cache.put(org, &r, "view", &s, (false, 5), Instant::now(), vec![read("test_document", "spec", "viewer")]);
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), Some((false, 5)));
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::AtLeast(5)), Some((false, 5)));
        // A write elsewhere (another replica) at revision 6: the token forces a fresh evaluation
        // even though no invalidation reached this replica.
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::AtLeast(6)), None);
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::Full), None);
        assert_eq!(cache.get(Uuid::now_v7(), &r, "view", &s, Freshness::MinimizeLatency), None, "other org");
    }

    #[test]
    fn a_write_voids_the_entries_that_read_its_keys_even_when_it_lands_first() {
        let cache = CheckCache::new(CacheSettings::default());
        let (org, r, s) = keys();
        let other = ObjectRef::new("test_document", "other");
        // The write at revision 6 is applied before an evaluation at revision 5 fills the cache.
        cache.invalidate(&Invalidation {
            org_id: org,
            revision: 6,
            keys: vec![read("test_document", "spec", "viewer")],
            schema: false,
        });
        cache.put(org, &r, "view", &s, (false, 5), Instant::now(), vec![read("test_document", "spec", "viewer")]);
        cache.put(org, &other, "view", &s, (false, 5), Instant::now(), vec![read("test_document", "other", "viewer")]);
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), None);
        assert_eq!(cache.get(org, &other, "view", &s, Freshness::MinimizeLatency), Some((false, 5)));
        // An answer computed at the write's revision is good again.
        cache.put(org, &r, "view", &s, (true, 6), Instant::now(), vec![read("test_document", "spec", "viewer")]);
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), Some((true, 6)));
        assert_eq!(cache.known_revision(org), 6);
        // Platform-scope writes void entries of every org.
        cache.invalidate(&Invalidation {
            org_id: PLATFORM_ORG,
            revision: 1,
            keys: vec![read("test_document", "spec", "viewer")],
            schema: false,
        });
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), None);
    }

    #[test]
    fn minimize_latency_is_bounded_by_the_staleness() {
        let cache = CheckCache::new(CacheSettings { max_staleness: Duration::ZERO, ..Default::default() });
        let (org, r, s) = keys();
        cache.put(org, &r, "view", &s, (true, 1), Instant::now(), Vec::new());
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), None);
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::AtLeast(1)), Some((true, 1)));
    }

    #[test]
    fn memory_is_bounded_and_recently_used_entries_survive() {
        let cache = CheckCache::new(CacheSettings { max_bytes: 20_000, ..Default::default() });
        let org = Uuid::now_v7();
        let s = SubjectRef::new("user", "u");
        let hot = ObjectRef::new("test_document", "hot");
        cache.put(org, &hot, "view", &s, (true, 1), Instant::now(), Vec::new());
        for i in 0..1000 {
            assert!(cache.get(org, &hot, "view", &s, Freshness::MinimizeLatency).is_some(), "hot entry evicted at {i}");
            cache.put(
                org,
                &ObjectRef::new("test_document", format!("d{i}")),
                "view",
                &s,
                (true, 1),
                Instant::now(),
                Vec::new(),
            );
        }
        let stats = cache.stats();
        assert!(stats.entries < 1000 && stats.entries > 10, "{stats:?}");
        assert!(cache.lock().bytes <= 20_000);
    }

    #[test]
    fn clearing_drops_everything() {
        let cache = CheckCache::new(CacheSettings::default());
        let (org, r, s) = keys();
        cache.put(org, &r, "view", &s, (true, 1), Instant::now(), Vec::new());
        cache.clear();
        assert_eq!(cache.get(org, &r, "view", &s, Freshness::MinimizeLatency), None);
    }
}
