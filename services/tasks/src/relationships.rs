//! The relationships the tasks service owns in the permissions service (`schema.zed`): a board's
//! org, its org-wide visibility, its owners, editors and viewers; a task's board, creator and
//! assignee.
//!
//! Each fact becomes one [`Change`] with a source-version guard: the key names the fact
//! (`board:{id}`, `board_member:{board}:{type}:{id}`, `task:{id}`, `task_assignee:{id}`) and
//! the version comes from the sequence `tasks.relationship_versions`, so a later change of the
//! same fact always wins and a late delivery of an earlier one changes nothing. Operations stage
//! the changes in their transaction and apply them after commit (see
//! [`crate::access::Access::stage`] and [`crate::access::Access::apply`]).

use trellis_kit::authz::Ref;
use trellis_kit::org_relationships::{Change, Op, Update};
use trellis_kit::{Result, Subject};
use uuid::Uuid;

use trellis_kit::db::Tx;

/// A board role of a member (`relation` of `board`).
pub const BOARD_ROLES: [&str; 3] = ["owner", "editor", "viewer"];

fn update(op: Op, resource: Ref, relation: &str, subject: Ref) -> Update {
    Update { op, resource, relation: relation.to_string(), subject }
}

fn board(id: Uuid) -> Ref {
    Ref::new("board", id.to_string())
}

fn task(id: Uuid) -> Ref {
    Ref::new("task", id.to_string())
}

fn org(id: Uuid) -> Ref {
    Ref::new("organization", id.to_string())
}

/// The permissions subject of a caller: a user or an API key (others act as the platform).
pub fn subject_of(subject: &Subject) -> Option<Ref> {
    match subject {
        Subject::User(id) => Some(Ref::new("user", id.to_string())),
        Subject::ApiKey(id) => Some(Ref::new("api_key", id.to_string())),
        _ => None,
    }
}

/// A board member as stored: `user:{id}`, `team:{id}#member` or `api_key:{id}`.
pub fn member_subject(subject_type: &str, subject_id: Uuid) -> Ref {
    match subject_type {
        "team" => Ref::set("team", subject_id.to_string(), "member"),
        other => Ref::new(other, subject_id.to_string()),
    }
}

/// The next version of the guard sequence, drawn inside the transaction of the change.
pub async fn next_version(tx: &mut Tx) -> Result<i64> {
    Ok(sqlx::query_scalar("select nextval('tasks.relationship_versions')").fetch_one(&mut **tx).await?)
}

/// A board's place: its org, and `org_wide` while its visibility is `org`.
pub fn board_placed(org_id: Uuid, board_id: Uuid, org_visible: bool, version: i64) -> Change {
    let wide = if org_visible { Op::Touch } else { Op::Delete };
    Change {
        source: Some((format!("board:{board_id}"), version)),
        updates: vec![
            update(Op::Touch, board(board_id), "org", org(org_id)),
            update(wide, board(board_id), "org_wide", org(org_id)),
        ],
        clears: Vec::new(),
    }
}

/// A member's role on a board (one of [`BOARD_ROLES`]), replacing any other; `None` removes it.
pub fn board_member(board_id: Uuid, member: &Ref, role: Option<&str>, version: i64) -> Change {
    let key = format!("board_member:{board_id}:{}:{}", member.ty, member.id);
    let updates = BOARD_ROLES
        .iter()
        // A team is a member through `team#member`, which `owner` does not allow.
        .filter(|r| !(member.ty == "team" && **r == "owner"))
        .map(|r| update(if Some(*r) == role { Op::Touch } else { Op::Delete }, board(board_id), r, member.clone()))
        .collect();
    Change { source: Some((key, version)), updates, clears: Vec::new() }
}

/// A task's board and creator (`old_board` when it moved from another board).
pub fn task_placed(
    task_id: Uuid,
    board_id: Uuid,
    old_board: Option<Uuid>,
    creator: Option<&Ref>,
    version: i64,
) -> Change {
    let mut updates = vec![update(Op::Touch, task(task_id), "board", board(board_id))];
    if let Some(old) = old_board.filter(|old| *old != board_id) {
        updates.push(update(Op::Delete, task(task_id), "board", board(old)));
    }
    if let Some(creator) = creator {
        updates.push(update(Op::Touch, task(task_id), "creator", creator.clone()));
    }
    Change { source: Some((format!("task:{task_id}"), version)), updates, clears: Vec::new() }
}

/// A task's assignee now (`None`: unassigned), the previous one no longer.
pub fn task_assignee(task_id: Uuid, previous: Option<Uuid>, assignee: Option<Uuid>, version: i64) -> Change {
    let mut updates = Vec::new();
    if let Some(p) = previous.filter(|p| Some(*p) != assignee) {
        updates.push(update(Op::Delete, task(task_id), "assignee", Ref::new("user", p.to_string())));
    }
    if let Some(a) = assignee {
        updates.push(update(Op::Touch, task(task_id), "assignee", Ref::new("user", a.to_string())));
    }
    Change { source: Some((format!("task_assignee:{task_id}"), version)), updates, clears: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Change) -> Vec<String> {
        c.updates
            .iter()
            .map(|u| {
                let rel =
                    if u.subject.relation.is_empty() { String::new() } else { format!("#{}", u.subject.relation) };
                format!("{:?} {}#{}@{}{rel}", u.op, u.resource.ty, u.relation, u.subject.ty)
            })
            .collect()
    }

    #[test]
    fn a_private_board_loses_its_org_wide_relation() {
        let (o, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            text(&board_placed(o, b, true, 1)),
            ["Touch board#org@organization", "Touch board#org_wide@organization"]
        );
        assert_eq!(
            text(&board_placed(o, b, false, 2)),
            ["Touch board#org@organization", "Delete board#org_wide@organization"]
        );
        assert_eq!(board_placed(o, b, false, 2).source, Some((format!("board:{b}"), 2)));
    }

    #[test]
    fn a_member_holds_one_role_and_teams_are_never_owners() {
        let b = Uuid::now_v7();
        let user = member_subject("user", Uuid::now_v7());
        assert_eq!(
            text(&board_member(b, &user, Some("viewer"), 3)),
            ["Delete board#owner@user", "Delete board#editor@user", "Touch board#viewer@user"]
        );
        let team = member_subject("team", Uuid::now_v7());
        assert_eq!(
            text(&board_member(b, &team, Some("editor"), 4)),
            ["Touch board#editor@team#member", "Delete board#viewer@team#member"]
        );
        assert!(text(&board_member(b, &user, None, 5)).iter().all(|t| t.starts_with("Delete")));
    }

    #[test]
    fn reassignment_replaces_the_assignee_and_a_move_replaces_the_board() {
        let (t, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            text(&task_assignee(t, Some(a), Some(b), 1)),
            ["Delete task#assignee@user", "Touch task#assignee@user"]
        );
        assert_eq!(text(&task_assignee(t, Some(a), Some(a), 2)), ["Touch task#assignee@user"]);
        assert_eq!(text(&task_assignee(t, Some(a), None, 3)), ["Delete task#assignee@user"]);
        let creator = Ref::new("user", a.to_string());
        assert_eq!(
            text(&task_placed(t, b, Some(a), Some(&creator), 4)),
            ["Touch task#board@board", "Delete task#board@board", "Touch task#creator@user"]
        );
        assert_eq!(text(&task_placed(t, b, Some(b), None, 5)), ["Touch task#board@board"]);
    }
}
