//! ListTasks views and filters, and subtasks, over gRPC.

use tonic::Code;
use trellis_proto::trellis::tasks::v1::{
    BoardColumn, ConfigureColumnsRequest, CreateSubtaskRequest, DeleteTaskRequest, GetTaskRequest, ListTasksRequest,
    MoveTaskRequest, RestoreTaskRequest, TaskPriority, TaskStatus,
};

use crate::common::{Caller, cell, reason, violated_fields};

#[tokio::test]
async fn the_kanban_view_groups_tasks_by_column_in_position_order() {
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
    let a = alice.task_in(&board, 1, "A").await;
    let b = alice.task_in(&board, 1, "B").await;
    let c = alice.task_in(&board, 1, "C").await;
    alice.task_in(&board, 3, "R1").await;
    alice.task_in(&board, 3, "R2").await;
    // C to the front of To do.
    alice
        .client
        .move_task(alice.req(MoveTaskRequest {
            task_id: c.id.clone(),
            before_task_id: a.id.clone(),
            ..Default::default()
        }))
        .await
        .expect("move");

    let view = alice
        .client
        .list_tasks(alice.req(ListTasksRequest {
            board_id: board.id.clone(),
            view: "kanban".into(),
            page_size: 2,
            ..Default::default()
        }))
        .await
        .expect("kanban")
        .into_inner();
    let names: Vec<String> = view.groups.iter().map(|g| g.column.clone().unwrap_or_default().name).collect();
    assert_eq!(names, ["Backlog", "To do", "In progress", "In review", "Done"]);
    let todo = &view.groups[1];
    let titles: Vec<&str> = todo.tasks.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(titles, ["C", "A"], "page_size tasks per column, by position");
    assert_eq!(todo.total_size, 3);
    assert!(view.groups[3].over_wip_limit && !todo.over_wip_limit);
    let _ = b;

    let missing = alice
        .client
        .list_tasks(alice.req(ListTasksRequest { view: "kanban".into(), ..Default::default() }))
        .await
        .expect_err("no board");
    assert_eq!((missing.code(), violated_fields(&missing)), (Code::InvalidArgument, vec!["board_id".to_string()]));

    // Filters: status any-of.
    let review = alice
        .client
        .list_tasks(alice.req(ListTasksRequest {
            board_id: board.id.clone(),
            status: vec![TaskStatus::InReview as i32],
            priority: vec![TaskPriority::Medium as i32],
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(review.total_size, 2);
    assert!(review.tasks.iter().all(|t| t.status == TaskStatus::InReview as i32));
}

#[tokio::test]
async fn subtasks_nest_ten_levels_deep_and_travel_with_their_parent_to_the_trash() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let root = alice.create("root").await;
    let mut parent = root.clone();
    for level in 1..=9 {
        let sub = alice
            .client
            .create_subtask(alice.req(CreateSubtaskRequest {
                task_id: parent.id.clone(),
                title: format!("level {level}"),
                ..Default::default()
            }))
            .await
            .unwrap_or_else(|s| panic!("level {level}: {s:?}"))
            .into_inner()
            .task
            .expect("task");
        assert_eq!(
            (sub.parent_id.as_str(), sub.depth, sub.board_id.as_str()),
            (parent.id.as_str(), level, root.board_id.as_str())
        );
        parent = sub;
    }
    let too_deep = alice
        .client
        .create_subtask(alice.req(CreateSubtaskRequest {
            task_id: parent.id.clone(),
            title: "ten".into(),
            ..Default::default()
        }))
        .await
        .expect_err("too deep");
    assert_eq!((too_deep.code(), reason(&too_deep).as_str()), (Code::InvalidArgument, "MAX_DEPTH"));

    let top = alice.client.list_tasks(alice.req(ListTasksRequest::default())).await.expect("list").into_inner();
    assert_eq!(top.total_size, 1, "subtasks stay out of the default list");
    let children = alice
        .client
        .list_tasks(alice.req(ListTasksRequest { parent_id: root.id.clone(), ..Default::default() }))
        .await
        .expect("children")
        .into_inner();
    assert_eq!(children.total_size, 1);
    let all = alice
        .client
        .list_tasks(alice.req(ListTasksRequest { include_subtasks: true, ..Default::default() }))
        .await
        .expect("all")
        .into_inner();
    assert_eq!(all.total_size, 10);

    alice.client.delete_task(alice.req(DeleteTaskRequest { task_id: root.id.clone() })).await.expect("delete");
    let all = alice.client.list_tasks(alice.req(ListTasksRequest { include_subtasks: true, ..Default::default() }));
    assert_eq!(all.await.expect("all").into_inner().total_size, 0, "the subtree went with its root");
    let gone = alice.client.get_task(alice.req(GetTaskRequest { task_id: parent.id.clone() })).await;
    assert_eq!(gone.expect_err("gone").code(), Code::NotFound);
    // Restoring the root brings back the whole subtree.
    alice.client.restore_task(alice.req(RestoreTaskRequest { task_id: root.id.clone() })).await.expect("restore");
    let all = alice.client.list_tasks(alice.req(ListTasksRequest { include_subtasks: true, ..Default::default() }));
    assert_eq!(all.await.expect("all").into_inner().total_size, 10);
}
