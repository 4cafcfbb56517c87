//! Tasks: boards with ordered columns, the tasks on them, and the dependencies between tasks.
//!
//! The service serves `TaskService` (create, get, list, assign, update, move, complete, delete and
//! restore tasks; add, remove and list dependencies) and `BoardService` (create, list, get,
//! update, configure columns, archive, delete and restore boards), and publishes every change
//! through the outbox (`tasks.task.*`, `tasks.board.*`).
//!
//! # Layout
//! - [`api`]: gRPC handlers; translate proto <-> domain (update masks included) and call one
//!   operation of the domain. No SQL here.
//! - [`task`]: task rules (placement, text limits) and operations; [`task::change`] is the one
//!   path every change takes (status ↔ column, WIP limits, enforced dependencies, events,
//!   blocked/unblocked transitions of dependents).
//! - [`list`]: ListTasks views (list, kanban, calendar, gantt) over one selection: the AIP-160
//!   filter and order_by fields (kit::filter), full-text search, aggregations.
//! - [`board`]: default columns, keys; [`board::ops`] the board operations.
//! - [`collab`]: comments (mentions), tags, entity links and activity of tasks, through
//!   `kit::collab` (its tables are installed by kit in this schema: `Module::with_collab`).
//!   Links other modules make to tasks and boards are mirrored by the `tasks.links` consumer
//!   (`kit::collab::Collab::link_mirror`).
//! - [`checklist`]: checklists and items, and when a checklist completes.
//! - [`dependency`]: satisfaction and cycle detection (pure), and [`dependency::ops`].
//! - [`position`]: fractional ordering keys (`after`, `between`).
//! - [`time`]: timers (one running per user), manual entries, reports.
//! - [`trash`]: trashed-task lists and purges.
//! - [`recurrence`]: recurrence rules (cron in a time zone, assignee strategies), their
//!   `RecurrenceService` and the scheduled sweep creating occurrences (`kit::jobs`).
//! - [`automation`]: board automations (validation with paths, the `tasks.automations` consumer
//!   running matching actions with loop protection) and `AutomationService`.
//! - [`overdue`]: the minute sweep publishing `tasks.task.overdue` once per task per day.
//! - [`entity`]: `trellis.common.v1.EntityService` (resolve, search, count) for tasks and boards.
//! - [`access`]: the single seam for permission checks ([`access::Access`]): the permissions
//!   service in a cell ([`access::Permissions`]).
//! - [`relationships`]: the relationships tasks writes to the permissions service (board org,
//!   visibility and members; task board, creator and assignee), with their version guards.
//! - [`store`]: every query, each inside a tenant transaction (Row-Level Security scopes it).
//! - [`events`]: the payloads this service publishes, staged in the outbox with the change.
//! - [`error`]: [`error::TaskError`] and the reason → gRPC code table.
//!
//! A request to move a task flows: `api::TaskApi::move_task` (validates ids and the position)
//! → `access::Access::task(.., Edit)` → `task::change::move_task` (locks the task, finds a key
//! between the neighbours or re-keys the column) → `task::change::save` (status from the column,
//! WIP limit, enforced dependencies, write, `tasks.task.status_changed`, unblocked dependents)
//! → commit → kit's relay publishes the events.
//!
//! Schema: `migrations/` (schema `tasks`, RLS on every table).

pub mod access;
pub mod api;
pub mod automation;
pub mod board;
pub mod checklist;
pub mod collab;
pub mod dependency;
pub mod entity;
pub mod error;
pub mod events;
pub mod list;
pub mod overdue;
pub mod position;
pub mod recurrence;
pub mod relationships;
pub mod store;
pub mod task;
pub mod time;
pub mod trash;

use std::sync::Arc;
use trellis_kit::paging::PageTokens;
use trellis_kit::{Module, Service};

use trellis_proto::trellis::common::v1::entity_service_server::EntityServiceServer;
use trellis_proto::trellis::tasks::v1::automation_service_server::AutomationServiceServer;
use trellis_proto::trellis::tasks::v1::board_service_server::BoardServiceServer;
use trellis_proto::trellis::tasks::v1::checklist_service_server::ChecklistServiceServer;
use trellis_proto::trellis::tasks::v1::collab_service_server::CollabServiceServer;
use trellis_proto::trellis::tasks::v1::recurrence_service_server::RecurrenceServiceServer;
use trellis_proto::trellis::tasks::v1::task_service_server::TaskServiceServer;
use trellis_proto::trellis::tasks::v1::time_service_server::TimeServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The tasks module as a cell runs it: permissions through the permissions service.
pub fn module() -> Module {
    module_with(AccessMode::Permissions)
}

/// Where the tasks module gets its answers to "may the caller do this".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// The permissions service (Check, CheckBulk, LookupResources), with the relationships tasks
    /// owns staged in the outbox and written after each commit. What a cell runs.
    Permissions,
    /// Organization roles from the token only ([`access::OrgMembership`]): for tests of the task
    /// rules in a cell without identity and permissions. Private boards are not enforced.
    OrgRoles,
}

/// The tasks module with the given access mode.
pub fn module_with(mode: AccessMode) -> Module {
    Module::new("tasks", &MIGRATOR, move |runtime| {
        Box::pin(async move {
            let tokens = PageTokens::new(runtime.config.cell_secret.as_bytes());
            let access: Arc<dyn access::Access> = match mode {
                AccessMode::Permissions => Arc::new(access::Permissions::new(runtime.authz.clone())),
                AccessMode::OrgRoles => Arc::new(access::OrgMembership),
            };
            let recurrence = recurrence::api::RecurrenceApi::new(
                runtime.db.clone(),
                access.clone(),
                runtime.config.clock.clone(),
                PageTokens::new(runtime.config.cell_secret.as_bytes()),
            );
            let automations =
                automation::api::AutomationApi::new(runtime.db.clone(), access.clone(), runtime.config.clock.clone());
            let engine = automation::engine::Automations::new(access.clone(), runtime.config.clock.clone());
            let api = api::TaskApi::new(runtime.db.clone(), tokens, access);
            let service = Service::new()
                .grpc(TaskServiceServer::new(api.clone()))
                .grpc(BoardServiceServer::new(api.clone()))
                .grpc(ChecklistServiceServer::new(api.clone()))
                .grpc(CollabServiceServer::new(api.clone()))
                .grpc(EntityServiceServer::new(api.clone()))
                .grpc(TimeServiceServer::new(api))
                .grpc(RecurrenceServiceServer::new(recurrence))
                .job(recurrence::job(runtime.db.clone()))
                .job(overdue::job(runtime.db.clone()))
                .grpc(AutomationServiceServer::new(automations))
                .consumer(engine.consumer())
                // Links crm, documents and finance make to tasks and boards, mirrored here.
                .consumer(collab::COLLAB.link_mirror(&[collab::TASK, collab::BOARD]));
            Ok(match mode {
                // The durable path of the relationship writes staged with each change.
                AccessMode::Permissions => {
                    service.consumer(trellis_kit::authz::relationship_writes("tasks", runtime.authz.clone()))
                }
                AccessMode::OrgRoles => service,
            })
        })
    })
    .with_schema(SCHEMA)
    .with_scope_resources(SCOPE_RESOURCES)
    .with_collab()
}

/// The tasks authorization model (`schema.zed`), registered with the permissions service.
pub const SCHEMA: &str = include_str!("../schema.zed");

/// The API-key scope resources of tasks (spec rule 13), registered with identity at start-up.
pub const SCOPE_RESOURCES: &[(&str, &str)] = &[("tasks", "Boards, tasks, checklists and time entries")];
