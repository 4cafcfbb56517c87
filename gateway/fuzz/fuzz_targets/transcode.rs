//! Fuzzes the REST transcoder: route lookup, JSON parsing, query and path mapping, and the JSON
//! rendering of what was built, against the contract plus the gateway's test package.
//!
//! Input: `METHOD\nPATH\nQUERY\nBODY` (see `trellis_gateway::fuzzing::Input`); seeds live in
//! `corpus/transcode`, which the normal test suite also replays (`fuzzing` unit tests).
//!
//! Run: `cargo xtask fuzz` (60 s, as CI does), or by hand
//! `cd gateway/fuzz && cargo +nightly fuzz run -s none transcode -- -max_total_time=60`
//! (docs/adr/0033).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trellis_gateway::routes::RouteTable;

#[path = "../../testdata/pool.rs"]
#[allow(dead_code)]
mod pool;

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| RouteTable::build(pool::pool()).expect("routes"))
}

fuzz_target!(|data: &[u8]| {
    trellis_gateway::fuzzing::check(table(), data);
});
