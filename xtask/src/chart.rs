//! `cargo xtask chart`: the deployment checks that need no cluster and no Docker engine.
//!
//! It prepares a virtualenv under the target directory (`chart-venv`) with the pinned packages of
//! `helm/tests/requirements.txt` — `helm-python-sdk` (Helm's Go SDK as a shared library: lint,
//! render, values-schema validation) and `kubernetes-validate` (the Kubernetes JSON schemas) —
//! then runs `helm/tests` with pytest: the chart is linted and rendered for several module
//! combinations, every rendered object is validated against the Kubernetes schemas, and the
//! assertions about what matters (modules, probes, security contexts, NetworkPolicies, hook
//! order) run on the result; the Dockerfile and `k8s/` are checked too. Everything runs offline
//! once the packages are installed. `cargo xtask lint` runs it as well.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

use crate::infra::which;
use crate::{proc, repo_root};

/// Options of `cargo xtask chart`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChartArgs {
    /// Rewrite `k8s/base/trellis.yaml` from the chart instead of checking that it is up to date.
    #[arg(long)]
    pub bless: bool,
    /// Extra arguments for pytest (e.g. `-k network -x`).
    #[arg(last = true)]
    pub pytest_args: Vec<String>,
}

/// Runs the chart checks; fails if any failed.
pub fn run(args: &ChartArgs) -> Result<ExitCode> {
    let root = repo_root();
    let python = venv(&root)?;
    let mut pytest = Command::new(&python);
    pytest
        .args(["-m", "pytest", "helm/tests", "-q", "-p", "no:cacheprovider"])
        .args(&args.pytest_args)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    if args.bless {
        pytest.env("TRELLIS_CHART_BLESS", "1");
    }
    eprintln!("xtask: chart: {}", proc::describe(&pytest));
    let status = proc::run_foreground(&mut pytest)?;
    if status.success() {
        eprintln!("xtask: chart checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask: chart checks FAILED");
        Ok(ExitCode::FAILURE)
    }
}

/// The virtualenv's python, created and filled with the pinned requirements when they changed.
fn venv(root: &Path) -> Result<PathBuf> {
    let requirements = root.join("helm/tests/requirements.txt");
    let wanted =
        std::fs::read_to_string(&requirements).with_context(|| format!("reading {}", requirements.display()))?;
    let dir = target_dir(root).join("chart-venv");
    let python = dir.join("bin/python");
    let stamp = dir.join("trellis-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(python);
    }
    let Some(python3) = which("python3") else {
        bail!(
            "the chart checks need Python 3 with venv and pip (Debian/Ubuntu: `apt-get install -y python3 python3-venv`)"
        );
    };
    eprintln!("xtask: chart: creating {} with {}", dir.display(), requirements.display());
    let mut create = Command::new(python3);
    create.arg("-m").arg("venv").arg("--clear").arg(&dir).stdin(Stdio::null());
    if !proc::run_foreground(&mut create)?.success() {
        bail!(
            "`python3 -m venv` failed; install the venv module (Debian/Ubuntu: `apt-get install -y python3-venv`) and re-run"
        );
    }
    let mut install = Command::new(&python);
    install
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "-r"])
        .arg(&requirements)
        .stdin(Stdio::null());
    if !proc::run_foreground(&mut install)?.success() {
        bail!("installing {} into {} failed", requirements.display(), dir.display());
    }
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// `$CARGO_TARGET_DIR`, else `target/` of the workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { root.join(dir) }
        }
        _ => root.join("target"),
    }
}
