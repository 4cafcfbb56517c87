//! Board rules needed by tasks today: the organization's default board and its columns.

use crate::task::Status;

/// Name of the board created for an organization on its first task.
pub const DEFAULT_BOARD_NAME: &str = "Tasks";

/// Key of the default board: its tasks are `TASK-1`, `TASK-2`, ...
pub const DEFAULT_BOARD_KEY: &str = "TASK";

/// The columns of a new board, in order, with the status each maps to.
pub const DEFAULT_COLUMNS: [(&str, Status); 5] = [
    ("Backlog", Status::Backlog),
    ("To do", Status::Todo),
    ("In progress", Status::InProgress),
    ("In review", Status::InReview),
    ("Done", Status::Done),
];

/// A task's key: the board key and the task's number (`ENG-42`).
pub fn task_key(board_key: &str, number: i32) -> String {
    format!("{board_key}-{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_board_key_and_number() {
        assert_eq!(task_key(DEFAULT_BOARD_KEY, 42), "TASK-42");
    }

    #[test]
    fn default_columns_cover_the_open_flow_and_done() {
        let statuses: Vec<Status> = DEFAULT_COLUMNS.iter().map(|(_, s)| *s).collect();
        assert_eq!(statuses, [Status::Backlog, Status::Todo, Status::InProgress, Status::InReview, Status::Done]);
    }
}

/// Board operations: create, get, list, update, configure columns, archive, delete, restore.
pub mod ops {
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use trellis_kit::db::Db;
    use trellis_kit::error::Violations;
    use trellis_kit::paging::PageTokens;
    use trellis_kit::{Error, RequestContext, Result};
    use uuid::Uuid;

    use super::DEFAULT_COLUMNS;
    use crate::access::{Access, BoardMember, BoardPermission};
    use crate::error::TaskError;
    use crate::events;
    use crate::position;
    use crate::relationships;
    use crate::store::{self, BoardRow, ColumnRow, ColumnWrite};
    use crate::task::Status;

    /// Most columns of a board.
    pub const MAX_COLUMNS: usize = 50;

    /// A board with its columns.
    #[derive(Debug, Clone)]
    pub struct BoardView {
        /// The board.
        pub board: BoardRow,
        /// Its columns in order.
        pub columns: Vec<ColumnRow>,
    }

    /// A column as a request describes it (validated).
    #[derive(Debug, Clone)]
    pub struct ColumnSpec {
        /// Existing column id, or `None` for a new column.
        pub id: Option<Uuid>,
        /// Name.
        pub name: String,
        /// Status.
        pub status: Status,
        /// Color.
        pub color: Option<String>,
        /// WIP limit.
        pub wip_limit: Option<i32>,
    }

    /// A validated CreateBoard.
    #[derive(Debug, Clone)]
    pub struct NewBoard {
        /// Name.
        pub name: String,
        /// Key.
        pub key: String,
        /// Description.
        pub description: String,
        /// View type name.
        pub view_type: &'static str,
        /// Visibility name.
        pub visibility: &'static str,
        /// Team.
        pub team_id: Option<Uuid>,
        /// Columns; empty = default.
        pub columns: Vec<ColumnSpec>,
        /// enforce_wip_limits.
        pub enforce_wip_limits: bool,
        /// enforce_dependencies.
        pub enforce_dependencies: bool,
    }

    /// Whether a board key is well formed (`^[A-Z][A-Z0-9]{1,9}$`).
    pub fn valid_key(key: &str) -> bool {
        let bytes = key.as_bytes();
        (2..=10).contains(&bytes.len())
            && bytes[0].is_ascii_uppercase()
            && bytes[1..].iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }

    /// Whether a column color is `#RRGGBB`.
    pub fn valid_color(color: &str) -> bool {
        color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// Validates the columns of a request under `field` (1-50 entries).
    pub fn check_columns(v: &mut Violations, field: &str, columns: &[ColumnSpec]) {
        if columns.is_empty() || columns.len() > MAX_COLUMNS {
            v.add(field, format!("must hold 1-{MAX_COLUMNS} columns"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in columns.iter().enumerate() {
            if let Some(id) = c.id
                && !seen.insert(id)
            {
                v.add(format!("{field}[{i}].id"), "appears twice");
            }
            if let Some(color) = &c.color
                && !valid_color(color)
            {
                v.add(format!("{field}[{i}].color"), "must be #RRGGBB");
            }
            if let Some(w) = c.wip_limit
                && !(1..=999).contains(&w)
            {
                v.add(format!("{field}[{i}].wip_limit"), "must be 1-999");
            }
        }
    }

    async fn view(tx: &mut trellis_kit::db::Tx, board: BoardRow) -> Result<BoardView> {
        let columns = store::column_rows(tx, board.id).await?;
        Ok(BoardView { board, columns })
    }

    fn settings(wip: bool, deps: bool) -> serde_json::Value {
        json!({"enforce_wip_limits": wip, "enforce_dependencies": deps})
    }

    /// Creates a board with its columns (spec CreateBoard); stages `tasks.board.created`.
    pub async fn create(db: &Db, access: &dyn Access, ctx: &RequestContext, new: NewBoard) -> Result<BoardView> {
        access.create_board(ctx).await?;
        let org_id = ctx.org_id()?;
        let mut tx = db.tenant_tx(ctx).await?;
        let id = Uuid::now_v7();
        let inserted = store::insert_board(
            &mut tx,
            &store::NewBoardRow {
                id,
                org_id,
                name: &new.name,
                key: &new.key,
                description: &new.description,
                view_type: new.view_type,
                visibility: new.visibility,
                team_id: new.team_id,
                settings: settings(new.enforce_wip_limits, new.enforce_dependencies),
                created_by: ctx.user_id_opt(),
            },
        )
        .await?;
        if !inserted {
            return Err(TaskError::BoardKeyTaken.into());
        }
        let columns: Vec<ColumnSpec> = if new.columns.is_empty() {
            DEFAULT_COLUMNS
                .iter()
                .map(|(name, status)| ColumnSpec {
                    id: None,
                    name: (*name).to_string(),
                    status: *status,
                    color: None,
                    wip_limit: None,
                })
                .collect()
        } else {
            new.columns
        };
        for (c, position) in columns.iter().zip(position::sequence(columns.len())) {
            let write = ColumnWrite {
                id: Uuid::now_v7(),
                name: c.name.clone(),
                status: c.status,
                position,
                color: c.color.clone(),
                wip_limit: c.wip_limit,
            };
            store::upsert_column(&mut tx, org_id, id, &write).await?;
        }
        let board = store::board(&mut tx, id, false).await?.ok_or(TaskError::BoardNotFound)?;
        events::board_changed(&mut tx, ctx, events::BOARD_CREATED, &board, &[]).await?;
        // The board's org and visibility; the caller becomes its owner.
        let mut access_changes = vec![relationships::board_placed(
            org_id,
            id,
            board.visibility == "org",
            relationships::next_version(&mut tx).await?,
        )];
        if let Some(owner) = relationships::subject_of(&ctx.subject) {
            let version = relationships::next_version(&mut tx).await?;
            access_changes.push(relationships::board_member(id, &owner, Some("owner"), version));
        }
        access.stage(&mut tx, ctx, &access_changes).await?;
        let view = view(&mut tx, board).await?;
        tx.commit().await?;
        access.apply(ctx, &access_changes).await;
        tracing::info!(board_id = %id, "board created");
        Ok(view)
    }

    /// A live board with its columns.
    pub async fn get(db: &Db, access: &dyn Access, ctx: &RequestContext, board_id: Uuid) -> Result<BoardView> {
        access.board(ctx, board_id, BoardPermission::View).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let board = store::board(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        let view = view(&mut tx, board).await?;
        tx.commit().await?;
        Ok(view)
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Cursor {
        name: String,
        id: Uuid,
    }

    /// One page of boards by name, with the total and the next token.
    pub async fn list(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        tokens: &PageTokens,
        archived: bool,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<BoardView>, String, i64)> {
        // LookupResources(board, view), or every board for organization admins.
        let visible = access.visible(ctx).await?;
        let hash = PageTokens::query_hash(&["tasks.ListBoards", if archived { "1" } else { "0" }]);
        let cursor: Option<Cursor> = tokens.decode(&hash, page_token)?;
        let mut tx = db.tenant_tx(ctx).await?;
        let mut rows =
            store::boards_page(&mut tx, &visible, archived, cursor.map(|c| (c.name, c.id)), i64::from(page_size) + 1)
                .await?;
        let total = store::count_boards(&mut tx, &visible, archived).await?;
        let next = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last().map(|b| tokens.encode(&hash, &Cursor { name: b.name.clone(), id: b.id })).unwrap_or_default()
        } else {
            String::new()
        };
        let mut views = Vec::with_capacity(rows.len());
        for board in rows {
            views.push(view(&mut tx, board).await?);
        }
        tx.commit().await?;
        Ok((views, next, total))
    }

    /// The changes of an UpdateBoard (validated; `None` = not in the mask).
    #[derive(Debug, Clone, Default)]
    pub struct BoardChanges {
        /// New name.
        pub name: Option<String>,
        /// New key.
        pub key: Option<String>,
        /// New description.
        pub description: Option<String>,
        /// New view type.
        pub view_type: Option<&'static str>,
        /// New visibility.
        pub visibility: Option<&'static str>,
        /// New team.
        pub team_id: Option<Option<Uuid>>,
        /// New enforce_wip_limits.
        pub enforce_wip_limits: Option<bool>,
        /// New enforce_dependencies.
        pub enforce_dependencies: Option<bool>,
        /// Expected version.
        pub version: Option<i64>,
    }

    /// Updates a board (spec UpdateBoard); stages `tasks.board.updated` when something changed.
    pub async fn update(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        board_id: Uuid,
        changes: BoardChanges,
    ) -> Result<BoardView> {
        access.board(ctx, board_id, BoardPermission::Manage).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let before = store::board_locked(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        if changes.version.is_some_and(|v| v != before.version) {
            return Err(TaskError::VersionMismatch.into());
        }
        if before.archived_at.is_some() {
            return Err(TaskError::BoardArchived.into());
        }
        let mut after = before.clone();
        let mut changed: Vec<&str> = Vec::new();
        macro_rules! apply {
            ($field:ident, $value:expr) => {
                if let Some(value) = $value
                    && after.$field != value
                {
                    after.$field = value;
                    changed.push(stringify!($field));
                }
            };
        }
        apply!(name, changes.name);
        apply!(key, changes.key);
        apply!(description, changes.description);
        apply!(view_type, changes.view_type.map(str::to_string));
        apply!(visibility, changes.visibility.map(str::to_string));
        apply!(team_id, changes.team_id);
        let flag = |key: &str| after.settings.get(key).and_then(serde_json::Value::as_bool).unwrap_or(false);
        let wip = changes.enforce_wip_limits.unwrap_or_else(|| flag("enforce_wip_limits"));
        let deps = changes.enforce_dependencies.unwrap_or_else(|| flag("enforce_dependencies"));
        let new_settings = settings(wip, deps);
        if new_settings != after.settings {
            after.settings = new_settings;
            changed.push("settings");
        }
        if !changed.is_empty() {
            if !store::write_board(&mut tx, &after).await? {
                return Err(TaskError::BoardKeyTaken.into());
            }
            events::board_changed(&mut tx, ctx, events::BOARD_UPDATED, &after, &changed).await?;
        }
        // Visibility is the board's `org_wide` relationship.
        let mut access_changes = Vec::new();
        if changed.contains(&"visibility") {
            let version = relationships::next_version(&mut tx).await?;
            access_changes.push(relationships::board_placed(
                ctx.org_id()?,
                board_id,
                after.visibility == "org",
                version,
            ));
            access.stage(&mut tx, ctx, &access_changes).await?;
        }
        let board = store::board(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        let view = view(&mut tx, board).await?;
        tx.commit().await?;
        access.apply(ctx, &access_changes).await;
        Ok(view)
    }

    /// Replaces a board's columns (spec ConfigureColumns): the list is the new order; omitted
    /// columns are removed after their tasks move to the named target. Atomic.
    pub async fn configure_columns(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        board_id: Uuid,
        columns: Vec<ColumnSpec>,
        removed: Vec<(Uuid, Uuid)>,
    ) -> Result<BoardView> {
        access.board(ctx, board_id, BoardPermission::Manage).await?;
        let org_id = ctx.org_id()?;
        let mut tx = db.tenant_tx(ctx).await?;
        let board = store::board_locked(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        if board.archived_at.is_some() {
            return Err(TaskError::BoardArchived.into());
        }
        let existing = store::column_rows(&mut tx, board_id).await?;
        let mut v = Violations::default();
        for (i, c) in columns.iter().enumerate() {
            if let Some(id) = c.id
                && !existing.iter().any(|e| e.id == id)
            {
                v.add(format!("columns[{i}].id"), "is not a column of the board");
            }
        }
        v.finish()?;
        // Ids for new columns first, so `removed` may name them as targets by position... only
        // kept columns can be targets (their ids are known to the caller).
        let writes: Vec<ColumnWrite> = columns
            .iter()
            .zip(position::sequence(columns.len()))
            .map(|(c, position)| ColumnWrite {
                id: c.id.unwrap_or_else(Uuid::now_v7),
                name: c.name.clone(),
                status: c.status,
                position,
                color: c.color.clone(),
                wip_limit: c.wip_limit,
            })
            .collect();
        for w in &writes {
            store::upsert_column(&mut tx, org_id, board_id, w).await?;
        }
        for (i, gone) in existing.iter().filter(|e| !writes.iter().any(|w| w.id == e.id)).enumerate() {
            let target = removed.iter().find(|(from, _)| *from == gone.id).map(|(_, to)| *to);
            if store::tasks_in_column_count(&mut tx, gone.id).await? > 0 {
                let Some(target) = target else {
                    return Err(TaskError::ColumnNotEmpty.into());
                };
                let Some(to) = writes.iter().find(|w| w.id == target) else {
                    return Err(Error::validation(
                        format!("removed[{i}].move_to_column_id"),
                        "must be a column kept by this request",
                    ));
                };
                let last = store::last_position(&mut tx, board_id, to.id).await?;
                store::move_column_tasks(&mut tx, gone.id, to.id, to.status, last.as_deref()).await?;
            }
            store::delete_column(&mut tx, gone.id).await?;
        }
        events::board_changed(&mut tx, ctx, events::BOARD_UPDATED, &board, &["columns"]).await?;
        let view = view(&mut tx, board).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Archives or unarchives a board (idempotent).
    pub async fn set_archived(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        board_id: Uuid,
        archived: bool,
    ) -> Result<BoardView> {
        access.board(ctx, board_id, BoardPermission::Manage).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let before = store::board_locked(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        if before.archived_at.is_some() != archived {
            store::set_archived(&mut tx, board_id, archived).await?;
            events::board_changed(&mut tx, ctx, events::BOARD_UPDATED, &before, &["archived_at"]).await?;
        }
        let board = store::board(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        let view = view(&mut tx, board).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Moves a board and its live tasks to the trash in one batch.
    pub async fn delete(db: &Db, access: &dyn Access, ctx: &RequestContext, board_id: Uuid) -> Result<BoardView> {
        access.board(ctx, board_id, BoardPermission::Manage).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let board = store::board_locked(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        if board.is_default {
            return Err(TaskError::DefaultBoard.into());
        }
        store::trash_board(&mut tx, board_id, Uuid::now_v7()).await?;
        events::board_changed(&mut tx, ctx, events::BOARD_DELETED, &board, &[]).await?;
        let board = store::board(&mut tx, board_id, true).await?.ok_or(TaskError::BoardNotFound)?;
        let view = view(&mut tx, board).await?;
        tx.commit().await?;
        tracing::info!(board_id = %board_id, "board trashed");
        Ok(view)
    }

    /// Brings a trashed board back with its batch of tasks.
    pub async fn restore(db: &Db, access: &dyn Access, ctx: &RequestContext, board_id: Uuid) -> Result<BoardView> {
        access.board(ctx, board_id, BoardPermission::Manage).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let board = store::board_locked(&mut tx, board_id, true).await?.ok_or(TaskError::BoardNotFound)?;
        let batch = board.delete_batch_id.unwrap_or_else(Uuid::nil);
        if !store::restore_board(&mut tx, board_id, batch).await? {
            return Err(TaskError::BoardKeyTakenOnRestore.into());
        }
        events::board_changed(&mut tx, ctx, events::BOARD_RESTORED, &board, &[]).await?;
        let board = store::board(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        let view = view(&mut tx, board).await?;
        tx.commit().await?;
        Ok(view)
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct TrashCursor {
        deleted_at: chrono::DateTime<chrono::Utc>,
        id: Uuid,
    }

    /// ListTrashedBoards: trashed boards the caller may see, most recently deleted first.
    pub async fn list_trashed(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        tokens: &PageTokens,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<BoardView>, String)> {
        let visible = access.visible(ctx).await?;
        let hash = PageTokens::query_hash(&["tasks.ListTrashedBoards"]);
        let cursor: Option<TrashCursor> = tokens.decode(&hash, page_token)?;
        let mut tx = db.tenant_tx(ctx).await?;
        let mut rows = store::trashed_boards_page(
            &mut tx,
            &visible,
            cursor.map(|c| (c.deleted_at, c.id)),
            i64::from(page_size) + 1,
        )
        .await?;
        let next = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last()
                .and_then(|b| {
                    b.deleted_at.map(|deleted_at| tokens.encode(&hash, &TrashCursor { deleted_at, id: b.id }))
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut views = Vec::with_capacity(rows.len());
        for board in rows {
            views.push(view(&mut tx, board).await?);
        }
        tx.commit().await?;
        Ok((views, next))
    }

    /// PurgeBoard: deletes a trashed board for good with every task it holds (each top-level
    /// task publishes `tasks.task.purged` with its descendant count, as PurgeTask does), its
    /// columns, recurrence rules and automations; then publishes `tasks.board.purged`. Returns
    /// how many tasks were deleted.
    pub async fn purge(db: &Db, access: &dyn Access, ctx: &RequestContext, board_id: Uuid) -> Result<u64> {
        access.administer(ctx).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        let board = store::board_locked(&mut tx, board_id, true).await?.ok_or(TaskError::BoardNotFound)?;
        let tasks = store::all_board_tasks(&mut tx, board_id).await?;
        let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        // Descendant counts from the parent links (parents come before their subtasks).
        let mut descendants: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
        for t in tasks.iter().rev() {
            let below = descendants.get(&t.id).copied().unwrap_or(0);
            if let Some(parent) = t.parent_id {
                *descendants.entry(parent).or_default() += below + 1;
            }
        }
        crate::collab::COLLAB.purge(&mut tx, ctx, crate::collab::TASK, &ids).await?;
        let purged = store::purge_tasks(&mut tx, &ids).await?;
        for t in tasks.iter().filter(|t| t.parent_id.is_none_or(|p| !ids.contains(&p))) {
            let below = descendants.get(&t.id).copied().unwrap_or(0);
            events::task_purged(&mut tx, ctx, t, &[], below).await?;
        }
        store::purge_board(&mut tx, board_id).await?;
        events::board_changed(&mut tx, ctx, events::BOARD_PURGED, &board, &[]).await?;
        tx.commit().await?;
        tracing::info!(board_id = %board_id, purged, "board purged");
        Ok(purged)
    }

    /// A board member to add or remove (validated).
    #[derive(Debug, Clone)]
    pub struct MemberSpec {
        /// `user`, `team` or `api_key`.
        pub subject_type: &'static str,
        /// The subject's id.
        pub subject_id: Uuid,
    }

    /// Gives a member a role on the board (spec AddBoardMember), replacing its previous role. A
    /// change that would leave the board without an owner is FAILED_PRECONDITION `LAST_OWNER`.
    pub async fn add_member(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        board_id: Uuid,
        member: &MemberSpec,
        role: &'static str,
    ) -> Result<BoardMember> {
        set_member(db, access, ctx, board_id, member, Some(role)).await?;
        Ok(BoardMember {
            subject_type: member.subject_type.to_string(),
            subject_id: member.subject_id,
            role: role.to_string(),
        })
    }

    /// Removes a member's role (spec RemoveBoardMember): NOT_FOUND `MEMBER_NOT_FOUND` when it has
    /// none, FAILED_PRECONDITION `LAST_OWNER` for the last owner.
    pub async fn remove_member(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        board_id: Uuid,
        member: &MemberSpec,
    ) -> Result<()> {
        set_member(db, access, ctx, board_id, member, None).await
    }

    async fn set_member(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        board_id: Uuid,
        member: &MemberSpec,
        role: Option<&'static str>,
    ) -> Result<()> {
        access.board(ctx, board_id, BoardPermission::Manage).await?;
        let members = access.board_members(ctx, board_id).await?;
        let is = |m: &BoardMember| m.subject_type == member.subject_type && m.subject_id == member.subject_id;
        let current: Vec<&BoardMember> = members.iter().filter(|m| is(m)).collect();
        if role.is_none() && current.is_empty() {
            return Err(Error::not_found("MEMBER_NOT_FOUND", "This subject is not a member of the board"));
        }
        let owners = members.iter().filter(|m| m.role == "owner").count();
        let was_owner = current.iter().any(|m| m.role == "owner");
        if was_owner && role != Some("owner") && owners <= 1 {
            return Err(Error::failed_precondition("LAST_OWNER", "A board keeps at least one owner"));
        }
        let mut tx = db.tenant_tx(ctx).await?;
        let board = store::board_locked(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        if board.archived_at.is_some() {
            return Err(TaskError::BoardArchived.into());
        }
        let subject = relationships::member_subject(member.subject_type, member.subject_id);
        let version = relationships::next_version(&mut tx).await?;
        let changes = [relationships::board_member(board_id, &subject, role, version)];
        access.stage(&mut tx, ctx, &changes).await?;
        tx.commit().await?;
        access.apply(ctx, &changes).await;
        tracing::info!(board_id = %board_id, subject_type = member.subject_type, role = ?role, "board member changed");
        Ok(())
    }

    /// The board's members, owners first (spec ListBoardMembers).
    pub async fn members(
        db: &Db,
        access: &dyn Access,
        ctx: &RequestContext,
        board_id: Uuid,
    ) -> Result<Vec<BoardMember>> {
        access.board(ctx, board_id, BoardPermission::View).await?;
        let mut tx = db.tenant_tx(ctx).await?;
        store::board(&mut tx, board_id, false).await?.ok_or(TaskError::BoardNotFound)?;
        tx.commit().await?;
        let mut members = access.board_members(ctx, board_id).await?;
        let rank = |r: &str| relationships::BOARD_ROLES.iter().position(|x| *x == r).unwrap_or(usize::MAX);
        members.sort_by(|a, b| rank(&a.role).cmp(&rank(&b.role)).then(a.subject_id.cmp(&b.subject_id)));
        Ok(members)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys_and_colors_are_checked() {
            assert!(valid_key("ENG") && valid_key("A1") && valid_key("ABCDEFGHIJ"));
            assert!(!valid_key("E") && !valid_key("eng") && !valid_key("1AB") && !valid_key("ABCDEFGHIJK"));
            assert!(valid_color("#00ffAA") && !valid_color("00ffAA") && !valid_color("#00ffAZ"));
        }
    }
}
