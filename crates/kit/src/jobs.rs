//! Replica-safe periodic jobs: each occurrence of a job runs once across every replica of a
//! service, and an occurrence that fell due while no replica was running is caught up after the
//! restart rather than skipped.
//!
//! A module declares its jobs with [`crate::Service::job`]; `grpc::launch` runs them with a
//! [`Scheduler`] polling every `JOBS_POLL_INTERVAL`. Each job has one row in the service schema's
//! `kit_jobs` table (installed by kit next to the outbox) holding the watermark `next_run_at`:
//!
//! 1. a replica locks the job's row with `FOR UPDATE SKIP LOCKED` (a replica that finds it locked
//!    leaves that job to the one holding it);
//! 2. when `next_run_at <= now` it runs the handler for that occurrence while holding the lock;
//! 3. on success it advances `next_run_at` to the following occurrence and commits; on failure it
//!    records the error and leaves the watermark, so the occurrence is retried at the next poll.
//!
//! An occurrence therefore runs to success exactly once unless the replica dies between the
//! handler's own commit and the watermark's commit; then it runs again after the restart. Handlers
//! make that harmless by being idempotent per occurrence (a unique key on the effect, or a state
//! column that records what was already done), which every handler in this codebase is.
//!
//! Time comes from a [`Clock`] (the configuration's [`SharedClock`], the system clock unless a
//! test installs a [`TestClock`]), so tests move time forward instead of waiting for it.
//!
//! The decision is recorded in `docs/adr/0007-kit-scheduled-jobs.md`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests). Clones share the same time.
#[derive(Debug, Clone)]
pub struct TestClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl TestClock {
    /// A clock standing at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(at)) }
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Moves the time forward (or back, with a negative delta).
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A clock shared by a service and its jobs; the system clock by default.
#[derive(Clone)]
pub struct SharedClock(Arc<dyn Clock>);

impl SharedClock {
    /// Wraps a clock.
    pub fn new(clock: impl Clock) -> Self {
        Self(Arc::new(clock))
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        Self::new(SystemClock)
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<TestClock> for SharedClock {
    fn from(clock: TestClock) -> Self {
        Self::new(clock)
    }
}

/// When a job's occurrences fall (all in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every `period`, aligned to the Unix epoch (every minute on the minute, every hour on the
    /// hour). At least one second.
    Every(Duration),
    /// Once a day at this UTC time of day.
    Daily(NaiveTime),
}

impl Schedule {
    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Schedule::Every(period) => {
                let period = period.as_secs().max(1) as i64;
                let secs = t.timestamp().div_euclid(period) * period + period;
                DateTime::from_timestamp(secs, 0).unwrap_or(t)
            }
            Schedule::Daily(at) => {
                let today = t.date_naive().and_time(at).and_utc();
                if today > t { today } else { today + TimeDelta::days(1) }
            }
        }
    }

    /// The latest occurrence at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Schedule::Every(period) => {
                let period = period.as_secs().max(1) as i64;
                let secs = t.timestamp().div_euclid(period) * period;
                DateTime::from_timestamp(secs, 0).unwrap_or(t)
            }
            Schedule::Daily(at) => {
                let today = t.date_naive().and_time(at).and_utc();
                if today <= t { today } else { today - TimeDelta::days(1) }
            }
        }
    }
}

/// What happens to occurrences missed while no replica ran (or a handler kept failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Run the latest missed occurrence once (sweeps that look at the current state: running
    /// each missed minute again would do nothing more).
    #[default]
    Latest,
    /// Run every missed occurrence, oldest first (jobs whose work belongs to each occurrence),
    /// at most [`MAX_CATCH_UP`] per poll.
    Each,
}

/// The most occurrences of one job a [`CatchUp::Each`] poll runs.
pub const MAX_CATCH_UP: usize = 1_000;

/// One occurrence being run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// The job.
    pub job: &'static str,
    /// When this occurrence was scheduled.
    pub occurrence: DateTime<Utc>,
    /// The clock's time when the run started.
    pub now: DateTime<Utc>,
}

/// What a job does for one occurrence. Must be idempotent per occurrence (see the module doc).
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one occurrence.
    fn run(&self, run: JobRun) -> BoxFuture<'static, anyhow::Result<()>>;
}

impl<F> JobHandler for F
where
    F: Fn(JobRun) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync + 'static,
{
    fn run(&self, run: JobRun) -> BoxFuture<'static, anyhow::Result<()>> {
        self(run)
    }
}

/// A periodic job.
#[derive(Clone)]
pub struct Job {
    /// Unique within the service; the key of its `kit_jobs` row.
    pub name: &'static str,
    /// When it runs.
    pub schedule: Schedule,
    /// What happens to missed occurrences.
    pub catch_up: CatchUp,
    handler: Arc<dyn JobHandler>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("catch_up", &self.catch_up)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job running `handler` on `schedule`, catching up only the latest missed occurrence.
    pub fn new(name: &'static str, schedule: Schedule, handler: impl JobHandler) -> Self {
        Self { name, schedule, catch_up: CatchUp::default(), handler: Arc::new(handler) }
    }

    /// Sets how missed occurrences are caught up.
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }
}

/// Runs a service's jobs against its `kit_jobs` table.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pool: PgPool,
    clock: SharedClock,
    jobs: Vec<Job>,
}

impl Scheduler {
    /// A scheduler for `jobs` on the service's database.
    pub fn new(db: &Db, clock: SharedClock, jobs: Vec<Job>) -> Self {
        Self { pool: db.pool().clone(), clock, jobs }
    }

    /// Polls every `interval` until `shutdown`. A failing poll is logged and retried.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = format!("{e:#}"), "scheduled jobs: poll failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Runs every due occurrence of every job that no other replica is running, and returns the
    /// occurrences that ran successfully.
    pub async fn tick(&self) -> anyhow::Result<Vec<JobRun>> {
        let mut ran = Vec::new();
        for job in &self.jobs {
            self.register(job).await?;
            for _ in 0..MAX_CATCH_UP {
                match self.run_one(job).await? {
                    Some(run) => ran.push(run),
                    None => break,
                }
            }
        }
        Ok(ran)
    }

    /// Creates the job's row with its first occurrence after now (once; later polls keep it).
    async fn register(&self, job: &Job) -> anyhow::Result<()> {
        sqlx::query("insert into kit_jobs (name, next_run_at) values ($1, $2) on conflict (name) do nothing")
            .bind(job.name)
            .bind(job.schedule.next_after(self.clock.now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims and runs the job's next due occurrence; `None` when nothing is due or another
    /// replica holds the job.
    async fn run_one(&self, job: &Job) -> anyhow::Result<Option<JobRun>> {
        let mut tx = self.pool.begin().await?;
        let next: Option<DateTime<Utc>> =
            sqlx::query_scalar("select next_run_at from kit_jobs where name = $1 for update skip locked")
                .bind(job.name)
                .fetch_optional(&mut *tx)
                .await?;
        let now = self.clock.now();
        let Some(next) = next.filter(|next| *next <= now) else {
            tx.rollback().await?;
            return Ok(None);
        };
        let occurrence = match job.catch_up {
            CatchUp::Each => next,
            CatchUp::Latest => job.schedule.latest_at_or_before(now).max(next),
        };
        let run = JobRun { job: job.name, occurrence, now };
        match job.handler.run(run.clone()).await {
            Ok(()) => {
                sqlx::query(
                    "update kit_jobs set next_run_at = $2, last_occurrence_at = $3, last_run_at = $4,
                         run_count = run_count + 1, last_error = null
                     where name = $1",
                )
                .bind(job.name)
                .bind(job.schedule.next_after(occurrence))
                .bind(occurrence)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                tracing::debug!(job = job.name, occurrence = %occurrence, "scheduled job ran");
                Ok(Some(run))
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::warn!(job = job.name, occurrence = %occurrence, error = %message, "scheduled job failed");
                sqlx::query("update kit_jobs set last_error = $2, last_run_at = $3 where name = $1")
                    .bind(job.name)
                    .bind(&message)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn periodic_occurrences_align_to_the_period() {
        let minute = Schedule::Every(Duration::from_secs(60));
        assert_eq!(minute.next_after(t("2026-11-22T10:00:00Z")), t("2026-11-22T10:01:00Z"));
        assert_eq!(minute.next_after(t("2026-11-22T10:00:59Z")), t("2026-11-22T10:01:00Z"));
        assert_eq!(minute.latest_at_or_before(t("2026-11-22T10:00:59Z")), t("2026-11-22T10:00:00Z"));
        assert_eq!(minute.latest_at_or_before(t("2026-11-22T10:00:00Z")), t("2026-11-22T10:00:00Z"));
    }

    #[test]
    fn daily_occurrences_fall_at_the_time_of_day() {
        let daily = Schedule::Daily(NaiveTime::from_hms_opt(3, 0, 0).unwrap_or_default());
        assert_eq!(daily.next_after(t("2026-11-22T02:59:00Z")), t("2026-11-22T03:00:00Z"));
        assert_eq!(daily.next_after(t("2026-11-22T03:00:00Z")), t("2026-11-23T03:00:00Z"));
        assert_eq!(daily.latest_at_or_before(t("2026-11-22T02:59:00Z")), t("2026-11-21T03:00:00Z"));
        assert_eq!(daily.latest_at_or_before(t("2026-11-22T03:00:00Z")), t("2026-11-22T03:00:00Z"));
    }

    #[test]
    fn a_test_clock_moves_only_when_told_and_clones_share_it() {
        let clock = TestClock::at(t("2026-11-22T10:00:00Z"));
        let shared = SharedClock::from(clock.clone());
        clock.advance(TimeDelta::minutes(5));
        assert_eq!(shared.now(), t("2026-11-22T10:05:00Z"));
        clock.set(t("2027-01-01T00:00:00Z"));
        assert_eq!(shared.now(), t("2027-01-01T00:00:00Z"));
    }
}
