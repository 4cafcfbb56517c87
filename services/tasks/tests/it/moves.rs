//! UpdateTask, MoveTask and CompleteTask over gRPC: versions, positions, WIP limits, status rules.

use prost::Message;
use prost_types::FieldMask;
use tonic::Code;
use trellis_proto::trellis::tasks::v1::{
    BoardColumn, BoardSettings, ConfigureColumnsRequest, GetTaskRequest, ListTasksRequest, MoveTaskRequest, TaskStatus,
    TaskStatusChanged, UpdateBoardRequest, UpdateTaskRequest,
};

use crate::common::{Caller, cell, outbox, reason, violated_fields};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

#[tokio::test]
async fn moving_between_neighbours_sets_the_status_and_the_requested_order() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let progress = board.columns[2].id.clone();
    let x = alice.task_in(&board, 2, "X").await;
    let y = alice.task_in(&board, 2, "Y").await;
    let t = alice.task_in(&board, 1, "T").await;

    let moved = alice
        .client
        .move_task(alice.req(MoveTaskRequest {
            task_id: t.id.clone(),
            column_id: progress.clone(),
            after_task_id: x.id.clone(),
            ..Default::default()
        }))
        .await
        .expect("move")
        .into_inner();
    let task = moved.task.expect("task");
    assert_eq!((task.status, task.column_id.as_str()), (TaskStatus::InProgress as i32, progress.as_str()));
    assert!(task.started_at.is_some());
    assert!(!moved.wip_exceeded);
    assert!(x.position.as_bytes() < task.position.as_bytes() && task.position.as_bytes() < y.position.as_bytes());

    // Then before X: the column reads T, X, Y.
    alice
        .client
        .move_task(alice.req(MoveTaskRequest {
            task_id: t.id.clone(),
            before_task_id: x.id.clone(),
            ..Default::default()
        }))
        .await
        .expect("move to front");
    let listed = alice
        .client
        .list_tasks(alice.req(ListTasksRequest { board_id: board.id.clone(), ..Default::default() }))
        .await
        .expect("list")
        .into_inner()
        .tasks;
    let mut in_progress: Vec<_> = listed.into_iter().filter(|t| t.column_id == progress).collect();
    in_progress.sort_by(|a, b| (a.position.as_bytes(), &a.id).cmp(&(b.position.as_bytes(), &b.id)));
    let titles: Vec<&str> = in_progress.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(titles, ["T", "X", "Y"]);

    let changed: Vec<TaskStatusChanged> = outbox(&cell)
        .await
        .into_iter()
        .filter(|e| e.r#type == "tasks.task.status_changed")
        .map(|e| TaskStatusChanged::decode(e.payload.expect("payload").value.as_slice()).expect("payload"))
        .collect();
    assert_eq!(changed.len(), 1, "moving inside a column changes no status");
    assert_eq!(
        (changed[0].from_status, changed[0].to_status),
        (TaskStatus::Todo as i32, TaskStatus::InProgress as i32)
    );

    // A neighbour from another column is refused.
    let bad = alice
        .client
        .move_task(alice.req(MoveTaskRequest {
            task_id: x.id.clone(),
            column_id: board.columns[0].id.clone(),
            after_task_id: y.id.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("neighbour elsewhere");
    assert_eq!(violated_fields(&bad), ["after_task_id"]);
}

#[tokio::test]
async fn wip_limits_are_soft_unless_the_board_enforces_them() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let mut columns: Vec<BoardColumn> = board
        .columns
        .iter()
        .map(|c| BoardColumn { id: c.id.clone(), name: c.name.clone(), status: c.status, ..Default::default() })
        .collect();
    columns[3].wip_limit = 1;
    alice
        .boards
        .configure_columns(alice.req(ConfigureColumnsRequest { board_id: board.id.clone(), columns, removed: vec![] }))
        .await
        .expect("limit");
    let review = board.columns[3].id.clone();
    alice.task_in(&board, 3, "already in review").await;
    let t = alice.task_in(&board, 1, "T").await;
    let to_review =
        |id: &str| MoveTaskRequest { task_id: id.to_string(), column_id: review.clone(), ..Default::default() };

    let soft = alice.client.move_task(alice.req(to_review(&t.id))).await.expect("soft limit").into_inner();
    assert!(soft.wip_exceeded);

    alice
        .boards
        .update_board(alice.req(UpdateBoardRequest {
            board_id: board.id.clone(),
            settings: Some(BoardSettings { enforce_wip_limits: true, enforce_dependencies: false }),
            update_mask: mask(&["settings"]),
            ..Default::default()
        }))
        .await
        .expect("enforce");
    let u = alice.task_in(&board, 1, "U").await;
    let refused = alice.client.move_task(alice.req(to_review(&u.id))).await.expect_err("full");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "WIP_LIMIT_REACHED"));
    let same = alice.client.get_task(alice.req(GetTaskRequest { task_id: u.id.clone() })).await.expect("get");
    let same = same.into_inner().task.expect("task");
    assert_eq!((same.column_id, same.version), (u.column_id.clone(), u.version), "the task is unchanged");
    // A status change into the full column's status is refused the same way.
    let refused = alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: u.id.clone(),
            status: TaskStatus::InReview as i32,
            update_mask: mask(&["status"]),
            ..Default::default()
        }))
        .await
        .expect_err("full");
    assert_eq!(reason(&refused), "WIP_LIMIT_REACHED");
}

#[tokio::test]
async fn concurrent_updates_with_one_version_let_exactly_one_through() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let task = alice.create("racy").await;
    let update = |title: &str| UpdateTaskRequest {
        task_id: task.id.clone(),
        title: title.to_string(),
        update_mask: mask(&["title"]),
        version: task.version,
        ..Default::default()
    };
    let (mut a, mut b) = (alice.client.clone(), alice.client.clone());
    let (ra, rb) = tokio::join!(a.update_task(alice.req(update("one"))), b.update_task(alice.req(update("two"))));
    let results = [ra, rb];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one update wins");
    let err = results.into_iter().find_map(Result::err).expect("one loses");
    assert_eq!((err.code(), reason(&err).as_str()), (Code::Aborted, "VERSION_MISMATCH"));
}

#[tokio::test]
async fn a_status_change_moves_to_a_matching_column_and_done_records_completion() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let t = alice.task_in(&board, 1, "T").await;
    let done = alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: t.id.clone(),
            status: TaskStatus::Done as i32,
            priority: 4,
            update_mask: mask(&["status", "priority"]),
            ..Default::default()
        }))
        .await
        .expect("done")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(done.column_id, board.columns[4].id, "moved to the Done column");
    assert!(done.completed_at.is_some());
    let types: Vec<String> = outbox(&cell).await.into_iter().map(|e| e.r#type).collect();
    for expected in ["tasks.task.updated", "tasks.task.status_changed", "tasks.task.completed"] {
        assert!(types.contains(&expected.to_string()), "{expected} staged");
    }

    // Cancelled maps to no column: the task stays where it is; reopening clears completion.
    let cancelled = alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: t.id.clone(),
            status: TaskStatus::Cancelled as i32,
            update_mask: mask(&["status"]),
            ..Default::default()
        }))
        .await
        .expect("cancel")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(cancelled.column_id, board.columns[4].id);
    assert!(cancelled.completed_at.is_none());

    let bad = alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: t.id.clone(),
            start_date: Some(prost_types::Timestamp { seconds: 2_000_000_000, nanos: 0 }),
            due_date: Some(prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 }),
            update_mask: mask(&["start_date", "due_date"]),
            ..Default::default()
        }))
        .await
        .expect_err("due before start");
    assert_eq!(violated_fields(&bad), ["due_date"]);
    let bad = alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: t.id.clone(),
            update_mask: mask(&["number"]),
            ..Default::default()
        }))
        .await
        .expect_err("not updatable");
    assert_eq!((bad.code(), violated_fields(&bad)), (Code::InvalidArgument, vec!["update_mask".to_string()]));
}
