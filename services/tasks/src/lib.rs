//! Tasks: boards with ordered columns, and the tasks on them.
//!
//! Today the service creates, reads, lists and assigns tasks (on the organization's default
//! board, created on first use) and publishes `tasks.task.created`, `tasks.task.assigned` and
//! `tasks.task.updated`. Boards, checklists, dependencies, time tracking and automations follow
//! the same shape.
//!
//! # Layout
//! - [`api`]: gRPC handlers (`trellis.tasks.v1.TaskService`); translate proto <-> domain and call
//!   one operation of the domain. No SQL here.
//! - [`task`]: task rules (placement, text limits) and the operations (create, get, list,
//!   assign), each in one tenant transaction.
//! - [`board`]: the default board and its columns; [`position`]: fractional ordering keys.
//! - [`store`]: every query, each inside a tenant transaction (Row-Level Security scopes it).
//! - [`events`]: the payloads this service publishes, staged in the outbox with the change.
//! - [`error`]: [`error::TaskError`] and the reason → gRPC code table.
//!
//! A request to assign a task flows: `api::TaskApi::assign_task` (validates the ids and the note)
//! → `task::assign` (locks the task, changes the assignee, adds a watcher, stages
//! `tasks.task.assigned`) → `store` queries → commit → kit's relay publishes the event.
//!
//! Authorization is not checked beyond the organization yet: see [`task`] for the permission
//! checks that arrive with the permissions service.
//!
//! Schema: `migrations/` (schema `tasks`, RLS on every table).

pub mod api;
pub mod board;
pub mod error;
pub mod events;
pub mod position;
pub mod store;
pub mod task;

use trellis_kit::paging::PageTokens;
use trellis_kit::{Module, Service};
use trellis_proto::trellis::tasks::v1::task_service_server::TaskServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The tasks module: `TaskService` over the `tasks` schema.
pub fn module() -> Module {
    Module::new("tasks", &MIGRATOR, |runtime| {
        Box::pin(async move {
            let tokens = PageTokens::new(runtime.config.cell_secret.as_bytes());
            let api = api::TaskApi::new(runtime.db.clone(), tokens);
            Ok(Service::new().grpc(TaskServiceServer::new(api)))
        })
    })
}
