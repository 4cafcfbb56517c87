//! Tasks.

use trellis_kit::{Module, Service};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The tasks module.
pub fn module() -> Module {
    Module::new("tasks", &MIGRATOR, |_runtime| Box::pin(async { Ok(Service::new()) }))
}
