//! Reactions to other services' events: the router consumer, which turns events into
//! notifications (spec Rules 1-3).
//!
//! Today it routes `tasks.task.assigned` on the queue `notifications.tasks`; the spec's
//! `notifications.route` queue bound to every event replaces it as routes for other types land.
//! kit runs the handler inside the tenant transaction that also records the event id in
//! `inbox`, so a redelivery is acknowledged without effect; the unique (org, event, user) index
//! holds the same guarantee once the inbox is purged.

use futures::future::BoxFuture;
use trellis_kit::Result;
use trellis_kit::db::Tx;
use trellis_kit::events::{Consumer, Event, Handler};
use trellis_proto::trellis::events::v1::Actor;
use trellis_proto::trellis::tasks::v1::TaskAssigned;

use crate::error::NotificationError;
use crate::router::{self, Recipient, Rendered};
use crate::store::{self, NewNotification};

/// The queue of the router consumer (without the cell's prefix).
pub const ROUTE_QUEUE: &str = "notifications.tasks";
/// The event types it routes.
pub const ROUTED: &[&str] = &["tasks.task.assigned"];

/// Turns events into in-app notifications.
#[derive(Debug, Clone, Copy, Default)]
pub struct Router;

/// The router consumer.
pub fn consumer() -> Consumer {
    Consumer::new(ROUTE_QUEUE, ROUTED, Router)
}

impl Handler for Router {
    fn handle<'a>(&'a self, event: &'a Event, tx: &'a mut Tx) -> BoxFuture<'a, Result<()>> {
        Box::pin(route(event, tx))
    }
}

async fn route(event: &Event, tx: &mut Tx) -> Result<()> {
    let actor = event.envelope.actor.clone().unwrap_or_default();
    let notifications: Vec<(Recipient, Rendered)> = match event.envelope.r#type.as_str() {
        "tasks.task.assigned" => {
            let payload: TaskAssigned = event.payload()?;
            router::task_assigned_recipients(&payload, &actor)
                .into_iter()
                .map(|r| (r, router::render_task_assigned(&payload, r.reason)))
                .collect()
        }
        other => return Err(NotificationError::UnroutedEvent(other.to_string()).into()),
    };
    for (recipient, rendered) in &notifications {
        store_one(event, &actor, recipient, rendered, tx).await?;
    }
    tracing::debug!(event_id = %event.id, event_type = %event.envelope.r#type, recipients = notifications.len(), "event routed");
    Ok(())
}

async fn store_one(event: &Event, actor: &Actor, recipient: &Recipient, n: &Rendered, tx: &mut Tx) -> Result<()> {
    let kind = if actor.kind.is_empty() { "system" } else { actor.kind.as_str() };
    store::insert_notification(
        tx,
        &NewNotification {
            org_id: event.org_id,
            user_id: recipient.user_id,
            event_id: event.id,
            r#type: &event.envelope.r#type,
            reason: recipient.reason.as_str(),
            actor_kind: kind,
            actor_id: &actor.id,
            entity_type: n.entity_id.map(|_| n.entity_type),
            entity_id: n.entity_id,
            title: &n.title,
            body: &n.body,
            url: &n.url,
            data: &n.data,
            // Preferences (Rule 5) are not stored yet: every notification is in-app.
            in_app: true,
        },
    )
    .await?;
    Ok(())
}
