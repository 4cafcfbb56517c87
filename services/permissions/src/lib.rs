//! Permissions: the bounded context of `../shared/spec/permissions.md`.
//!
//! # Layout
//! - [`schema`]: the schema language (parser with line/column errors, validation, merging of
//!   module schemas, generated custom-role hooks).
//! - [`eval`]: the evaluator (Check with memoisation, cycle handling and a depth limit; Expand;
//!   LookupResources; LookupSubjects) over a [`eval::TupleReader`].
//! - [`explain`]: explanations built on the evaluator's answers: the trace tree of Check
//!   `with_trace`, its shortest satisfying path, and the grant paths of AccessAudit.
//! - [`store`]: Postgres storage (migrations `0002_relationships.sql`): snapshot reads,
//!   validated all-or-nothing writes with preconditions, per-org revisions, the changelog and
//!   consistency tokens.
//! - [`registry`]: schema registration: validation against the other modules and the stored
//!   relationships (RELATION_IN_USE, DEFINITION_IN_USE), history and the merged schema.
//! - [`cache`]: the per-replica result cache of Check, with revision-aware invalidation over Redis.
//! - [`access`]: end-user sharing rules (Grant and Revoke: share, no escalation, membership);
//!   MyAccess and AccessAudit in `api::access_views`.
//! - [`roles`]: custom roles: patterns expanded over the grantable pairs, the tuples a role is
//!   made of, and their re-expansion on schema changes (`roles::store`: the `roles` table).
//! - [`api`]: the gRPC handlers (SchemaService; RelationshipService: Write, Delete by filter,
//!   Read; CheckService: Check, CheckBulk, Expand, LookupResources, LookupSubjects, Watch;
//!   AccessService; RoleService in `api::roles`).
//! - `module()`: what the `trellis` binary serves, plus the changelog retention sweep
//!   (`PERMISSIONS_CHANGELOG_RETENTION`, migration `0010_changelog_retention.sql`).
//! - [`identity_events`]: the consumer of identity's events (`permissions.identity`), which
//!   maintains the membership, ownership and team relationships with the source-version guard.

pub mod access;
pub mod api;
pub mod cache;
pub mod eval;
pub mod explain;
pub mod identity_events;
pub mod registry;
pub mod roles;
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

/// How long the changelog (and so Watch's resumability) reaches back:
/// `PERMISSIONS_CHANGELOG_RETENTION` in seconds, default 7 days.
pub fn changelog_retention() -> std::time::Duration {
    std::env::var("PERMISSIONS_CHANGELOG_RETENTION")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(std::time::Duration::from_secs(7 * 24 * 3600))
}

/// The permissions module, with cache settings from the environment
/// (`PERMISSIONS_MAX_STALENESS`, `PERMISSIONS_CACHE_BYTES`).
pub fn module() -> Module {
    module_with(cache::CacheSettings::from_env())
}

/// The permissions module with explicit cache settings.
pub fn module_with(settings: cache::CacheSettings) -> Module {
    let module = Module::new("permissions", &MIGRATOR, move |runtime| {
        Box::pin(async move {
            use trellis_proto::trellis::permissions::v1::access_service_server::AccessServiceServer;
            use trellis_proto::trellis::permissions::v1::check_service_server::CheckServiceServer;
            use trellis_proto::trellis::permissions::v1::relationship_service_server::RelationshipServiceServer;
            use trellis_proto::trellis::permissions::v1::role_service_server::RoleServiceServer;
            use trellis_proto::trellis::permissions::v1::schema_service_server::SchemaServiceServer;
            let cache = cache::CheckCache::new(settings);
            cache.connect_redis(&runtime.config.redis_url).await?;
            let pages = trellis_kit::paging::PageTokens::new(runtime.config.cell_secret.as_bytes());
            let limiter = trellis_kit::ratelimit::RateLimiter::new(
                &runtime.config.redis_url,
                &runtime.config.events_queue_prefix,
            )?;
            let api = api::PermissionsApi::new(runtime.db.clone(), cache, pages)
                .with_trace_limiter(std::sync::Arc::new(limiter));
            let retention = changelog_retention();
            let (db, shutdown) = (runtime.db.clone(), runtime.shutdown.clone());
            let sweep = async move {
                loop {
                    match store::purge_changelog(&db, retention).await {
                        Ok(n) if n > 0 => tracing::info!(rows = n, "changelog rows past retention removed"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "changelog retention sweep failed"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
                    }
                }
            };
            Ok(Service::new()
                .worker("changelog-retention", sweep)
                .consumer(identity_events::IdentityEvents::consumer(api.clone()))
                .grpc(SchemaServiceServer::new(api.clone()))
                .grpc(RelationshipServiceServer::new(api.clone()))
                .grpc(CheckServiceServer::new(api.clone()))
                .grpc(RoleServiceServer::new(api.clone()))
                .grpc(AccessServiceServer::new(api)))
        })
    });
    module.with_schema(SCHEMA)
}
