//! Events: transactional outbox, relay and consumers on RabbitMQ (ARCHITECTURE §7).
//!
//! Interface fixed here; the relay and consumer internals are filled in by the events work.
//!
//! Publishing: a handler calls [`stage`] inside its tenant transaction; the event commits with the
//! change. [`run_relay`] (spawned for every module by `grpc::launch`) publishes staged events with
//! publisher confirms and marks them sent.
//!
//! Consuming: a module returns [`Consumer`]s from its start function; [`run_consumer`] declares a
//! durable quorum queue `<prefix><queue>` bound to the consumer's routing keys, and for each
//! delivery opens a tenant transaction for the envelope's org, records the event id in `inbox`
//! (a redelivery finds it and is acked without effect), calls the [`Handler`], commits, then acks.

use std::sync::Arc;

use futures::future::BoxFuture;
use prost::Message;
use uuid::Uuid;

use crate::config::Config;
use crate::context::RequestContext;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use trellis_proto::trellis::events::v1::{Actor, Envelope};

/// The cell's event exchange as a module sees it.
#[derive(Debug, Clone)]
pub struct EventBus {
    config: Arc<Config>,
}

impl EventBus {
    /// The bus described by `config`.
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }

    /// The exchange name.
    pub fn exchange(&self) -> &str {
        &self.config.events_exchange
    }

    /// The configuration (AMQP URL, queue prefix, delivery limit).
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Builds the envelope of an event caused by `ctx`.
pub fn envelope<M: prost::Name>(ctx: &RequestContext, org_id: Uuid, event_type: &str, payload: &M) -> Envelope {
    let (kind, id) = ctx.actor();
    let now = chrono::Utc::now();
    Envelope {
        id: Uuid::now_v7().to_string(),
        r#type: event_type.to_string(),
        org_id: org_id.to_string(),
        actor: Some(Actor { kind: kind.to_string(), id }),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        correlation_id: ctx.correlation_id.clone(),
        traceparent: String::new(),
        payload: Some(
            prost_types::Any::from_msg(payload).unwrap_or_else(|_| unreachable!("encoding to a Vec cannot fail")),
        ),
    }
}

/// Stages an event in the outbox of the transaction's schema. It is published after commit.
/// The org is the context's org.
pub async fn stage<M: prost::Name>(tx: &mut Tx, ctx: &RequestContext, event_type: &str, payload: &M) -> Result<Uuid> {
    let org_id = ctx.org_id()?;
    stage_envelope(tx, envelope(ctx, org_id, event_type, payload)).await
}

/// Stages a prepared envelope.
pub async fn stage_envelope(tx: &mut Tx, envelope: Envelope) -> Result<Uuid> {
    let id: Uuid = envelope.id.parse().map_err(Error::internal)?;
    sqlx::query("insert into outbox (id, event_type, envelope) values ($1, $2, $3)")
        .bind(id)
        .bind(&envelope.r#type)
        .bind(envelope.encode_to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// An event being consumed.
#[derive(Debug, Clone)]
pub struct Event {
    /// The envelope as received.
    pub envelope: Envelope,
    /// Its id.
    pub id: Uuid,
    /// Its organization.
    pub org_id: Uuid,
    /// A system context in that organization carrying the event's correlation id.
    pub ctx: RequestContext,
}

impl Event {
    /// Decodes the payload as `M`; a payload of another type is an error (the message is poison).
    pub fn payload<M: prost::Name + Default>(&self) -> Result<M> {
        let any = self
            .envelope
            .payload
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("EVENT_PAYLOAD_MISSING", "event has no payload"))?;
        any.to_msg::<M>().map_err(|e| Error::invalid_argument("EVENT_PAYLOAD_INVALID", e.to_string()))
    }
}

/// Reacts to events. Runs inside the tenant transaction that also records the event in `inbox`;
/// an error rolls both back and the delivery is retried (then dead-lettered).
pub trait Handler: Send + Sync + 'static {
    /// Handles one event.
    fn handle<'a>(&'a self, event: &'a Event, tx: &'a mut Tx) -> BoxFuture<'a, Result<()>>;
}

/// A durable consumer of some routing keys.
#[derive(Clone)]
pub struct Consumer {
    /// `<service>.<purpose>`, the queue name without the prefix.
    pub queue: String,
    /// Routing keys (topic patterns) the queue is bound to.
    pub bindings: Vec<String>,
    /// What to do with each event.
    pub handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("queue", &self.queue).field("bindings", &self.bindings).finish()
    }
}

impl Consumer {
    /// A consumer named `queue` bound to `bindings`.
    pub fn new(queue: impl Into<String>, bindings: &[&str], handler: impl Handler) -> Self {
        Self {
            queue: queue.into(),
            bindings: bindings.iter().map(|b| b.to_string()).collect(),
            handler: Arc::new(handler),
        }
    }
}

/// Publishes the module's outbox until shutdown.
pub async fn run_relay(_bus: EventBus, _db: Db, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}

/// Runs one consumer until shutdown.
pub async fn run_consumer(
    _bus: EventBus,
    _db: Db,
    _consumer: Consumer,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
