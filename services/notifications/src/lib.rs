//! Notifications.

use trellis_kit::{Module, Service};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The notifications module.
pub fn module() -> Module {
    Module::new("notifications", &MIGRATOR, |_runtime| Box::pin(async { Ok(Service::new()) }))
}
