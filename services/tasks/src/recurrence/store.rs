//! Queries of recurrence rules and the recurrence entries of `scheduled_work`, each inside a
//! tenant transaction (or, for [`due_rules`], a sweep transaction).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use trellis_kit::Result;
use trellis_kit::db::Tx;
use uuid::Uuid;

use super::Template;

/// A recurrence rule.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub org_id: Uuid,
    /// Board of the occurrences.
    pub board_id: Uuid,
    /// The task the template came from.
    pub source_task_id: Uuid,
    /// What occurrences copy.
    pub template: Json<Template>,
    /// Five-field cron expression.
    pub cron_expression: String,
    /// IANA zone.
    pub time_zone: String,
    /// Next scheduled run; NULL when disabled or ended.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Last occurrence created.
    pub last_run_at: Option<DateTime<Utc>>,
    /// same | rotate | round_robin.
    pub assignee_strategy: String,
    /// Pool for rotate / round_robin.
    pub assignee_pool: Vec<Uuid>,
    /// Next pool index (rotate).
    pub rotation_index: i32,
    /// Due date offset in days.
    pub due_offset_days: Option<i32>,
    /// First possible run.
    pub starts_at: DateTime<Utc>,
    /// Last possible run.
    pub ends_at: Option<DateTime<Utc>>,
    /// Copy subtasks.
    pub include_subtasks: bool,
    /// Copy checklists.
    pub include_checklists: bool,
    /// Creates occurrences.
    pub enabled: bool,
    /// Occurrences so far.
    pub occurrences_created: i32,
    /// Creator.
    pub created_by: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

const RULE_SELECT: &str = "select id, org_id, board_id, source_task_id, template, cron_expression, time_zone, \
     next_run_at, last_run_at, assignee_strategy, assignee_pool, rotation_index, due_offset_days, starts_at, ends_at, \
     include_subtasks, include_checklists, enabled, occurrences_created, created_by, created_at, updated_at \
     from tasks.recurrence_rules";

/// Inserts a rule and its scheduled-work entry.
pub async fn insert_rule(tx: &mut Tx, r: &RuleRow) -> Result<()> {
    sqlx::query(
        "insert into tasks.recurrence_rules (id, org_id, board_id, source_task_id, template, cron_expression, \
         time_zone, next_run_at, assignee_strategy, assignee_pool, due_offset_days, starts_at, ends_at, \
         include_subtasks, include_checklists, enabled, created_by) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(r.id)
    .bind(r.org_id)
    .bind(r.board_id)
    .bind(r.source_task_id)
    .bind(&r.template)
    .bind(&r.cron_expression)
    .bind(&r.time_zone)
    .bind(r.next_run_at)
    .bind(&r.assignee_strategy)
    .bind(&r.assignee_pool)
    .bind(r.due_offset_days)
    .bind(r.starts_at)
    .bind(r.ends_at)
    .bind(r.include_subtasks)
    .bind(r.include_checklists)
    .bind(r.enabled)
    .bind(r.created_by)
    .execute(&mut **tx)
    .await?;
    schedule(tx, r.org_id, r.id, r.next_run_at).await
}

/// Points the rule's scheduled-work entry at `next_run_at`, or removes it.
pub async fn schedule(tx: &mut Tx, org_id: Uuid, rule_id: Uuid, next_run_at: Option<DateTime<Utc>>) -> Result<()> {
    match next_run_at {
        Some(due) => {
            sqlx::query(
                "insert into tasks.scheduled_work (org_id, kind, ref_id, due_at) values ($1, 'recurrence', $2, $3) \
                 on conflict (kind, ref_id) do update set due_at = excluded.due_at",
            )
            .bind(org_id)
            .bind(rule_id)
            .bind(due)
            .execute(&mut **tx)
            .await?;
        }
        None => {
            sqlx::query("delete from tasks.scheduled_work where kind = 'recurrence' and ref_id = $1")
                .bind(rule_id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Rules in the organization.
pub async fn count_rules(tx: &mut Tx) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from tasks.recurrence_rules where deleted_at is null")
        .fetch_one(&mut **tx)
        .await?)
}

/// A live rule.
pub async fn rule(tx: &mut Tx, rule_id: Uuid) -> Result<Option<RuleRow>> {
    Ok(sqlx::query_as(&format!("{RULE_SELECT} where id = $1 and deleted_at is null"))
        .bind(rule_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// A live rule, locked until commit (runs of one rule take turns).
pub async fn rule_locked(tx: &mut Tx, rule_id: Uuid) -> Result<Option<RuleRow>> {
    Ok(sqlx::query_as(&format!("{RULE_SELECT} where id = $1 and deleted_at is null for update"))
        .bind(rule_id)
        .fetch_optional(&mut **tx)
        .await?)
}

/// A page of live rules, newest first, after the cursor `(created_at, id)`.
pub async fn rules_page(
    tx: &mut Tx,
    board_id: Option<Uuid>,
    enabled: Option<bool>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<(Vec<RuleRow>, i64)> {
    let filter = "deleted_at is null and ($1::uuid is null or board_id = $1) and ($2::bool is null or enabled = $2)";
    let rows = sqlx::query_as(&format!(
        "{RULE_SELECT} where {filter} and ($3::timestamptz is null or (created_at, id) < ($3, $4)) \
         order by created_at desc, id desc limit $5"
    ))
    .bind(board_id)
    .bind(enabled)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let total = sqlx::query_scalar(&format!("select count(*) from tasks.recurrence_rules where {filter}"))
        .bind(board_id)
        .bind(enabled)
        .fetch_one(&mut **tx)
        .await?;
    Ok((rows, total))
}

/// Records a run: next schedule, rotation, counters.
pub async fn record_run(
    tx: &mut Tx,
    rule: &RuleRow,
    next_run_at: Option<DateTime<Utc>>,
    enabled: bool,
    rotation_index: i32,
    ran_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "update tasks.recurrence_rules set next_run_at = $2, enabled = $3, rotation_index = $4, last_run_at = $5, \
         occurrences_created = occurrences_created + 1, updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(rule.id)
    .bind(next_run_at)
    .bind(enabled)
    .bind(rotation_index)
    .bind(ran_at)
    .execute(&mut **tx)
    .await?;
    schedule(tx, rule.org_id, rule.id, next_run_at).await
}

/// Moves the schedule without an occurrence (a run that could not create one, an ended rule).
pub async fn reschedule(tx: &mut Tx, rule: &RuleRow, next_run_at: Option<DateTime<Utc>>, enabled: bool) -> Result<()> {
    sqlx::query(
        "update tasks.recurrence_rules set next_run_at = $2, enabled = $3, updated_at = now(), version = version + 1 \
         where id = $1",
    )
    .bind(rule.id)
    .bind(next_run_at)
    .bind(enabled)
    .execute(&mut **tx)
    .await?;
    schedule(tx, rule.org_id, rule.id, next_run_at).await
}

/// Soft-deletes a rule and drops its schedule; whether it existed.
pub async fn delete_rule(tx: &mut Tx, rule: &RuleRow) -> Result<()> {
    sqlx::query(
        "update tasks.recurrence_rules set deleted_at = now(), enabled = false, next_run_at = null, \
         updated_at = now(), version = version + 1 where id = $1",
    )
    .bind(rule.id)
    .execute(&mut **tx)
    .await?;
    schedule(tx, rule.org_id, rule.id, None).await
}

/// Whether the occurrence of `rule` at `occurrence_at` exists (in the trash too).
pub async fn occurrence_exists(tx: &mut Tx, rule_id: Uuid, occurrence_at: DateTime<Utc>) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from tasks.tasks where recurrence_rule_id = $1 and occurrence_at = $2)",
    )
    .bind(rule_id)
    .bind(occurrence_at)
    .fetch_one(&mut **tx)
    .await?)
}

/// Sets what an occurrence carries beyond a plain new task.
#[allow(clippy::too_many_arguments)]
pub async fn set_occurrence_fields(
    tx: &mut Tx,
    task_id: Uuid,
    rule_id: Uuid,
    occurrence_at: Option<DateTime<Utc>>,
    start_date: DateTime<Utc>,
    due_date: Option<DateTime<Utc>>,
    estimate_minutes: Option<i32>,
    metadata: &serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "update tasks.tasks set recurrence_rule_id = $2, occurrence_at = $3, start_date = $4, due_date = $5, \
         estimate_minutes = $6, metadata = $7 where id = $1",
    )
    .bind(task_id)
    .bind(rule_id)
    .bind(occurrence_at)
    .bind(start_date)
    .bind(due_date)
    .bind(estimate_minutes)
    .bind(metadata)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Per pool member: open tasks on the board, and when this rule last assigned them.
pub async fn pool_load(
    tx: &mut Tx,
    board_id: Uuid,
    rule_id: Uuid,
    pool: &[Uuid],
) -> Result<Vec<(Uuid, i64, Option<DateTime<Utc>>)>> {
    Ok(sqlx::query_as(
        "select p.user_id, \
             (select count(*) from tasks.tasks t where t.board_id = $1 and t.assignee_id = p.user_id \
                 and t.deleted_at is null and t.status not in ('done', 'cancelled')), \
             (select max(t.created_at) from tasks.tasks t where t.recurrence_rule_id = $2 and t.assignee_id = p.user_id) \
         from unnest($3::uuid[]) as p(user_id)",
    )
    .bind(board_id)
    .bind(rule_id)
    .bind(pool)
    .fetch_all(&mut **tx)
    .await?)
}

/// The source task's checklists with their item titles, in order.
pub async fn checklists_of(tx: &mut Tx, task_id: Uuid) -> Result<Vec<(String, Vec<String>)>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select id, title from tasks.checklists where task_id = $1 order by position, id")
            .bind(task_id)
            .fetch_all(&mut **tx)
            .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, title) in rows {
        let items: Vec<String> =
            sqlx::query_scalar("select title from tasks.checklist_items where checklist_id = $1 order by position, id")
                .bind(id)
                .fetch_all(&mut **tx)
                .await?;
        out.push((title, items));
    }
    Ok(out)
}

/// The task's metadata.
pub async fn task_metadata(tx: &mut Tx, task_id: Uuid) -> Result<serde_json::Value> {
    Ok(sqlx::query_scalar("select metadata from tasks.tasks where id = $1").bind(task_id).fetch_one(&mut **tx).await?)
}

/// Due recurrence entries of every organization: `(org_id, rule_id)`, oldest first. Runs in a
/// transaction that declares itself the sweep (`app.sweep`), the only reader across tenants.
pub async fn due_rules(tx: &mut Tx, now: DateTime<Utc>, limit: i64) -> Result<Vec<(Uuid, Uuid)>> {
    sqlx::query("select set_config('app.sweep', 'on', true)").execute(&mut **tx).await?;
    Ok(sqlx::query_as(
        "select org_id, ref_id from tasks.scheduled_work where kind = 'recurrence' and due_at <= $1 \
         order by due_at limit $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}
