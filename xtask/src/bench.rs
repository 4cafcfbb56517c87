//! `cargo xtask bench`: the benchmark suites against throwaway Postgres, Redis and RabbitMQ.
//!
//! A suite is a `[[bench]]` target with `harness = false` in the crate it measures
//! (`services/permissions/benches/check.rs`, ...). It finds the servers through the same
//! `TRELLIS_TEST_*` variables as the tests, measures with `trellis_kit::testing::bench`, and prints
//! a Markdown table; ratios are always between numbers measured in the same run. Suites are built
//! with the `bench` profile (optimised). `TRELLIS_BENCH_QUICK=1` asks suites for a short run with
//! small data sets (a smoke test of the suite itself, not a measurement).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::infra::{Binaries, Infra, Ports, Profile};
use crate::{cargo, proc, repo_root};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A short run on small data sets, to check that the suites work (numbers are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Arguments for `cargo bench`, e.g. `-p trellis-permissions` or `--bench check`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CARGO BENCH ARGS")]
    args: Vec<String>,
}

/// Starts the servers, runs every selected bench target, tears down.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let root = repo_root();
    let bins = Binaries::ensure()?;
    proc::install_signal_handlers()?;

    let dir = std::env::temp_dir().join(format!("trellis-bench-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("xtask: starting Postgres, Redis and RabbitMQ in {}", dir.display());
    let mut infra = Infra::launch(bins, Profile::Test, &dir, Ports::free()?)?;
    infra.wait_ready()?;
    let mut env = vec![
        ("TRELLIS_TEST_DATABASE_URL", infra.postgres_url("postgres")),
        ("TRELLIS_TEST_REDIS_URL", infra.redis_url()),
        ("TRELLIS_TEST_AMQP_URL", infra.amqp_url()),
    ];
    // `--quick` after the cargo arguments (`cargo xtask bench -p x --quick`) counts too.
    let quick = args.quick || args.args.iter().any(|a| a == "--quick");
    let cargo_args: Vec<&String> = args.args.iter().filter(|a| *a != "--quick").collect();
    if quick {
        env.push(("TRELLIS_BENCH_QUICK", "1".to_owned()));
    }

    let mut runner = cargo();
    runner.arg("bench");
    let names_packages = cargo_args.iter().any(|a| *a == "-p" || a.starts_with("--package"));
    if !names_packages {
        runner.arg("--workspace");
    }
    if !cargo_args.iter().any(|a| *a == "--bench" || a.starts_with("--bench=")) {
        // Only bench targets: `cargo bench` alone would also build every library's test harness.
        runner.arg("--benches");
    }
    runner.args(cargo_args).current_dir(&root).envs(env);
    eprintln!("xtask: {}", proc::describe(&runner));
    let status = proc::run_foreground(&mut runner)?;

    let failure = infra.failed();
    infra.stop();
    let elapsed = started.elapsed().as_secs();
    let took = format!("{}m{:02}s", elapsed / 60, elapsed % 60);
    if status.success() && failure.is_none() && !proc::stop_requested() {
        eprintln!("xtask: benchmarks finished in {took}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "xtask: benchmarks FAILED after {took} ({status}{})",
            failure.map(|f| format!("; {f}")).unwrap_or_default()
        );
        Ok(ExitCode::FAILURE)
    }
}
