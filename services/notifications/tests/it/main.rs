//! Integration tests of the notifications service over real gRPC, against the Postgres, Redis
//! and RabbitMQ that `cargo xtask test` starts.

mod common;
mod delivery;
mod inbox;
mod mail;
