//! Announcing revoked sessions (spec rule 10): after a revocation commits, each sid is written to
//! Redis and published on `trellis.revocations` (kit's [`trellis_kit::auth::revocation`] format),
//! retried until Redis accepts it; a heartbeat goes out every 250 ms so that every service can tell
//! a quiet feed from a broken one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use trellis_kit::auth::revocation::{HEARTBEAT_INTERVAL, REVOKED_TTL, publish_heartbeat, publish_revoked};

/// Publishes revocations and heartbeats to Redis.
#[derive(Clone)]
pub struct Announcer {
    client: redis::Client,
    conn: Arc<Mutex<Option<redis::aio::MultiplexedConnection>>>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").finish_non_exhaustive()
    }
}

impl Announcer {
    /// An announcer for the Redis at `url` (connected on first use).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self { client: redis::Client::open(url)?, conn: Arc::new(Mutex::new(None)) })
    }

    async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn =
            tokio::time::timeout(Duration::from_secs(2), self.client.get_multiplexed_async_connection()).await??;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn reset(&self) {
        *self.conn.lock().await = None;
    }

    /// Announces revoked sids in the background, retrying each until Redis accepts it (or its
    /// tokens have expired anyway).
    pub fn announce(&self, sids: Vec<String>) {
        if sids.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for sid in sids {
                let mut backoff = Duration::from_millis(50);
                loop {
                    let attempt = async {
                        let mut conn = this.connection().await?;
                        publish_revoked(&mut conn, &sid).await?;
                        anyhow::Ok(())
                    };
                    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                        Ok(Ok(())) => break,
                        Ok(Err(e)) => tracing::warn!(sid = %sid, error = format!("{e:#}"), "announcing a revocation"),
                        Err(_) => tracing::warn!(sid = %sid, "announcing a revocation timed out"),
                    }
                    this.reset().await;
                    if started.elapsed() > REVOKED_TTL {
                        tracing::error!(sid = %sid, "gave up announcing a revocation; its tokens have expired");
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        });
    }

    /// Publishes a heartbeat every 250 ms until `shutdown`.
    pub async fn heartbeat(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let beat = async {
                let mut conn = self.connection().await?;
                publish_heartbeat(&mut conn).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(1), beat).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = format!("{e:#}"), "revocation heartbeat failed");
                    self.reset().await;
                }
                Err(_) => self.reset().await,
            }
        }
    }
}
