//! Recurring tasks (spec Rules 18-20): a rule snapshots a task into its template and creates one
//! occurrence at each fire time of its cron schedule.
//!
//! - [`schedule`]: cron expressions in a time zone (pure, unit tested).
//! - [`store`]: the rules' queries and their `scheduled_work` entries.
//! - [`api`]: the `RecurrenceService` handlers.
//! - here: the operations, the assignee strategies (pure) and [`sweep`], the scheduled job that
//!   creates due occurrences (`kit::jobs`, once across replicas).
//!
//! An occurrence is created through the same steps as CreateTask (board counter, first column
//! mapped to todo, watchers, activity, `tasks.task.created` with `recurrence_rule_id`), in the
//! transaction that advances the rule, under the rule's row lock. UNIQUE (rule, occurrence_at)
//! makes a scheduled run idempotent; manual runs carry no occurrence_at.

pub mod api;
pub mod schedule;
pub mod store;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use trellis_kit::db::{Db, Tx};
use trellis_kit::error::Violations;
use trellis_kit::jobs::{Job, JobRun, Schedule};
use trellis_kit::{Error, RequestContext, Result, Subject, events as kit_events};
use uuid::Uuid;

use crate::access::{Access, BoardPermission, TaskPermission};
use crate::error::TaskError;
use crate::store::{self as task_store, ChecklistRow, TaskRow};
use crate::task::{Priority, place};
use crate::{events, position};
use schedule::CronSchedule;
use store::RuleRow;

/// Rules per organization (spec Limits).
pub const MAX_RULES_PER_ORG: i64 = 500;
/// Largest assignee pool.
pub const POOL_MAX: usize = 50;
/// How many upcoming run times Create and Get return.
pub const UPCOMING: usize = 5;
/// How often the sweep looks for due rules (the spec asks for occurrences within 60 s).
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What an occurrence copies from the task the rule was made from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Template {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Priority name.
    pub priority: String,
    /// Assignee (strategy `same`).
    pub assignee_id: Option<Uuid>,
    /// Estimate.
    pub estimate_minutes: Option<i32>,
    /// Custom fields.
    pub metadata: serde_json::Value,
    /// Checklists (items reset in each occurrence).
    pub checklists: Vec<TemplateChecklist>,
}

/// A checklist of the template.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TemplateChecklist {
    /// Title.
    pub title: String,
    /// Item titles.
    pub items: Vec<String>,
}

/// Who an occurrence is assigned to (Rule 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The template's assignee.
    Same,
    /// `pool[rotation_index mod n]`, the index advancing after each occurrence.
    Rotate,
    /// Fewest open tasks on the board; ties to the least recently assigned, then pool order.
    RoundRobin,
}

impl Strategy {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Same => "same",
            Strategy::Rotate => "rotate",
            Strategy::RoundRobin => "round_robin",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Strategy> {
        [Strategy::Same, Strategy::Rotate, Strategy::RoundRobin].into_iter().find(|x| x.as_str() == s)
    }
}

/// The rotate strategy: the assignee and the next index. An empty pool assigns nobody.
pub fn rotate(pool: &[Uuid], index: i32) -> (Option<Uuid>, i32) {
    if pool.is_empty() {
        return (None, index);
    }
    let i = usize::try_from(index).unwrap_or(0) % pool.len();
    (Some(pool[i]), ((i + 1) % pool.len()) as i32)
}

/// The round_robin strategy over `(member, open tasks on the board, last assigned by this rule)`
/// in pool order: fewest open tasks, then least recently assigned (never first), then pool order.
pub fn round_robin(load: &[(Uuid, i64, Option<DateTime<Utc>>)]) -> Option<Uuid> {
    load.iter().enumerate().min_by_key(|(i, (_, open, last))| (*open, *last, *i)).map(|(_, (user, _, _))| *user)
}

/// A validated CreateRecurrenceRule (field syntax checked by the API).
#[derive(Debug, Clone)]
pub struct NewRule {
    /// The task to snapshot.
    pub task_id: Uuid,
    /// Cron expression.
    pub cron_expression: String,
    /// IANA zone; empty = UTC.
    pub time_zone: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Pool.
    pub pool: Vec<Uuid>,
    /// Due offset.
    pub due_offset_days: Option<i32>,
    /// Start.
    pub starts_at: Option<DateTime<Utc>>,
    /// End.
    pub ends_at: Option<DateTime<Utc>>,
    /// Copy subtasks.
    pub include_subtasks: bool,
    /// Copy checklists.
    pub include_checklists: bool,
}

/// A rule and its next run times.
#[derive(Debug, Clone)]
pub struct RuleView {
    /// The rule.
    pub rule: RuleRow,
    /// Upcoming runs.
    pub upcoming: Vec<DateTime<Utc>>,
}

fn too_frequent() -> Error {
    Error::invalid_argument("RECURRENCE_TOO_FREQUENT", "Occurrences must be at least 60 minutes apart")
        .with_field("cron_expression", "runs less than 60 minutes apart")
}

/// The first run of a schedule starting at `starts_at` as seen at `now`, within `ends_at`.
fn first_run(
    schedule: &CronSchedule,
    now: DateTime<Utc>,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let from = if starts_at > now { starts_at - TimeDelta::seconds(1) } else { now };
    schedule.next_after(from).filter(|next| ends_at.is_none_or(|end| *next <= end))
}

fn upcoming(rule: &RuleRow, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let Ok(schedule) = CronSchedule::parse(&rule.cron_expression, &rule.time_zone) else { return Vec::new() };
    if !rule.enabled {
        return Vec::new();
    }
    let from = rule.next_run_at.map_or(now, |n| n - TimeDelta::seconds(1)).max(rule.starts_at - TimeDelta::seconds(1));
    schedule.upcoming(from, UPCOMING).into_iter().filter(|t| rule.ends_at.is_none_or(|end| *t <= end)).collect()
}

/// CreateRecurrenceRule: validates, snapshots the task, schedules the first run.
pub async fn create(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    now: DateTime<Utc>,
    new: NewRule,
) -> Result<RuleView> {
    let mut v = Violations::default();
    let parsed = CronSchedule::parse(&new.cron_expression, &new.time_zone);
    let schedule = CronSchedule::validate(&mut v, &new.cron_expression, &new.time_zone, now);
    if new.pool.len() > POOL_MAX {
        v.add("assignee_pool", format!("at most {POOL_MAX} users"));
    }
    if new.strategy != Strategy::Same && new.pool.is_empty() {
        v.add("assignee_pool", "is required for the rotate and round_robin strategies");
    }
    if new.due_offset_days.is_some_and(|d| !(0..=365).contains(&d)) {
        v.add("due_offset_days", "must be between 0 and 365");
    }
    let starts_at = new.starts_at.unwrap_or(now);
    if new.ends_at.is_some_and(|end| end <= starts_at) {
        v.add("ends_at", "must be after starts_at");
    }
    v.finish()?;
    let schedule = match (schedule, parsed) {
        (Some(s), _) => s,
        (None, Ok(_)) => return Err(too_frequent()),
        (None, Err(_)) => return Err(Error::validation("cron_expression", "is not a valid cron expression")),
    };

    access.task(ctx, new.task_id, TaskPermission::Edit).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let task = task_store::task(&mut tx, new.task_id).await?.ok_or(TaskError::TaskNotFound)?;
    tx.commit().await?;
    access.board(ctx, task.board_id, BoardPermission::Edit).await?;
    if task.archived {
        return Err(TaskError::BoardArchived.into());
    }
    for (i, user) in new.pool.iter().enumerate() {
        if !access.user_can_view_board(ctx, *user, task.board_id).await? {
            return Err(Error::invalid_argument("ASSIGNEE_NO_ACCESS", "A pool member cannot view the board")
                .with_field(format!("assignee_pool[{i}]"), "cannot view the board"));
        }
    }

    let org_id = ctx.org_id()?;
    let mut tx = db.tenant_tx(ctx).await?;
    if store::count_rules(&mut tx).await? >= MAX_RULES_PER_ORG {
        return Err(Error::failed_precondition(
            "LIMIT_REACHED",
            format!("An organization has at most {MAX_RULES_PER_ORG} recurrence rules"),
        ));
    }
    let checklists = if new.include_checklists {
        store::checklists_of(&mut tx, task.id)
            .await?
            .into_iter()
            .map(|(title, items)| TemplateChecklist { title, items })
            .collect()
    } else {
        Vec::new()
    };
    let template = Template {
        title: task.title.clone(),
        description: task.description.clone(),
        priority: task.priority.clone(),
        assignee_id: task.assignee_id,
        estimate_minutes: task.estimate_minutes,
        metadata: store::task_metadata(&mut tx, task.id).await?,
        checklists,
    };
    let mut pool = Vec::with_capacity(new.pool.len());
    for user in new.pool {
        if !pool.contains(&user) {
            pool.push(user);
        }
    }
    let next_run_at = first_run(&schedule, now, starts_at, new.ends_at);
    let rule = RuleRow {
        id: Uuid::now_v7(),
        org_id,
        board_id: task.board_id,
        source_task_id: task.id,
        template: sqlx::types::Json(template),
        cron_expression: new.cron_expression.trim().to_string(),
        time_zone: if new.time_zone.trim().is_empty() { "UTC".into() } else { new.time_zone.trim().to_string() },
        next_run_at,
        last_run_at: None,
        assignee_strategy: new.strategy.as_str().to_string(),
        assignee_pool: pool,
        rotation_index: 0,
        due_offset_days: new.due_offset_days,
        starts_at,
        ends_at: new.ends_at,
        include_subtasks: new.include_subtasks,
        include_checklists: new.include_checklists,
        enabled: next_run_at.is_some(),
        occurrences_created: 0,
        created_by: ctx.user_id_opt(),
        created_at: now,
        updated_at: now,
    };
    store::insert_rule(&mut tx, &rule).await?;
    let rule = store::rule(&mut tx, rule.id).await?.ok_or(TaskError::TaskNotFound)?;
    tx.commit().await?;
    tracing::info!(rule_id = %rule.id, task_id = %task.id, next_run_at = ?rule.next_run_at, "recurrence rule created");
    let upcoming = upcoming(&rule, now);
    Ok(RuleView { rule, upcoming })
}

async fn visible_rule(db: &Db, access: &dyn Access, ctx: &RequestContext, rule_id: Uuid) -> Result<RuleRow> {
    let mut tx = db.tenant_tx(ctx).await?;
    let rule = store::rule(&mut tx, rule_id).await?.ok_or_else(rule_not_found)?;
    tx.commit().await?;
    access.board(ctx, rule.board_id, BoardPermission::View).await.map_err(|_| rule_not_found())?;
    Ok(rule)
}

fn rule_not_found() -> Error {
    Error::not_found("NOT_FOUND", "The recurrence rule does not exist")
}

/// GetRecurrenceRule.
pub async fn get(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    now: DateTime<Utc>,
    rule_id: Uuid,
) -> Result<RuleView> {
    let rule = visible_rule(db, access, ctx, rule_id).await?;
    let upcoming = upcoming(&rule, now);
    Ok(RuleView { rule, upcoming })
}

/// A page of ListRecurrenceRules.
#[derive(Debug, Clone)]
pub struct RulePage {
    /// The rules.
    pub rules: Vec<RuleRow>,
    /// Cursor of the next page.
    pub next: Option<(DateTime<Utc>, Uuid)>,
    /// All matching rules.
    pub total: i64,
}

/// ListRecurrenceRules: newest first, keyset pages.
pub async fn list(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    board_id: Option<Uuid>,
    enabled: Option<bool>,
    after: Option<(DateTime<Utc>, Uuid)>,
    page_size: u32,
) -> Result<RulePage> {
    if let Some(board_id) = board_id {
        access.board(ctx, board_id, BoardPermission::View).await?;
    }
    let mut tx = db.tenant_tx(ctx).await?;
    let (mut rules, total) = store::rules_page(&mut tx, board_id, enabled, after, i64::from(page_size) + 1).await?;
    tx.commit().await?;
    let next = if rules.len() > page_size as usize {
        rules.truncate(page_size as usize);
        rules.last().map(|r| (r.created_at, r.id))
    } else {
        None
    };
    Ok(RulePage { rules, next, total })
}

/// RunRecurrenceRule: one occurrence now (rotation advances; the schedule is unchanged).
pub async fn run_now(
    db: &Db,
    access: &dyn Access,
    ctx: &RequestContext,
    now: DateTime<Utc>,
    rule_id: Uuid,
) -> Result<(TaskRow, RuleRow)> {
    let rule = visible_rule(db, access, ctx, rule_id).await?;
    access.board(ctx, rule.board_id, BoardPermission::Edit).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let rule = store::rule_locked(&mut tx, rule.id).await?.ok_or_else(rule_not_found)?;
    let (task, rotation_index) = create_occurrence(&mut tx, ctx, &rule, None, now).await?;
    store::record_run(&mut tx, &rule, rule.next_run_at, rule.enabled, rotation_index, now).await?;
    let rule = store::rule(&mut tx, rule.id).await?.ok_or_else(rule_not_found)?;
    tx.commit().await?;
    tracing::info!(rule_id = %rule.id, task_id = %task.id, "recurrence rule run by hand");
    Ok((task, rule))
}

/// DeleteRecurrenceRule: no further occurrences; existing ones stay.
pub async fn delete(db: &Db, access: &dyn Access, ctx: &RequestContext, rule_id: Uuid) -> Result<()> {
    let rule = visible_rule(db, access, ctx, rule_id).await?;
    access.board(ctx, rule.board_id, BoardPermission::Edit).await?;
    let mut tx = db.tenant_tx(ctx).await?;
    let rule = store::rule_locked(&mut tx, rule.id).await?.ok_or_else(rule_not_found)?;
    store::delete_rule(&mut tx, &rule).await?;
    tx.commit().await?;
    tracing::info!(rule_id = %rule.id, "recurrence rule deleted");
    Ok(())
}

/// Creates one occurrence of `rule` starting at `start` (Rule 19) and returns it with the
/// rotation index to store. `occurrence_at` is the scheduled time (None for manual runs).
async fn create_occurrence(
    tx: &mut Tx,
    ctx: &RequestContext,
    rule: &RuleRow,
    occurrence_at: Option<DateTime<Utc>>,
    start: DateTime<Utc>,
) -> Result<(TaskRow, i32)> {
    let template = &rule.template.0;
    let numbered = task_store::take_task_number(tx, rule.board_id).await?.ok_or(TaskError::BoardNotFound)?;
    if numbered.archived {
        return Err(TaskError::BoardArchived.into());
    }
    let columns = task_store::board_columns(tx, rule.board_id).await?;
    let (column_id, status) = place(&columns, None, None)?;
    let (assignee_id, rotation_index) = match Strategy::parse(&rule.assignee_strategy).unwrap_or(Strategy::Same) {
        Strategy::Same => (template.assignee_id, rule.rotation_index),
        Strategy::Rotate => rotate(&rule.assignee_pool, rule.rotation_index),
        Strategy::RoundRobin => {
            let load = store::pool_load(tx, rule.board_id, rule.id, &rule.assignee_pool).await?;
            (round_robin(&load), rule.rotation_index)
        }
    };
    let last = task_store::last_position(tx, rule.board_id, column_id).await?;
    let id = Uuid::now_v7();
    task_store::insert_task(
        tx,
        &task_store::NewTaskRow {
            id,
            org_id: rule.org_id,
            board_id: rule.board_id,
            column_id,
            number: numbered.number,
            title: &template.title,
            description: &template.description,
            status,
            priority: Priority::parse(&template.priority).unwrap_or(Priority::Medium),
            assignee_id,
            created_by: rule.created_by,
            completed_by: None,
            position: position::after(last.as_deref()),
            parent_id: None,
            depth: 0,
        },
    )
    .await?;
    let due = rule.due_offset_days.map(|d| start + TimeDelta::days(i64::from(d)));
    let metadata = if template.metadata.is_object() { template.metadata.clone() } else { serde_json::json!({}) };
    store::set_occurrence_fields(tx, id, rule.id, occurrence_at, start, due, template.estimate_minutes, &metadata)
        .await?;
    if rule.include_checklists {
        let positions = position::sequence(template.checklists.len());
        for (checklist, position) in template.checklists.iter().zip(positions) {
            let row = ChecklistRow { id: Uuid::now_v7(), task_id: id, title: checklist.title.clone(), position };
            task_store::insert_checklist(tx, rule.org_id, &row).await?;
            for (item, position) in checklist.items.iter().zip(position::sequence(checklist.items.len())) {
                task_store::insert_checklist_item(tx, rule.org_id, row.id, item, &position).await?;
            }
        }
    }
    if let Some(creator) = rule.created_by {
        task_store::add_watcher(tx, rule.org_id, id, creator, "creator").await?;
    }
    if let Some(assignee) = assignee_id {
        task_store::add_watcher(tx, rule.org_id, id, assignee, "assignee").await?;
    }
    let task = task_store::task(tx, id).await?.ok_or(TaskError::TaskNotFound)?;
    let watcher_ids: Vec<Uuid> = task_store::watchers(tx, id).await?.iter().map(|w| w.user_id).collect();
    let details = serde_json::json!({
        "status": task.status, "column_id": task.column_id, "title": task.title, "recurrence_rule_id": rule.id,
    });
    crate::collab::record(tx, ctx, id, "created", details).await?;
    let mut payload = events::created(&task, &watcher_ids);
    payload.recurrence_rule_id = rule.id.to_string();
    kit_events::stage(tx, ctx, events::TASK_CREATED, &payload).await?;
    if task.assignee_id.is_some() {
        events::task_assigned(tx, ctx, &task, &watcher_ids, None, "").await?;
    }
    // task#board, task#creator and task#assignee, as CreateTask writes them; the sweep runs
    // without a caller, so the staged copy (applied by the module's relationship consumer) is the
    // only path.
    let creator = rule.created_by.map(|user| crate::relationships::member_subject("user", user));
    let version = crate::relationships::next_version(tx).await?;
    let mut changes = vec![crate::relationships::task_placed(id, rule.board_id, None, creator.as_ref(), version)];
    if task.assignee_id.is_some() {
        let version = crate::relationships::next_version(tx).await?;
        changes.push(crate::relationships::task_assignee(id, None, task.assignee_id, version));
    }
    for change in &changes {
        trellis_kit::authz::stage_change(tx, ctx, "tasks", change).await?;
    }
    Ok((task, rotation_index))
}

/// The context occurrences are created in: actor `recurrence:<rule id>`.
fn rule_context(org_id: Uuid, rule_id: Uuid) -> RequestContext {
    let mut ctx = RequestContext::system(org_id, Uuid::now_v7().to_string());
    ctx.subject = Subject::Service(format!("recurrence:{rule_id}"));
    ctx
}

/// Due rules handled per sweep transaction batch.
const SWEEP_BATCH: i64 = 200;

/// Creates every due occurrence (Rule 19). One rule's failure is logged and leaves its entry
/// due, so the next sweep retries it; the others go on. Returns the occurrences created.
pub async fn sweep(db: &Db, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut tx = db.tx().await?;
    let due = store::due_rules(&mut tx, now, SWEEP_BATCH).await?;
    tx.commit().await?;
    let mut created = 0;
    for (org_id, rule_id) in due {
        match run_due(db, org_id, rule_id, now).await {
            Ok(true) => created += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(rule_id = %rule_id, error = %e.message(), "recurrence occurrence failed"),
        }
    }
    Ok(created)
}

/// Handles one due rule in its organization's transaction; whether an occurrence was created.
async fn run_due(db: &Db, org_id: Uuid, rule_id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let ctx = rule_context(org_id, rule_id);
    let mut tx = db.tenant_tx(&ctx).await?;
    let Some(rule) = store::rule_locked(&mut tx, rule_id).await? else {
        store::schedule(&mut tx, org_id, rule_id, None).await?;
        tx.commit().await?;
        return Ok(false);
    };
    // Another replica may have handled it since the sweep read the entry.
    let Some(due) = rule.next_run_at.filter(|due| *due <= now) else {
        tx.commit().await?;
        return Ok(false);
    };
    let schedule = CronSchedule::parse(&rule.cron_expression, &rule.time_zone).ok();
    // Runs missed while the service was down yield one occurrence (Rule 19).
    let next = schedule.and_then(|s| s.next_after(now)).filter(|next| rule.ends_at.is_none_or(|end| *next <= end));
    if !rule.enabled || rule.ends_at.is_some_and(|end| due > end) {
        store::reschedule(&mut tx, &rule, None, false).await?;
        tx.commit().await?;
        return Ok(false);
    }
    if store::occurrence_exists(&mut tx, rule.id, due).await? {
        store::reschedule(&mut tx, &rule, next, next.is_some()).await?;
        tx.commit().await?;
        return Ok(false);
    }
    match create_occurrence(&mut tx, &ctx, &rule, Some(due), due).await {
        Ok((task, rotation_index)) => {
            store::record_run(&mut tx, &rule, next, next.is_some(), rotation_index, now).await?;
            tx.commit().await?;
            tracing::info!(rule_id = %rule.id, task_id = %task.id, occurrence_at = %due, "recurrence occurrence created");
            Ok(true)
        }
        Err(e) if e.code() == tonic::Code::FailedPrecondition || e.code() == tonic::Code::NotFound => {
            // An archived or deleted board: this occurrence is skipped, the schedule goes on.
            drop(tx);
            let mut tx = db.tenant_tx(&ctx).await?;
            if let Some(rule) = store::rule_locked(&mut tx, rule_id).await? {
                store::reschedule(&mut tx, &rule, next, next.is_some()).await?;
            }
            tx.commit().await?;
            tracing::info!(rule_id = %rule_id, reason = %e.reason(), "recurrence occurrence skipped");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The scheduled job: [`sweep`] every [`SWEEP_EVERY`].
pub fn job(db: Db) -> Job {
    Job::new("tasks.recurrence", Schedule::Every(SWEEP_EVERY), move |run: JobRun| {
        let db = db.clone();
        async move {
            let created = sweep(&db, run.now).await?;
            if created > 0 {
                tracing::info!(created, "recurrence sweep");
            }
            Ok(())
        }
        .boxed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_walks_the_pool_and_wraps() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(rotate(&[a, b], 0), (Some(a), 1));
        assert_eq!(rotate(&[a, b], 1), (Some(b), 0));
        assert_eq!(rotate(&[a, b], 7), (Some(b), 0));
        assert_eq!(rotate(&[], 3), (None, 3));
    }

    #[test]
    fn round_robin_prefers_fewest_open_then_least_recent_then_pool_order() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap_or_default());
        assert_eq!(round_robin(&[(a, 3, None), (b, 1, None), (c, 2, None)]), Some(b));
        assert_eq!(round_robin(&[(a, 1, t("2026-01-02T00:00:00Z")), (b, 1, t("2026-01-01T00:00:00Z"))]), Some(b));
        assert_eq!(round_robin(&[(a, 1, t("2026-01-02T00:00:00Z")), (b, 1, None)]), Some(b));
        assert_eq!(round_robin(&[(a, 0, None), (b, 0, None)]), Some(a));
        assert_eq!(round_robin(&[]), None);
    }
}
