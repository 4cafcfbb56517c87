//! The outbox relay: publishes a module's staged events to the cell's exchange.
//!
//! One loop per module (and per replica): take up to a batch of unsent rows in order with
//! `for update skip locked` (replicas share the work and never publish a row at the same time),
//! publish them on a confirm-mode channel, wait for the broker's confirms, mark the confirmed rows
//! sent and commit. It wakes on `NOTIFY <schema>_outbox` (the outbox trigger) and polls as a
//! fallback.
//!
//! Failure behaviour: a row is marked sent only after the broker confirmed it. When RabbitMQ or
//! Postgres is unreachable the loop logs, backs off (100 ms doubling to 5 s), reconnects and tries
//! again; rows stay unsent meanwhile, so an outage delays events and never loses or skips one. A
//! crash after the confirm and before the commit publishes the row again, which consumers absorb
//! through their inbox.

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use prost::Message;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::amqp;
use super::metrics::EventMetrics;
use super::{EventBus, TRACEPARENT_HEADER};
use crate::db::Db;
use trellis_proto::trellis::events::v1::Envelope;

/// Content type of every event message.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Tunables of the relay (defaults suit production; tests shorten them).
#[derive(Debug, Clone)]
struct Settings {
    /// Rows per transaction.
    batch: i64,
    /// How often to look for rows without a notification.
    poll: Duration,
    /// How long the broker may take to confirm a batch.
    confirm_timeout: Duration,
    /// Sent rows older than this are deleted.
    retention_days: i32,
    /// How often to delete them.
    prune_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 100,
            poll: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(15),
            retention_days: 7,
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// Why a batch did not go through.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker: {0}")]
    BrokerOther(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl RelayError {
    /// Whether the broker connection should be dropped and reopened.
    fn broker(&self) -> bool {
        matches!(self, RelayError::Broker(_) | RelayError::BrokerOther(_))
    }
}

/// A confirm-mode channel on its own connection.
struct Publisher {
    connection: Connection,
    channel: Channel,
}

impl Publisher {
    async fn open(bus: &EventBus, name: &str) -> anyhow::Result<Publisher> {
        let connection = amqp::connect(bus, name).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        amqp::declare_exchange(&channel, bus).await?;
        Ok(Publisher { connection, channel })
    }

    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    async fn close(self) {
        if self.usable() {
            let _ = self.connection.close(200, "relay stopping".into()).await;
        }
    }
}

/// Publishes the module's outbox until shutdown.
///
/// Returns only on shutdown: every failure is logged and retried.
pub async fn run_relay(bus: EventBus, db: Db, shutdown: CancellationToken) -> anyhow::Result<()> {
    Relay { bus, db, settings: Settings::default() }.run(shutdown).await
}

struct Relay {
    bus: EventBus,
    db: Db,
    settings: Settings,
}

impl Relay {
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let schema = self.db.schema().to_string();
        let wake = std::sync::Arc::new(Notify::new());
        let listener =
            tokio::spawn(listen(self.db.clone(), format!("{schema}_outbox"), wake.clone(), shutdown.clone()));

        let mut publisher: Option<Publisher> = None;
        let mut backoff = amqp::reconnect_backoff();
        let mut last_prune: Option<Instant> = None;
        let name = format!("trellis-{schema}-relay");
        tracing::info!(module = %schema, exchange = %self.bus.exchange(), "outbox relay started");

        while !shutdown.is_cancelled() {
            if publisher.as_ref().is_some_and(|p| !p.usable()) {
                publisher = None;
            }
            if publisher.is_none() {
                let opened = tokio::select! {
                    opened = Publisher::open(&self.bus, &name) => opened,
                    _ = shutdown.cancelled() => break,
                };
                match opened {
                    Ok(p) => {
                        tracing::info!(module = %schema, "outbox relay connected to RabbitMQ");
                        publisher = Some(p);
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(module = %schema, error = format!("{e:#}"), retry_in = ?delay, "outbox relay cannot reach RabbitMQ");
                        if !amqp::sleep_unless_shutdown(delay, &shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            let Some(channel) = publisher.as_ref().map(|p| p.channel.clone()) else { continue };

            if last_prune.is_none_or(|at| at.elapsed() >= self.settings.prune_every) {
                self.prune().await;
                last_prune = Some(Instant::now());
            }

            let outcome = tokio::select! {
                outcome = self.publish_batch(&channel) => outcome,
                // Dropping the batch rolls its transaction back: the rows stay unsent.
                _ = shutdown.cancelled() => break,
            };
            match outcome {
                Ok(published) => {
                    backoff.reset();
                    if published as i64 >= self.settings.batch {
                        continue;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.settings.poll) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    if e.broker()
                        && let Some(p) = publisher.take()
                    {
                        p.close().await;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(module = %schema, error = %e, retry_in = ?delay, "outbox relay batch failed; rows stay unsent");
                    if !amqp::sleep_unless_shutdown(delay, &shutdown).await {
                        break;
                    }
                }
            }
        }

        listener.abort();
        if let Some(p) = publisher {
            p.close().await;
        }
        tracing::info!(module = %schema, "outbox relay stopped");
        Ok(())
    }

    /// Publishes one batch; returns how many rows the broker confirmed.
    async fn publish_batch(&self, channel: &Channel) -> Result<usize, RelayError> {
        let mut tx = self.db.pool().begin().await?;
        let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as(
            "select id, event_type, envelope from outbox where sent_at is null
             order by created_at, id limit $1 for update skip locked",
        )
        .bind(self.settings.batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }

        let mut confirms = Vec::with_capacity(rows.len());
        let mut failure: Option<RelayError> = None;
        for (id, event_type, body) in &rows {
            let properties = properties(*id, event_type, body, self.db.schema());
            match channel
                .basic_publish(
                    self.bus.exchange().into(),
                    event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
            {
                Ok(confirm) => confirms.push((*id, confirm)),
                Err(e) => {
                    failure = Some(e.into());
                    break;
                }
            }
        }

        let deadline = tokio::time::Instant::now() + self.settings.confirm_timeout;
        let mut sent = Vec::with_capacity(confirms.len());
        let mut failed = Vec::new();
        for (id, confirm) in confirms {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(_))) => sent.push(id),
                Ok(Ok(Confirmation::Nack(_))) => {
                    failed.push(id);
                    failure.get_or_insert(RelayError::BrokerOther("the broker refused a message (nack)".into()));
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    failed.push(id);
                    failure.get_or_insert(RelayError::BrokerOther("the channel is not in confirm mode".into()));
                }
                Ok(Err(e)) => {
                    failed.push(id);
                    failure.get_or_insert(e.into());
                }
                Err(_) => {
                    failed.push(id);
                    failure.get_or_insert(RelayError::BrokerOther("timed out waiting for publisher confirms".into()));
                }
            }
        }

        if !sent.is_empty() {
            sqlx::query(
                "update outbox set sent_at = now(), attempts = attempts + 1, last_error = null where id = any($1)",
            )
            .bind(&sent)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(e) = &failure
            && !failed.is_empty()
        {
            sqlx::query("update outbox set attempts = attempts + 1, last_error = $2 where id = any($1)")
                .bind(&failed)
                .bind(e.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;

        let metrics = EventMetrics::get();
        let labels = EventMetrics::module(self.db.schema());
        metrics.published.get_or_create(&labels).inc_by(sent.len() as u64);
        if !failed.is_empty() {
            metrics.publish_failures.get_or_create(&labels).inc_by(failed.len() as u64);
        }
        tracing::debug!(module = %self.db.schema(), published = sent.len(), "outbox batch published");
        match failure {
            Some(e) => Err(e),
            None => Ok(sent.len()),
        }
    }

    /// Deletes sent rows past their retention. Failures are logged; the next prune retries.
    async fn prune(&self) {
        let result = sqlx::query("delete from outbox where sent_at < now() - make_interval(days => $1)")
            .bind(self.settings.retention_days)
            .execute(self.db.pool())
            .await;
        match result {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(module = %self.db.schema(), deleted = done.rows_affected(), "pruned sent outbox rows");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(module = %self.db.schema(), error = %e, "pruning the outbox failed"),
        }
    }
}

/// The AMQP properties of an outbox row: persistent, typed, identified by the event id, with the
/// envelope's correlation id and W3C trace context.
fn properties(id: Uuid, event_type: &str, body: &[u8], module: &str) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(id.to_string().into())
        .with_type(event_type.into())
        .with_app_id(module.into());
    // The row was encoded by `stage_envelope`; should it not decode, the message still goes out
    // without the optional properties and the consumer decides.
    if let Ok(envelope) = Envelope::decode(body) {
        if let Some(correlation_id) = amqp::short(&envelope.correlation_id) {
            properties = properties.with_correlation_id(correlation_id);
        }
        if let Some(at) = envelope.occurred_at.as_ref().and_then(|t| u64::try_from(t.seconds).ok()) {
            properties = properties.with_timestamp(at);
        }
        if !envelope.traceparent.is_empty() {
            let mut headers = FieldTable::default();
            headers.insert(
                TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(LongString::from(envelope.traceparent.as_str())),
            );
            properties = properties.with_headers(headers);
        }
    }
    properties
}

/// Wakes the relay on every `NOTIFY <channel>`; reconnects with backoff when Postgres goes away.
async fn listen(db: Db, channel: String, wake: std::sync::Arc<Notify>, shutdown: CancellationToken) {
    let mut backoff = amqp::reconnect_backoff();
    'connect: while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(db.pool()).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "outbox listener cannot connect; polling meanwhile");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(%channel, error = %e, "outbox listener cannot LISTEN; polling meanwhile");
            if !backoff.wait(&shutdown).await {
                return;
            }
            continue;
        }
        backoff.reset();
        // Anything committed while we were not listening is found by this first pass.
        wake.notify_one();
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = shutdown.cancelled() => return,
            };
            match received {
                Ok(Some(_)) => wake.notify_one(),
                // The connection was lost; `try_recv` reconnects on the next call.
                Ok(None) => {
                    tracing::warn!(%channel, "outbox listener lost its connection; reconnecting");
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "outbox listener failed; reconnecting");
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::RequestContext;

    #[test]
    fn messages_are_persistent_protobuf_identified_by_the_event_id() {
        let org = Uuid::now_v7();
        let ctx = RequestContext::user(Uuid::now_v7(), org);
        let mut envelope = super::super::envelope(&ctx, org, "tasks.task.created", &prost_types::Duration::default());
        envelope.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        let id: Uuid = envelope.id.parse().unwrap_or_default();
        let props = properties(id, "tasks.task.created", &envelope.encode_to_vec(), "tasks");
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(props.content_type().as_ref().map(|s| s.as_str()), Some(CONTENT_TYPE));
        assert_eq!(props.message_id().as_ref().map(|s| s.to_string()), Some(id.to_string()));
        assert_eq!(props.kind().as_ref().map(|s| s.as_str()), Some("tasks.task.created"));
        assert_eq!(props.correlation_id().as_ref().map(|s| s.to_string()), Some(ctx.correlation_id.clone()));
        let traceparent = props.headers().as_ref().and_then(|h| h.inner().get(TRACEPARENT_HEADER).cloned());
        assert_eq!(traceparent, Some(AMQPValue::LongString(envelope.traceparent.as_str().into())));
    }
}
