//! BoardService over gRPC: creation, columns, archive, trash.

use prost_types::FieldMask;
use tonic::Code;
use trellis_proto::trellis::tasks::v1::{
    ArchiveBoardRequest, BoardColumn, BoardSettings, ConfigureColumnsRequest, CreateBoardRequest, CreateSubtaskRequest,
    CreateTaskRequest, DeleteBoardRequest, GetBoardRequest, GetTaskRequest, ListBoardsRequest,
    ListTrashedBoardsRequest, PurgeBoardRequest, RemovedColumn, RestoreBoardRequest, TaskPurged, TaskStatus,
    UnarchiveBoardRequest, UpdateBoardRequest, UpdateTaskRequest,
};

use crate::common::{Caller, authed, cell, event_types, outbox, reason, violated_fields};

fn kept(c: &BoardColumn) -> BoardColumn {
    BoardColumn { id: c.id.clone(), name: c.name.clone(), status: c.status, ..Default::default() }
}

#[tokio::test]
async fn a_new_board_has_the_default_columns_and_a_unique_key() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let names: Vec<&str> = board.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Backlog", "To do", "In progress", "In review", "Done"]);
    assert!(board.columns.windows(2).all(|w| w[0].position.as_bytes() < w[1].position.as_bytes()));
    assert_eq!(board.created_by, alice.user.to_string());

    let again = alice
        .boards
        .create_board(alice.req(CreateBoardRequest { name: "Other".into(), key: "ENG".into(), ..Default::default() }))
        .await
        .expect_err("key taken");
    assert_eq!((again.code(), reason(&again).as_str()), (Code::AlreadyExists, "BOARD_KEY_TAKEN"));

    let bad = alice
        .boards
        .create_board(alice.req(CreateBoardRequest { name: " ".into(), key: "eng".into(), ..Default::default() }))
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), ["name", "key"]);

    // Another organization may use the same key.
    let mut bob = Caller::new(&cell).await;
    bob.board("Engineering", "ENG").await;

    let listed = alice.boards.list_boards(alice.req(ListBoardsRequest::default())).await.expect("list").into_inner();
    assert_eq!(listed.total_size, 1);
    assert!(event_types(&cell).await.iter().filter(|t| *t == "tasks.board.created").count() >= 2);
}

#[tokio::test]
async fn configuring_columns_reorders_adds_and_removes_with_a_target() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let c = &board.columns;
    let task = alice.task_in(&board, 1, "in To do").await;

    // Add QA (in_review, WIP 1) before Done, and drop Backlog (empty).
    let qa = BoardColumn { name: "QA".into(), status: TaskStatus::InReview as i32, wip_limit: 1, ..Default::default() };
    let columns = vec![kept(&c[1]), kept(&c[2]), kept(&c[3]), qa.clone(), kept(&c[4])];
    let configured = alice
        .boards
        .configure_columns(alice.req(ConfigureColumnsRequest {
            board_id: board.id.clone(),
            columns: columns.clone(),
            removed: vec![],
        }))
        .await
        .expect("configure")
        .into_inner()
        .board
        .expect("board");
    let names: Vec<&str> = configured.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["To do", "In progress", "In review", "QA", "Done"]);
    assert_eq!(configured.columns[3].wip_limit, 1);
    assert_eq!(configured.columns[0].task_count, 1);

    // Removing "To do" (holding a task) without a target is refused, and nothing changes.
    let without_todo: Vec<BoardColumn> = configured.columns[1..].iter().map(kept).collect();
    let refused = alice
        .boards
        .configure_columns(alice.req(ConfigureColumnsRequest {
            board_id: board.id.clone(),
            columns: without_todo.clone(),
            removed: vec![],
        }))
        .await
        .expect_err("not empty");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "COLUMN_NOT_EMPTY"));
    let unchanged =
        alice.boards.get_board(alice.req(GetBoardRequest { board_id: board.id.clone() })).await.expect("get");
    assert_eq!(unchanged.into_inner().board.expect("board").columns.len(), 5);

    // With a target the task moves there and takes its status.
    let progress = configured.columns[1].id.clone();
    alice
        .boards
        .configure_columns(alice.req(ConfigureColumnsRequest {
            board_id: board.id.clone(),
            columns: without_todo,
            removed: vec![RemovedColumn {
                column_id: configured.columns[0].id.clone(),
                move_to_column_id: progress.clone(),
            }],
        }))
        .await
        .expect("configure with target");
    let moved = alice.client.get_task(alice.req(GetTaskRequest { task_id: task.id.clone() })).await.expect("get");
    let moved = moved.into_inner().task.expect("task");
    assert_eq!((moved.column_id, moved.status), (progress, TaskStatus::InProgress as i32));
    assert!(moved.started_at.is_some());
}

#[tokio::test]
async fn an_archived_board_is_read_only_until_unarchived() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let task = alice.task_in(&board, 1, "before").await;
    alice.boards.archive_board(alice.req(ArchiveBoardRequest { board_id: board.id.clone() })).await.expect("archive");

    let create = alice
        .client
        .create_task(alice.req(CreateTaskRequest {
            title: "x".into(),
            board_id: board.id.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("archived");
    assert_eq!((create.code(), reason(&create).as_str()), (Code::FailedPrecondition, "BOARD_ARCHIVED"));
    let update = alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: task.id.clone(),
            title: "after".into(),
            update_mask: Some(FieldMask { paths: vec!["title".into()] }),
            ..Default::default()
        }))
        .await
        .expect_err("archived");
    assert_eq!(reason(&update), "BOARD_ARCHIVED");
    let archived = alice.boards.list_boards(alice.req(ListBoardsRequest { archived: true, ..Default::default() }));
    assert_eq!(archived.await.expect("list").into_inner().total_size, 1);

    alice.boards.unarchive_board(alice.req(UnarchiveBoardRequest { board_id: board.id.clone() })).await.expect("un");
    alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: task.id.clone(),
            title: "after".into(),
            update_mask: Some(FieldMask { paths: vec!["title".into()] }),
            ..Default::default()
        }))
        .await
        .expect("writable again");
}

#[tokio::test]
async fn deleting_a_board_trashes_its_tasks_and_restore_brings_them_back() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let task = alice.task_in(&board, 1, "on the board").await;

    let deleted = alice.boards.delete_board(alice.req(DeleteBoardRequest { board_id: board.id.clone() })).await;
    assert!(deleted.expect("delete").into_inner().board.expect("board").deleted_at.is_some());
    let gone = alice.client.get_task(alice.req(GetTaskRequest { task_id: task.id.clone() })).await.expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);
    let gone = alice.boards.get_board(alice.req(GetBoardRequest { board_id: board.id.clone() })).await;
    assert_eq!(gone.expect_err("gone").code(), Code::NotFound);

    // The key is free meanwhile; reusing it blocks the restore.
    let squatter = alice.board("Squatter", "ENG").await;
    let blocked = alice.boards.restore_board(alice.req(RestoreBoardRequest { board_id: board.id.clone() })).await;
    let blocked = blocked.expect_err("key reused");
    assert_eq!((blocked.code(), reason(&blocked).as_str()), (Code::FailedPrecondition, "BOARD_KEY_TAKEN"));

    alice
        .boards
        .update_board(alice.req(UpdateBoardRequest {
            board_id: squatter.id.clone(),
            key: "SQ".into(),
            update_mask: Some(FieldMask { paths: vec!["key".into()] }),
            ..Default::default()
        }))
        .await
        .expect("re-key");
    alice.boards.restore_board(alice.req(RestoreBoardRequest { board_id: board.id.clone() })).await.expect("restore");
    let back = alice.client.get_task(alice.req(GetTaskRequest { task_id: task.id.clone() })).await.expect("back");
    assert_eq!(back.into_inner().task.expect("task").key, "ENG-1");
    let types = event_types(&cell).await;
    assert!(types.contains(&"tasks.board.deleted".to_string()) && types.contains(&"tasks.board.restored".to_string()));

    // The default board cannot be deleted.
    let default_task = alice.create("default").await;
    let refused = alice.boards.delete_board(alice.req(DeleteBoardRequest { board_id: default_task.board_id })).await;
    assert_eq!(reason(&refused.expect_err("default")), "DEFAULT_BOARD");
}

#[tokio::test]
async fn board_updates_check_the_version_and_rekey_tasks() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let task = alice.task_in(&board, 1, "keyed").await;
    let update = |version: i64| UpdateBoardRequest {
        board_id: board.id.clone(),
        key: "CORE".into(),
        settings: Some(BoardSettings { enforce_wip_limits: true, enforce_dependencies: false }),
        update_mask: Some(FieldMask { paths: vec!["key".into(), "settings.enforce_wip_limits".into()] }),
        version,
        ..Default::default()
    };
    let updated = alice.boards.update_board(alice.req(update(board.version))).await.expect("update");
    let updated = updated.into_inner().board.expect("board");
    assert_eq!((updated.key.as_str(), updated.version), ("CORE", board.version + 1));
    assert!(updated.settings.expect("settings").enforce_wip_limits);
    let stale = alice.boards.update_board(alice.req(update(board.version))).await.expect_err("stale");
    assert_eq!((stale.code(), reason(&stale).as_str()), (Code::Aborted, "VERSION_MISMATCH"));
    let rekeyed = alice.client.get_task(alice.req(GetTaskRequest { task_id: task.id })).await.expect("get");
    assert_eq!(rekeyed.into_inner().task.expect("task").key, "CORE-1");

    let unknown = UpdateBoardRequest {
        board_id: board.id.clone(),
        update_mask: Some(FieldMask { paths: vec!["is_default".into()] }),
        ..Default::default()
    };
    let refused = alice.boards.update_board(alice.req(unknown)).await.expect_err("not updatable");
    assert_eq!(violated_fields(&refused), ["update_mask"]);
}

#[tokio::test]
async fn trashed_boards_are_listed_and_purged_with_their_tasks_by_an_administrator() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let first = alice.board("First", "FST").await;
    let second = alice.board("Second", "SND").await;
    let parent = alice.task_in(&first, 1, "parent").await;
    let child = alice
        .client
        .create_subtask(alice.req(CreateSubtaskRequest {
            task_id: parent.id.clone(),
            title: "child".into(),
            ..Default::default()
        }))
        .await
        .expect("subtask")
        .into_inner()
        .task
        .expect("task");
    let live = alice.board("Live", "LIV").await;

    // Nothing in the trash, then both boards, most recently deleted first, paged.
    let listed = alice.boards.list_trashed_boards(alice.req(ListTrashedBoardsRequest::default())).await;
    assert!(listed.expect("empty").into_inner().boards.is_empty());
    for board in [&first, &second] {
        let request = alice.req(DeleteBoardRequest { board_id: board.id.clone() });
        alice.boards.delete_board(request).await.expect("trash");
    }
    let page =
        alice.boards.list_trashed_boards(alice.req(ListTrashedBoardsRequest { page_size: 1, ..Default::default() }));
    let page = page.await.expect("page").into_inner();
    assert_eq!(page.boards.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), ["SND"]);
    let rest = alice.boards.list_trashed_boards(
        alice.req(ListTrashedBoardsRequest { page_size: 1, page_token: page.next_page_token.clone() }),
    );
    let rest = rest.await.expect("rest").into_inner();
    assert_eq!((rest.boards[0].key.as_str(), rest.next_page_token.as_str()), ("FST", ""));

    // Purging needs organization#administer and a trashed board.
    let member = authed(
        PurgeBoardRequest { board_id: first.id.clone() },
        &cell.keys.user_token(&cell.config, alice.user, alice.org, &["member"]),
    );
    assert_eq!(alice.boards.purge_board(member).await.expect_err("member").code(), Code::PermissionDenied);
    let status = alice.boards.purge_board(alice.req(PurgeBoardRequest { board_id: live.id.clone() })).await;
    assert_eq!(status.expect_err("live board").code(), Code::NotFound);

    let purged = alice.boards.purge_board(alice.req(PurgeBoardRequest { board_id: first.id.clone() })).await;
    assert_eq!(purged.expect("purge").into_inner().purged_task_count, 2, "the task and its subtask");
    let restore = alice.boards.restore_board(alice.req(RestoreBoardRequest { board_id: first.id.clone() })).await;
    assert_eq!(restore.expect_err("gone for good").code(), Code::NotFound);
    let trashed = alice.boards.list_trashed_boards(alice.req(ListTrashedBoardsRequest::default())).await;
    let trashed = trashed.expect("list").into_inner();
    assert_eq!(trashed.boards.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), ["SND"]);
    for id in [&parent.id, &child.id] {
        let gone = alice.client.get_task(alice.req(GetTaskRequest { task_id: id.clone() })).await;
        assert_eq!(gone.expect_err("purged").code(), Code::NotFound);
    }
    let purged_events: Vec<TaskPurged> = outbox(&cell)
        .await
        .into_iter()
        .filter(|e| e.r#type == "tasks.task.purged")
        .map(|e| e.payload.as_ref().and_then(|p| p.to_msg().ok()).expect("TaskPurged"))
        .collect();
    let summary: Vec<(&str, i32)> = purged_events.iter().map(|e| (e.task_id.as_str(), e.descendant_count)).collect();
    assert_eq!(summary, [(parent.id.as_str(), 1)], "one event for the top-level task, counting its subtask");
    assert!(event_types(&cell).await.contains(&"tasks.board.purged".to_string()));
    // The key is free for a new board.
    alice.board("Again", "FST").await;

    // Another organization cannot see or purge the other trashed board.
    let stranger = Caller::new(&cell).await;
    let theirs = alice.boards.list_trashed_boards(stranger.req(ListTrashedBoardsRequest::default())).await;
    assert!(theirs.expect("list").into_inner().boards.is_empty());
    let status = alice.boards.purge_board(stranger.req(PurgeBoardRequest { board_id: second.id.clone() })).await;
    assert_eq!(status.expect_err("other org").code(), Code::NotFound);
}
