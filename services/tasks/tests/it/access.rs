//! Access through the permissions service (spec Permissions, flow 12), with identity and
//! permissions running in the cell: organization roles decide who may create, private boards are
//! invisible to non-members in gets, lists, search and counts until shared, and a board viewer
//! may look but not change.

use std::sync::Arc;
use std::time::Duration;

use prost_types::FieldMask;
use tonic::Code;
use trellis_kit::authz::{Authz, Ref};
use trellis_kit::testing::{TestCell, TestCredentials};
use trellis_proto::trellis::common::v1::entity_service_client::EntityServiceClient;
use trellis_proto::trellis::common::v1::{CountRequest, SearchRequest};
use trellis_proto::trellis::tasks::v1::{
    AddBoardMemberRequest, Board, BoardVisibility, CreateBoardRequest, CreateTaskRequest, GetBoardRequest,
    GetTaskRequest, ListBoardMembersRequest, ListBoardsRequest, ListTasksRequest, RemoveBoardMemberRequest, Task,
    UpdateTaskRequest,
};
use uuid::Uuid;

use crate::common::{Caller, outbox, reason, violated_fields};

/// A cell as production runs tasks: permissions next to it, tasks checking through it. Identity
/// is not running (test tokens carry sessions it would not know); its schema is registered as
/// identity would, then the tasks schema, and org roles are written as identity writes them.
async fn cell() -> TestCell {
    let cell = TestCell::start(vec![trellis_permissions::module(), trellis_tasks::module()]).await;
    for (module, schema) in [("identity", trellis_identity::relationships::SCHEMA), ("tasks", trellis_tasks::SCHEMA)] {
        authz_as(&cell, module)
            .register_schema(module, schema, Duration::from_millis(500))
            .await
            .unwrap_or_else(|e| panic!("registering the {module} schema: {e:?}"));
    }
    cell
}

fn authz_as(cell: &TestCell, service: &'static str) -> Authz {
    let credentials = Arc::new(TestCredentials { keys: cell.keys.clone(), config: cell.config.clone(), service });
    Authz::new(&cell.url("permissions"), credentials).unwrap_or_else(|e| panic!("authz: {e}"))
}

/// A user holding `role` in `org` (`organization:{org}#{role}@user:{user}`, as identity writes it).
async fn member(cell: &TestCell, org: Uuid, role: &str) -> Caller {
    let caller = Caller::in_org(cell, org).await;
    let rel = (Ref::new("organization", org.to_string()), role.to_string(), Ref::new("user", caller.user.to_string()));
    authz_as(cell, "identity").touch(org, &[rel]).await.unwrap_or_else(|e| panic!("org role: {e:?}"));
    caller
}

async fn private_board(owner: &mut Caller, key: &str) -> Board {
    let request = owner.req(CreateBoardRequest {
        name: format!("Board {key}"),
        key: key.into(),
        visibility: BoardVisibility::Private.into(),
        ..Default::default()
    });
    owner
        .boards
        .create_board(request)
        .await
        .unwrap_or_else(|s| panic!("create board: {s:?}"))
        .into_inner()
        .board
        .unwrap_or_default()
}

async fn visible_task_ids(caller: &mut Caller) -> Vec<String> {
    let request = caller.req(ListTasksRequest { include_subtasks: true, ..Default::default() });
    let listed = caller.client.list_tasks(request).await.unwrap_or_else(|s| panic!("list: {s:?}")).into_inner();
    assert_eq!(listed.total_size as usize, listed.tasks.len(), "the total counts only visible tasks");
    listed.tasks.into_iter().map(|t| t.id).collect()
}

async fn counts(cell: &TestCell, caller: &Caller) -> (i64, i64) {
    let mut entities = EntityServiceClient::new(cell.channel("tasks").await);
    let c = entities
        .count(caller.req(CountRequest::default()))
        .await
        .unwrap_or_else(|s| panic!("count: {s:?}"))
        .into_inner();
    (c.counts.get("tasks").copied().unwrap_or(-1), c.counts.get("boards").copied().unwrap_or(-1))
}

async fn search_ids(cell: &TestCell, caller: &Caller, q: &str) -> Vec<String> {
    let mut entities = EntityServiceClient::new(cell.channel("tasks").await);
    let r = entities
        .search(caller.req(SearchRequest { query: q.into(), ..Default::default() }))
        .await
        .unwrap_or_else(|s| panic!("search: {s:?}"))
        .into_inner();
    r.groups.iter().flat_map(|g| g.items.iter().map(|i| i.id.clone())).collect()
}

fn rename(task: &Task, title: &str) -> UpdateTaskRequest {
    UpdateTaskRequest {
        task_id: task.id.clone(),
        title: title.into(),
        update_mask: Some(FieldMask { paths: vec!["title".into()] }),
        ..Default::default()
    }
}

#[tokio::test]
async fn private_boards_stay_invisible_to_non_members_until_shared_and_viewers_cannot_edit() {
    let cell = cell().await;
    let org = Uuid::now_v7();
    let mut alice = member(&cell, org, "member").await;
    let mut bob = member(&cell, org, "member").await;

    let open = alice.create("Plan the offsite").await;
    let secret = private_board(&mut alice, "SEC").await;
    let hidden = alice.task_in(&secret, 1, "Negotiate the acquisition").await;
    let own = alice.client.get_task(alice.req(GetTaskRequest { task_id: hidden.id.clone() })).await;
    assert!(own.is_ok(), "the owner views the private task: {own:?}");

    // Bob sees the org-wide default board's task, nothing of the private board.
    let status = bob.client.get_task(bob.req(GetTaskRequest { task_id: hidden.id.clone() })).await.expect_err("hidden");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status =
        bob.boards.get_board(bob.req(GetBoardRequest { board_id: secret.id.clone() })).await.expect_err("hidden");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(visible_task_ids(&mut bob).await, vec![open.id.clone()]);
    let boards = bob.boards.list_boards(bob.req(ListBoardsRequest::default())).await.expect("boards").into_inner();
    assert!(boards.boards.iter().all(|b| b.id != secret.id), "{boards:?}");
    assert_eq!(boards.total_size as usize, boards.boards.len());
    assert!(search_ids(&cell, &bob, "acquisition").await.is_empty());
    assert_eq!(search_ids(&cell, &alice, "acquisition").await, vec![hidden.id.clone()]);
    assert_eq!(counts(&cell, &bob).await, (1, 1));
    assert_eq!(counts(&cell, &alice).await, (2, 2));
    // Listing the private board by id is NOT_FOUND too.
    let request = bob.req(ListTasksRequest { board_id: secret.id.clone(), ..Default::default() });
    assert_eq!(bob.client.list_tasks(request).await.expect_err("hidden").code(), Code::NotFound);

    // Shared as viewer: visible everywhere, but not editable.
    let add = AddBoardMemberRequest {
        board_id: secret.id.clone(),
        subject_type: "user".into(),
        subject_id: bob.user.to_string(),
        role: "viewer".into(),
    };
    let added = alice.boards.add_board_member(alice.req(add)).await.expect("add member").into_inner();
    assert_eq!(added.member.map(|m| m.role), Some("viewer".to_string()));
    let got = bob.client.get_task(bob.req(GetTaskRequest { task_id: hidden.id.clone() })).await.expect("shared");
    assert_eq!(got.into_inner().task.map(|t| t.title), Some("Negotiate the acquisition".to_string()));
    let mut ids = visible_task_ids(&mut bob).await;
    ids.sort();
    let mut expected = vec![open.id.clone(), hidden.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(counts(&cell, &bob).await, (2, 2));
    let status = bob.client.update_task(bob.req(rename(&hidden, "Mine now"))).await.expect_err("viewer");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = bob.client.create_task(bob.req(CreateTaskRequest {
        title: "Sneak in".into(),
        board_id: secret.id.clone(),
        ..Default::default()
    }));
    assert_eq!(status.await.expect_err("viewer").code(), Code::PermissionDenied);

    // Members are listed from the permissions service; the last owner stays.
    let members = bob
        .boards
        .list_board_members(bob.req(ListBoardMembersRequest { board_id: secret.id.clone() }))
        .await
        .expect("members")
        .into_inner()
        .members;
    let roles: Vec<(String, String)> = members.iter().map(|m| (m.subject_id.clone(), m.role.clone())).collect();
    assert_eq!(roles, vec![(alice.user.to_string(), "owner".into()), (bob.user.to_string(), "viewer".into())]);
    let remove = RemoveBoardMemberRequest {
        board_id: secret.id.clone(),
        subject_type: "user".into(),
        subject_id: alice.user.to_string(),
    };
    let status = alice.boards.remove_board_member(alice.req(remove)).await.expect_err("last owner");
    assert_eq!((status.code(), reason(&status)), (Code::FailedPrecondition, "LAST_OWNER".to_string()));
    // Bob cannot manage members; removing him takes the board away again.
    let remove_bob = RemoveBoardMemberRequest {
        board_id: secret.id.clone(),
        subject_type: "user".into(),
        subject_id: bob.user.to_string(),
    };
    let status = bob.boards.remove_board_member(bob.req(remove_bob.clone())).await.expect_err("viewer");
    assert_eq!(status.code(), Code::PermissionDenied);
    alice.boards.remove_board_member(alice.req(remove_bob)).await.expect("removed");
    assert_eq!(visible_task_ids(&mut bob).await, vec![open.id.clone()]);

    // Each relationship write was staged with its change, for delivery if the direct write fails.
    let staged = outbox(&cell).await.into_iter().filter(|e| e.r#type == "tasks.relationships.changed").count();
    assert!(staged >= 6, "board placement, owner, two tasks, member added and removed: {staged}");
}

#[tokio::test]
async fn roles_decide_who_creates_and_other_organizations_see_nothing() {
    let cell = cell().await;
    let org = Uuid::now_v7();
    let mut owner = member(&cell, org, "owner").await;
    let mut vera = member(&cell, org, "viewer").await;
    let mut carol = member(&cell, org, "member").await;
    let mut stranger = member(&cell, Uuid::now_v7(), "owner").await;

    let task = owner.create("Quarterly report").await;
    // An org viewer reads but never writes.
    let got = vera.client.get_task(vera.req(GetTaskRequest { task_id: task.id.clone() })).await;
    assert!(got.is_ok(), "{got:?}");
    let status = vera.client.create_task(vera.req(CreateTaskRequest { title: "Nope".into(), ..Default::default() }));
    let status = status.await.expect_err("viewer");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = vera.boards.create_board(vera.req(CreateBoardRequest {
        name: "Mine".into(),
        key: "MINE".into(),
        ..Default::default()
    }));
    assert_eq!(status.await.expect_err("viewer").code(), Code::PermissionDenied);
    // A user of another organization: NOT_FOUND, and empty lists.
    let status = stranger.client.get_task(stranger.req(GetTaskRequest { task_id: task.id.clone() })).await;
    assert_eq!(status.expect_err("other org").code(), Code::NotFound);
    assert!(visible_task_ids(&mut stranger).await.is_empty());

    // An org admin sees private boards of others; an assignee must be able to view the board.
    let secret = private_board(&mut carol, "PRIV").await;
    let hidden = carol.task_in(&secret, 1, "Carol's secret").await;
    assert!(visible_task_ids(&mut owner).await.contains(&hidden.id));
    let request = carol.req(CreateTaskRequest {
        title: "For Vera".into(),
        board_id: secret.id.clone(),
        assignee_id: vera.user.to_string(),
        ..Default::default()
    });
    let status = carol.client.create_task(request).await.expect_err("assignee cannot view");
    assert_eq!(reason(&status), "ASSIGNEE_NO_ACCESS");
    assert_eq!(violated_fields(&status), vec!["assignee_id".to_string()]);
    // The task's creator keeps it after the board is shared and unshared; an assignee sees their task.
    let request = owner.req(CreateTaskRequest {
        title: "Owner's note".into(),
        board_id: secret.id.clone(),
        assignee_id: carol.user.to_string(),
        ..Default::default()
    });
    let assigned =
        owner.client.create_task(request).await.expect("admin creates").into_inner().task.unwrap_or_default();
    assert!(visible_task_ids(&mut carol).await.contains(&assigned.id));
}
