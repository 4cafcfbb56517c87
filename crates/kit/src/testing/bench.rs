//! Measuring for `cargo xtask bench`: run an operation at a fixed concurrency for a while, then
//! report throughput and latency percentiles. Benchmarks live in `<crate>/benches/<name>.rs`
//! (`harness = false`), use [`super::TestEnv`] for the servers `cargo xtask bench` starts, and
//! print their results with [`Report`], so every suite reads the same way and ratios are computed
//! from numbers measured in the same run.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The outcome of one measured workload.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// What was measured, e.g. `check warm cache (1M relationships)`.
    pub name: String,
    /// The number of concurrent workers.
    pub concurrency: usize,
    /// Completed operations.
    pub operations: u64,
    /// Failed operations (counted, not timed).
    pub errors: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Sorted latencies of the completed operations.
    latencies: Vec<Duration>,
}

impl Measurement {
    /// Operations per second.
    pub fn throughput(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The `q` quantile (0.0..=1.0) of the latencies; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        self.latencies[rank]
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The mean latency.
    pub fn mean(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }
}

/// Runs `op` from `concurrency` workers: first for `warmup` (not recorded), then for `duration`.
/// `op` receives the worker index and the iteration number of that worker; an `Err` counts as an
/// error. Latencies are measured around each call, as the caller sees them.
pub async fn run<F, Fut, E>(
    name: impl Into<String>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Measurement
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: fmt::Debug + Send,
{
    let op = Arc::new(op);
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let op = Arc::clone(&op);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut iteration) = (0u64, 0u64);
            let mut first_error = None;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let outcome = op(worker, iteration).await;
                iteration += 1;
                if started < measure_from {
                    continue;
                }
                match outcome {
                    Ok(()) => latencies.push(started.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:?}"));
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (mut l, e, first) = worker.await.expect("benchmark worker panicked");
        if let Some(first) = first {
            eprintln!("bench: first error of a worker: {first}");
        }
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from).min(duration.max(Duration::from_millis(1)));
    latencies.sort_unstable();
    Measurement { name: name.into(), concurrency, operations: latencies.len() as u64, errors, elapsed, latencies }
}

/// A table of measurements, printed as Markdown, with named ratios between rows.
#[derive(Debug, Default)]
pub struct Report {
    title: String,
    rows: Vec<Measurement>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), ..Self::default() }
    }

    /// Adds a measurement (and echoes it to stderr, so a long suite shows progress).
    pub fn add(&mut self, m: Measurement) -> &Measurement {
        eprintln!("bench: {}: {:.0}/s, p50 {}, p99 {}", m.name, m.throughput(), micros(m.p50()), micros(m.p99()));
        self.rows.push(m);
        self.rows.last().expect("just pushed")
    }

    /// A free-form line under the table (a ratio, a goal and whether it was met, a memory figure).
    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("bench: {line}");
        self.notes.push(line);
    }

    /// `numerator / denominator` of throughput, written as a note with the goal it is held to.
    pub fn throughput_ratio(&mut self, label: &str, numerator: &Measurement, denominator: &Measurement, goal: &str) {
        let ratio = numerator.throughput() / denominator.throughput().max(f64::MIN_POSITIVE);
        self.note(format!("{label}: {ratio:.2} ({goal})"));
    }

    /// Prints the report to stdout.
    pub fn print(&self) {
        println!("{self}");
    }
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 { format!("{:.1} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n## {}\n", self.title)?;
        writeln!(f, "| workload | concurrency | ops | errors | ops/s | mean | p50 | p99 |")?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        for m in &self.rows {
            writeln!(
                f,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                m.name,
                m.concurrency,
                m.operations,
                m.errors,
                m.throughput(),
                micros(m.mean()),
                micros(m.p50()),
                micros(m.p99())
            )?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            for n in &self.notes {
                writeln!(f, "- {n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_operations_and_errors_after_the_warmup() {
        let m = run("alternating", 2, Duration::from_millis(20), Duration::from_millis(100), |_, i| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if i % 2 == 0 { Ok(()) } else { Err("odd") }
        })
        .await;
        assert!(m.operations > 0 && m.errors > 0, "{m:?}");
        // Every worker alternates, so successes and errors differ by at most one per worker.
        assert!(m.operations.abs_diff(m.errors) <= 2, "{} ok vs {} errors", m.operations, m.errors);
        assert!(m.p50() >= Duration::from_millis(1));
        assert!(m.p99() >= m.p50());
    }

    #[test]
    fn quantiles_pick_from_sorted_latencies() {
        let latencies: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        let m = Measurement {
            name: "q".into(),
            concurrency: 1,
            operations: 100,
            errors: 0,
            elapsed: Duration::from_secs(1),
            latencies,
        };
        assert_eq!(m.p50(), Duration::from_millis(51));
        assert_eq!(m.p99(), Duration::from_millis(99));
        assert_eq!(m.quantile(0.0), Duration::from_millis(1));
        assert_eq!(m.throughput(), 100.0);
        let text = Report { title: "t".into(), rows: vec![m], notes: vec!["ratio: 1.00".into()] }.to_string();
        assert!(text.contains("| q | 1 | 100 | 0 | 100 |"), "{text}");
        assert!(text.contains("- ratio: 1.00"), "{text}");
    }
}
