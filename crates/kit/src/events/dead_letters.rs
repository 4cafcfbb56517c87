//! A consumer's dead letters, for operators: list them without consuming, and replay them into
//! the consumer's queue once the cause is fixed (`trellis events dead-letters`).
//!
//! Replay publishes each message to the consumer's own queue through the default exchange, so
//! only the consumer that failed sees it again, with a fresh delivery count; the inbox makes a
//! replay of an event that meanwhile succeeded harmless.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use prost::Message;
use trellis_proto::trellis::events::v1::Envelope;

use super::amqp;
use super::{EventBus, dead_letter_queue, queue_name};

/// What an operator sees of one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event id, when the body is an envelope.
    pub event_id: Option<String>,
    /// The event type (or the AMQP `type` property when the body is not an envelope).
    pub event_type: Option<String>,
    /// The organization, when the body is an envelope.
    pub org_id: Option<String>,
    /// Why RabbitMQ dead-lettered it (`delivery_limit`, `rejected`, ...).
    pub reason: Option<String>,
    /// Body size in bytes.
    pub size: usize,
}

fn reason(headers: Option<&FieldTable>) -> Option<String> {
    let deaths = headers?.inner().get("x-death")?;
    let AMQPValue::FieldArray(deaths) = deaths else { return None };
    deaths.as_slice().iter().find_map(|death| match death {
        AMQPValue::FieldTable(t) => match t.inner().get("reason") {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// Lists up to `limit` dead letters of consumer `queue` without removing them.
pub async fn list_dead_letters(bus: &EventBus, queue: &str, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let connection = amqp::connect(bus, "trellis-dead-letters").await?;
    let channel = connection.create_channel().await?;
    let dlq = dead_letter_queue(bus, queue);
    let mut out = Vec::new();
    // Unacknowledged gets stay in the queue: closing the channel returns them in order.
    while out.len() < limit {
        let Some(message) = channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let envelope = Envelope::decode(message.delivery.data.as_slice()).ok();
        out.push(DeadLetter {
            event_id: envelope.as_ref().map(|e| e.id.clone()),
            event_type: envelope
                .as_ref()
                .map(|e| e.r#type.clone())
                .or_else(|| message.delivery.properties.kind().as_ref().map(|k| k.to_string())),
            org_id: envelope.as_ref().map(|e| e.org_id.clone()),
            reason: reason(message.delivery.properties.headers().as_ref()),
            size: message.delivery.data.len(),
        });
    }
    channel.close(200, "listed".into()).await?;
    connection.close(200, "listed".into()).await?;
    Ok(out)
}

/// Moves up to `limit` dead letters of consumer `queue` back into its queue; returns how many.
/// Each message is acknowledged on the dead-letter queue only after the broker confirmed the
/// republish, so a failure midway loses nothing (at worst a message is delivered twice, which
/// the inbox absorbs).
pub async fn replay_dead_letters(bus: &EventBus, queue: &str, limit: usize) -> anyhow::Result<usize> {
    let connection = amqp::connect(bus, "trellis-dead-letters").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let dlq = dead_letter_queue(bus, queue);
    let target = queue_name(bus, queue);
    let mut replayed = 0;
    while replayed < limit {
        let Some(message) = channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let delivery = message.delivery;
        // Drop the death history so the message starts over; keep every other property.
        let mut kept = FieldTable::default();
        if let Some(headers) = delivery.properties.headers() {
            for (k, v) in headers.inner().iter().filter(|(k, _)| !k.as_str().starts_with("x-")) {
                kept.insert(k.clone(), v.clone());
            }
        }
        let properties = delivery.properties.clone().with_headers(kept);
        let confirm = channel
            .basic_publish(
                "".into(),
                target.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        anyhow::ensure!(confirm.is_ack(), "the broker refused the republished message");
        channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
        replayed += 1;
    }
    channel.close(200, "replayed".into()).await?;
    connection.close(200, "replayed".into()).await?;
    tracing::info!(queue = %target, replayed, "dead letters replayed");
    Ok(replayed)
}

/// The number of messages in a dead-letter queue.
pub async fn dead_letter_count(bus: &EventBus, queue: &str) -> anyhow::Result<u32> {
    let connection = amqp::connect(bus, "trellis-dead-letters").await?;
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(
            dead_letter_queue(bus, queue).into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    channel.close(200, "counted".into()).await?;
    connection.close(200, "counted".into()).await?;
    Ok(declared.message_count())
}
