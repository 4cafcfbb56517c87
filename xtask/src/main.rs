//! `cargo xtask <command>`: the developer commands of the Trellis workspace.
//!
//! # Layout
//! - `dev`: Postgres, Redis and RabbitMQ under `.trellis/`, `trellis migrate`, `trellis serve all`,
//!   a demo organization, until Ctrl-C.
//! - `test`: the same servers on free ports in a temporary directory, then the whole test suite.
//! - `lint`: rustfmt, clippy, `buf lint` and the chart checks.
//! - `chart`: the Helm chart, Dockerfile and `k8s/` checked offline (lint, render, schemas, pytest).
//! - `bench`: the benchmark suites (`[[bench]]` targets of the crates they measure) against the
//!   same throwaway servers.
//! - `fuzz`: the gateway transcoder's cargo-fuzz target for a bounded time (nightly), or the
//!   stable replay of its corpus.
//! - `infra`: starting, probing and stopping the servers; `proc`: child processes and signals;
//!   `http`: a tiny HTTP/1.1 client for health checks and the seed.

mod bench;
mod chart;
mod dev;
mod fuzz;
mod http;
mod infra;
mod lint;
mod proc;
mod test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Developer commands of the Trellis workspace")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the whole platform locally with a demo organization, until Ctrl-C.
    ///
    /// Starts Postgres (127.0.0.1:55432), Redis (56379) and RabbitMQ (55672) with data in
    /// .trellis/ (or $TRELLIS_DEV_DIR), installing them with apt when missing; builds and
    /// migrates; runs `trellis serve all` (gateway on 8080, services on 50061-50067); seeds the
    /// demo users through the REST API; prints URLs and credentials. Ctrl-C, or trellis exiting,
    /// stops everything. Re-running reuses the data; delete .trellis/ to start over.
    Dev(dev::DevArgs),
    /// Run the whole test suite against throwaway Postgres, Redis and RabbitMQ.
    ///
    /// The servers run on free loopback ports in $TMPDIR/trellis-test-<pid> and are removed
    /// afterwards, also on failure or Ctrl-C. Tests find them through TRELLIS_TEST_DATABASE_URL,
    /// TRELLIS_TEST_REDIS_URL and TRELLIS_TEST_AMQP_URL. The runner is `cargo nextest run` when
    /// cargo-nextest is installed (then doc tests run too), else `cargo test`.
    Test(test::TestArgs),
    /// Check formatting (rustfmt), lints (clippy, warnings denied), the protos (buf lint via npx)
    /// and the deployment (`cargo xtask chart`).
    Lint,
    /// Check the deployment without a cluster: lint the Helm chart, render it for several module
    /// combinations, validate every object against the Kubernetes JSON schemas, and run the
    /// assertions in helm/tests (pytest, in a virtualenv under the target directory).
    Chart(chart::ChartArgs),
    /// Run the benchmark suites against throwaway Postgres, Redis and RabbitMQ.
    ///
    /// Every `[[bench]]` target of the workspace (harness = false) runs optimised and prints a
    /// Markdown table; ratios compare numbers measured in the same run. `--quick` runs them on
    /// small data sets to check that they work.
    Bench(bench::BenchArgs),
    /// Fuzz the gateway's REST transcoder (cargo-fuzz, nightly) for a bounded time.
    ///
    /// Runs `gateway/fuzz`'s targets from their checked-in seeds for --seconds each (default 60,
    /// or $TRELLIS_FUZZ_SECONDS; 0 skips). Needs rustup with a nightly toolchain and cargo-fuzz;
    /// --install installs them. Without them it falls back to the stable replay of the corpus
    /// and the transcoder proptests, unless --require-nightly.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Dev(args) => dev::run(args),
        Cmd::Test(args) => test::run(args),
        Cmd::Lint => lint::run(),
        Cmd::Chart(args) => chart::run(&args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: error: {e:#}");
        ExitCode::FAILURE
    })
}

/// The workspace root (the parent of this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo that runs us (`$CARGO`), else `cargo` from the PATH.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
