//! Scheduled jobs (`kit::jobs`) against a real Postgres: replicas share one `kit_jobs` row per
//! job, a test clock drives time, and the handler records each occurrence it ran.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use trellis_kit::db::{self, Db, DbSettings};
use trellis_kit::jobs::{CatchUp, Job, JobRun, Schedule, Scheduler, SharedClock, TestClock};
use trellis_kit::testing::{TestEnv, fresh_database};

/// Records every occurrence it runs; sleeps `delay` inside each run and fails while `failing`.
#[derive(Clone, Default)]
struct Recorder {
    runs: Arc<Mutex<Vec<DateTime<Utc>>>>,
    failing: Arc<Mutex<bool>>,
    delay: Duration,
}

impl Recorder {
    fn runs(&self) -> Vec<DateTime<Utc>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }

    fn job(&self, catch_up: CatchUp) -> Job {
        let recorder = self.clone();
        Job::new("sweep", Schedule::Every(Duration::from_secs(60)), move |run: JobRun| {
            let recorder = recorder.clone();
            async move {
                tokio::time::sleep(recorder.delay).await;
                if *recorder.failing.lock().unwrap_or_else(|p| p.into_inner()) {
                    anyhow::bail!("the sweep failed");
                }
                recorder.runs.lock().unwrap_or_else(|p| p.into_inner()).push(run.occurrence);
                Ok(())
            }
            .boxed()
        })
        .catch_up(catch_up)
    }
}

/// A fresh database with kit's tables in schema `jobtest`, connected as its service role.
async fn database() -> Db {
    let env = TestEnv::get();
    let url = fresh_database(&env).await;
    db::migrate(&url, "jobtest", "trellis-test", None).await.unwrap_or_else(|e| panic!("migrate: {e:#}"));
    let settings = DbSettings { url, service_password: "trellis-test".into(), max_connections: 5 };
    Db::connect("jobtest", &settings).await.unwrap_or_else(|e| panic!("connect: {e:#}"))
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[tokio::test]
async fn an_occurrence_runs_once_across_replicas_and_repeated_polls() {
    let db = database().await;
    let clock = TestClock::at(t("2026-11-22T10:00:30Z"));
    let recorder = Recorder { delay: Duration::from_millis(200), ..Recorder::default() };
    let a = Scheduler::new(&db, SharedClock::from(clock.clone()), vec![recorder.job(CatchUp::Each)]);
    let b = Scheduler::new(&db, SharedClock::from(clock.clone()), vec![recorder.job(CatchUp::Each)]);

    // Registration: the first occurrence is the next minute; nothing is due yet.
    assert!(a.tick().await.unwrap_or_else(|e| panic!("{e:#}")).is_empty());
    assert!(recorder.runs().is_empty());

    clock.set(t("2026-11-22T10:01:10Z"));
    // Two replicas poll at the same moment, then each polls again.
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    let ran = ra.unwrap_or_else(|e| panic!("{e:#}")).len() + rb.unwrap_or_else(|e| panic!("{e:#}")).len();
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    let again = ra.unwrap_or_else(|e| panic!("{e:#}")).len() + rb.unwrap_or_else(|e| panic!("{e:#}")).len();
    assert_eq!((ran, again), (1, 0));
    assert_eq!(recorder.runs(), vec![t("2026-11-22T10:01:00Z")]);
}

#[tokio::test]
async fn missed_occurrences_are_caught_up_after_a_restart() {
    let db = database().await;
    let clock = TestClock::at(t("2026-11-22T10:00:30Z"));
    let each = Recorder::default();
    let first = Scheduler::new(&db, SharedClock::from(clock.clone()), vec![each.job(CatchUp::Each)]);
    first.tick().await.unwrap_or_else(|e| panic!("{e:#}"));
    drop(first);

    // Down for three minutes; a new process (a new scheduler) starts.
    clock.set(t("2026-11-22T10:03:20Z"));
    let restarted = Scheduler::new(&db, SharedClock::from(clock.clone()), vec![each.job(CatchUp::Each)]);
    restarted.tick().await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(each.runs(), vec![t("2026-11-22T10:01:00Z"), t("2026-11-22T10:02:00Z"), t("2026-11-22T10:03:00Z")]);

    // The same outage with CatchUp::Latest runs only the latest occurrence.
    let db = database().await;
    let clock = TestClock::at(t("2026-11-22T10:00:30Z"));
    let latest = Recorder::default();
    Scheduler::new(&db, SharedClock::from(clock.clone()), vec![latest.job(CatchUp::Latest)])
        .tick()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    clock.set(t("2026-11-22T10:03:20Z"));
    let restarted = Scheduler::new(&db, SharedClock::from(clock.clone()), vec![latest.job(CatchUp::Latest)]);
    restarted.tick().await.unwrap_or_else(|e| panic!("{e:#}"));
    restarted.tick().await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(latest.runs(), vec![t("2026-11-22T10:03:00Z")]);
}

#[tokio::test]
async fn a_failed_occurrence_is_retried_and_its_error_recorded() {
    let db = database().await;
    let clock = TestClock::at(t("2026-11-22T10:00:30Z"));
    let recorder = Recorder::default();
    let scheduler = Scheduler::new(&db, SharedClock::from(clock.clone()), vec![recorder.job(CatchUp::Each)]);
    scheduler.tick().await.unwrap_or_else(|e| panic!("{e:#}"));
    clock.advance(TimeDelta::minutes(1));
    recorder.fail(true);
    assert!(scheduler.tick().await.unwrap_or_else(|e| panic!("{e:#}")).is_empty());
    let error: Option<String> = sqlx::query_scalar("select last_error from kit_jobs where name = 'sweep'")
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(error.as_deref(), Some("the sweep failed"));

    recorder.fail(false);
    let ran = scheduler.tick().await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(ran.len(), 1);
    assert_eq!(recorder.runs(), vec![t("2026-11-22T10:01:00Z")]);
    let (error, count): (Option<String>, i64) =
        sqlx::query_as("select last_error, run_count from kit_jobs where name = 'sweep'")
            .fetch_one(db.pool())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((error, count), (None, 1));
}
