//! `cargo xtask lint`: rustfmt, clippy with warnings denied, `buf lint` of the contracts, and the
//! deployment checks of `cargo xtask chart`.
//!
//! Every check runs even when an earlier one fails, so one run shows every problem.

use std::process::{Command, ExitCode, Stdio};

use anyhow::Result;

use crate::infra::which;
use crate::{cargo, proc, repo_root};

/// The buf release the contracts are checked with (npm package `@bufbuild/buf`).
pub const BUF_VERSION: &str = "1.75.0";

/// Runs the checks; fails if any failed.
pub fn run() -> Result<ExitCode> {
    let root = repo_root();
    let mut failed = Vec::new();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]);
    for (name, cmd) in [("rustfmt", &mut fmt), ("clippy", &mut clippy)] {
        if !check(name, cmd.current_dir(&root))? {
            failed.push(name);
        }
    }

    if which("npx").is_none() {
        eprintln!(
            "xtask: buf lint needs Node.js for `npx`. Install it (Debian/Ubuntu: `apt-get install -y nodejs npm`, \
             elsewhere https://nodejs.org) and re-run."
        );
        failed.push("buf (npx missing)");
    } else {
        let mut buf = Command::new("npx");
        buf.args(["--yes", &format!("@bufbuild/buf@{BUF_VERSION}"), "lint"])
            .current_dir(&root)
            .env("npm_config_update_notifier", "false")
            .env("npm_config_fund", "false")
            .stdin(Stdio::null());
        if !check("buf lint", &mut buf)? {
            failed.push("buf lint");
        }
    }

    match crate::chart::run(&crate::chart::ChartArgs::default()) {
        Ok(code) if code == ExitCode::SUCCESS => {}
        Ok(_) => failed.push("chart"),
        Err(e) => {
            eprintln!("xtask: chart: {e:#}");
            failed.push("chart");
        }
    }

    if failed.is_empty() {
        eprintln!("xtask: lint passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: lint FAILED: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

fn check(name: &str, cmd: &mut Command) -> Result<bool> {
    eprintln!("xtask: {name}: {}", proc::describe(cmd));
    let ok = proc::run_foreground(cmd)?.success();
    if !ok {
        eprintln!("xtask: {name} failed");
    }
    Ok(ok)
}
