//! End-to-end tests of Trellis through the gateway live in `tests/e2e/`.
