//! Child processes and signals.
//!
//! `cargo xtask dev|test` supervise long-running children (Postgres, Redis, RabbitMQ, `trellis`).
//! Each runs in a process group of its own, so a Ctrl-C in the terminal reaches only xtask, which
//! then stops the children in order. Commands that run to completion (cargo, the test runner)
//! stay in the terminal's group and see Ctrl-C themselves.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process, kill_process_group};

struct Flags {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Catches SIGINT (Ctrl-C), SIGTERM and SIGHUP; xtask then stops what it started instead of dying.
pub fn install_signal_handlers() -> Result<()> {
    let flags = FLAGS.get_or_init(|| Flags {
        interrupt: Arc::new(AtomicBool::new(false)),
        terminate: Arc::new(AtomicBool::new(false)),
    });
    signal_hook::flag::register(signal_hook::consts::SIGINT, flags.interrupt.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flags.terminate.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, flags.terminate.clone())?;
    Ok(())
}

/// Whether Ctrl-C (SIGINT) arrived.
pub fn interrupted() -> bool {
    FLAGS.get().is_some_and(|f| f.interrupt.load(Ordering::SeqCst))
}

/// Whether SIGTERM or SIGHUP arrived.
pub fn terminated() -> bool {
    FLAGS.get().is_some_and(|f| f.terminate.load(Ordering::SeqCst))
}

/// Whether any stop signal arrived.
pub fn stop_requested() -> bool {
    interrupted() || terminated()
}

/// Runs a command in the foreground (same process group, inherited stdio) to completion.
///
/// Ctrl-C in a terminal reaches the command directly. A SIGTERM/SIGHUP sent to xtask alone is
/// forwarded at once; a SIGINT sent to xtask alone is forwarded if the command still runs 5 s later.
pub fn run_foreground(cmd: &mut Command) -> Result<ExitStatus> {
    let mut child = cmd.spawn().with_context(|| format!("starting {}", describe(cmd)))?;
    let pid = Pid::from_child(&child);
    let mut interrupt_seen: Option<Instant> = None;
    let (mut sent_term, mut sent_int) = (false, false);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if terminated() && !sent_term {
            let _ = kill_process(pid, Signal::TERM);
            sent_term = true;
        }
        if interrupted() {
            let seen = *interrupt_seen.get_or_insert_with(Instant::now);
            if !sent_int && seen.elapsed() > Duration::from_secs(5) {
                let _ = kill_process(pid, Signal::INT);
                sent_int = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A command line for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A long-running child in its own process group, stopped with a chosen signal.
#[derive(Debug)]
pub struct Supervised {
    /// Human name ("Postgres").
    pub name: &'static str,
    child: Child,
    stop_signal: Signal,
    grace: Duration,
    /// Files worth showing when the process fails.
    pub logs: Vec<PathBuf>,
    done: Option<ExitStatus>,
}

impl Supervised {
    /// Spawns `cmd` in a new process group with stdin closed. When `log` is given, stdout and
    /// stderr go there; otherwise they are inherited.
    pub fn spawn(
        name: &'static str,
        cmd: &mut Command,
        log: Option<&Path>,
        stop_signal: Signal,
        grace: Duration,
    ) -> Result<Supervised> {
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null()).process_group(0);
        if let Some(log) = log {
            let out = File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            cmd.stdout(out.try_clone()?).stderr(out);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}: {}", describe(cmd)))?;
        Ok(Supervised {
            name,
            child,
            stop_signal,
            grace,
            logs: log.map(Path::to_path_buf).into_iter().collect(),
            done: None,
        })
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.done.is_none() {
            self.done = self.child.try_wait().ok().flatten();
        }
        self.done
    }

    /// Sends the stop signal (no-op once the process has ended).
    pub fn request_stop(&mut self) {
        if self.exited().is_none() {
            let _ = kill_process(Pid::from_child(&self.child), self.stop_signal);
        }
    }

    /// Waits for the process to end after [`Supervised::request_stop`]; past the grace period
    /// (its own unless `grace` overrides it), kills its whole process group. Always reaps the
    /// process group leader.
    pub fn finish_stop(&mut self, since: Instant, grace: Option<Duration>) {
        let grace = grace.unwrap_or(self.grace);
        let deadline = since + grace;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.exited().is_none() {
            eprintln!("xtask: {} did not stop within {} s; killing it", self.name, grace.as_secs());
        }
        // Leftover helpers (Erlang's child setup, Postgres backends) share the group.
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        if self.done.is_none() {
            self.done = self.child.wait().ok();
        }
    }

    /// Stops the process: the stop signal, then SIGKILL to the group after the grace period.
    pub fn stop(&mut self) {
        self.request_stop();
        self.finish_stop(Instant::now(), None);
    }
}

/// The last `lines` lines of a file (empty when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Formats the tails of several logs for an error message.
pub fn log_tails(paths: &[PathBuf], lines: usize) -> String {
    let mut out = String::new();
    for path in paths {
        let tail = tail(path, lines);
        if tail.trim().is_empty() {
            continue;
        }
        out.push_str(&format!("\n----- last lines of {} -----\n{tail}\n", path.display()));
    }
    out
}
