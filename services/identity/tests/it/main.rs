//! Identity's integration tests: a real identity served over gRPC against the Postgres, Redis and
//! RabbitMQ that `cargo xtask test` starts (see `trellis_kit::testing`).

mod accepting;
mod api_keys;
mod auth;
mod common;
mod erasure;
mod export;
mod flags;
mod invitations;
mod jwks;
mod lifecycle;
mod lockout;
mod mfa;
mod onboarding;
mod organizations;
mod purge;
mod recovery;
mod rotation;
mod service_tokens;
mod sessions;
mod settings;
mod teams;
mod tenancy;
mod users;
