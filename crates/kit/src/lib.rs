//! trellis-kit: the runtime every Trellis service shares, so that each gets these right once.
//!
//! # Layout
//! - [`config`]: clap settings with environment fallbacks; `trellis --help` documents them all.
//! - [`telemetry`]: JSON logs, Prometheus metrics (and OTLP traces when configured).
//! - [`db`]: the service pool (its own role), [`db::Db::tenant_tx`] with `SET LOCAL app.org_id`,
//!   and [`db::migrate`] (role, schema, kit tables, the service's migrations, grants).
//! - [`auth`]: EdDSA access-token verification against identity's JWKS.
//! - [`authz`]: the permissions client (check, check_bulk, lookup_resources, touch/delete) and
//!   schema registration with retry.
//! - [`collab`]: comments, tags, entity links and activity on a module's own entities (tables
//!   installed in its schema with `Module::with_collab`).
//! - [`context`]: [`RequestContext`], who is calling for which organization.
//! - [`error`]: [`Error`], one type mapped to `tonic::Status` with ErrorInfo/BadRequest/RetryInfo.
//! - [`events`]: transactional outbox, relay with publisher confirms, idempotent consumers.
//! - [`org_relationships`]: the relationships implied by identity's memberships and teams, shared
//!   by identity (direct write after commit) and permissions (its consumer of identity's events).
//! - [`json`]: `google.protobuf.Value` to and from `serde_json::Value`.
//! - [`filter`]: AIP-160 `filter` and `order_by` over declared fields, into bound SQL.
//! - [`paging`]: opaque, tamper-evident page tokens.
//! - [`ratelimit`]: fixed-window rate limits counted in Redis (RATE_LIMITED with RetryInfo).
//! - [`jobs`]: replica-safe periodic jobs (a `kit_jobs` watermark per job, claimed with
//!   `FOR UPDATE SKIP LOCKED`) and the [`jobs::Clock`] tests control.
//! - [`module`] and [`grpc`]: what a service crate exports, and how it is served.
//!
//! A request flows: gRPC server ([`grpc`]: deadline, concurrency limit, authentication into a
//! [`RequestContext`], metrics) → the service's `api.rs` handler → its domain → its `store.rs`
//! inside [`db::Db::tenant_tx`] → events staged in the same transaction → relay → RabbitMQ.

pub mod auth;
pub mod authz;
pub mod collab;
pub mod config;
pub mod context;
pub mod db;
pub mod descriptors;
pub mod error;
pub mod events;
pub mod filter;
pub mod grpc;
pub mod jobs;
pub mod json;
pub mod module;
pub mod org_relationships;
pub mod paging;
pub mod ratelimit;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use context::{RequestContext, Subject};
pub use error::{Error, Result};
pub use module::{Module, Runtime, Service};
