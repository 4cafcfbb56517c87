//! The gateway over real sockets: REST, gRPC-web and native gRPC against real gRPC backends.
//!
//! Backends (see `common`): identity's `TokenService` (generated tonic server, the JWKS the
//! gateway verifies tokens with) and a dynamic server for the test-only `trellis.widgets.v1`
//! package, which exercises every transcoding rule without a database. `identity` runs the real
//! identity module in a `TestCell` and needs the infrastructure `cargo xtask test` starts.

#[path = "../../testdata/pool.rs"]
mod pool;

mod apikeys;
mod common;
mod cookies;
mod edge;
mod fanout;
mod grpc_web;
mod identity;
mod limits;
mod openapi;
mod passthrough;
mod policy;
mod rest;
mod sse;
mod web_client;
