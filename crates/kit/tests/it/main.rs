//! trellis-kit integration tests, against the Postgres and RabbitMQ that `cargo xtask test` starts
//! (or any servers named by the `TRELLIS_TEST_*` variables).
//!
//! # Layout
//! - `events`: the outbox relay and consumers, end to end through a throwaway `evtest` module
//!   (schema in `migrations/`): delivery after commit and in order, broker outages, redelivery,
//!   poison messages and the dead-letter queue.
//! - `jobs`: scheduled jobs shared by replicas, catch-up after a restart, retries.
//! - `server`: what `kit::grpc::launch` serves: health, the request context, metrics on the admin
//!   port, graceful shutdown.

mod events;
mod jobs;
mod server;
