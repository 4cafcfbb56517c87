//! `cargo xtask fuzz`: the gateway transcoder's cargo-fuzz target (`gateway/fuzz`) for a bounded
//! time (ADR 0033).
//!
//! cargo-fuzz needs a nightly toolchain. When `rustup` has one (or, with `--install`, can
//! install one) and `cargo fuzz` is there (or can be installed), the target is built without a
//! sanitizer (the gateway is safe Rust; the invariant is "no panic, no 5xx") and run from the
//! checked-in seeds for `--seconds`, writing what it discovers to a scratch corpus so the
//! repository's seeds stay as reviewed. A crash fails the command and leaves the minimised input
//! under `gateway/fuzz/artifacts/transcode/`.
//!
//! Without nightly, the fallback is the stable replay of the same corpus plus the two proptests
//! with the fuzz invariant (`trellis_gateway::fuzzing`), which `cargo xtask test` runs anyway;
//! here they run on their own, so the command always checks something.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::infra::which;
use crate::{cargo, proc, repo_root};

/// The fuzz targets of `gateway/fuzz`.
const TARGETS: &[&str] = &["transcode"];

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60, env = "TRELLIS_FUZZ_SECONDS")]
    seconds: u64,
    /// Install the nightly toolchain (minimal profile) and cargo-fuzz when they are missing.
    #[arg(long)]
    install: bool,
    /// Fail instead of falling back to the stable corpus replay when nightly is unavailable.
    #[arg(long)]
    require_nightly: bool,
}

/// Builds and runs every fuzz target for the bounded time, or the stable fallback.
pub fn run(args: FuzzArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let root = repo_root();
    proc::install_signal_handlers()?;
    if args.seconds == 0 {
        eprintln!("xtask: fuzzing disabled (--seconds 0)");
        return Ok(ExitCode::SUCCESS);
    }
    let ready = match nightly_with_cargo_fuzz(args.install) {
        Ok(()) => true,
        Err(why) if args.require_nightly => return Err(why.context("cargo-fuzz cannot run here")),
        Err(why) => {
            eprintln!("xtask: cargo-fuzz cannot run here ({why:#}); falling back to the stable corpus replay");
            false
        }
    };
    if !ready {
        let mut replay = cargo();
        replay.args(["test", "-p", "trellis-gateway", "--lib", "fuzzing"]).current_dir(&root);
        eprintln!("xtask: {}", proc::describe(&replay));
        let status = proc::run_foreground(&mut replay)?;
        return Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }

    let dir = root.join("gateway/fuzz");
    // The fuzz crate is a workspace of its own: start from the main lockfile so it builds the
    // versions the suite tested (cargo adds libfuzzer-sys and drops what it does not use).
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).context("copying Cargo.lock into gateway/fuzz")?;
    for target in TARGETS {
        let scratch = std::env::temp_dir().join(format!("trellis-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let mut fuzz = nightly_cargo();
        fuzz.args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&scratch)
            .arg(Path::new("corpus").join(target))
            .args(["--", &format!("-max_total_time={}", args.seconds), "-timeout=10", "-rss_limit_mb=2048"])
            .args(["-print_final_stats=1"])
            .current_dir(&dir);
        eprintln!("xtask: {} (in gateway/fuzz)", proc::describe(&fuzz));
        let status = proc::run_foreground(&mut fuzz);
        let _ = std::fs::remove_dir_all(&scratch);
        let status = status?;
        if !status.success() {
            eprintln!(
                "xtask: fuzz target {target} FAILED ({status}); the input is under gateway/fuzz/artifacts/{target}/. \
                 Reproduce with `cd gateway/fuzz && cargo +nightly fuzz run -s none {target} <file>`, fix, and add \
                 the minimised input to gateway/fuzz/corpus/{target}/ (and its .gitignore allow-list)."
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    let elapsed = started.elapsed().as_secs();
    eprintln!("xtask: fuzzing passed in {}m{:02}s", elapsed / 60, elapsed % 60);
    Ok(ExitCode::SUCCESS)
}

/// `cargo` of the nightly toolchain, without the variables of the cargo that runs xtask.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]);
    for var in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO_MANIFEST_DIR", "CARGO_PKG_NAME"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Makes sure `rustup run nightly cargo fuzz` works, installing what is missing when allowed.
fn nightly_with_cargo_fuzz(install: bool) -> Result<()> {
    anyhow::ensure!(which("rustup").is_some(), "no rustup to provide a nightly toolchain");
    let has_nightly = || succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]));
    if !has_nightly() {
        anyhow::ensure!(install, "no nightly toolchain (`rustup toolchain install nightly`, or pass --install)");
        eprintln!("xtask: installing the nightly toolchain (minimal profile)");
        let status = proc::run_foreground(
            Command::new("rustup")
                .args(["toolchain", "install", "nightly", "--profile", "minimal"])
                .stdin(Stdio::null()),
        )?;
        anyhow::ensure!(status.success() && has_nightly(), "installing the nightly toolchain failed");
    }
    let has_fuzz = || succeeds(nightly_cargo().args(["fuzz", "--version"]));
    if !has_fuzz() {
        anyhow::ensure!(
            install,
            "cargo-fuzz is not installed (`cargo install cargo-fuzz --locked`, or pass --install)"
        );
        eprintln!("xtask: installing cargo-fuzz");
        let status = proc::run_foreground(cargo().args(["install", "cargo-fuzz", "--locked"]).stdin(Stdio::null()))?;
        anyhow::ensure!(status.success() && has_fuzz(), "installing cargo-fuzz failed");
    }
    Ok(())
}
