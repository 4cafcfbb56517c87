//! Integration tests of the tasks service over real gRPC, against the Postgres, Redis and
//! RabbitMQ that `cargo xtask test` starts.

mod common;
mod rls;
mod tasks;
