//! Permissions: the bounded context of `../shared/spec/permissions.md`.
//!
//! # Layout
//! - `module()`: what the `trellis` binary serves. For now the context has its schema (with
//!   kit's outbox and inbox) and no gRPC services yet; `trellis serve permissions` runs health,
//!   reflection, the outbox relay and the admin port.

use trellis_kit::{Module, Service};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The permissions module.
pub fn module() -> Module {
    Module::new("permissions", &MIGRATOR, |_runtime| Box::pin(async { Ok(Service::new()) }))
}
