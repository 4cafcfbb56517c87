//! End-to-end tests: every module and the gateway in one process, driven over HTTP like a
//! client. They need the infrastructure `cargo xtask test` starts.

mod common;
mod permissions;
mod recovery;
mod sessions;
mod skeleton;
