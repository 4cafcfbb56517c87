//! Notifications: decides who hears about each event and keeps their in-app inbox.
//!
//! Other services never call this one to "send a notification": they publish facts, and the
//! router here resolves recipients (never the actor), renders the notification and stores one
//! row per (event, user). Today it routes `tasks.task.assigned` and serves the inbox list;
//! preferences, email, push, digests, webhooks and the activity and audit projections follow.
//!
//! # Layout
//! - [`api`]: gRPC handlers (`trellis.notifications.v1.NotificationService`). No SQL here.
//! - [`inbox`]: the caller's in-app notifications (paging).
//! - [`router`]: recipient rules and rendering; pure functions.
//! - [`events`]: the router consumer (`notifications.tasks`), which applies [`router`] and stores
//!   the result inside kit's inbox transaction.
//! - [`store`]: every query, each inside a tenant transaction.
//! - [`error`]: [`error::NotificationError`] and the reason → gRPC code table.
//!
//! An assignment flows: tasks stages `tasks.task.assigned` → kit's relay publishes it → kit's
//! consumer opens a tenant transaction, records the event id in `inbox` and calls
//! [`events::Router`] → [`router::task_assigned_recipients`] and
//! [`router::render_task_assigned`] → [`store::insert_notification`] → commit → the assignee's
//! `ListNotifications` shows it.
//!
//! Schema: `migrations/` (schema `notifications`, RLS on every tenant table).

pub mod api;
pub mod error;
pub mod events;
pub mod inbox;
pub mod router;
pub mod store;

use trellis_kit::paging::PageTokens;
use trellis_kit::{Module, Service};
use trellis_proto::trellis::notifications::v1::notification_service_server::NotificationServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The notifications module: the inbox API and the router consumer.
pub fn module() -> Module {
    Module::new("notifications", &MIGRATOR, |runtime| {
        Box::pin(async move {
            let tokens = PageTokens::new(runtime.config.cell_secret.as_bytes());
            let api = api::NotificationApi::new(runtime.db.clone(), tokens);
            Ok(Service::new().grpc(NotificationServiceServer::new(api)).consumer(events::consumer()))
        })
    })
}
