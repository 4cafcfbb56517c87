//! End-to-end tests: every module and the gateway in one process, driven over HTTP like a
//! client. They need the infrastructure `cargo xtask test` starts.

mod api_keys;
mod common;
mod explain;
mod flags;
mod identity_sync;
mod keys;
mod mfa;
mod onboarding;
mod organizations;
mod permissions;
mod permissions_schema;
mod recovery;
mod roles;
mod service_tokens;
mod sessions;
mod settings;
mod skeleton;
mod tasks_collab;
mod users;
