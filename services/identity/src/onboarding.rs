//! Onboarding checklists (spec rule 31, ADR 0017): registered steps, per-subject progress, the
//! dismissal rule, and completion by events (`completed_by_event`).
//!
//! A step is completed once per subject: the user for user-scope steps, the organization for
//! org-scope steps. A repeated completion keeps the first time and publishes nothing.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgPool;
use trellis_kit::db::Tx;
use trellis_kit::events::{Consumer, Event, Handler};
use trellis_kit::{Error, RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{Violation, Violations, code_of};
use crate::organizations::stage;
use crate::service_tokens::require_service;

/// `identity.onboarding.step_completed`
pub const STEP_COMPLETED: &str = "identity.onboarding.step_completed";
/// The queue of identity's onboarding consumer.
pub const QUEUE: &str = "identity.onboarding";

/// A registered step.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Step {
    pub module: String,
    pub step: String,
    pub title: String,
    pub required: bool,
    pub position: i32,
    /// `user` or `org`.
    pub scope: String,
    pub completed_by_event: Option<String>,
}

/// A step with the caller's progress.
#[derive(Debug, Clone)]
pub struct StepStatus {
    pub step: Step,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The checklist of a user in an org.
#[derive(Debug, Clone)]
pub struct Status {
    pub steps: Vec<StepStatus>,
    pub all_required_completed: bool,
    pub dismissed: bool,
}

/// Identity's own steps, completed by its own events.
pub fn own_steps() -> Vec<Step> {
    let step = |step: &str, title: &str, required: bool, position: i32, event: &str| Step {
        module: "identity".into(),
        step: step.into(),
        title: title.into(),
        required,
        position,
        scope: "org".into(),
        completed_by_event: Some(event.into()),
    };
    vec![
        step("create_first_team", "Create your first team", true, 10, crate::teams::TEAM_CREATED),
        step("invite_teammate", "Invite a teammate", false, 20, crate::events::INVITATION_SENT),
    ]
}

/// Finds the step a `module.step` or bare `step` names among `steps`; `None` if unknown or a
/// bare name is ambiguous.
pub fn find_step<'a>(steps: &'a [Step], name: &str) -> Option<&'a Step> {
    match name.split_once('.') {
        Some((module, step)) => steps.iter().find(|s| s.module == module && s.step == step),
        None => {
            let mut matching = steps.iter().filter(|s| s.step == name);
            let first = matching.next()?;
            matching.next().is_none().then_some(first)
        }
    }
}

/// Whether every required step is complete.
pub fn all_required_completed(steps: &[StepStatus]) -> bool {
    steps.iter().filter(|s| s.step.required).all(|s| s.completed_at.is_some())
}

fn check_step_name(step: &str) -> bool {
    let mut chars = step.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && (2..=50).contains(&step.len())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

const STEP: &str =
    "select module, step, title, required, position, scope, completed_by_event from identity.onboarding_steps";

async fn live_steps(pool: &PgPool) -> sqlx::Result<Vec<Step>> {
    sqlx::query_as(&format!("{STEP} where retired_at is null order by position, module, step")).fetch_all(pool).await
}

async fn steps_for_event(pool: &PgPool, event_type: &str) -> sqlx::Result<Vec<Step>> {
    sqlx::query_as(&format!("{STEP} where retired_at is null and completed_by_event = $1"))
        .bind(event_type)
        .fetch_all(pool)
        .await
}

/// The routing keys registered steps are completed by (the consumer's bindings).
pub async fn completing_events(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select distinct completed_by_event from identity.onboarding_steps
         where completed_by_event is not null and retired_at is null order by 1",
    )
    .fetch_all(pool)
    .await
}

async fn replace_steps(pool: &PgPool, module: &str, steps: &[Step]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for s in steps {
        sqlx::query(
            "insert into identity.onboarding_steps (module, step, title, required, position, scope, completed_by_event)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (module, step) do update set title = excluded.title, required = excluded.required,
                 position = excluded.position, scope = excluded.scope,
                 completed_by_event = excluded.completed_by_event, retired_at = null, registered_at = now()",
        )
        .bind(module)
        .bind(&s.step)
        .bind(&s.title)
        .bind(s.required)
        .bind(s.position)
        .bind(&s.scope)
        .bind(&s.completed_by_event)
        .execute(&mut *tx)
        .await?;
    }
    let names: Vec<String> = steps.iter().map(|s| s.step.clone()).collect();
    sqlx::query(
        "update identity.onboarding_steps set retired_at = now()
         where module = $1 and retired_at is null and not (step = any($2))",
    )
    .bind(module)
    .bind(&names)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Records a completion; the first completion time, and whether this call made it.
async fn complete(
    tx: &mut Tx,
    org_id: Uuid,
    subject: Uuid,
    step: &Step,
    by: Option<Uuid>,
) -> sqlx::Result<(DateTime<Utc>, bool)> {
    let inserted: Option<DateTime<Utc>> = sqlx::query_scalar(
        "insert into identity.onboarding_progress (org_id, subject_id, module, step, completed_by)
         values ($1, $2, $3, $4, $5) on conflict do nothing returning completed_at",
    )
    .bind(org_id)
    .bind(subject)
    .bind(&step.module)
    .bind(&step.step)
    .bind(by)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(at) = inserted {
        return Ok((at, true));
    }
    let at = sqlx::query_scalar(
        "select completed_at from identity.onboarding_progress
         where org_id = $1 and subject_id = $2 and module = $3 and step = $4",
    )
    .bind(org_id)
    .bind(subject)
    .bind(&step.module)
    .bind(&step.step)
    .fetch_one(&mut **tx)
    .await?;
    Ok((at, false))
}

fn subject_of(step: &Step, org_id: Uuid, user_id: Uuid) -> Uuid {
    if step.scope == "org" { org_id } else { user_id }
}

/// Completes `step` for its subject and stages the event the first time.
async fn complete_and_publish(
    tx: &mut Tx,
    ctx: &RequestContext,
    org_id: Uuid,
    user_id: Uuid,
    step: &Step,
) -> Result<DateTime<Utc>> {
    let subject = subject_of(step, org_id, user_id);
    let (at, first) = complete(tx, org_id, subject, step, Some(user_id)).await?;
    if first {
        let payload = pb::OnboardingStepCompleted {
            subject_id: subject.to_string(),
            module: step.module.clone(),
            step: step.step.clone(),
        };
        stage(tx, ctx, org_id, STEP_COMPLETED, &payload).await?;
    }
    Ok(at)
}

impl Identity {
    fn onboarding_user(ctx: &RequestContext) -> Result<(Uuid, Uuid)> {
        match ctx.subject {
            Subject::User(user) => Ok((user, ctx.org_id()?)),
            _ => Err(Error::permission_denied("PERMISSION_DENIED", "Onboarding belongs to users")),
        }
    }

    async fn status_in(&self, tx: &mut Tx, org_id: Uuid, user_id: Uuid) -> Result<Status> {
        let steps = live_steps(self.db.pool()).await?;
        let progress: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "select subject_id, module, step, completed_at from identity.onboarding_progress
             where subject_id = any($1)",
        )
        .bind([org_id, user_id].as_slice())
        .fetch_all(&mut **tx)
        .await?;
        let dismissed: bool =
            sqlx::query_scalar("select exists (select 1 from identity.onboarding_dismissals where user_id = $1)")
                .bind(user_id)
                .fetch_one(&mut **tx)
                .await?;
        let steps: Vec<StepStatus> = steps
            .into_iter()
            .map(|step| {
                let subject = subject_of(&step, org_id, user_id);
                let completed_at = progress
                    .iter()
                    .find(|(s, m, n, _)| *s == subject && *m == step.module && *n == step.step)
                    .map(|p| p.3);
                StepStatus { step, completed_at }
            })
            .collect();
        Ok(Status { all_required_completed: all_required_completed(&steps), steps, dismissed })
    }

    /// GetOnboardingStatus.
    pub async fn onboarding_status(&self, ctx: &RequestContext) -> Result<Status> {
        let (user_id, org_id) = Self::onboarding_user(ctx)?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let status = self.status_in(&mut tx, org_id, user_id).await?;
        tx.commit().await?;
        Ok(status)
    }

    /// CompleteOnboardingStep (idempotent).
    pub async fn complete_onboarding_step(&self, ctx: &RequestContext, name: &str) -> Result<StepStatus> {
        let (user_id, org_id) = Self::onboarding_user(ctx)?;
        let steps = live_steps(self.db.pool()).await?;
        let step = find_step(&steps, name.trim())
            .cloned()
            .ok_or_else(|| Error::new(code_of("UNKNOWN_STEP"), "UNKNOWN_STEP", "No such onboarding step"))?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let at = complete_and_publish(&mut tx, ctx, org_id, user_id, &step).await?;
        tx.commit().await?;
        Ok(StepStatus { step, completed_at: Some(at) })
    }

    /// DismissOnboarding: only with every required step complete.
    pub async fn dismiss_onboarding(&self, ctx: &RequestContext) -> Result<Status> {
        let (user_id, org_id) = Self::onboarding_user(ctx)?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let mut status = self.status_in(&mut tx, org_id, user_id).await?;
        if !status.all_required_completed {
            return Err(Error::new(
                code_of("REQUIRED_STEPS_OPEN"),
                "REQUIRED_STEPS_OPEN",
                "Complete the required steps before dismissing the checklist",
            ));
        }
        sqlx::query(
            "insert into identity.onboarding_dismissals (org_id, user_id) values ($1, $2) on conflict do nothing",
        )
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        status.dismissed = true;
        Ok(status)
    }

    /// RegisterOnboardingSteps (service principals): replaces the module's steps.
    pub async fn register_onboarding_steps(
        &self,
        ctx: &RequestContext,
        req: &pb::RegisterOnboardingStepsRequest,
    ) -> Result<usize> {
        let module = require_service(ctx)?.to_string();
        let mut violations = Violations::default();
        let mut steps = Vec::new();
        for (i, s) in req.steps.iter().enumerate() {
            let field = |name: &str| format!("steps[{i}].{name}");
            if !check_step_name(s.step.trim()) {
                violations.push(Violation::new(field("step"), "must match ^[a-z][a-z0-9_]{1,49}$"));
            }
            let title = s.title.trim();
            if title.is_empty() || title.chars().count() > 200 {
                violations.push(Violation::new(field("title"), "must be 1 to 200 characters"));
            }
            let event = s.completed_by_event.trim();
            if !event.is_empty() && !trellis_kit::events::is_event_type(event) {
                violations.push(Violation::new(
                    field("completed_by_event"),
                    "must be a routing key such as tasks.task.created",
                ));
            }
            let scope = if s.scope == pb::OnboardingScope::Org as i32 { "org" } else { "user" };
            steps.push(Step {
                module: module.clone(),
                step: s.step.trim().to_string(),
                title: title.to_string(),
                required: s.required,
                position: s.position,
                scope: scope.into(),
                completed_by_event: Some(event.to_string()).filter(|e| !e.is_empty()),
            });
        }
        violations.finish()?;
        replace_steps(self.db.pool(), &module, &steps).await?;
        Ok(steps.len())
    }

    /// Registers identity's own steps ([`own_steps`]).
    pub(crate) async fn register_own_onboarding_steps(&self) -> anyhow::Result<()> {
        replace_steps(self.db.pool(), "identity", &own_steps()).await?;
        Ok(())
    }
}

/// Completes the steps an event names for the event's user actor.
#[derive(Debug, Clone)]
pub struct OnboardingEvents {
    pool: PgPool,
}

impl OnboardingEvents {
    /// The consumer bound to `bindings` (identity's own completing events and those registered
    /// steps named when identity started).
    pub fn consumer(pool: PgPool, bindings: &[String]) -> Consumer {
        let bindings: Vec<&str> = bindings.iter().map(String::as_str).collect();
        Consumer::new(QUEUE, &bindings, OnboardingEvents { pool })
    }
}

impl Handler for OnboardingEvents {
    fn handle<'a>(&'a self, event: &'a Event, tx: &'a mut Tx) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let actor = event.envelope.actor.as_ref();
            let Some(user_id) = actor.filter(|a| a.kind == "user").and_then(|a| a.id.parse::<Uuid>().ok()) else {
                return Ok(());
            };
            let steps = steps_for_event(&self.pool, &event.envelope.r#type).await?;
            let ctx = RequestContext { subject: Subject::User(user_id), ..event.ctx.clone() };
            for step in &steps {
                complete_and_publish(tx, &ctx, event.org_id, user_id, step).await?;
                tracing::debug!(event_id = %event.id, module = %step.module, step = %step.step, "onboarding step completed by event");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_found_by_full_or_unique_bare_name() {
        let mut steps = own_steps();
        assert_eq!(find_step(&steps, "identity.create_first_team").map(|s| s.position), Some(10));
        assert_eq!(find_step(&steps, "invite_teammate").map(|s| s.module.as_str()), Some("identity"));
        steps.push(Step { module: "tasks".into(), ..steps[1].clone() });
        assert!(find_step(&steps, "invite_teammate").is_none(), "ambiguous");
        assert!(find_step(&steps, "tasks.invite_teammate").is_some());
        assert!(find_step(&steps, "nope").is_none());
    }

    #[test]
    fn only_required_steps_block_dismissal() {
        let steps = own_steps();
        let status = |done: [bool; 2]| -> Vec<StepStatus> {
            steps
                .iter()
                .zip(done)
                .map(|(s, d)| StepStatus { step: s.clone(), completed_at: d.then(Utc::now) })
                .collect()
        };
        assert!(!all_required_completed(&status([false, true])));
        assert!(all_required_completed(&status([true, false])));
    }
}
