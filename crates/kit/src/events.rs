//! Events: transactional outbox, relay and consumers on RabbitMQ (ARCHITECTURE §7).
//!
//! Publishing: a handler calls [`stage`] inside its tenant transaction; the event commits with the
//! change or not at all. [`run_relay`] (spawned for every module by `grpc::launch`) publishes
//! staged events with publisher confirms and marks them sent only once the broker confirmed them,
//! so a broker outage delays events and never loses them.
//!
//! Consuming: a module returns [`Consumer`]s from its start function; [`run_consumer`] declares a
//! durable quorum queue `<prefix><queue>` bound to the consumer's routing keys, and for each
//! delivery opens a tenant transaction for the envelope's org, records the event id in `inbox`
//! (a redelivery finds it and is acked without effect), calls the [`Handler`], commits, then acks.
//! A failing handler is retried with backoff; after `EVENTS_MAX_DELIVERIES` deliveries the message
//! goes to the queue's dead-letter queue `<prefix><queue>.dlq`.
//!
//! An event reaches only the queues bound when it is published; tests (and anything that starts
//! consumers and publishes at once) wait for [`wait_for_consumers`] first.
//!
//! # Layout
//! - this file: the envelope, [`stage`], [`Event`], [`Handler`], [`Consumer`].
//! - `amqp`: connecting, the cell's exchanges and a consumer's queues, backoff.
//! - `relay`: [`run_relay`], outbox → exchange.
//! - `consumer`: [`run_consumer`], queue → inbox + handler; [`wait_for_consumers`].
//! - `metrics`: counters on the process's `/metrics`.
//!
//! The decisions behind this are recorded in `docs/adr/0003-events-outbox-and-consumers.md`.

mod amqp;
mod consumer;
mod dead_letters;
mod metrics;
mod relay;

use std::sync::Arc;

use futures::future::BoxFuture;
use prost::Message;
use uuid::Uuid;

use crate::config::Config;
use crate::context::RequestContext;
use crate::db::Tx;
use crate::error::{Error, Result};
use trellis_proto::trellis::events::v1::{Actor, Envelope};

/// The AMQP header carrying the envelope's W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

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
        traceparent: crate::telemetry::current_traceparent(),
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
///
/// The envelope must name a valid event type (see [`is_event_type`]) and carry UUID `id` and
/// `org_id`: a row the relay could not route, or a message no consumer could place in a tenant,
/// is a bug caught here rather than in the relay or a dead-letter queue.
pub async fn stage_envelope(tx: &mut Tx, envelope: Envelope) -> Result<Uuid> {
    let id: Uuid = envelope.id.parse().map_err(Error::internal)?;
    if !is_event_type(&envelope.r#type) {
        return Err(Error::internal(anyhow::anyhow!("invalid event type {:?}", envelope.r#type)));
    }
    envelope.org_id.parse::<Uuid>().map_err(|e| Error::internal(anyhow::anyhow!("event org_id: {e}")))?;
    sqlx::query("insert into outbox (id, event_type, envelope) values ($1, $2, $3)")
        .bind(id)
        .bind(&envelope.r#type)
        .bind(envelope.encode_to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// Whether `name` is a valid event type and routing key: `<context>.<entity>.<verb>`, dot-separated
/// segments of lowercase ASCII letters, digits and `_`, at most 255 bytes (an AMQP short string).
pub fn is_event_type(name: &str) -> bool {
    name.len() <= 255
        && name.split('.').count() >= 2
        && name.split('.').all(|segment| {
            !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
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

pub use amqp::{dead_letter_exchange, dead_letter_queue, queue_name};
pub use consumer::{run_consumer, wait_for_consumers};
pub use dead_letters::{DeadLetter, dead_letter_count, list_dead_letters, replay_dead_letters};
pub use relay::run_relay;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_dotted_lowercase_routing_keys() {
        assert!(is_event_type("tasks.task.created"));
        assert!(is_event_type("crm.contact_list.member_added"));
        assert!(!is_event_type("tasks"));
        assert!(!is_event_type("tasks..created"));
        assert!(!is_event_type("tasks.task.*"));
        assert!(!is_event_type("tasks.task.#"));
        assert!(!is_event_type("Tasks.Task.Created"));
        assert!(!is_event_type(&format!("a.{}", "b".repeat(254))));
    }

    #[test]
    fn envelopes_carry_the_context_of_the_change() {
        let user = Uuid::now_v7();
        let org = Uuid::now_v7();
        let ctx = RequestContext::user(user, org);
        let payload = prost_types::Duration { seconds: 3, nanos: 0 };
        let envelope = envelope(&ctx, org, "tasks.task.created", &payload);
        assert!(envelope.id.parse::<Uuid>().is_ok());
        assert_eq!(envelope.r#type, "tasks.task.created");
        assert_eq!(envelope.org_id, org.to_string());
        assert_eq!(envelope.correlation_id, ctx.correlation_id);
        let actor = envelope.actor.clone().unwrap_or_default();
        assert_eq!((actor.kind.as_str(), actor.id), ("user", user.to_string()));
        let event = Event { id: Uuid::nil(), org_id: org, ctx: RequestContext::system(org, "c"), envelope };
        assert_eq!(event.payload::<prost_types::Duration>().ok(), Some(payload));
        assert!(event.payload::<prost_types::Timestamp>().is_err());
    }
}
