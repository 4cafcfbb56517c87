//! `trellis.tasks.v1.AutomationService`: converts proto ↔ the automation model and calls one
//! operation of [`crate::automation`].

use std::sync::Arc;

use prost_types::value::Kind;
use serde_json::Value;
use tonic::{Request, Response, Status as GrpcStatus};
use trellis_kit::RequestContext;
use trellis_kit::db::Db;
use trellis_kit::error::Violations;
use trellis_kit::jobs::SharedClock;
use trellis_kit::paging::page_size;
use trellis_proto::trellis::tasks::v1 as proto;
use trellis_proto::trellis::tasks::v1::automation_service_server::AutomationService;
use uuid::Uuid;

use super::NewAutomation;
use super::rules::{Action, Condition};
use super::store::{AutomationRow, RunRow};
use crate::access::Access;

/// The AutomationService handlers.
#[derive(Debug, Clone)]
pub struct AutomationApi {
    db: Db,
    access: Arc<dyn Access>,
    clock: SharedClock,
}

impl AutomationApi {
    /// Handlers over `db`.
    pub fn new(db: Db, access: Arc<dyn Access>, clock: SharedClock) -> Self {
        Self { db, access, clock }
    }
}

fn parts<T>(request: Request<T>) -> Result<(RequestContext, T, Violations), GrpcStatus> {
    let ctx = RequestContext::from_request(&request)?.clone();
    Ok((ctx, request.into_inner(), Violations::default()))
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(t))
}

/// A protobuf Value as JSON.
pub fn to_json(value: Option<&prost_types::Value>) -> Value {
    match value.and_then(|v| v.kind.as_ref()) {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9e15 {
                Value::from(*n as i64)
            } else {
                Value::from(*n)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(|v| to_json(Some(v))).collect()),
        Some(Kind::StructValue(s)) => {
            Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), to_json(Some(v)))).collect())
        }
    }
}

/// JSON as a protobuf Value.
pub fn from_json(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.iter().map(from_json).collect() })
        }
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn automation_to_proto(a: &AutomationRow) -> proto::Automation {
    proto::Automation {
        id: a.id.to_string(),
        board_id: a.board_id.to_string(),
        name: a.name.clone(),
        trigger_event: a.trigger_event.clone(),
        conditions: a
            .conditions
            .0
            .iter()
            .map(|c| proto::AutomationCondition {
                field: c.field.clone(),
                op: c.op.clone(),
                value: (!c.value.is_null()).then(|| from_json(&c.value)),
            })
            .collect(),
        actions: a
            .actions
            .0
            .iter()
            .map(|x| proto::AutomationAction {
                r#type: x.kind.clone(),
                field: x.field.clone().unwrap_or_default(),
                value: (!x.value.is_null()).then(|| from_json(&x.value)),
                target: x.target.clone().unwrap_or_default(),
                user_id: x.user_id.map(|u| u.to_string()).unwrap_or_default(),
                template: x.template.clone().unwrap_or_default(),
                message: x.message.clone().unwrap_or_default(),
            })
            .collect(),
        enabled: a.enabled,
        disabled_reason: a.disabled_reason.clone().unwrap_or_default(),
        run_count: a.run_count,
        last_run_at: a.last_run_at.map(timestamp),
        last_run_status: a.last_run_status.clone().unwrap_or_default(),
        created_by: a.created_by.map(|u| u.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(a.created_at)),
    }
}

fn run_to_proto(r: &RunRow) -> proto::AutomationRun {
    proto::AutomationRun {
        id: r.id.to_string(),
        automation_id: r.automation_id.to_string(),
        event_id: r.event_id.to_string(),
        task_id: r.task_id.map(|t| t.to_string()).unwrap_or_default(),
        depth: r.depth,
        status: r.status.clone(),
        skip_reason: r.skip_reason.clone().unwrap_or_default(),
        actions_applied: Some(prost_types::ListValue {
            values: r.actions_applied.0.iter().map(|a| from_json(&Value::String(a.clone()))).collect(),
        }),
        error: r.error.clone().unwrap_or_default(),
        started_at: Some(timestamp(r.started_at)),
        duration_ms: r.duration_ms,
    }
}

#[tonic::async_trait]
impl AutomationService for AutomationApi {
    async fn create_automation(
        &self,
        request: Request<proto::CreateAutomationRequest>,
    ) -> Result<Response<proto::CreateAutomationResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = v.uuid("board_id", &r.board_id);
        let conditions = r
            .conditions
            .iter()
            .map(|c| Condition {
                field: c.field.trim().to_string(),
                op: c.op.trim().to_string(),
                value: to_json(c.value.as_ref()),
            })
            .collect();
        let actions = r
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| Action {
                kind: a.r#type.trim().to_string(),
                field: non_empty(&a.field),
                value: to_json(a.value.as_ref()),
                target: non_empty(&a.target),
                user_id: non_empty(&a.user_id).map(|u| v.uuid(&format!("actions[{i}].user_id"), &u)),
                template: non_empty(&a.template),
                message: non_empty(&a.message),
            })
            .collect();
        let new = NewAutomation {
            board_id,
            name: r.name,
            trigger_event: r.trigger_event.trim().to_string(),
            conditions,
            actions,
        };
        if board_id.is_nil() {
            v.finish()?;
        }
        let row = super::create(&self.db, self.access.as_ref(), &ctx, v, new).await?;
        Ok(Response::new(proto::CreateAutomationResponse { automation: Some(automation_to_proto(&row)) }))
    }

    async fn list_automations(
        &self,
        request: Request<proto::ListAutomationsRequest>,
    ) -> Result<Response<proto::ListAutomationsResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = v.uuid("board_id", &r.board_id);
        v.finish()?;
        let rows = super::list(&self.db, self.access.as_ref(), &ctx, board_id).await?;
        Ok(Response::new(proto::ListAutomationsResponse {
            automations: rows.iter().map(automation_to_proto).collect(),
        }))
    }

    async fn delete_automation(
        &self,
        request: Request<proto::DeleteAutomationRequest>,
    ) -> Result<Response<()>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = v.uuid("board_id", &r.board_id);
        let id = v.uuid("automation_id", &r.automation_id);
        v.finish()?;
        super::delete(&self.db, self.access.as_ref(), &ctx, board_id, id).await?;
        Ok(Response::new(()))
    }

    async fn list_automation_runs(
        &self,
        request: Request<proto::ListAutomationRunsRequest>,
    ) -> Result<Response<proto::ListAutomationRunsResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = v.uuid("board_id", &r.board_id);
        let id: Uuid = v.uuid("automation_id", &r.automation_id);
        let size = page_size(r.page_size)?;
        v.finish()?;
        let rows = super::runs(&self.db, self.access.as_ref(), &ctx, board_id, id, self.clock.now(), size).await?;
        Ok(Response::new(proto::ListAutomationRunsResponse { runs: rows.iter().map(run_to_proto).collect() }))
    }
}
