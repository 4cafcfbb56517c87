//! End-to-end tests of Trellis: every module and the gateway started in-process on ephemeral
//! ports, driven over HTTP exactly as a client would. The tests live in `tests/e2e/` (one binary,
//! `cargo test -p trellis-e2e --test e2e`) and need the infrastructure `cargo xtask test` starts.
