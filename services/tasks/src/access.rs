//! Who may do what: the one place where the tasks service asks for permission.
//!
//! Every operation calls exactly one method of [`Access`] before it writes anything, named after
//! the check of the spec's Permissions section (`board#edit`, `task#assign`, ...). In a cell the
//! implementation is [`Permissions`]: Check / CheckBulk / LookupResources on the permissions
//! service, and the relationships tasks owns ([`crate::relationships`]) staged in the outbox with
//! the change and written right after commit. [`OrgMembership`] answers from the token's
//! organization roles alone; it serves tests of the task rules that run without permissions.
//!
//! Lists ask [`Access::visible`] once: everything (organization admins, the platform) or the
//! boards the caller can view plus the tasks they created or are assigned.
//!
//! Answers follow the spec: an object the caller may not view is NOT_FOUND, never
//! PERMISSION_DENIED; a visible object the caller may not change is PERMISSION_DENIED.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use trellis_kit::authz::{Authz, Ref};
use trellis_kit::db::Tx;
use trellis_kit::org_relationships::Change;
use trellis_kit::{Error, RequestContext, Result, Subject};
use uuid::Uuid;

use crate::relationships::subject_of;

/// What a caller may see in lists, searches and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Every board and task of the organization.
    All,
    /// These boards (and their tasks), plus the tasks `user` created or is assigned.
    Some { boards: Vec<Uuid>, user: Option<Uuid> },
}

impl Visible {
    /// Whether a board is visible.
    pub fn board(&self, board_id: Uuid) -> bool {
        match self {
            Visible::All => true,
            Visible::Some { boards, .. } => boards.contains(&board_id),
        }
    }
}

/// A member of a board as the permissions service stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardMember {
    /// `user`, `team` or `api_key`.
    pub subject_type: String,
    pub subject_id: Uuid,
    /// `owner`, `editor` or `viewer`.
    pub role: String,
}

/// A board permission (`definition board` in `schema.zed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardPermission {
    /// `board#view`: GetBoard, ListTasks of the board.
    View,
    /// `board#edit`: create tasks on it.
    Edit,
    /// `board#manage`: update, columns, archive, delete, restore.
    Manage,
}

/// A task permission (`definition task` in `schema.zed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPermission {
    /// `task#view`: GetTask, ListDependencies.
    View,
    /// `task#edit`: UpdateTask, MoveTask, CompleteTask, dependencies.
    Edit,
    /// `task#assign`: AssignTask and assignee changes.
    Assign,
    /// `task#delete`: DeleteTask, RestoreTask.
    Delete,
}

/// The permission checks of the tasks service.
#[tonic::async_trait]
pub trait Access: Send + Sync + Debug {
    /// `organization#contribute` (CreateBoard).
    async fn create_board(&self, ctx: &RequestContext) -> Result<()>;
    /// A board permission of the caller; NOT_FOUND when the caller cannot view the board.
    async fn board(&self, ctx: &RequestContext, board_id: Uuid, permission: BoardPermission) -> Result<()>;
    /// A task permission of the caller; NOT_FOUND when the caller cannot view the task.
    async fn task(&self, ctx: &RequestContext, task_id: Uuid, permission: TaskPermission) -> Result<()>;
    /// `organization#administer` (PurgeTask, PurgeBoard).
    async fn administer(&self, ctx: &RequestContext) -> Result<()>;
    /// Whether `user_id` may view the board (assignees and watchers, `ASSIGNEE_NO_ACCESS`).
    async fn user_can_view_board(&self, ctx: &RequestContext, user_id: Uuid, board_id: Uuid) -> Result<bool>;
    /// What the caller may see in lists, searches and counts.
    async fn visible(&self, ctx: &RequestContext) -> Result<Visible> {
        ctx.org_id()?;
        Ok(Visible::All)
    }
    /// Stages relationship changes in the transaction of the business change (durable path).
    async fn stage(&self, _tx: &mut Tx, _ctx: &RequestContext, _changes: &[Change]) -> Result<()> {
        Ok(())
    }
    /// Applies staged changes right after commit, so the caller can act at once. Failures are
    /// logged; the staged copy repairs them.
    async fn apply(&self, _ctx: &RequestContext, _changes: &[Change]) {}
    /// The members of a board (owners, editors, viewers), read from the permissions service.
    async fn board_members(&self, _ctx: &RequestContext, _board_id: Uuid) -> Result<Vec<BoardMember>> {
        Err(Error::failed_precondition("BOARD_MEMBERS_UNAVAILABLE", "Board members live in the permissions service"))
    }
}

/// Organization roles only: every member views everything of the organization; viewers change
/// nothing. Stands in for the permissions service until its client is wired.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrgMembership;

impl OrgMembership {
    fn may_write(ctx: &RequestContext) -> Result<()> {
        ctx.org_id()?;
        let read_only = ctx.has_role("viewer") && !["owner", "admin", "member"].iter().any(|r| ctx.has_role(r));
        if read_only {
            return Err(Error::permission_denied("PERMISSION_DENIED", "Your role in this organization is read-only"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Access for OrgMembership {
    async fn create_board(&self, ctx: &RequestContext) -> Result<()> {
        Self::may_write(ctx)
    }

    async fn board(&self, ctx: &RequestContext, _board_id: Uuid, permission: BoardPermission) -> Result<()> {
        match permission {
            BoardPermission::View => ctx.org_id().map(|_| ()),
            BoardPermission::Edit | BoardPermission::Manage => Self::may_write(ctx),
        }
    }

    async fn task(&self, ctx: &RequestContext, _task_id: Uuid, permission: TaskPermission) -> Result<()> {
        match permission {
            TaskPermission::View => ctx.org_id().map(|_| ()),
            _ => Self::may_write(ctx),
        }
    }

    async fn administer(&self, ctx: &RequestContext) -> Result<()> {
        ctx.org_id()?;
        if ["owner", "admin"].iter().any(|r| ctx.has_role(r)) {
            Ok(())
        } else {
            Err(Error::permission_denied("PERMISSION_DENIED", "Only organization owners and admins may do this"))
        }
    }

    async fn user_can_view_board(&self, _ctx: &RequestContext, _user_id: Uuid, _board_id: Uuid) -> Result<bool> {
        // Identity membership is not checked here either: the permissions service answers it.
        Ok(true)
    }
}

/// The permissions service through `kit::authz` (the production implementation).
#[derive(Debug)]
pub struct Permissions {
    authz: Authz,
    /// The newest revision this replica wrote per organization, read with `at_least_as_fresh`
    /// so a caller always sees its own changes (a new board, a new member) in the next check.
    written: std::sync::Mutex<HashMap<Uuid, String>>,
}

/// How long a direct relationship write may take before the request answers anyway.
const DIRECT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

fn unavailable(e: tonic::Status) -> Error {
    tracing::warn!(code = ?e.code(), message = e.message(), "permissions call failed");
    Error::unavailable("PERMISSIONS_UNAVAILABLE", "Permissions cannot be checked right now; try again")
}

/// Exactly what a missing id answers (reason NOT_FOUND, metadata `resource`), so an invisible
/// object cannot be told from one that does not exist.
fn not_found(what: &str) -> Error {
    match what {
        "board" => crate::error::TaskError::BoardNotFound.into(),
        _ => crate::error::TaskError::TaskNotFound.into(),
    }
}

fn denied() -> Error {
    Error::permission_denied("PERMISSION_DENIED", "You may not do this here")
}

impl Permissions {
    /// Checks through `authz` (the module runtime's client with service tokens).
    pub fn new(authz: Authz) -> Self {
        Self { authz, written: std::sync::Mutex::new(HashMap::new()) }
    }

    fn fresh(&self, org: Uuid) -> Option<String> {
        self.written.lock().ok().and_then(|w| w.get(&org).cloned())
    }

    fn wrote(&self, org: Uuid, token: String) {
        if token.is_empty() {
            return;
        }
        if let Ok(mut w) = self.written.lock() {
            w.insert(org, token);
        }
    }

    /// `permission` (and `view`, to tell NOT_FOUND from PERMISSION_DENIED) on `resource`, in one
    /// CheckBulk. Platform callers (services, the system) are not end users and pass.
    async fn object(&self, ctx: &RequestContext, resource: Ref, permission: &str) -> Result<()> {
        let org = ctx.org_id()?;
        let Some(subject) = subject_of(&ctx.subject) else {
            return platform(ctx);
        };
        let fresh = self.fresh(org);
        if permission == "view" {
            let ok = self.authz.check(org, &resource, "view", &subject, fresh.as_deref()).await.map_err(unavailable)?;
            return if ok { Ok(()) } else { Err(not_found(&resource.ty)) };
        }
        let items = [
            (resource.clone(), permission.to_owned(), subject.clone()),
            (resource.clone(), "view".to_owned(), subject),
        ];
        let results = self.authz.check_bulk(org, &items, fresh.as_deref()).await.map_err(unavailable)?;
        let held = |i: usize| results.get(i).is_some_and(|r| r.as_ref().is_ok_and(|ok| *ok));
        match (held(0), held(1)) {
            (true, _) => Ok(()),
            (false, true) => Err(denied()),
            (false, false) => Err(not_found(&resource.ty)),
        }
    }

    async fn org_permission(&self, ctx: &RequestContext, permission: &str) -> Result<bool> {
        let org = ctx.org_id()?;
        let Some(subject) = subject_of(&ctx.subject) else {
            return platform(ctx).map(|_| true);
        };
        let resource = Ref::new("organization", org.to_string());
        self.authz.check(org, &resource, permission, &subject, self.fresh(org).as_deref()).await.map_err(unavailable)
    }
}

/// Services and the platform act on behalf of the organization; anonymous callers never get here.
fn platform(ctx: &RequestContext) -> Result<()> {
    match ctx.subject {
        Subject::Service(_) | Subject::System => Ok(()),
        _ => Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required")),
    }
}

fn permission_name(p: BoardPermission) -> &'static str {
    match p {
        BoardPermission::View => "view",
        BoardPermission::Edit => "edit",
        BoardPermission::Manage => "manage",
    }
}

fn task_permission_name(p: TaskPermission) -> &'static str {
    match p {
        TaskPermission::View => "view",
        TaskPermission::Edit => "edit",
        TaskPermission::Assign => "assign",
        TaskPermission::Delete => "delete",
    }
}

#[tonic::async_trait]
impl Access for Permissions {
    async fn create_board(&self, ctx: &RequestContext) -> Result<()> {
        if self.org_permission(ctx, "contribute").await? { Ok(()) } else { Err(denied()) }
    }

    async fn board(&self, ctx: &RequestContext, board_id: Uuid, permission: BoardPermission) -> Result<()> {
        self.object(ctx, Ref::new("board", board_id.to_string()), permission_name(permission)).await
    }

    async fn task(&self, ctx: &RequestContext, task_id: Uuid, permission: TaskPermission) -> Result<()> {
        self.object(ctx, Ref::new("task", task_id.to_string()), task_permission_name(permission)).await
    }

    async fn administer(&self, ctx: &RequestContext) -> Result<()> {
        if self.org_permission(ctx, "administer").await? {
            Ok(())
        } else {
            Err(Error::permission_denied("PERMISSION_DENIED", "Only organization owners and admins may do this"))
        }
    }

    async fn user_can_view_board(&self, ctx: &RequestContext, user_id: Uuid, board_id: Uuid) -> Result<bool> {
        let org = ctx.org_id()?;
        let board = Ref::new("board", board_id.to_string());
        let user = Ref::new("user", user_id.to_string());
        self.authz.check(org, &board, "view", &user, self.fresh(org).as_deref()).await.map_err(unavailable)
    }

    async fn visible(&self, ctx: &RequestContext) -> Result<Visible> {
        let org = ctx.org_id()?;
        let Some(subject) = subject_of(&ctx.subject) else {
            return platform(ctx).map(|_| Visible::All);
        };
        // Organization admins manage (and so view) every board: one cached Check instead of a
        // lookup over every board of the organization.
        if self.org_permission(ctx, "administer").await? {
            return Ok(Visible::All);
        }
        let ids = self
            .authz
            .lookup_resources(org, "board", "view", &subject, 1000, self.fresh(org).as_deref())
            .await
            .map_err(unavailable)?;
        let boards = ids.iter().filter_map(|id| id.parse().ok()).collect();
        Ok(Visible::Some { boards, user: ctx.user_id_opt() })
    }

    async fn stage(&self, tx: &mut Tx, ctx: &RequestContext, changes: &[Change]) -> Result<()> {
        for change in changes {
            trellis_kit::authz::stage_change(tx, ctx, "tasks", change).await?;
        }
        Ok(())
    }

    async fn apply(&self, ctx: &RequestContext, changes: &[Change]) {
        let Ok(org) = ctx.org_id() else { return };
        for change in changes {
            match tokio::time::timeout(DIRECT_WRITE_TIMEOUT, self.authz.write_change(org, change)).await {
                Ok(Ok((token, _skipped))) => self.wrote(org, token),
                Ok(Err(e)) => {
                    tracing::warn!(code = ?e.code(), "direct relationship write failed; the staged copy follows")
                }
                Err(_) => tracing::warn!("direct relationship write timed out; the staged copy follows"),
            }
        }
    }

    async fn board_members(&self, ctx: &RequestContext, board_id: Uuid) -> Result<Vec<BoardMember>> {
        let org = ctx.org_id()?;
        let board = Ref::new("board", board_id.to_string());
        let rels =
            self.authz.read_relationships(org, &board, "", self.fresh(org).as_deref()).await.map_err(unavailable)?;
        Ok(rels
            .into_iter()
            .filter(|(_, relation, _)| crate::relationships::BOARD_ROLES.contains(&relation.as_str()))
            .filter_map(|(_, role, subject)| {
                Some(BoardMember { subject_type: subject.ty, subject_id: subject.id.parse().ok()?, role })
            })
            .collect())
    }
}
