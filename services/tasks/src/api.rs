//! gRPC handlers: validate and convert the request, call one operation of [`crate::task`],
//! convert the result. No SQL and no business rules here.

use std::sync::Arc;

use tonic::{Request, Response, Status as GrpcStatus};
use trellis_kit::RequestContext;
use trellis_kit::db::Db;
use trellis_kit::error::Violations;
use trellis_kit::paging::{PageTokens, page_size};
use trellis_proto::trellis::tasks::v1 as proto;
use trellis_proto::trellis::tasks::v1::task_service_server::TaskService;

use crate::store::{TaskRow, WatcherRow};
use crate::task::{self, DESCRIPTION_MAX, ListQuery, NOTE_MAX, NewTask, Priority, Status, TITLE_MAX};

/// The `trellis.tasks.v1.TaskService` implementation.
#[derive(Debug, Clone)]
pub struct TaskApi {
    db: Db,
    tokens: Arc<PageTokens>,
}

impl TaskApi {
    /// Handlers over `db`, signing page tokens with `tokens`.
    pub fn new(db: Db, tokens: PageTokens) -> Self {
        Self { db, tokens: Arc::new(tokens) }
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(t))
}

fn id_string(id: Option<uuid::Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

/// The wire form of a task.
pub fn task_to_proto(t: &TaskRow) -> proto::Task {
    proto::Task {
        id: t.id.to_string(),
        board_id: t.board_id.to_string(),
        column_id: t.column_id.to_string(),
        parent_id: id_string(t.parent_id),
        number: t.number,
        key: t.key(),
        title: t.title.clone(),
        description: t.description.clone(),
        status: Status::parse(&t.status).map_or(0, |s| s.to_proto() as i32),
        priority: Priority::parse(&t.priority).map_or(0, |p| p.to_proto() as i32),
        assignee_id: id_string(t.assignee_id),
        created_by: id_string(t.created_by),
        position: t.position.clone(),
        depth: i32::from(t.depth),
        start_date: t.start_date.map(timestamp),
        due_date: t.due_date.map(timestamp),
        started_at: t.started_at.map(timestamp),
        completed_at: t.completed_at.map(timestamp),
        watcher_count: i32::try_from(t.watcher_count).unwrap_or(i32::MAX),
        version: t.version,
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
    }
}

fn watcher_to_proto(w: &WatcherRow) -> proto::Watcher {
    let reason = match w.reason.as_str() {
        "manual" => proto::WatchReason::Manual,
        "creator" => proto::WatchReason::Creator,
        "assignee" => proto::WatchReason::Assignee,
        "comment" => proto::WatchReason::Comment,
        "mention" => proto::WatchReason::Mention,
        _ => proto::WatchReason::Unspecified,
    };
    proto::Watcher { user_id: w.user_id.to_string(), reason: reason as i32, created_at: Some(timestamp(w.created_at)) }
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn create_task(
        &self,
        request: Request<proto::CreateTaskRequest>,
    ) -> Result<Response<proto::CreateTaskResponse>, GrpcStatus> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let mut v = Violations::default();
        let title = task::clean_text(&mut v, "title", &r.title, 1, TITLE_MAX);
        let description = task::clean_text(&mut v, "description", &r.description, 0, DESCRIPTION_MAX);
        let board_id = task::optional_id(&mut v, "board_id", &r.board_id);
        let column_id = task::optional_id(&mut v, "column_id", &r.column_id);
        let assignee_id = task::optional_id(&mut v, "assignee_id", &r.assignee_id);
        let status = Status::from_proto(r.status).unwrap_or_else(|_| {
            v.add("status", "unknown status");
            None
        });
        let priority = Priority::from_proto(r.priority).unwrap_or_else(|_| {
            v.add("priority", "unknown priority");
            Priority::Medium
        });
        v.finish()?;
        let new = NewTask { board_id, column_id, title, description, status, priority, assignee_id };
        let created = task::create(&self.db, &ctx, new).await?;
        Ok(Response::new(proto::CreateTaskResponse { task: Some(task_to_proto(&created.task)) }))
    }

    async fn get_task(
        &self,
        request: Request<proto::GetTaskRequest>,
    ) -> Result<Response<proto::GetTaskResponse>, GrpcStatus> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let mut v = Violations::default();
        let task_id = task::required_id(&mut v, "task_id", &request.get_ref().task_id);
        v.finish()?;
        let detail = task::get(&self.db, &ctx, task_id).await?;
        Ok(Response::new(proto::GetTaskResponse {
            task: Some(task_to_proto(&detail.task)),
            watchers: detail.watchers.iter().map(watcher_to_proto).collect(),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<proto::ListTasksRequest>,
    ) -> Result<Response<proto::ListTasksResponse>, GrpcStatus> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let mut v = Violations::default();
        let size = page_size(r.page_size).unwrap_or_else(|_| {
            v.add("page_size", "must not be negative");
            0
        });
        let board_id = task::optional_id(&mut v, "board_id", &r.board_id);
        let assignee_id = match r.assignee_id.trim() {
            "me" => Some(ctx.user_id()?),
            raw => task::optional_id(&mut v, "assignee_id", raw),
        };
        v.finish()?;
        let query = ListQuery { board_id, assignee_id, page_size: size, page_token: r.page_token };
        let page = task::list(&self.db, &ctx, &self.tokens, query).await?;
        Ok(Response::new(proto::ListTasksResponse {
            tasks: page.tasks.iter().map(task_to_proto).collect(),
            next_page_token: page.next_page_token,
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
        }))
    }

    async fn assign_task(
        &self,
        request: Request<proto::AssignTaskRequest>,
    ) -> Result<Response<proto::AssignTaskResponse>, GrpcStatus> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let mut v = Violations::default();
        let task_id = task::required_id(&mut v, "task_id", &r.task_id);
        let assignee_id = task::optional_id(&mut v, "assignee_id", &r.assignee_id);
        let note = task::clean_text(&mut v, "note", &r.note, 0, NOTE_MAX);
        v.finish()?;
        let task = task::assign(&self.db, &ctx, task_id, assignee_id, &note).await?;
        Ok(Response::new(proto::AssignTaskResponse { task: Some(task_to_proto(&task)) }))
    }
}
