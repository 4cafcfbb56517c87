//! Notifications: decides who hears about each event, keeps their in-app inbox, and sends email.
//!
//! Other services never call this one to "send a notification": they publish facts, and the
//! router here resolves recipients (never the actor), renders the notification and stores one
//! row per (event, user). Today it routes `tasks.task.assigned`, serves the inbox list, and sends
//! the transactional mail of identity's events (verification, password reset, invitations,
//! security alerts); preferences, push, digests, webhooks and the activity and audit projections
//! follow.
//!
//! # Layout
//! - [`api`]: gRPC handlers (`trellis.notifications.v1.NotificationService`). No SQL here.
//! - [`config`]: [`NotificationsConfig`], this service's settings (`SMTP_URL`, `MAIL_DIR`, ...).
//! - [`mail`]: templates, the `Mailer` (SMTP or files), transactional mail and the sender.
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
//! A password reset flows: identity stages `identity.user.password_reset_requested` → the
//! `notifications.mail` consumer ([`mail::transactional`]) renders the `password_reset` template
//! into `email_log` + `email_queue` → [`mail::sender`] hands it to SMTP → `email_log.status` is
//! `sent` and the queued message (with the link) is gone.
//!
//! Schema: `migrations/` (schema `notifications`, RLS on every tenant table).

pub mod api;
pub mod config;
pub mod error;
pub mod events;
pub mod inbox;
pub mod mail;
pub mod router;
pub mod store;

use std::sync::Arc;

pub use config::NotificationsConfig;
use trellis_kit::paging::PageTokens;
use trellis_kit::{Module, Service};
use trellis_proto::trellis::notifications::v1::notification_service_server::NotificationServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The notifications module, with its settings ([`NotificationsConfig`]) read from the
/// environment.
pub fn module() -> Module {
    module_with(None)
}

/// The notifications module with settings parsed by the caller (`trellis serve` flattens
/// [`NotificationsConfig`] into its command line, so `--help` documents them): the inbox API,
/// the router consumer, the transactional mail consumer and the email sender.
pub fn module_with(settings: Option<NotificationsConfig>) -> Module {
    Module::new("notifications", &MIGRATOR, |runtime| {
        Box::pin(async move {
            let settings = match settings {
                Some(settings) => settings,
                None => NotificationsConfig::from_env()?,
            };
            settings.validate()?;
            let settings = Arc::new(settings);
            let mailer = mail::mailer(&settings)?;
            let templates = Arc::new(mail::templates::Templates::system());
            let transactional = mail::transactional::Mail::new(
                templates,
                settings.clone(),
                mailer.as_ref(),
                &runtime.config.public_base_url,
            );
            let sender = mail::sender::Sender::new(runtime.db.clone(), mailer, settings);
            let tokens = PageTokens::new(runtime.config.cell_secret.as_bytes());
            let api = api::NotificationApi::new(runtime.db.clone(), tokens);
            Ok(Service::new()
                .grpc(NotificationServiceServer::new(api))
                .consumer(events::consumer())
                .consumer(transactional.consumer())
                .worker("email-sender", sender.run(runtime.shutdown.clone())))
        })
    })
}
