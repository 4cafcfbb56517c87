//! Permissions: the bounded context of `../shared/spec/permissions.md`.
//!
//! # Layout
//! - [`schema`]: the schema language (parser with line/column errors, validation, merging of
//!   module schemas, generated custom-role hooks).
//! - [`eval`]: the evaluator (Check with memoisation, cycle handling and a depth limit; Expand;
//!   LookupResources; LookupSubjects) over a [`eval::TupleReader`].
//! - [`store`]: Postgres storage (migrations `0002_relationships.sql`): snapshot reads,
//!   validated all-or-nothing writes with preconditions, per-org revisions, the changelog and
//!   consistency tokens.
//! - [`registry`]: schema registration: validation against the other modules and the stored
//!   relationships (RELATION_IN_USE, DEFINITION_IN_USE), history and the merged schema.
//! - [`api`]: the gRPC handlers (SchemaService, RelationshipService, CheckService).
//! - [`identity_events`]: the consumer of identity's events (`permissions.identity`), which
//!   maintains the membership, ownership and team relationships with the source-version guard.
//! - `module()`: what the `trellis` binary serves.

pub mod api;
pub mod eval;
pub mod identity_events;
pub mod registry;
pub mod schema;
pub mod store;
#[cfg(test)]
mod suite;

use trellis_kit::{Module, Service};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// This module's own schema: the `role` definition of custom roles.
pub const SCHEMA: &str = include_str!("../schema.zed");

/// The embedded migrations (for tests and tools that migrate without serving).
pub fn migrator() -> &'static sqlx::migrate::Migrator {
    &MIGRATOR
}

/// The permissions module.
pub fn module() -> Module {
    let module = Module::new("permissions", &MIGRATOR, |runtime| {
        Box::pin(async move {
            use trellis_proto::trellis::permissions::v1::check_service_server::CheckServiceServer;
            use trellis_proto::trellis::permissions::v1::relationship_service_server::RelationshipServiceServer;
            use trellis_proto::trellis::permissions::v1::schema_service_server::SchemaServiceServer;
            let api = api::PermissionsApi::new(runtime.db.clone());
            Ok(Service::new()
                .consumer(identity_events::IdentityEvents::consumer(api.clone()))
                .grpc(SchemaServiceServer::new(api.clone()))
                .grpc(RelationshipServiceServer::new(api.clone()))
                .grpc(CheckServiceServer::new(api)))
        })
    });
    module.with_schema(SCHEMA)
}
