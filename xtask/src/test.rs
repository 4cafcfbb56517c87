//! `cargo xtask test`: throwaway Postgres, Redis and RabbitMQ on free ports, then the whole suite.
//!
//! The servers live in `$TMPDIR/trellis-test-<pid>` and are torn down whatever happens (failure,
//! Ctrl-C, SIGTERM). Tests find them through `TRELLIS_TEST_DATABASE_URL`, `TRELLIS_TEST_REDIS_URL`
//! and `TRELLIS_TEST_AMQP_URL` (read by `trellis_kit::testing::TestEnv`).

use std::collections::HashSet;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use anyhow::Result;

use crate::infra::{Binaries, Infra, Ports, Profile};
use crate::{cargo, proc, repo_root};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Arguments for the runner, e.g. `-p trellis-kit`, or a test name filter:
    /// `cargo xtask test -p trellis-kit outbox`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "RUNNER ARGS")]
    args: Vec<String>,
}

/// Starts the servers, runs the suite and doc tests, tears down; fails if anything failed.
pub fn run(args: TestArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let root = repo_root();
    let bins = Binaries::ensure()?;
    proc::install_signal_handlers()?;

    let dir = std::env::temp_dir().join(format!("trellis-test-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("xtask: starting Postgres, Redis and RabbitMQ in {}", dir.display());
    let mut infra = Infra::launch(bins, Profile::Test, &dir, Ports::free()?)?;
    infra.wait_ready()?;
    let env = [
        ("TRELLIS_TEST_DATABASE_URL", infra.postgres_url("postgres")),
        ("TRELLIS_TEST_REDIS_URL", infra.redis_url()),
        ("TRELLIS_TEST_AMQP_URL", infra.amqp_url()),
    ];
    for (name, value) in &env {
        eprintln!("xtask:   {name}={value}");
    }

    let nextest = has_nextest();
    let selection = package_selection(&args.args);
    let mut failures = Vec::new();

    // `--workspace` would override `-p`; `--exclude` needs it.
    let whole_workspace = !names_packages(&selection) && !selection.iter().any(|a| a == "--workspace");

    // nextest does not run doc tests. They run first, so the suite's own summary closes the output.
    if nextest && !proc::stop_requested() {
        match doc_selection(&selection, &library_packages(&root)?) {
            None => eprintln!("xtask: no doc tests: the selected packages have no library"),
            Some(doc_selection) => {
                let mut doc = cargo();
                doc.args(["test", "--doc", "--all-features", "--no-fail-fast"]);
                if whole_workspace {
                    doc.arg("--workspace");
                }
                doc.args(&doc_selection).current_dir(&root).envs(env.clone());
                eprintln!("xtask: {}", proc::describe(&doc));
                let status = proc::run_foreground(&mut doc)?;
                if !status.success() {
                    failures.push(format!("doc tests ({status})"));
                }
            }
        }
    }

    let mut runner = cargo();
    if nextest {
        runner.args(["nextest", "run"]);
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
            runner.args(["--profile", "ci"]);
        }
    } else {
        runner.arg("test");
    }
    if whole_workspace {
        runner.arg("--workspace");
    }
    runner.args(["--all-features", "--no-fail-fast"]).args(&args.args);
    runner.current_dir(&root).envs(env.clone());
    eprintln!("xtask: {}", proc::describe(&runner));
    let status = proc::run_foreground(&mut runner)?;
    if !status.success() {
        failures.push(format!("tests ({status})"));
    }

    if let Some(failure) = infra.failed() {
        failures.push(format!("infrastructure: {failure}"));
    }
    infra.stop();

    let elapsed = started.elapsed().as_secs();
    let took = format!("{}m{:02}s", elapsed / 60, elapsed % 60);
    if proc::stop_requested() {
        eprintln!("xtask: interrupted after {took}");
        return Ok(ExitCode::FAILURE);
    }
    if failures.is_empty() {
        eprintln!("xtask: test suite passed in {took}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: FAILED after {took}: {}", failures.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The package-selection flags among the runner arguments, up to a `--`, normalized to
/// `-p <name>`, `--exclude <name>` and `--workspace`. Empty when the arguments select nothing.
fn package_selection(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, value) = match arg.as_str() {
            "--" => break,
            "--workspace" => {
                out.push(arg.clone());
                continue;
            }
            "-p" | "--package" => ("-p", iter.next().cloned()),
            "--exclude" => ("--exclude", iter.next().cloned()),
            a => match (a.strip_prefix("--package="), a.strip_prefix("--exclude="), a.strip_prefix("-p")) {
                (Some(v), _, _) => ("-p", Some(v.to_string())),
                (_, Some(v), _) => ("--exclude", Some(v.to_string())),
                (_, _, Some(v)) if !v.is_empty() && !a.starts_with("--") => ("-p", Some(v.to_string())),
                _ => continue,
            },
        };
        if let Some(value) = value {
            out.extend([flag.to_string(), value]);
        }
    }
    out
}

/// Whether the selection names packages (`-p`) rather than excluding some.
fn names_packages(selection: &[String]) -> bool {
    selection.iter().any(|a| a == "-p")
}

/// The selection for `cargo test --doc`: named packages without a library (which have no doc
/// tests, and make cargo fail) are dropped; `None` when no named package is left.
fn doc_selection(selection: &[String], libraries: &HashSet<String>) -> Option<Vec<String>> {
    if !names_packages(selection) {
        return Some(selection.to_vec());
    }
    let mut out = Vec::new();
    let mut iter = selection.iter();
    while let Some(flag) = iter.next() {
        if flag == "--workspace" {
            continue;
        }
        let Some(value) = iter.next() else { break };
        let name = value.split('@').next().unwrap_or(value);
        if flag != "-p" || libraries.contains(name) {
            out.extend([flag.clone(), value.clone()]);
        }
    }
    names_packages(&out).then_some(out)
}

/// Workspace packages that have a library target.
fn library_packages(root: &Path) -> Result<HashSet<String>> {
    let out = cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    Ok(packages
        .iter()
        .filter(|p| {
            p["targets"].as_array().is_some_and(|targets| {
                targets
                    .iter()
                    .any(|t| t["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "lib" || k == "rlib")))
            })
        })
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn package_flags_are_picked_out_of_runner_arguments() {
        let args = strings(&["-p", "trellis-kit", "outbox", "--package=trellis-tasks", "-ptrellis-e2e", "--nocapture"]);
        assert_eq!(
            package_selection(&args),
            strings(&["-p", "trellis-kit", "-p", "trellis-tasks", "-p", "trellis-e2e"])
        );
    }

    #[test]
    fn arguments_after_a_double_dash_belong_to_the_test_binaries() {
        let args = strings(&["outbox", "--", "-p", "x"]);
        assert!(package_selection(&args).is_empty());
    }

    #[test]
    fn exclusions_do_not_name_packages() {
        let selection = package_selection(&strings(&["--workspace", "--exclude=xtask"]));
        assert_eq!(selection, strings(&["--workspace", "--exclude", "xtask"]));
        assert!(!names_packages(&selection));
        assert!(names_packages(&strings(&["-p", "trellis-kit"])));
    }

    #[test]
    fn doc_tests_skip_packages_without_a_library() {
        let libraries: HashSet<String> = ["trellis-kit".to_string()].into();
        assert_eq!(
            doc_selection(&strings(&["-p", "xtask", "-p", "trellis-kit@0.1.0"]), &libraries),
            Some(strings(&["-p", "trellis-kit@0.1.0"]))
        );
        assert_eq!(doc_selection(&strings(&["-p", "xtask"]), &libraries), None);
        assert_eq!(doc_selection(&[], &libraries), Some(vec![]));
    }
}
