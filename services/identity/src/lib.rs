//! Identity.

use trellis_kit::{Module, Service};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The identity module.
pub fn module() -> Module {
    Module::new("identity", &MIGRATOR, |_runtime| Box::pin(async { Ok(Service::new()) }))
}
