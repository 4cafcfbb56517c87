//! RabbitMQ plumbing shared by the relay and the consumers: connecting on tokio, the cell's
//! exchanges, a consumer's queues, and capped exponential backoff.
//!
//! Topology of a cell:
//! - `<exchange>` (topic, durable): every event, routing key = event type.
//! - `<exchange>.dlx` (direct, durable): dead letters, routing key = the queue they left.
//! - per consumer, `<prefix><queue>` (quorum) bound to its routing keys, dead-lettering into
//!   `<exchange>.dlx` with its own name as routing key, and `<prefix><queue>.dlq` (quorum) bound
//!   there, which an operator inspects and replays.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio_util::sync::CancellationToken;

use super::EventBus;

/// How long connecting to the broker may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The full name of a consumer's queue: `<prefix><queue>`.
pub fn queue_name(bus: &EventBus, queue: &str) -> String {
    format!("{}{queue}", bus.config().events_queue_prefix)
}

/// The dead-letter queue of a consumer's queue: `<prefix><queue>.dlq`.
pub fn dead_letter_queue(bus: &EventBus, queue: &str) -> String {
    format!("{}.dlq", queue_name(bus, queue))
}

/// The cell's dead-letter exchange: `<exchange>.dlx`.
pub fn dead_letter_exchange(bus: &EventBus) -> String {
    format!("{}.dlx", bus.exchange())
}

/// Connects to the broker; lapin runs on the current tokio runtime (its `tokio` feature).
pub(super) async fn connect(bus: &EventBus, name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&bus.config().amqp_url, properties)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => anyhow::bail!("connecting to RabbitMQ timed out after {CONNECT_TIMEOUT:?}"),
    }
}

/// Declares the cell's topic exchange (idempotent).
pub(super) async fn declare_exchange(channel: &Channel, bus: &EventBus) -> lapin::Result<()> {
    channel
        .exchange_declare(bus.exchange().into(), ExchangeKind::Topic, durable_exchange(), FieldTable::default())
        .await
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

/// The arguments of a consumer's quorum queue.
pub(super) fn queue_arguments(bus: &EventBus, queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let limit = bus.config().events_max_deliveries.clamp(1, i32::MAX as u32) as i32;
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dead_letter_exchange(bus).into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue_name(bus, queue).into()));
    args
}

/// Declares a consumer's exchanges, queue, dead-letter queue and bindings (idempotent).
pub(super) async fn declare_consumer_topology(
    channel: &Channel,
    bus: &EventBus,
    queue: &str,
    bindings: &[String],
) -> lapin::Result<()> {
    declare_exchange(channel, bus).await?;
    let dlx = dead_letter_exchange(bus);
    channel
        .exchange_declare(dlx.as_str().into(), ExchangeKind::Direct, durable_exchange(), FieldTable::default())
        .await?;

    let name = queue_name(bus, queue);
    let dlq = dead_letter_queue(bus, queue);
    let mut dlq_args = FieldTable::default();
    dlq_args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    channel.queue_declare(dlq.as_str().into(), durable_queue(), dlq_args).await?;
    channel
        .queue_bind(dlq.into(), dlx.into(), name.as_str().into(), QueueBindOptions::default(), FieldTable::default())
        .await?;

    channel.queue_declare(name.as_str().into(), durable_queue(), queue_arguments(bus, queue)).await?;
    for key in bindings {
        channel
            .queue_bind(
                name.as_str().into(),
                bus.exchange().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// A short string property, or none when the value does not fit one (255 bytes).
pub(super) fn short(value: &str) -> Option<ShortString> {
    (!value.is_empty() && value.len() <= 255).then(|| ShortString::from(value))
}

/// An integer header value of any width.
pub(super) fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// Capped exponential backoff for reconnecting.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The delay before the next attempt.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `min` after a success.
    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps for the next delay; false when shutdown came first.
    pub(super) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        sleep_unless_shutdown(self.next_delay(), shutdown).await
    }
}

/// The reconnect backoff of the relay and consumers: 100 ms doubling to 5 s.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// Sleeps for `delay`; false when shutdown came first.
pub(super) async fn sleep_unless_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;

    fn bus() -> EventBus {
        let mut config = Config::from_env();
        config.events_exchange = "trellis.events".into();
        config.events_queue_prefix = "t1.".into();
        config.events_max_deliveries = 4;
        EventBus::new(Arc::new(config))
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn queues_are_quorum_with_a_delivery_limit_and_their_own_dead_letter_queue() {
        let bus = bus();
        assert_eq!(queue_name(&bus, "notifications.tasks"), "t1.notifications.tasks");
        assert_eq!(dead_letter_queue(&bus, "notifications.tasks"), "t1.notifications.tasks.dlq");
        assert_eq!(dead_letter_exchange(&bus), "trellis.events.dlx");
        let args = queue_arguments(&bus, "notifications.tasks");
        let get = |key: &str| args.inner().get(key).cloned();
        assert_eq!(get("x-queue-type"), Some(AMQPValue::LongString("quorum".into())));
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongInt(4)));
        assert_eq!(get("x-dead-letter-exchange"), Some(AMQPValue::LongString("trellis.events.dlx".into())));
        assert_eq!(get("x-dead-letter-routing-key"), Some(AMQPValue::LongString("t1.notifications.tasks".into())));
    }

    #[test]
    fn header_integers_of_any_width_are_read() {
        assert_eq!(integer(&AMQPValue::LongLongInt(3)), Some(3));
        assert_eq!(integer(&AMQPValue::LongInt(2)), Some(2));
        assert_eq!(integer(&AMQPValue::ShortShortUInt(1)), Some(1));
        assert_eq!(integer(&AMQPValue::LongString("3".into())), None);
    }

    #[test]
    fn short_strings_longer_than_255_bytes_are_dropped() {
        assert_eq!(short("abc"), Some(ShortString::from("abc")));
        assert_eq!(short(""), None);
        assert_eq!(short(&"x".repeat(256)), None);
    }
}
