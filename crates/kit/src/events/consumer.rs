//! A consumer: its quorum queue → inbox + handler, with retries and a dead-letter queue.
//!
//! Per delivery, in the order the queue hands them out:
//! 1. decode the envelope; a message that is not one (or names no valid event id or org) can
//!    never succeed and is rejected straight into the dead-letter queue;
//! 2. open a tenant transaction for the envelope's org, insert `(consumer, event_id)` into
//!    `inbox`; if it was already there the event was handled before: commit, ack, done;
//! 3. call the handler in that transaction, commit, ack.
//!
//! A handler failure rolls the transaction back. Until the delivery limit the message is
//! negatively acknowledged with requeue after a backoff (200 ms doubling to 5 s, by the queue's
//! `x-delivery-count`); meanwhile it only holds one of the prefetch slots, so the messages behind
//! it keep flowing. On its last allowed delivery it is rejected into `<queue>.dlq`; the quorum
//! queue's `x-delivery-limit` is the backstop when deliveries are lost another way (a consumer
//! crashing mid-message).
//!
//! Database outages (connection lost, pool exhausted, server restarting) are not the event's
//! fault: the delivery is held and retried in place with backoff, without spending a delivery.
//! A lost broker connection ends the session; it is reopened with backoff and unacked messages
//! come back, which the inbox turns into no-ops when their effect had committed.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use prost::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::amqp::{self, Backoff};
use super::metrics::{EventMetrics, QueueLabels};
use super::{Consumer, Event, EventBus};
use crate::context::RequestContext;
use crate::db::Db;
use trellis_proto::trellis::events::v1::Envelope;

/// Unacknowledged messages the broker may push to one consumer: the one being handled, those
/// waiting behind it, and those waiting out a retry backoff.
pub const PREFETCH: u16 = 32;

/// Header in which quorum queues count earlier deliveries of a message.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// Runs one consumer until shutdown.
///
/// Returns only on shutdown: broker and database failures are logged and retried. From the call
/// until the consumer has bound its queue, [`wait_for_consumers`] on the same exchange waits.
pub fn run_consumer(
    bus: EventBus,
    db: Db,
    consumer: Consumer,
    shutdown: CancellationToken,
) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
    let mut unbound = Unbound::register(bus.exchange());
    async move {
        let name = format!("trellis-{}-{}", db.schema(), consumer.queue);
        let worker = Worker {
            labels: EventMetrics::queue(&consumer.queue),
            max_deliveries: bus.config().events_max_deliveries.max(1),
            bus,
            db,
            consumer,
        };
        let mut backoff = amqp::reconnect_backoff();
        while !shutdown.is_cancelled() {
            match worker.session(&name, &mut backoff, &mut unbound, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        queue = %worker.consumer.queue,
                        error = format!("{e:#}"),
                        retry_in = ?delay,
                        "event consumer lost RabbitMQ; reconnecting"
                    );
                    if !amqp::sleep_unless_shutdown(delay, &shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(queue = %worker.consumer.queue, "event consumer stopped");
        Ok(())
    }
}

/// Waits until every consumer started on `bus`'s exchange in this process has declared and bound
/// its queue (events published before that reach no queue); false after `timeout`.
///
/// A cell starting from scratch has this window once; tests, which start one per test, close it
/// with this before publishing.
pub async fn wait_for_consumers(bus: &EventBus, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pending = unbound_counts().get(bus.exchange()).copied().unwrap_or(0);
        if pending == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Consumers started but not yet bound, by exchange.
fn unbound_counts() -> std::sync::MutexGuard<'static, HashMap<String, usize>> {
    static UNBOUND: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    UNBOUND.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// A consumer's place in the unbound count, given up once its queue is bound (or it stops).
struct Unbound {
    exchange: Option<String>,
}

impl Unbound {
    fn register(exchange: &str) -> Self {
        *unbound_counts().entry(exchange.to_string()).or_default() += 1;
        Self { exchange: Some(exchange.to_string()) }
    }

    fn bound(&mut self) {
        if let Some(exchange) = self.exchange.take() {
            let mut counts = unbound_counts();
            if let Some(n) = counts.get_mut(&exchange) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&exchange);
                }
            }
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.bound();
    }
}

/// What became of a delivery's event.
enum Outcome {
    /// The handler's effect committed.
    Handled,
    /// The inbox already had it.
    Duplicate,
}

/// Why an event was not handled.
enum Failure {
    /// The database was unreachable: retry in place, the event is not at fault.
    Unavailable(String),
    /// The handler (or its commit) failed: spend a delivery.
    Failed(String),
}

struct Worker {
    bus: EventBus,
    db: Db,
    consumer: Consumer,
    max_deliveries: u32,
    labels: QueueLabels,
}

impl Worker {
    /// One connection's worth of consuming. `Ok` on shutdown, `Err` when the broker went away.
    async fn session(
        &self,
        name: &str,
        backoff: &mut Backoff,
        unbound: &mut Unbound,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let connection = tokio::select! {
            connection = amqp::connect(&self.bus, name) => connection?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let result = self.consume(&connection, name, backoff, unbound, shutdown).await;
        if connection.status().connected() {
            let _ = connection.close(200, "consumer stopping".into()).await;
        }
        result
    }

    async fn consume(
        &self,
        connection: &lapin::Connection,
        name: &str,
        backoff: &mut Backoff,
        unbound: &mut Unbound,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let queue = amqp::queue_name(&self.bus, &self.consumer.queue);
        let tag = format!("{name}-{}", Uuid::now_v7().simple());
        let setup = async {
            let channel = connection.create_channel().await?;
            amqp::declare_consumer_topology(&channel, &self.bus, &self.consumer.queue, &self.consumer.bindings).await?;
            unbound.bound();
            channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let deliveries = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            anyhow::Ok((channel, deliveries))
        };
        // A broker that accepts the connection and then stalls must not delay shutdown.
        let (channel, mut deliveries) = tokio::select! {
            ready = setup => ready?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        backoff.reset();
        tracing::info!(%queue, bindings = ?self.consumer.bindings, "event consumer started");

        // Failed deliveries waiting out their backoff before going back to the queue. Dropping the
        // set aborts them; their messages then return when the channel closes.
        let mut retries: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    retries.shutdown().await;
                    return Ok(());
                }
                Some(_) = retries.join_next(), if !retries.is_empty() => {}
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        if let Some(retry) = self.handle(delivery, shutdown).await? {
                            retries.spawn(retry);
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the broker cancelled the consumer of {queue}"),
                },
            }
        }
    }

    /// Handles one delivery; returns the delayed requeue of a failed one. `Err` means the channel
    /// is unusable (an ack could not be sent).
    async fn handle(
        &self,
        delivery: Delivery,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<BoxFuture<'static, ()>>> {
        let metrics = EventMetrics::get();
        let queue = &self.consumer.queue;
        let earlier = earlier_deliveries(&delivery);
        let event = match decode(&delivery.data) {
            Ok(event) => event,
            Err(reason) => {
                let message_id = delivery.properties.message_id().as_ref().map(|s| s.to_string());
                tracing::error!(%queue, ?message_id, %reason, "undecodable event; dead-lettering it");
                metrics.dead_lettered.get_or_create(&self.labels).inc();
                delivery.reject(BasicRejectOptions { requeue: false }).await?;
                return Ok(None);
            }
        };

        // The handler's work continues the trace of the request that caused the event.
        let span = tracing::info_span!(
            "event",
            %queue,
            event_id = %event.id,
            event_type = %event.envelope.r#type,
            correlation_id = %event.ctx.correlation_id,
        );
        crate::telemetry::set_parent_from_traceparent(&span, &event.envelope.traceparent);

        let mut unavailable = amqp::reconnect_backoff();
        loop {
            match self.process(&event).instrument(span.clone()).await {
                Ok(Outcome::Handled) => {
                    metrics.consumed.get_or_create(&self.labels).inc();
                    tracing::debug!(%queue, event_id = %event.id, event_type = %event.envelope.r#type, "event handled");
                    delivery.ack(BasicAckOptions::default()).await?;
                    return Ok(None);
                }
                Ok(Outcome::Duplicate) => {
                    metrics.duplicates.get_or_create(&self.labels).inc();
                    tracing::debug!(%queue, event_id = %event.id, "event already handled; acking the redelivery");
                    delivery.ack(BasicAckOptions::default()).await?;
                    return Ok(None);
                }
                Err(Failure::Unavailable(error)) => {
                    tracing::warn!(%queue, event_id = %event.id, %error, "database unavailable; holding the event");
                    if !unavailable.wait(shutdown).await {
                        // Unacked: the message returns to the queue when the channel closes.
                        return Ok(None);
                    }
                }
                Err(Failure::Failed(error)) => {
                    metrics.failed.get_or_create(&self.labels).inc();
                    let attempt = earlier + 1;
                    if attempt >= self.max_deliveries {
                        metrics.dead_lettered.get_or_create(&self.labels).inc();
                        tracing::error!(
                            %queue,
                            event_id = %event.id,
                            event_type = %event.envelope.r#type,
                            correlation_id = %event.ctx.correlation_id,
                            attempt,
                            %error,
                            "event handler failed on the last allowed delivery; dead-lettering the event"
                        );
                        delivery.reject(BasicRejectOptions { requeue: false }).await?;
                        return Ok(None);
                    }
                    let delay = retry_delay(earlier);
                    tracing::warn!(
                        %queue,
                        event_id = %event.id,
                        event_type = %event.envelope.r#type,
                        correlation_id = %event.ctx.correlation_id,
                        attempt,
                        retry_in = ?delay,
                        %error,
                        "event handler failed; retrying"
                    );
                    let requeue = async move {
                        tokio::time::sleep(delay).await;
                        if let Err(e) = delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await {
                            // The channel is gone; the broker requeues the message itself.
                            tracing::debug!(error = %e, "could not requeue a failed event");
                        }
                    };
                    return Ok(Some(Box::pin(requeue)));
                }
            }
        }
    }

    /// Records the event in the inbox and runs the handler, in one tenant transaction.
    async fn process(&self, event: &Event) -> Result<Outcome, Failure> {
        let mut tx =
            self.db.tenant_tx_for(event.org_id, None).await.map_err(|e| Failure::Unavailable(e.to_string()))?;
        let recorded = sqlx::query(
            "insert into inbox (consumer, event_id, event_type) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(&self.consumer.queue)
        .bind(event.id)
        .bind(&event.envelope.r#type)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if recorded.rows_affected() == 0 {
            tx.commit().await.map_err(classify)?;
            return Ok(Outcome::Duplicate);
        }
        let handled = AssertUnwindSafe(self.consumer.handler.handle(event, &mut tx)).catch_unwind().await;
        let failure = match handled {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the handler panicked".to_string()),
        };
        if let Some(failure) = failure {
            let _ = tx.rollback().await;
            return Err(Failure::Failed(failure));
        }
        tx.commit().await.map_err(classify)?;
        Ok(Outcome::Handled)
    }
}

/// Sorts a database error into "the database is unavailable" or "this event failed".
fn classify(e: sqlx::Error) -> Failure {
    if is_unavailable(&e) { Failure::Unavailable(e.to_string()) } else { Failure::Failed(e.to_string()) }
}

/// Connection-level failures and the SQLSTATEs of a server that is going away or busy.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || ["57P01", "57P02", "57P03", "40001", "40P01"].contains(&&*code)
        }),
        _ => false,
    }
}

/// How many times the queue delivered this message before (quorum queues count them in
/// `x-delivery-count`; elsewhere a redelivery counts as one).
fn earlier_deliveries(delivery: &Delivery) -> u32 {
    let counted = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(DELIVERY_COUNT_HEADER))
        .and_then(amqp::integer)
        .and_then(|n| u32::try_from(n).ok());
    counted.unwrap_or(u32::from(delivery.redelivered))
}

/// The backoff before requeueing a message that failed after `earlier` earlier deliveries:
/// 200 ms doubling to 5 s.
fn retry_delay(earlier: u32) -> Duration {
    let base = Duration::from_millis(200);
    base.saturating_mul(2u32.saturating_pow(earlier.min(16))).min(Duration::from_secs(5))
}

/// The event a message carries, or why it is not one.
fn decode(body: &[u8]) -> Result<Event, String> {
    let envelope = Envelope::decode(body).map_err(|e| format!("not an Envelope: {e}"))?;
    let id: Uuid = envelope.id.parse().map_err(|_| format!("invalid event id {:?}", envelope.id))?;
    let org_id: Uuid = envelope.org_id.parse().map_err(|_| format!("invalid org_id {:?}", envelope.org_id))?;
    let correlation_id =
        if envelope.correlation_id.is_empty() { envelope.id.clone() } else { envelope.correlation_id.clone() };
    Ok(Event { id, org_id, ctx: RequestContext::system(org_id, correlation_id), envelope })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_consumers_ends_when_each_has_bound_its_queue_or_stopped() {
        let mut config = crate::config::Config::from_env();
        config.events_exchange = format!("unbound.{}", Uuid::now_v7());
        let bus = EventBus::new(std::sync::Arc::new(config));
        assert!(wait_for_consumers(&bus, Duration::ZERO).await, "no consumer, nothing to wait for");
        let mut first = Unbound::register(bus.exchange());
        let second = Unbound::register(bus.exchange());
        assert!(!wait_for_consumers(&bus, Duration::from_millis(30)).await);
        first.bound();
        first.bound();
        assert!(!wait_for_consumers(&bus, Duration::from_millis(30)).await, "one is still unbound");
        drop(second);
        assert!(wait_for_consumers(&bus, Duration::ZERO).await);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_five_seconds() {
        let delays: Vec<_> = (0..7).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn events_decode_into_a_system_context_of_their_org() {
        let org = Uuid::now_v7();
        let ctx = RequestContext::user(Uuid::now_v7(), org);
        let envelope = super::super::envelope(&ctx, org, "tasks.task.created", &prost_types::Duration::default());
        let event = decode(&envelope.encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event.org_id, org);
        assert_eq!(event.id.to_string(), envelope.id);
        assert_eq!(event.ctx.subject, crate::context::Subject::System);
        assert_eq!(event.ctx.org_id, Some(org));
        assert_eq!(event.ctx.correlation_id, ctx.correlation_id);
    }

    #[test]
    fn messages_that_are_not_events_are_refused() {
        assert!(decode(b"\xff\xff\xff").is_err());
        let no_org = Envelope { id: Uuid::now_v7().to_string(), ..Envelope::default() };
        assert!(decode(&no_org.encode_to_vec()).is_err());
        let no_id = Envelope { org_id: Uuid::now_v7().to_string(), ..Envelope::default() };
        assert!(decode(&no_id.encode_to_vec()).is_err());
    }

    #[test]
    fn connection_failures_are_unavailability_not_event_failures() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
    }
}
