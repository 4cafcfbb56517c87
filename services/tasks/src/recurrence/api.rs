//! `trellis.tasks.v1.RecurrenceService`: validates and converts, then calls one operation of
//! [`crate::recurrence`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status as GrpcStatus};
use trellis_kit::RequestContext;
use trellis_kit::db::Db;
use trellis_kit::error::Violations;
use trellis_kit::jobs::SharedClock;
use trellis_kit::paging::{PageTokens, page_size};
use trellis_proto::trellis::tasks::v1 as proto;
use trellis_proto::trellis::tasks::v1::recurrence_service_server::RecurrenceService;
use uuid::Uuid;

use super::store::RuleRow;
use super::{NewRule, RuleView, Strategy};
use crate::access::Access;
use crate::api::{json_to_struct, task_to_proto};
use crate::task::Priority;

/// The RecurrenceService handlers.
#[derive(Debug, Clone)]
pub struct RecurrenceApi {
    db: Db,
    access: Arc<dyn Access>,
    clock: SharedClock,
    tokens: Arc<PageTokens>,
}

impl RecurrenceApi {
    /// Handlers over `db`, reading the time from `clock`.
    pub fn new(db: Db, access: Arc<dyn Access>, clock: SharedClock, tokens: PageTokens) -> Self {
        Self { db, access, clock, tokens: Arc::new(tokens) }
    }
}

fn parts<T>(request: Request<T>) -> Result<(RequestContext, T, Violations), GrpcStatus> {
    let ctx = RequestContext::from_request(&request)?.clone();
    Ok((ctx, request.into_inner(), Violations::default()))
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(t))
}

fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

fn optional_time(v: &mut Violations, field: &str, t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    let parsed = from_timestamp(t);
    if parsed.is_none() {
        v.add(field, "is not a valid time");
    }
    parsed
}

fn strategy_to_proto(s: &str) -> i32 {
    (match Strategy::parse(s) {
        Some(Strategy::Same) => proto::AssigneeStrategy::Same,
        Some(Strategy::Rotate) => proto::AssigneeStrategy::Rotate,
        Some(Strategy::RoundRobin) => proto::AssigneeStrategy::RoundRobin,
        None => proto::AssigneeStrategy::Unspecified,
    }) as i32
}

/// The wire form of a rule.
pub fn rule_to_proto(r: &RuleRow) -> proto::RecurrenceRule {
    let t = &r.template.0;
    proto::RecurrenceRule {
        id: r.id.to_string(),
        board_id: r.board_id.to_string(),
        source_task_id: r.source_task_id.to_string(),
        cron_expression: r.cron_expression.clone(),
        time_zone: r.time_zone.clone(),
        next_run_at: r.next_run_at.map(timestamp),
        last_run_at: r.last_run_at.map(timestamp),
        assignee_strategy: strategy_to_proto(&r.assignee_strategy),
        assignee_pool: r.assignee_pool.iter().map(Uuid::to_string).collect(),
        rotation_index: r.rotation_index,
        due_offset_days: r.due_offset_days,
        starts_at: Some(timestamp(r.starts_at)),
        ends_at: r.ends_at.map(timestamp),
        enabled: r.enabled,
        occurrences_created: r.occurrences_created,
        include_checklists: r.include_checklists,
        include_subtasks: r.include_subtasks,
        template: Some(proto::RecurrenceTemplate {
            title: t.title.clone(),
            description: t.description.clone(),
            priority: Priority::parse(&t.priority).map_or(0, |p| p.to_proto() as i32),
            assignee_id: t.assignee_id.map(|a| a.to_string()).unwrap_or_default(),
            estimate_minutes: t.estimate_minutes.unwrap_or_default(),
            metadata: Some(json_to_struct(&t.metadata)),
            checklist_titles: t.checklists.iter().map(|c| c.title.clone()).collect(),
        }),
        created_by: r.created_by.map(|c| c.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn view_parts(view: RuleView) -> (Option<proto::RecurrenceRule>, Vec<prost_types::Timestamp>) {
    (Some(rule_to_proto(&view.rule)), view.upcoming.into_iter().map(timestamp).collect())
}

#[tonic::async_trait]
impl RecurrenceService for RecurrenceApi {
    async fn create_recurrence_rule(
        &self,
        request: Request<proto::CreateRecurrenceRuleRequest>,
    ) -> Result<Response<proto::CreateRecurrenceRuleResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let strategy = match proto::AssigneeStrategy::try_from(r.assignee_strategy) {
            Ok(proto::AssigneeStrategy::Unspecified | proto::AssigneeStrategy::Same) => Strategy::Same,
            Ok(proto::AssigneeStrategy::Rotate) => Strategy::Rotate,
            Ok(proto::AssigneeStrategy::RoundRobin) => Strategy::RoundRobin,
            Err(_) => {
                v.add("assignee_strategy", "must be same, rotate or round_robin");
                Strategy::Same
            }
        };
        let pool: Vec<Uuid> =
            r.assignee_pool.iter().enumerate().map(|(i, raw)| v.uuid(&format!("assignee_pool[{i}]"), raw)).collect();
        let starts_at = optional_time(&mut v, "starts_at", r.starts_at.as_ref());
        let ends_at = optional_time(&mut v, "ends_at", r.ends_at.as_ref());
        v.finish()?;
        let new = NewRule {
            task_id,
            cron_expression: r.cron_expression,
            time_zone: r.time_zone,
            strategy,
            pool,
            due_offset_days: r.due_offset_days,
            starts_at,
            ends_at,
            include_subtasks: r.include_subtasks,
            include_checklists: r.include_checklists,
        };
        let view = super::create(&self.db, self.access.as_ref(), &ctx, self.clock.now(), new).await?;
        let (rule, next_run_times) = view_parts(view);
        Ok(Response::new(proto::CreateRecurrenceRuleResponse { rule, next_run_times }))
    }

    async fn list_recurrence_rules(
        &self,
        request: Request<proto::ListRecurrenceRulesRequest>,
    ) -> Result<Response<proto::ListRecurrenceRulesResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = v.optional_uuid("board_id", &r.board_id);
        let size = page_size(r.page_size)?;
        v.finish()?;
        let query = PageTokens::query_hash(&[&r.board_id, &format!("{:?}", r.enabled)]);
        let after: Option<(DateTime<Utc>, Uuid)> =
            if r.page_token.is_empty() { None } else { self.tokens.decode(&query, &r.page_token)? };
        let page = super::list(&self.db, self.access.as_ref(), &ctx, board_id, r.enabled, after, size).await?;
        Ok(Response::new(proto::ListRecurrenceRulesResponse {
            rules: page.rules.iter().map(rule_to_proto).collect(),
            next_page_token: page.next.map(|c| self.tokens.encode(&query, &c)).unwrap_or_default(),
            total_size: i32::try_from(page.total).unwrap_or(i32::MAX),
        }))
    }

    async fn get_recurrence_rule(
        &self,
        request: Request<proto::GetRecurrenceRuleRequest>,
    ) -> Result<Response<proto::GetRecurrenceRuleResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let rule_id = v.uuid("rule_id", &r.rule_id);
        v.finish()?;
        let view = super::get(&self.db, self.access.as_ref(), &ctx, self.clock.now(), rule_id).await?;
        let (rule, next_run_times) = view_parts(view);
        Ok(Response::new(proto::GetRecurrenceRuleResponse { rule, next_run_times }))
    }

    async fn run_recurrence_rule(
        &self,
        request: Request<proto::RunRecurrenceRuleRequest>,
    ) -> Result<Response<proto::RunRecurrenceRuleResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let rule_id = v.uuid("rule_id", &r.rule_id);
        v.finish()?;
        let (task, rule) = super::run_now(&self.db, self.access.as_ref(), &ctx, self.clock.now(), rule_id).await?;
        Ok(Response::new(proto::RunRecurrenceRuleResponse {
            task: Some(task_to_proto(&task)),
            rule: Some(rule_to_proto(&rule)),
        }))
    }

    async fn delete_recurrence_rule(
        &self,
        request: Request<proto::DeleteRecurrenceRuleRequest>,
    ) -> Result<Response<()>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let rule_id = v.uuid("rule_id", &r.rule_id);
        v.finish()?;
        super::delete(&self.db, self.access.as_ref(), &ctx, rule_id).await?;
        Ok(Response::new(()))
    }
}
