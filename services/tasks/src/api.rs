//! gRPC handlers: validate and convert the request, call one operation of [`crate::task`],
//! convert the result. No SQL and no business rules here.

use std::sync::Arc;

use tonic::{Request, Response, Status as GrpcStatus};
use trellis_kit::RequestContext;
use trellis_kit::collab::{EntityRef, TagRef};
use trellis_kit::db::Db;
use trellis_kit::error::Violations;
use trellis_kit::paging::{PageTokens, page_size};
use trellis_proto::trellis::common::v1 as common;
use trellis_proto::trellis::common::v1::entity_service_server::EntityService;
use trellis_proto::trellis::tasks::v1 as proto;
use trellis_proto::trellis::tasks::v1::board_service_server::BoardService;
use trellis_proto::trellis::tasks::v1::checklist_service_server::ChecklistService;
use trellis_proto::trellis::tasks::v1::collab_service_server::CollabService;
use trellis_proto::trellis::tasks::v1::task_service_server::TaskService;
use trellis_proto::trellis::tasks::v1::time_service_server::TimeService;

use crate::access::Access;
use crate::board::ops::{self as boards, BoardChanges, BoardView, ColumnSpec, NewBoard};
use crate::collab;
use crate::dependency::{self, DependencyType};
use crate::list::{self, ListQuery, Listing, View};
use crate::store::{DependencyRow, TaskRow, WatcherRow};
use crate::task::change::{self, Placement, TaskChanges};
use crate::task::{self, DESCRIPTION_MAX, NOTE_MAX, NewTask, Priority, Status, TITLE_MAX};

/// Resolution notes limit, in characters.
const RESOLUTION_MAX: usize = 5_000;

/// The `trellis.tasks.v1.TaskService` and `BoardService` implementation.
#[derive(Debug, Clone)]
pub struct TaskApi {
    db: Db,
    tokens: Arc<PageTokens>,
    access: Arc<dyn Access>,
}

impl TaskApi {
    /// Handlers over `db`, signing page tokens with `tokens` and asking `access` for permission.
    pub fn new(db: Db, tokens: PageTokens, access: Arc<dyn Access>) -> Self {
        Self { db, tokens: Arc::new(tokens), access }
    }
}

/// The caller, the message and an empty violation list: how every handler starts.
fn parts<T>(request: Request<T>) -> Result<(RequestContext, T, Violations), GrpcStatus> {
    let ctx = RequestContext::from_request(&request)?.clone();
    Ok((ctx, request.into_inner(), Violations::default()))
}

fn from_timestamp(t: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

fn optional_version(version: i64) -> Option<i64> {
    (version != 0).then_some(version)
}

fn mask_paths(mask: Option<&prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths.iter().flat_map(|p| p.split(',')).map(|p| p.trim().to_string()).collect()).unwrap_or_default()
}

fn dependency_type_to_proto(kind: &str) -> i32 {
    (match DependencyType::parse(kind) {
        Some(DependencyType::FinishToStart) => proto::DependencyType::FinishToStart,
        Some(DependencyType::StartToStart) => proto::DependencyType::StartToStart,
        Some(DependencyType::FinishToFinish) => proto::DependencyType::FinishToFinish,
        Some(DependencyType::StartToFinish) => proto::DependencyType::StartToFinish,
        None => proto::DependencyType::Unspecified,
    }) as i32
}

fn dependency_to_proto(d: &DependencyRow) -> proto::Dependency {
    proto::Dependency {
        id: d.id.to_string(),
        task_id: d.task_id.to_string(),
        depends_on_id: d.depends_on_id.to_string(),
        r#type: dependency_type_to_proto(&d.r#type),
        lag_days: d.lag_days,
        satisfied: d.satisfied,
        other_key: crate::board::task_key(&d.other_board_key, d.other_number),
        other_title: d.other_title.clone(),
    }
}

fn view_type_name(value: i32) -> Option<&'static str> {
    match proto::BoardViewType::try_from(value).ok()? {
        proto::BoardViewType::Unspecified | proto::BoardViewType::Kanban => Some("kanban"),
        proto::BoardViewType::List => Some("list"),
        proto::BoardViewType::Calendar => Some("calendar"),
        proto::BoardViewType::Gantt => Some("gantt"),
    }
}

fn visibility_name(value: i32) -> Option<&'static str> {
    match proto::BoardVisibility::try_from(value).ok()? {
        proto::BoardVisibility::Unspecified | proto::BoardVisibility::Org => Some("org"),
        proto::BoardVisibility::Private => Some("private"),
    }
}

/// The wire form of a board with its columns.
pub fn board_to_proto(view: &BoardView) -> proto::Board {
    let b = &view.board;
    let flag = |key: &str| b.settings.get(key).and_then(serde_json::Value::as_bool).unwrap_or(false);
    proto::Board {
        id: b.id.to_string(),
        name: b.name.clone(),
        key: b.key.clone(),
        description: b.description.clone(),
        view_type: (match b.view_type.as_str() {
            "list" => proto::BoardViewType::List,
            "calendar" => proto::BoardViewType::Calendar,
            "gantt" => proto::BoardViewType::Gantt,
            _ => proto::BoardViewType::Kanban,
        }) as i32,
        visibility: (if b.visibility == "private" {
            proto::BoardVisibility::Private
        } else {
            proto::BoardVisibility::Org
        }) as i32,
        team_id: id_string(b.team_id),
        settings: Some(proto::BoardSettings {
            enforce_wip_limits: flag("enforce_wip_limits"),
            enforce_dependencies: flag("enforce_dependencies"),
        }),
        is_default: b.is_default,
        created_by: id_string(b.created_by),
        archived_at: b.archived_at.map(timestamp),
        deleted_at: b.deleted_at.map(timestamp),
        columns: view.columns.iter().map(column_to_proto).collect(),
        version: b.version,
        created_at: Some(timestamp(b.created_at)),
        updated_at: Some(timestamp(b.updated_at)),
    }
}

fn column_to_proto(c: &crate::store::ColumnRow) -> proto::BoardColumn {
    proto::BoardColumn {
        id: c.id.to_string(),
        name: c.name.clone(),
        status: Status::parse(&c.status).map_or(0, |s| s.to_proto() as i32),
        position: c.position.clone(),
        color: c.color.clone().unwrap_or_default(),
        wip_limit: c.wip_limit.unwrap_or_default(),
        task_count: i32::try_from(c.task_count).unwrap_or(i32::MAX),
    }
}

/// Validates request columns (named `field`).
fn column_specs(v: &mut Violations, field: &str, columns: &[proto::BoardColumn]) -> Vec<ColumnSpec> {
    let specs: Vec<ColumnSpec> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = task::clean_text(v, &format!("{field}[{i}].name"), &c.name, 1, 100);
            let status = match Status::from_proto(c.status) {
                Ok(Some(s)) => s,
                _ => {
                    v.add(format!("{field}[{i}].status"), "is required: one of the task statuses");
                    Status::Todo
                }
            };
            ColumnSpec {
                id: v.optional_uuid(&format!("{field}[{i}].id"), &c.id),
                name,
                status,
                color: (!c.color.trim().is_empty()).then(|| c.color.trim().to_string()),
                wip_limit: (c.wip_limit != 0).then_some(c.wip_limit),
            }
        })
        .collect();
    boards::check_columns(v, field, &specs);
    specs
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
        is_blocked: t.is_blocked,
        completion_blocked: t.completion_blocked,
        is_overdue: t.is_overdue(chrono::Utc::now()),
        estimate_minutes: t.estimate_minutes.unwrap_or_default(),
        resolution_notes: t.resolution_notes.clone(),
        deleted_at: t.deleted_at.map(timestamp),
        tracked_seconds: t.tracked_seconds,
    }
}

fn count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn listing_to_proto(l: &Listing) -> proto::ListTasksResponse {
    let counts = |rows: &[(String, i64)]| rows.iter().map(|(k, n)| (k.clone(), count(*n))).collect();
    proto::ListTasksResponse {
        tasks: l.tasks.iter().map(task_to_proto).collect(),
        next_page_token: l.next_page_token.clone(),
        total_size: count(l.total_size),
        groups: l
            .groups
            .iter()
            .map(|g| proto::KanbanGroup {
                column: Some(column_to_proto(&g.column)),
                tasks: g.tasks.iter().map(task_to_proto).collect(),
                total_size: count(g.total_size),
                over_wip_limit: g.over_wip_limit,
            })
            .collect(),
        truncated: l.truncated,
        aggregations: l.aggregations.as_ref().map(|a| proto::TaskAggregations {
            by_status: counts(&a.by_status),
            by_priority: counts(&a.by_priority),
            overdue_count: count(a.overdue_count),
            due_this_week: count(a.due_this_week),
            completed_this_week: count(a.completed_this_week),
        }),
        dependencies: l
            .dependencies
            .iter()
            .map(|d| proto::GanttDependency {
                id: d.row.id.to_string(),
                task_id: d.row.task_id.to_string(),
                depends_on_id: d.row.depends_on_id.to_string(),
                r#type: dependency_type_to_proto(&d.row.kind),
                lag_days: d.row.lag_days,
                violated: d.violated,
            })
            .collect(),
        external_blockers: l
            .external_blockers
            .iter()
            .map(|b| proto::TaskSummary {
                id: b.depends_on_id.to_string(),
                key: crate::board::task_key(&b.board_key, b.number),
                title: b.title.clone(),
                status: Status::parse(&b.status).map_or(0, |s| s.to_proto() as i32),
                board_id: b.board_id.to_string(),
                start_date: b.start_date.map(timestamp),
                due_date: b.due_date.map(timestamp),
            })
            .collect(),
        unscheduled: l.unscheduled.iter().map(task_to_proto).collect(),
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
        let (ctx, r, mut v) = parts(request)?;
        let title = task::clean_text(&mut v, "title", &r.title, 1, TITLE_MAX);
        let description = task::clean_text(&mut v, "description", &r.description, 0, DESCRIPTION_MAX);
        let board_id = v.optional_uuid("board_id", &r.board_id);
        let column_id = v.optional_uuid("column_id", &r.column_id);
        let assignee_id = v.optional_uuid("assignee_id", &r.assignee_id);
        let status = Status::from_proto(r.status).unwrap_or_else(|_| {
            v.add("status", "unknown status");
            None
        });
        let priority = Priority::from_proto(r.priority).unwrap_or_else(|_| {
            v.add("priority", "unknown priority");
            Priority::Medium
        });
        v.finish()?;
        let new = NewTask { board_id, column_id, title, description, status, priority, assignee_id, parent_id: None };
        let created = task::create(&self.db, self.access.as_ref(), &ctx, new).await?;
        Ok(Response::new(proto::CreateTaskResponse { task: Some(task_to_proto(&created.task)) }))
    }

    async fn get_task(
        &self,
        request: Request<proto::GetTaskRequest>,
    ) -> Result<Response<proto::GetTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let detail = task::get(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::GetTaskResponse {
            task: Some(task_to_proto(&detail.task)),
            watchers: detail.watchers.iter().map(watcher_to_proto).collect(),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<proto::ListTasksRequest>,
    ) -> Result<Response<proto::ListTasksResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let size = page_size(r.page_size).unwrap_or_else(|_| {
            v.add("page_size", "must not be negative");
            0
        });
        let board_id = v.optional_uuid("board_id", &r.board_id);
        let assignee_id = match r.assignee_id.trim() {
            "me" => Some(ctx.user_id()?),
            raw => v.optional_uuid("assignee_id", raw),
        };
        let statuses: Vec<Status> = r
            .status
            .iter()
            .filter_map(|s| match Status::from_proto(*s) {
                Ok(status) => status,
                Err(_) => {
                    v.add("status", "unknown status");
                    None
                }
            })
            .collect();
        let priorities: Vec<Priority> = r
            .priority
            .iter()
            .filter_map(|p| match proto::TaskPriority::try_from(*p) {
                Ok(proto::TaskPriority::Unspecified) => None,
                Ok(_) => Priority::from_proto(*p).ok(),
                Err(_) => {
                    v.add("priority", "unknown priority");
                    None
                }
            })
            .collect();
        let parent_id = v.optional_uuid("parent_id", &r.parent_id);
        let view = View::parse(&r.view).unwrap_or_else(|| {
            v.add("view", "must be list, kanban, calendar or gantt");
            View::List
        });
        let from = r.from.as_ref().and_then(from_timestamp);
        let to = r.to.as_ref().and_then(from_timestamp);
        let range = match (from, to) {
            (None, None) => None,
            (Some(from), Some(to)) if to <= from => {
                v.add("to", "must be after from");
                None
            }
            (Some(from), Some(to)) if view == View::Calendar && (to - from).num_days() > list::CALENDAR_MAX_DAYS => {
                v.add("to", "must be at most 93 days after from in the calendar view");
                None
            }
            (Some(from), Some(to)) => Some((from, to)),
            (None, Some(_)) => {
                v.add("from", "is required with to");
                None
            }
            (Some(_), None) => {
                v.add("to", "is required with from");
                None
            }
        };
        let time_zone = match r.time_zone.trim() {
            "" => "UTC".to_string(),
            tz => tz.to_string(),
        };
        v.check(r.q.chars().count() <= 500, "q", "must be at most 500 characters");
        let mut tags: Vec<String> = r
            .tags
            .iter()
            .flat_map(|t| t.split(','))
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        tags.sort();
        tags.dedup();
        v.check(tags.len() <= 50, "tags", "at most 50 names");
        v.finish()?;
        let filter = list::schema().parse(&r.filter)?;
        let order = list::schema().order_by(&r.order_by, list::default_order(board_id))?;
        let query = ListQuery {
            view,
            board_id,
            assignee_id,
            statuses,
            priorities,
            parent_id,
            include_subtasks: r.include_subtasks,
            include_closed: r.include_closed.unwrap_or(true),
            filter,
            order,
            q: r.q,
            range,
            time_zone,
            include_aggregations: r.include_aggregations,
            tags,
            page_size: size,
            page_token: r.page_token,
        };
        let listing = list::list(&self.db, self.access.as_ref(), &ctx, &self.tokens, query).await?;
        Ok(Response::new(listing_to_proto(&listing)))
    }

    async fn assign_task(
        &self,
        request: Request<proto::AssignTaskRequest>,
    ) -> Result<Response<proto::AssignTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let assignee_id = v.optional_uuid("assignee_id", &r.assignee_id);
        let note = task::clean_text(&mut v, "note", &r.note, 0, NOTE_MAX);
        v.finish()?;
        let task = task::assign(&self.db, self.access.as_ref(), &ctx, task_id, assignee_id, &note).await?;
        Ok(Response::new(proto::AssignTaskResponse { task: Some(task_to_proto(&task)) }))
    }

    async fn create_subtask(
        &self,
        request: Request<proto::CreateSubtaskRequest>,
    ) -> Result<Response<proto::CreateSubtaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let parent_id = v.uuid("task_id", &r.task_id);
        let title = task::clean_text(&mut v, "title", &r.title, 1, TITLE_MAX);
        let description = task::clean_text(&mut v, "description", &r.description, 0, DESCRIPTION_MAX);
        let column_id = v.optional_uuid("column_id", &r.column_id);
        let assignee_id = v.optional_uuid("assignee_id", &r.assignee_id);
        let status = Status::from_proto(r.status).unwrap_or_else(|_| {
            v.add("status", "unknown status");
            None
        });
        let priority = Priority::from_proto(r.priority).unwrap_or_else(|_| {
            v.add("priority", "unknown priority");
            Priority::Medium
        });
        v.finish()?;
        let new = NewTask {
            board_id: None,
            column_id,
            title,
            description,
            status,
            priority,
            assignee_id,
            parent_id: Some(parent_id),
        };
        let created = task::create(&self.db, self.access.as_ref(), &ctx, new).await?;
        Ok(Response::new(proto::CreateSubtaskResponse { task: Some(task_to_proto(&created.task)) }))
    }

    async fn update_task(
        &self,
        request: Request<proto::UpdateTaskRequest>,
    ) -> Result<Response<proto::UpdateTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let paths = mask_paths(r.update_mask.as_ref());
        if paths.is_empty() {
            v.add("update_mask", "names no field to update");
        }
        let mut changes = TaskChanges::default();
        for path in &paths {
            match path.as_str() {
                "title" => changes.title = Some(task::clean_text(&mut v, "title", &r.title, 1, TITLE_MAX)),
                "description" => {
                    changes.description =
                        Some(task::clean_text(&mut v, "description", &r.description, 0, DESCRIPTION_MAX))
                }
                "status" => match Status::from_proto(r.status) {
                    Ok(Some(s)) => changes.status = Some(s),
                    _ => {
                        v.add("status", "must be a task status");
                    }
                },
                "priority" => match Priority::from_proto(r.priority) {
                    Ok(p) => changes.priority = Some(p),
                    Err(_) => {
                        v.add("priority", "unknown priority");
                    }
                },
                "assignee_id" => changes.assignee_id = Some(v.optional_uuid("assignee_id", &r.assignee_id)),
                "start_date" => changes.start_date = Some(r.start_date.as_ref().and_then(from_timestamp)),
                "due_date" => changes.due_date = Some(r.due_date.as_ref().and_then(from_timestamp)),
                "estimate_minutes" => {
                    if !(0..=100_000).contains(&r.estimate_minutes) {
                        v.add("estimate_minutes", "must be 1-100000 (0 clears it)");
                    }
                    changes.estimate_minutes = Some((r.estimate_minutes > 0).then_some(r.estimate_minutes));
                }
                // The expected version rides in the body; it is not a field to update.
                "version" | "task_id" => {}
                other => {
                    v.add("update_mask", format!("{other} is not an updatable field"));
                }
            }
        }
        v.finish()?;
        let task =
            change::update(&self.db, self.access.as_ref(), &ctx, task_id, changes, optional_version(r.version)).await?;
        Ok(Response::new(proto::UpdateTaskResponse { task: Some(task_to_proto(&task)) }))
    }

    async fn move_task(
        &self,
        request: Request<proto::MoveTaskRequest>,
    ) -> Result<Response<proto::MoveTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let placement = Placement {
            column_id: v.optional_uuid("column_id", &r.column_id),
            after_task_id: v.optional_uuid("after_task_id", &r.after_task_id),
            before_task_id: v.optional_uuid("before_task_id", &r.before_task_id),
            position: (!r.position.is_empty()).then(|| r.position.clone()),
        };
        if let Some(p) = &placement.position
            && (p.len() > crate::position::MAX_LEN || !p.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            v.add("position", "must be a position key read from a task");
        }
        v.finish()?;
        let saved =
            change::move_task(&self.db, self.access.as_ref(), &ctx, task_id, placement, optional_version(r.version))
                .await?;
        Ok(Response::new(proto::MoveTaskResponse {
            task: Some(task_to_proto(&saved.task)),
            wip_exceeded: saved.wip_exceeded,
        }))
    }

    async fn complete_task(
        &self,
        request: Request<proto::CompleteTaskRequest>,
    ) -> Result<Response<proto::CompleteTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let notes = task::clean_text(&mut v, "resolution_notes", &r.resolution_notes, 0, RESOLUTION_MAX);
        v.finish()?;
        let saved = change::complete(&self.db, self.access.as_ref(), &ctx, task_id, notes).await?;
        Ok(Response::new(proto::CompleteTaskResponse {
            task: Some(task_to_proto(&saved.task)),
            unblocked_tasks: saved.unblocked.iter().map(task_to_proto).collect(),
        }))
    }

    async fn delete_task(
        &self,
        request: Request<proto::DeleteTaskRequest>,
    ) -> Result<Response<proto::DeleteTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let task = change::delete(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::DeleteTaskResponse { task: Some(task_to_proto(&task)) }))
    }

    async fn restore_task(
        &self,
        request: Request<proto::RestoreTaskRequest>,
    ) -> Result<Response<proto::RestoreTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let task = change::restore(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::RestoreTaskResponse { task: Some(task_to_proto(&task)) }))
    }

    async fn list_trashed_tasks(
        &self,
        request: Request<proto::ListTrashedTasksRequest>,
    ) -> Result<Response<proto::ListTrashedTasksResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = v.optional_uuid("board_id", &r.board_id);
        let size = page_size(r.page_size).unwrap_or_else(|_| {
            v.add("page_size", "must not be negative");
            0
        });
        v.finish()?;
        let (tasks, next_page_token) =
            crate::trash::list(&self.db, self.access.as_ref(), &ctx, &self.tokens, board_id, size, &r.page_token)
                .await?;
        Ok(Response::new(proto::ListTrashedTasksResponse {
            tasks: tasks.iter().map(task_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn purge_task(
        &self,
        request: Request<proto::PurgeTaskRequest>,
    ) -> Result<Response<proto::PurgeTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let purged = crate::trash::purge(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::PurgeTaskResponse { purged_count: i32::try_from(purged).unwrap_or(i32::MAX) }))
    }

    async fn add_dependency(
        &self,
        request: Request<proto::AddDependencyRequest>,
    ) -> Result<Response<proto::AddDependencyResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let depends_on_id = v.uuid("depends_on_id", &r.depends_on_id);
        let kind = dependency_type(&mut v, r.r#type).unwrap_or(DependencyType::FinishToStart);
        check_lag(&mut v, r.lag_days);
        v.finish()?;
        let (dep, task) =
            dependency::ops::add(&self.db, self.access.as_ref(), &ctx, task_id, depends_on_id, kind, r.lag_days)
                .await?;
        Ok(Response::new(proto::AddDependencyResponse {
            dependency: Some(dependency_to_proto(&dep)),
            task: Some(task_to_proto(&task)),
        }))
    }

    async fn update_dependency(
        &self,
        request: Request<proto::UpdateDependencyRequest>,
    ) -> Result<Response<proto::UpdateDependencyResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let dependency_id = v.uuid("dependency_id", &r.dependency_id);
        let paths = mask_paths(r.update_mask.as_ref());
        if paths.is_empty() {
            v.add("update_mask", "names no field to update");
        }
        let (mut kind, mut lag_days) = (None, None);
        for path in &paths {
            match path.as_str() {
                "type" => {
                    kind = dependency_type(&mut v, r.r#type);
                    if kind.is_none() && r.r#type == 0 {
                        v.add("type", "is required");
                    }
                }
                "lag_days" => {
                    check_lag(&mut v, r.lag_days);
                    lag_days = Some(r.lag_days);
                }
                "task_id" | "dependency_id" => {}
                other => {
                    v.add("update_mask", format!("{other} is not an updatable field"));
                }
            }
        }
        v.finish()?;
        let (dep, task) =
            dependency::ops::update(&self.db, self.access.as_ref(), &ctx, task_id, dependency_id, kind, lag_days)
                .await?;
        Ok(Response::new(proto::UpdateDependencyResponse {
            dependency: Some(dependency_to_proto(&dep)),
            task: Some(task_to_proto(&task)),
        }))
    }

    async fn remove_dependency(
        &self,
        request: Request<proto::RemoveDependencyRequest>,
    ) -> Result<Response<proto::RemoveDependencyResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let dependency_id = v.uuid("dependency_id", &r.dependency_id);
        v.finish()?;
        let task = dependency::ops::remove(&self.db, self.access.as_ref(), &ctx, task_id, dependency_id).await?;
        Ok(Response::new(proto::RemoveDependencyResponse { task: Some(task_to_proto(&task)) }))
    }

    async fn add_watcher(
        &self,
        request: Request<proto::AddWatcherRequest>,
    ) -> Result<Response<proto::AddWatcherResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let user_id = v.optional_uuid("user_id", &r.user_id);
        v.finish()?;
        let user_id = match user_id {
            Some(id) => id,
            None => ctx.user_id()?,
        };
        let watchers = task::set_watcher(&self.db, self.access.as_ref(), &ctx, task_id, user_id, true).await?;
        Ok(Response::new(proto::AddWatcherResponse { watchers: watchers.iter().map(watcher_to_proto).collect() }))
    }

    async fn remove_watcher(
        &self,
        request: Request<proto::RemoveWatcherRequest>,
    ) -> Result<Response<proto::RemoveWatcherResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let user_id = v.uuid("user_id", &r.user_id);
        v.finish()?;
        let watchers = task::set_watcher(&self.db, self.access.as_ref(), &ctx, task_id, user_id, false).await?;
        Ok(Response::new(proto::RemoveWatcherResponse { watchers: watchers.iter().map(watcher_to_proto).collect() }))
    }

    async fn list_watchers(
        &self,
        request: Request<proto::ListWatchersRequest>,
    ) -> Result<Response<proto::ListWatchersResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let watchers = task::watchers(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::ListWatchersResponse { watchers: watchers.iter().map(watcher_to_proto).collect() }))
    }

    async fn list_dependencies(
        &self,
        request: Request<proto::ListDependenciesRequest>,
    ) -> Result<Response<proto::ListDependenciesResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let (blockers, dependents) = dependency::ops::list(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::ListDependenciesResponse {
            blockers: blockers.iter().map(dependency_to_proto).collect(),
            dependents: dependents.iter().map(dependency_to_proto).collect(),
        }))
    }
}

/// A dependency type from the wire: `None` for unspecified (the caller picks the default) and
/// for an unknown value (a violation of `type`).
fn dependency_type(v: &mut Violations, raw: i32) -> Option<DependencyType> {
    match proto::DependencyType::try_from(raw) {
        Ok(proto::DependencyType::Unspecified) => None,
        Ok(proto::DependencyType::FinishToStart) => Some(DependencyType::FinishToStart),
        Ok(proto::DependencyType::StartToStart) => Some(DependencyType::StartToStart),
        Ok(proto::DependencyType::FinishToFinish) => Some(DependencyType::FinishToFinish),
        Ok(proto::DependencyType::StartToFinish) => Some(DependencyType::StartToFinish),
        Err(_) => {
            v.add("type", "unknown dependency type");
            None
        }
    }
}

fn check_lag(v: &mut Violations, lag_days: i32) {
    v.check((-365..=365).contains(&lag_days), "lag_days", "must be between -365 and 365");
}

fn board_id_of(v: &mut Violations, raw: &str) -> uuid::Uuid {
    v.uuid("board_id", raw)
}

fn member_of(v: &mut Violations, subject_type: &str, subject_id: &str) -> boards::MemberSpec {
    let subject_type = match subject_type {
        "" | "user" => "user",
        "team" => "team",
        "api_key" => "api_key",
        _ => {
            v.add("subject_type", "must be user, team or api_key");
            "user"
        }
    };
    boards::MemberSpec { subject_type, subject_id: v.uuid("subject_id", subject_id) }
}

fn member_to_proto(m: &crate::access::BoardMember) -> proto::BoardMember {
    proto::BoardMember {
        subject_type: m.subject_type.clone(),
        subject_id: m.subject_id.to_string(),
        role: m.role.clone(),
    }
}

#[tonic::async_trait]
impl BoardService for TaskApi {
    async fn add_board_member(
        &self,
        request: Request<proto::AddBoardMemberRequest>,
    ) -> Result<Response<proto::AddBoardMemberResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        let member = member_of(&mut v, &r.subject_type, &r.subject_id);
        let role = match r.role.as_str() {
            "" | "viewer" => "viewer",
            "editor" => "editor",
            "owner" if member.subject_type != "team" => "owner",
            "owner" => {
                v.add("role", "a team can be editor or viewer");
                "viewer"
            }
            _ => {
                v.add("role", "must be owner, editor or viewer");
                "viewer"
            }
        };
        v.finish()?;
        let m = boards::add_member(&self.db, self.access.as_ref(), &ctx, board_id, &member, role).await?;
        Ok(Response::new(proto::AddBoardMemberResponse { member: Some(member_to_proto(&m)) }))
    }

    async fn remove_board_member(
        &self,
        request: Request<proto::RemoveBoardMemberRequest>,
    ) -> Result<Response<()>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        let member = member_of(&mut v, &r.subject_type, &r.subject_id);
        v.finish()?;
        boards::remove_member(&self.db, self.access.as_ref(), &ctx, board_id, &member).await?;
        Ok(Response::new(()))
    }

    async fn list_board_members(
        &self,
        request: Request<proto::ListBoardMembersRequest>,
    ) -> Result<Response<proto::ListBoardMembersResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        v.finish()?;
        let members = boards::members(&self.db, self.access.as_ref(), &ctx, board_id).await?;
        Ok(Response::new(proto::ListBoardMembersResponse { members: members.iter().map(member_to_proto).collect() }))
    }

    async fn create_board(
        &self,
        request: Request<proto::CreateBoardRequest>,
    ) -> Result<Response<proto::CreateBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let name = task::clean_text(&mut v, "name", &r.name, 1, 200);
        let key = r.key.trim().to_string();
        v.check(boards::valid_key(&key), "key", "must match ^[A-Z][A-Z0-9]{1,9}$");
        let description = task::clean_text(&mut v, "description", &r.description, 0, 10_000);
        let view_type = view_type_name(r.view_type).unwrap_or_else(|| {
            v.add("view_type", "unknown view type");
            "kanban"
        });
        let visibility = visibility_name(r.visibility).unwrap_or_else(|| {
            v.add("visibility", "unknown visibility");
            "org"
        });
        let team_id = v.optional_uuid("team_id", &r.team_id);
        let columns = if r.columns.is_empty() { Vec::new() } else { column_specs(&mut v, "columns", &r.columns) };
        if columns.iter().any(|c| c.id.is_some()) {
            v.add("columns", "new columns have no id");
        }
        v.finish()?;
        let settings = r.settings.unwrap_or_default();
        let new = NewBoard {
            name,
            key,
            description,
            view_type,
            visibility,
            team_id,
            columns,
            enforce_wip_limits: settings.enforce_wip_limits,
            enforce_dependencies: settings.enforce_dependencies,
        };
        let view = boards::create(&self.db, self.access.as_ref(), &ctx, new).await?;
        Ok(Response::new(proto::CreateBoardResponse { board: Some(board_to_proto(&view)) }))
    }

    async fn list_boards(
        &self,
        request: Request<proto::ListBoardsRequest>,
    ) -> Result<Response<proto::ListBoardsResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let size = page_size(r.page_size).unwrap_or_else(|_| {
            v.add("page_size", "must be 0-100");
            0
        });
        v.finish()?;
        let (views, next_page_token, total) =
            boards::list(&self.db, self.access.as_ref(), &ctx, &self.tokens, r.archived, size, &r.page_token).await?;
        Ok(Response::new(proto::ListBoardsResponse {
            boards: views.iter().map(board_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn list_trashed_boards(
        &self,
        request: Request<proto::ListTrashedBoardsRequest>,
    ) -> Result<Response<proto::ListTrashedBoardsResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let size = page_size(r.page_size).unwrap_or_else(|_| {
            v.add("page_size", "must be 0-100");
            0
        });
        v.finish()?;
        let (views, next_page_token) =
            boards::list_trashed(&self.db, self.access.as_ref(), &ctx, &self.tokens, size, &r.page_token).await?;
        Ok(Response::new(proto::ListTrashedBoardsResponse {
            boards: views.iter().map(board_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn purge_board(
        &self,
        request: Request<proto::PurgeBoardRequest>,
    ) -> Result<Response<proto::PurgeBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        v.finish()?;
        let purged = boards::purge(&self.db, self.access.as_ref(), &ctx, board_id).await?;
        Ok(Response::new(proto::PurgeBoardResponse { purged_task_count: i32::try_from(purged).unwrap_or(i32::MAX) }))
    }

    async fn get_board(
        &self,
        request: Request<proto::GetBoardRequest>,
    ) -> Result<Response<proto::GetBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        v.finish()?;
        let view = boards::get(&self.db, self.access.as_ref(), &ctx, board_id).await?;
        Ok(Response::new(proto::GetBoardResponse { board: Some(board_to_proto(&view)) }))
    }

    async fn update_board(
        &self,
        request: Request<proto::UpdateBoardRequest>,
    ) -> Result<Response<proto::UpdateBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        let paths = mask_paths(r.update_mask.as_ref());
        if paths.is_empty() {
            v.add("update_mask", "names no field to update");
        }
        let settings = r.settings.unwrap_or_default();
        let mut changes = BoardChanges { version: optional_version(r.version), ..Default::default() };
        for path in &paths {
            match path.as_str() {
                "name" => changes.name = Some(task::clean_text(&mut v, "name", &r.name, 1, 200)),
                "key" => {
                    let key = r.key.trim().to_string();
                    v.check(boards::valid_key(&key), "key", "must match ^[A-Z][A-Z0-9]{1,9}$");
                    changes.key = Some(key);
                }
                "description" => {
                    changes.description = Some(task::clean_text(&mut v, "description", &r.description, 0, 10_000))
                }
                "view_type" => changes.view_type = view_type_name(r.view_type),
                "visibility" => changes.visibility = visibility_name(r.visibility),
                "team_id" => changes.team_id = Some(v.optional_uuid("team_id", &r.team_id)),
                "settings" => {
                    changes.enforce_wip_limits = Some(settings.enforce_wip_limits);
                    changes.enforce_dependencies = Some(settings.enforce_dependencies);
                }
                "settings.enforce_wip_limits" => changes.enforce_wip_limits = Some(settings.enforce_wip_limits),
                "settings.enforce_dependencies" => changes.enforce_dependencies = Some(settings.enforce_dependencies),
                "version" | "board_id" => {}
                other => {
                    v.add("update_mask", format!("{other} is not an updatable field"));
                }
            }
        }
        v.finish()?;
        let view = boards::update(&self.db, self.access.as_ref(), &ctx, board_id, changes).await?;
        Ok(Response::new(proto::UpdateBoardResponse { board: Some(board_to_proto(&view)) }))
    }

    async fn configure_columns(
        &self,
        request: Request<proto::ConfigureColumnsRequest>,
    ) -> Result<Response<proto::ConfigureColumnsResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        let columns = column_specs(&mut v, "columns", &r.columns);
        let removed: Vec<(uuid::Uuid, uuid::Uuid)> = r
            .removed
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    v.uuid(&format!("removed[{i}].column_id"), &m.column_id),
                    v.uuid(&format!("removed[{i}].move_to_column_id"), &m.move_to_column_id),
                )
            })
            .collect();
        v.finish()?;
        let view = boards::configure_columns(&self.db, self.access.as_ref(), &ctx, board_id, columns, removed).await?;
        Ok(Response::new(proto::ConfigureColumnsResponse { board: Some(board_to_proto(&view)) }))
    }

    async fn archive_board(
        &self,
        request: Request<proto::ArchiveBoardRequest>,
    ) -> Result<Response<proto::ArchiveBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        v.finish()?;
        let view = boards::set_archived(&self.db, self.access.as_ref(), &ctx, board_id, true).await?;
        Ok(Response::new(proto::ArchiveBoardResponse { board: Some(board_to_proto(&view)) }))
    }

    async fn unarchive_board(
        &self,
        request: Request<proto::UnarchiveBoardRequest>,
    ) -> Result<Response<proto::UnarchiveBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        v.finish()?;
        let view = boards::set_archived(&self.db, self.access.as_ref(), &ctx, board_id, false).await?;
        Ok(Response::new(proto::UnarchiveBoardResponse { board: Some(board_to_proto(&view)) }))
    }

    async fn delete_board(
        &self,
        request: Request<proto::DeleteBoardRequest>,
    ) -> Result<Response<proto::DeleteBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        v.finish()?;
        let view = boards::delete(&self.db, self.access.as_ref(), &ctx, board_id).await?;
        Ok(Response::new(proto::DeleteBoardResponse { board: Some(board_to_proto(&view)) }))
    }

    async fn restore_board(
        &self,
        request: Request<proto::RestoreBoardRequest>,
    ) -> Result<Response<proto::RestoreBoardResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let board_id = board_id_of(&mut v, &r.board_id);
        v.finish()?;
        let view = boards::restore(&self.db, self.access.as_ref(), &ctx, board_id).await?;
        Ok(Response::new(proto::RestoreBoardResponse { board: Some(board_to_proto(&view)) }))
    }
}

fn checklist_to_proto(view: &crate::checklist::ChecklistView) -> proto::Checklist {
    proto::Checklist {
        id: view.checklist.id.to_string(),
        task_id: view.checklist.task_id.to_string(),
        title: view.checklist.title.clone(),
        position: view.checklist.position.clone(),
        items: view
            .items
            .iter()
            .map(|i| proto::ChecklistItem {
                id: i.id.to_string(),
                title: i.title.clone(),
                done: i.done,
                done_by: id_string(i.done_by),
                done_at: i.done_at.map(timestamp),
                position: i.position.clone(),
            })
            .collect(),
        complete: crate::checklist::is_complete(&view.items),
    }
}

#[tonic::async_trait]
impl ChecklistService for TaskApi {
    async fn create_checklist(
        &self,
        request: Request<proto::CreateChecklistRequest>,
    ) -> Result<Response<proto::CreateChecklistResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let title = task::clean_text(&mut v, "title", &r.title, 1, 200);
        if r.items.len() > crate::checklist::MAX_ITEMS {
            v.add("items", "at most 200 items");
        }
        let items: Vec<String> = r
            .items
            .iter()
            .enumerate()
            .map(|(i, t)| task::clean_text(&mut v, &format!("items[{i}]"), t, 1, 500))
            .collect();
        v.finish()?;
        let view = crate::checklist::create(&self.db, self.access.as_ref(), &ctx, task_id, title, items).await?;
        Ok(Response::new(proto::CreateChecklistResponse { checklist: Some(checklist_to_proto(&view)) }))
    }

    async fn update_checklist(
        &self,
        request: Request<proto::UpdateChecklistRequest>,
    ) -> Result<Response<proto::UpdateChecklistResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let checklist_id = v.uuid("checklist_id", &r.checklist_id);
        let paths = mask_paths(r.update_mask.as_ref());
        if paths.is_empty() {
            v.add("update_mask", "names no field to update");
        }
        let (mut title, mut placement) = (None, None::<crate::checklist::Placement>);
        for path in &paths {
            match path.as_str() {
                "title" => title = Some(task::clean_text(&mut v, "title", &r.title, 1, 200)),
                "after_checklist_id" => {
                    placement.get_or_insert_default().after =
                        v.optional_uuid("after_checklist_id", &r.after_checklist_id)
                }
                "before_checklist_id" => {
                    placement.get_or_insert_default().before =
                        v.optional_uuid("before_checklist_id", &r.before_checklist_id)
                }
                "checklist_id" => {}
                other => {
                    v.add("update_mask", format!("{other} is not an updatable field"));
                }
            }
        }
        v.finish()?;
        let view =
            crate::checklist::update(&self.db, self.access.as_ref(), &ctx, checklist_id, title, placement).await?;
        Ok(Response::new(proto::UpdateChecklistResponse { checklist: Some(checklist_to_proto(&view)) }))
    }

    async fn delete_checklist(
        &self,
        request: Request<proto::DeleteChecklistRequest>,
    ) -> Result<Response<proto::DeleteChecklistResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let checklist_id = v.uuid("checklist_id", &r.checklist_id);
        v.finish()?;
        crate::checklist::delete(&self.db, self.access.as_ref(), &ctx, checklist_id).await?;
        Ok(Response::new(proto::DeleteChecklistResponse {}))
    }

    async fn create_checklist_item(
        &self,
        request: Request<proto::CreateChecklistItemRequest>,
    ) -> Result<Response<proto::CreateChecklistItemResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let checklist_id = v.uuid("checklist_id", &r.checklist_id);
        let title = task::clean_text(&mut v, "title", &r.title, 1, 500);
        v.finish()?;
        let view = crate::checklist::add_item(&self.db, self.access.as_ref(), &ctx, checklist_id, title).await?;
        Ok(Response::new(proto::CreateChecklistItemResponse { checklist: Some(checklist_to_proto(&view)) }))
    }

    async fn update_checklist_item(
        &self,
        request: Request<proto::UpdateChecklistItemRequest>,
    ) -> Result<Response<proto::UpdateChecklistItemResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let checklist_id = v.uuid("checklist_id", &r.checklist_id);
        let item_id = v.uuid("item_id", &r.item_id);
        let (mut title, mut done) = (None, None);
        let paths = mask_paths(r.update_mask.as_ref());
        if paths.is_empty() {
            v.add("update_mask", "names no field to update");
        }
        for path in &paths {
            match path.as_str() {
                "title" => title = Some(task::clean_text(&mut v, "title", &r.title, 1, 500)),
                "done" => done = Some(r.done),
                "checklist_id" | "item_id" => {}
                other => {
                    v.add("update_mask", format!("{other} is not an updatable field"));
                }
            }
        }
        v.finish()?;
        let view =
            crate::checklist::update_item(&self.db, self.access.as_ref(), &ctx, checklist_id, item_id, title, done)
                .await?;
        Ok(Response::new(proto::UpdateChecklistItemResponse { checklist: Some(checklist_to_proto(&view)) }))
    }

    async fn delete_checklist_item(
        &self,
        request: Request<proto::DeleteChecklistItemRequest>,
    ) -> Result<Response<proto::DeleteChecklistItemResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let checklist_id = v.uuid("checklist_id", &r.checklist_id);
        let item_id = v.uuid("item_id", &r.item_id);
        v.finish()?;
        crate::checklist::delete_item(&self.db, self.access.as_ref(), &ctx, checklist_id, item_id).await?;
        Ok(Response::new(proto::DeleteChecklistItemResponse {}))
    }
}

fn entry_to_proto(e: &crate::store::TimeEntryRow) -> proto::TimeEntry {
    proto::TimeEntry {
        id: e.id.to_string(),
        user_id: e.user_id.to_string(),
        task_id: id_string(e.task_id),
        board_id: id_string(e.board_id),
        started_at: Some(timestamp(e.started_at)),
        ended_at: e.ended_at.map(timestamp),
        duration_seconds: e.duration_seconds.unwrap_or_default(),
        description: e.description.clone(),
        billable: e.billable,
        source: e.source.clone(),
        auto_stopped: e.auto_stopped,
    }
}

#[tonic::async_trait]
impl TimeService for TaskApi {
    async fn start_timer(
        &self,
        request: Request<proto::StartTimerRequest>,
    ) -> Result<Response<proto::StartTimerResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let description = task::clean_text(&mut v, "description", &r.description, 0, 2_000);
        v.finish()?;
        let (entry, stopped) =
            crate::time::start(&self.db, self.access.as_ref(), &ctx, task_id, description, r.billable.unwrap_or(true))
                .await?;
        Ok(Response::new(proto::StartTimerResponse {
            entry: Some(entry_to_proto(&entry)),
            stopped_entry: stopped.as_ref().map(entry_to_proto),
        }))
    }

    async fn stop_timer(
        &self,
        request: Request<proto::StopTimerRequest>,
    ) -> Result<Response<proto::StopTimerResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let entry = crate::time::stop(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::StopTimerResponse { entry: Some(entry_to_proto(&entry)) }))
    }

    async fn get_running_timer(
        &self,
        request: Request<proto::GetRunningTimerRequest>,
    ) -> Result<Response<proto::GetRunningTimerResponse>, GrpcStatus> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let entry = crate::time::running(&self.db, &ctx).await?;
        Ok(Response::new(proto::GetRunningTimerResponse { entry: entry.as_ref().map(entry_to_proto) }))
    }

    async fn create_time_entry(
        &self,
        request: Request<proto::CreateTimeEntryRequest>,
    ) -> Result<Response<proto::CreateTimeEntryResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.optional_uuid("task_id", &r.task_id);
        let description = task::clean_text(&mut v, "description", &r.description, 0, 2_000);
        let started_at = r.started_at.as_ref().and_then(from_timestamp);
        if started_at.is_none() {
            v.add("started_at", "is required");
        }
        let ended_at = r.ended_at.as_ref().and_then(from_timestamp);
        let times = started_at.map(|s| crate::time::manual_times(s, ended_at, r.duration_seconds, chrono::Utc::now()));
        let ended = match times {
            Some(Ok((ended, _))) => Some(ended),
            Some(Err((field, message))) => {
                v.add(field, message);
                None
            }
            None => None,
        };
        v.finish()?;
        let (Some(started_at), Some(ended_at)) = (started_at, ended) else {
            return Err(trellis_kit::Error::validation("started_at", "is required").into());
        };
        let entry = crate::time::ManualEntry {
            task_id,
            started_at,
            ended_at,
            description,
            billable: r.billable.unwrap_or(true),
        };
        let row = crate::time::create_manual(&self.db, self.access.as_ref(), &ctx, entry).await?;
        Ok(Response::new(proto::CreateTimeEntryResponse { entry: Some(entry_to_proto(&row)) }))
    }

    async fn get_time_report(
        &self,
        request: Request<proto::GetTimeReportRequest>,
    ) -> Result<Response<proto::GetTimeReportResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let from = r.from.as_ref().and_then(from_timestamp);
        let to = r.to.as_ref().and_then(from_timestamp);
        if from.is_none() {
            v.add("from", "is required");
        }
        if to.is_none() {
            v.add("to", "is required");
        }
        if let (Some(f), Some(t)) = (from, to)
            && (t <= f || t - f > chrono::Duration::days(366))
        {
            v.add("to", "must be after from, at most 366 days later");
        }
        let group_by = match r.group_by.trim() {
            "" | "user" => crate::time::GroupBy::User,
            "task" => crate::time::GroupBy::Task,
            "board" => crate::time::GroupBy::Board,
            _ => {
                v.add("group_by", "must be user, task or board");
                crate::time::GroupBy::User
            }
        };
        let task_id = v.optional_uuid("task_id", &r.task_id);
        let user_id = match r.user_id.trim() {
            "me" => Some(ctx.user_id()?),
            raw => v.optional_uuid("user_id", raw),
        };
        v.finish()?;
        let (Some(from), Some(to)) = (from, to) else {
            return Err(trellis_kit::Error::validation("from", "is required").into());
        };
        let rows = crate::time::report(&self.db, &ctx, from, to, group_by, task_id, user_id).await?;
        let groups: Vec<proto::TimeReportGroup> = rows
            .iter()
            .map(|g| proto::TimeReportGroup {
                key: id_string(g.key),
                total_seconds: g.total_seconds,
                billable_seconds: g.billable_seconds,
                entry_count: i32::try_from(g.entry_count).unwrap_or(i32::MAX),
            })
            .collect();
        Ok(Response::new(proto::GetTimeReportResponse {
            total_seconds: groups.iter().map(|g| g.total_seconds).sum(),
            billable_seconds: groups.iter().map(|g| g.billable_seconds).sum(),
            entry_count: groups.iter().map(|g| g.entry_count).sum(),
            groups,
        }))
    }
}

fn comment_to_proto(c: &trellis_kit::collab::Comment) -> proto::Comment {
    proto::Comment {
        id: c.id.to_string(),
        task_id: c.entity_id.to_string(),
        author_id: id_string(c.author_id),
        body: c.body.clone(),
        parent_id: id_string(c.parent_id),
        mentioned_user_ids: c.mentions.iter().map(ToString::to_string).collect(),
        edited_at: c.edited_at.map(timestamp),
        deleted: c.deleted_at.is_some(),
        created_at: Some(timestamp(c.created_at)),
    }
}

fn tag_to_proto(t: &trellis_kit::collab::Tag) -> proto::Tag {
    proto::Tag {
        id: t.id.to_string(),
        name: t.name.clone(),
        color: t.color.clone().unwrap_or_default(),
        category: t.category.clone().unwrap_or_default(),
    }
}

fn entity_ref(entity_type: &str, id: uuid::Uuid) -> trellis_proto::trellis::common::v1::EntityRef {
    trellis_proto::trellis::common::v1::EntityRef { r#type: entity_type.to_string(), id: id.to_string() }
}

fn link_to_proto(l: &trellis_kit::collab::Link) -> proto::EntityLink {
    proto::EntityLink {
        id: l.id.to_string(),
        source: Some(entity_ref(&l.source_type, l.source_id)),
        target: Some(entity_ref(&l.target_type, l.target_id)),
        relationship: l.relationship.clone(),
        mirrored: l.mirrored,
        created_at: Some(timestamp(l.created_at)),
    }
}

pub(crate) fn json_to_struct(value: &serde_json::Value) -> prost_types::Struct {
    fn convert(value: &serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match value {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Array(items) => {
                Kind::ListValue(prost_types::ListValue { values: items.iter().map(convert).collect() })
            }
            serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(value)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    let fields = match value {
        serde_json::Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), convert(v))).collect(),
        _ => Default::default(),
    };
    prost_types::Struct { fields }
}

fn comment_body(v: &mut Violations, raw: &str) -> String {
    task::clean_text(v, "body", raw, 1, trellis_kit::collab::COMMENT_MAX)
}

#[tonic::async_trait]
impl CollabService for TaskApi {
    async fn create_comment(
        &self,
        request: Request<proto::CreateCommentRequest>,
    ) -> Result<Response<proto::CreateCommentResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let body = comment_body(&mut v, &r.body);
        let parent_id = v.optional_uuid("parent_id", &r.parent_id);
        v.finish()?;
        let comment = collab::create_comment(&self.db, self.access.as_ref(), &ctx, task_id, &body, parent_id).await?;
        Ok(Response::new(proto::CreateCommentResponse { comment: Some(comment_to_proto(&comment)) }))
    }

    async fn list_comments(
        &self,
        request: Request<proto::ListCommentsRequest>,
    ) -> Result<Response<proto::ListCommentsResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let size = page_size(r.page_size).unwrap_or_else(|_| {
            v.add("page_size", "must not be negative");
            0
        });
        v.finish()?;
        let page = collab::list_comments(
            &self.db,
            self.access.as_ref(),
            &ctx,
            &self.tokens,
            task_id,
            &r.q,
            collab::PageRequest { size, token: &r.page_token },
        )
        .await?;
        Ok(Response::new(proto::ListCommentsResponse {
            comments: page.items.iter().map(comment_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_comment(
        &self,
        request: Request<proto::UpdateCommentRequest>,
    ) -> Result<Response<proto::UpdateCommentResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let comment_id = v.uuid("comment_id", &r.comment_id);
        let body = comment_body(&mut v, &r.body);
        v.finish()?;
        let comment = collab::update_comment(&self.db, self.access.as_ref(), &ctx, task_id, comment_id, &body).await?;
        Ok(Response::new(proto::UpdateCommentResponse { comment: Some(comment_to_proto(&comment)) }))
    }

    async fn delete_comment(
        &self,
        request: Request<proto::DeleteCommentRequest>,
    ) -> Result<Response<proto::DeleteCommentResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let comment_id = v.uuid("comment_id", &r.comment_id);
        v.finish()?;
        collab::delete_comment(&self.db, self.access.as_ref(), &ctx, task_id, comment_id).await?;
        Ok(Response::new(proto::DeleteCommentResponse {}))
    }

    async fn create_tag(
        &self,
        request: Request<proto::CreateTagRequest>,
    ) -> Result<Response<proto::CreateTagResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let name = trellis_kit::collab::tag_name(&mut v, "name", &r.name);
        let color = Some(r.color.trim()).filter(|c| !c.is_empty());
        v.check(color.is_none_or(crate::board::ops::valid_color), "color", "must be #RRGGBB");
        let category = Some(r.category.trim()).filter(|c| !c.is_empty());
        v.check(category.is_none_or(|c| c.chars().count() <= 50), "category", "must be at most 50 characters");
        v.finish()?;
        let tag = collab::create_tag(&self.db, self.access.as_ref(), &ctx, &name, color, category).await?;
        Ok(Response::new(proto::CreateTagResponse { tag: Some(tag_to_proto(&tag)) }))
    }

    async fn update_tag(
        &self,
        request: Request<proto::UpdateTagRequest>,
    ) -> Result<Response<proto::UpdateTagResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let tag_id = v.uuid("tag_id", &r.tag_id);
        let paths = mask_paths(r.update_mask.as_ref());
        if paths.is_empty() {
            v.add("update_mask", "names no field to update");
        }
        let mut name = None;
        let mut changes = trellis_kit::collab::TagChanges::default();
        for path in &paths {
            match path.as_str() {
                "name" => name = Some(trellis_kit::collab::tag_name(&mut v, "name", &r.name)),
                "color" => {
                    let color = Some(r.color.trim()).filter(|c| !c.is_empty());
                    v.check(color.is_none_or(crate::board::ops::valid_color), "color", "must be #RRGGBB");
                    changes.color = Some(color);
                }
                "category" => {
                    let category = Some(r.category.trim()).filter(|c| !c.is_empty());
                    v.check(
                        category.is_none_or(|c| c.chars().count() <= 50),
                        "category",
                        "must be at most 50 characters",
                    );
                    changes.category = Some(category);
                }
                "tag_id" => {}
                other => {
                    v.add("update_mask", format!("{other} is not an updatable field"));
                }
            }
        }
        v.finish()?;
        changes.name = name.as_deref();
        let tag = collab::update_tag(&self.db, self.access.as_ref(), &ctx, tag_id, &changes).await?;
        Ok(Response::new(proto::UpdateTagResponse { tag: Some(tag_to_proto(&tag)) }))
    }

    async fn list_tags(
        &self,
        request: Request<proto::ListTagsRequest>,
    ) -> Result<Response<proto::ListTagsResponse>, GrpcStatus> {
        let (ctx, _, _) = parts(request)?;
        let tags = collab::tags(&self.db, &ctx).await?;
        Ok(Response::new(proto::ListTagsResponse { tags: tags.iter().map(tag_to_proto).collect() }))
    }

    async fn delete_tag(
        &self,
        request: Request<proto::DeleteTagRequest>,
    ) -> Result<Response<proto::DeleteTagResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let tag_id = v.uuid("tag_id", &r.tag_id);
        v.finish()?;
        collab::delete_tag(&self.db, self.access.as_ref(), &ctx, tag_id).await?;
        Ok(Response::new(proto::DeleteTagResponse {}))
    }

    async fn tag_task(
        &self,
        request: Request<proto::TagTaskRequest>,
    ) -> Result<Response<proto::TagTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let tag = match v.optional_uuid("tag_id", &r.tag_id) {
            Some(id) => TagRef::Id(id),
            None => TagRef::Name(trellis_kit::collab::tag_name(&mut v, "name", &r.name)),
        };
        v.finish()?;
        let tags = collab::tag_task(&self.db, self.access.as_ref(), &ctx, task_id, tag).await?;
        Ok(Response::new(proto::TagTaskResponse { tags: tags.iter().map(tag_to_proto).collect() }))
    }

    async fn untag_task(
        &self,
        request: Request<proto::UntagTaskRequest>,
    ) -> Result<Response<proto::UntagTaskResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let tag_id = v.uuid("tag_id", &r.tag_id);
        v.finish()?;
        let tags = collab::untag_task(&self.db, self.access.as_ref(), &ctx, task_id, tag_id).await?;
        Ok(Response::new(proto::UntagTaskResponse { tags: tags.iter().map(tag_to_proto).collect() }))
    }

    async fn create_link(
        &self,
        request: Request<proto::CreateLinkRequest>,
    ) -> Result<Response<proto::CreateLinkResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let target = r.target.unwrap_or_default();
        let target_type = target.r#type.trim().to_string();
        v.check(!target_type.is_empty(), "target.type", "is required");
        let target_id = v.uuid("target.id", &target.id);
        let relationship = trellis_kit::collab::relationship(&mut v, &r.relationship);
        v.finish()?;
        let target = EntityRef::new(target_type, target_id);
        let link = collab::create_link(&self.db, self.access.as_ref(), &ctx, task_id, target, &relationship).await?;
        Ok(Response::new(proto::CreateLinkResponse { link: Some(link_to_proto(&link)) }))
    }

    async fn list_links(
        &self,
        request: Request<proto::ListLinksRequest>,
    ) -> Result<Response<proto::ListLinksResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        v.finish()?;
        let links = collab::links(&self.db, self.access.as_ref(), &ctx, task_id).await?;
        Ok(Response::new(proto::ListLinksResponse { links: links.iter().map(link_to_proto).collect() }))
    }

    async fn delete_link(
        &self,
        request: Request<proto::DeleteLinkRequest>,
    ) -> Result<Response<proto::DeleteLinkResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let link_id = v.uuid("link_id", &r.link_id);
        v.finish()?;
        collab::delete_link(&self.db, self.access.as_ref(), &ctx, task_id, link_id).await?;
        Ok(Response::new(proto::DeleteLinkResponse {}))
    }

    async fn list_task_activity(
        &self,
        request: Request<proto::ListTaskActivityRequest>,
    ) -> Result<Response<proto::ListTaskActivityResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let task_id = v.uuid("task_id", &r.task_id);
        let size = page_size(r.page_size).unwrap_or_else(|_| {
            v.add("page_size", "must not be negative");
            0
        });
        v.finish()?;
        let page = collab::activity(
            &self.db,
            self.access.as_ref(),
            &ctx,
            &self.tokens,
            task_id,
            collab::PageRequest { size, token: &r.page_token },
        )
        .await?;
        Ok(Response::new(proto::ListTaskActivityResponse {
            entries: page
                .items
                .iter()
                .map(|a| proto::ActivityEntry {
                    id: a.id.to_string(),
                    actor: a.actor.clone(),
                    action: a.action.clone(),
                    changes: Some(json_to_struct(&a.changes)),
                    created_at: Some(timestamp(a.created_at)),
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

fn summary_to_proto(s: &crate::entity::Summary, rank: f64) -> common::EntitySummary {
    common::EntitySummary {
        id: s.id.to_string(),
        r#type: s.entity_type.to_string(),
        title: s.title.clone(),
        subtitle: s.subtitle.clone(),
        status: s.status.clone(),
        avatar_url: String::new(),
        url: s.url.clone(),
        rank,
    }
}

/// The entity types of this module named by a request (empty = all), or a violation of `field`.
fn entity_types(v: &mut Violations, field: &str, raw: &[String]) -> Vec<&'static str> {
    if raw.is_empty() {
        return vec![collab::TASK, collab::BOARD];
    }
    let mut types = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        match t.trim() {
            collab::TASK => types.push(collab::TASK),
            collab::BOARD => types.push(collab::BOARD),
            _ => {
                v.add(format!("{field}[{i}]"), "must be task or board");
            }
        }
    }
    types.dedup();
    types
}

#[tonic::async_trait]
impl EntityService for TaskApi {
    async fn resolve(
        &self,
        request: Request<common::ResolveRequest>,
    ) -> Result<Response<common::ResolveResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        v.check((1..=crate::entity::MAX_RESOLVE).contains(&r.refs.len()), "refs", "must hold 1-100 references");
        let mut refs = Vec::with_capacity(r.refs.len());
        for (i, entity) in r.refs.iter().enumerate() {
            let kind = match entity.r#type.trim() {
                collab::TASK => collab::TASK,
                collab::BOARD => collab::BOARD,
                _ => {
                    v.add(format!("refs[{i}].type"), "must be task or board");
                    continue;
                }
            };
            let id = v.uuid(&format!("refs[{i}].id"), &entity.id);
            if !refs.contains(&(kind, id)) {
                refs.push((kind, id));
            }
        }
        v.finish()?;
        let (found, missing) = crate::entity::resolve(&self.db, self.access.as_ref(), &ctx, &refs).await?;
        Ok(Response::new(common::ResolveResponse {
            summaries: found.iter().map(|s| summary_to_proto(s, 0.0)).collect(),
            missing: missing
                .iter()
                .map(|(kind, id)| common::EntityRef { r#type: kind.to_string(), id: id.to_string() })
                .collect(),
        }))
    }

    async fn search(
        &self,
        request: Request<common::SearchRequest>,
    ) -> Result<Response<common::SearchResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let query = r.query.trim().to_string();
        v.check((1..=200).contains(&query.chars().count()), "query", "must be 1-200 characters");
        let (default, max) = crate::entity::SEARCH_LIMITS;
        let limit = match r.limit {
            0 => default,
            n if (1..=max as i32).contains(&n) => n as u32,
            _ => {
                v.add("limit", "must be 1-50");
                default
            }
        };
        let types = entity_types(&mut v, "types", &r.types);
        v.finish()?;
        let filter = list::schema().parse(&r.filter)?;
        let groups = crate::entity::search(&self.db, self.access.as_ref(), &ctx, &query, &types, limit, filter).await?;
        Ok(Response::new(common::SearchResponse {
            groups: groups
                .iter()
                .map(|(kind, items)| common::SearchGroup {
                    r#type: kind.to_string(),
                    // Results come best first; the rank is their position score (1.0 for the first).
                    items: items.iter().enumerate().map(|(i, s)| summary_to_proto(s, 1.0 / (i as f64 + 1.0))).collect(),
                })
                .collect(),
        }))
    }

    async fn count(
        &self,
        request: Request<common::CountRequest>,
    ) -> Result<Response<common::CountResponse>, GrpcStatus> {
        let (ctx, r, mut v) = parts(request)?;
        let types = entity_types(&mut v, "types", &r.types);
        v.finish()?;
        let counts = crate::entity::count(&self.db, self.access.as_ref(), &ctx, &types).await?;
        Ok(Response::new(common::CountResponse {
            counts: counts.into_iter().map(|(k, n)| (k.to_string(), n)).collect(),
        }))
    }
}
