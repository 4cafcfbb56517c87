//! CreateTask, GetTask, ListTasks and AssignTask over gRPC.

use std::collections::HashSet;

use tonic::Code;
use trellis_proto::trellis::tasks::v1::{
    AssignTaskRequest, CreateTaskRequest, GetTaskRequest, ListTasksRequest, TaskAssigned, TaskCreated, TaskPriority,
    TaskStatus, TaskUpdated, WatchReason,
};
use uuid::Uuid;

use crate::common::{Caller, authed, cell, metadata, outbox, reason, violated_fields};

#[tokio::test]
async fn the_first_tasks_of_an_org_go_to_its_default_board_in_the_todo_column() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let first = alice.create("  Write the spec  ").await;
    let second = alice.create("Review the spec").await;

    assert_eq!(first.title, "Write the spec", "titles are trimmed");
    assert_eq!((first.key.as_str(), second.key.as_str()), ("TASK-1", "TASK-2"));
    assert_eq!((first.number, second.number), (1, 2));
    assert_eq!(first.board_id, second.board_id);
    assert_eq!(first.column_id, second.column_id);
    assert_eq!(first.status, TaskStatus::Todo as i32);
    assert_eq!(first.priority, TaskPriority::Medium as i32);
    assert!(first.position.as_bytes() < second.position.as_bytes(), "appended at the end of the column");
    assert_eq!((first.created_by.clone(), first.version, first.watcher_count), (alice.user.to_string(), 1, 1));

    // The default board has the five default columns; the task sits in "To do".
    let pool = cell.owner_pool().await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "select c.name, c.status from tasks.board_columns c join tasks.boards b on b.id = c.board_id \
         where b.id = $1::uuid and b.is_default and b.key = 'TASK' order by c.position",
    )
    .bind(&first.board_id)
    .fetch_all(&pool)
    .await
    .expect("columns");
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Backlog", "To do", "In progress", "In review", "Done"]);
    let todo: String = sqlx::query_scalar("select name from tasks.board_columns where id = $1::uuid")
        .bind(&first.column_id)
        .fetch_one(&pool)
        .await
        .expect("column");
    assert_eq!(todo, "To do");
}

#[tokio::test]
async fn concurrent_first_tasks_share_one_default_board_and_distinct_numbers() {
    let cell = cell().await;
    let alice = Caller::new(&cell).await;
    let creates = (0..6).map(|i| {
        let mut caller = alice.clone();
        async move { caller.create(&format!("task {i}")).await }
    });
    let tasks = futures::future::join_all(creates).await;
    let boards: HashSet<&str> = tasks.iter().map(|t| t.board_id.as_str()).collect();
    assert_eq!(boards.len(), 1, "one default board");
    let mut numbers: Vec<i32> = tasks.iter().map(|t| t.number).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn a_status_or_a_column_decides_where_a_task_goes() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let request = alice.req(CreateTaskRequest {
        title: "Reviewed".to_string(),
        status: TaskStatus::InReview as i32,
        priority: TaskPriority::Urgent as i32,
        description: "Some **markdown**".to_string(),
        ..Default::default()
    });
    let reviewed = alice.client.create_task(request).await.expect("create").into_inner().task.expect("task");
    assert_eq!(reviewed.status, TaskStatus::InReview as i32);
    assert_eq!(reviewed.priority, TaskPriority::Urgent as i32);
    assert_eq!(reviewed.description, "Some **markdown**");

    // Into that same column by id: the column's status applies.
    let request = alice.req(CreateTaskRequest {
        title: "Also reviewed".to_string(),
        board_id: reviewed.board_id.clone(),
        column_id: reviewed.column_id.clone(),
        ..Default::default()
    });
    let also = alice.client.create_task(request).await.expect("create").into_inner().task.expect("task");
    assert_eq!((also.column_id.as_str(), also.status), (reviewed.column_id.as_str(), TaskStatus::InReview as i32));

    // Created done or in progress: the lifecycle times are set (done needs completed_at).
    for (status, title) in [(TaskStatus::Done, "Already done"), (TaskStatus::InProgress, "Under way")] {
        let request =
            alice.req(CreateTaskRequest { title: title.to_string(), status: status as i32, ..Default::default() });
        let task = alice.client.create_task(request).await.expect(title).into_inner().task.expect("task");
        assert_eq!(task.status, status as i32);
        assert_eq!(task.completed_at.is_some(), status == TaskStatus::Done, "{title}");
        assert_eq!(task.started_at.is_some(), status == TaskStatus::InProgress, "{title}");
    }

    // A column whose status contradicts the requested one is rejected.
    let request = alice.req(CreateTaskRequest {
        title: "Contradiction".to_string(),
        column_id: reviewed.column_id.clone(),
        status: TaskStatus::Done as i32,
        ..Default::default()
    });
    let status = alice.client.create_task(request).await.expect_err("mismatch");
    assert_eq!((status.code(), violated_fields(&status)), (Code::InvalidArgument, vec!["status".to_string()]));
}

#[tokio::test]
async fn invalid_input_is_rejected_with_field_violations_and_writes_nothing() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let cases = [
        (CreateTaskRequest { title: "   ".to_string(), ..Default::default() }, "title"),
        (CreateTaskRequest { title: "x".repeat(501), ..Default::default() }, "title"),
        (CreateTaskRequest { title: "bell\u{7}".to_string(), ..Default::default() }, "title"),
        (
            CreateTaskRequest { title: "ok".to_string(), assignee_id: "bob".to_string(), ..Default::default() },
            "assignee_id",
        ),
        (CreateTaskRequest { title: "ok".to_string(), board_id: "nope".to_string(), ..Default::default() }, "board_id"),
        (CreateTaskRequest { title: "ok".to_string(), status: 42, ..Default::default() }, "status"),
        (
            CreateTaskRequest { title: "ok".to_string(), column_id: Uuid::now_v7().to_string(), ..Default::default() },
            "column_id",
        ),
    ];
    for (request, field) in cases {
        let status = alice.client.create_task(alice.req(request)).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(reason(&status), "VALIDATION_ERROR");
        assert_eq!(violated_fields(&status), [field]);
    }
    // 500 characters is the limit, not an error.
    let long = alice.create(&"é".repeat(500)).await;
    assert_eq!(long.title.chars().count(), 500);

    let request = alice.req(CreateTaskRequest {
        title: "ok".to_string(),
        board_id: Uuid::now_v7().to_string(),
        ..Default::default()
    });
    let status = alice.client.create_task(request).await.expect_err("unknown board");
    assert_eq!((status.code(), reason(&status)), (Code::NotFound, "NOT_FOUND".to_string()));

    // Only the one valid task was written, with one event.
    let pool = cell.owner_pool().await;
    let count: i64 = sqlx::query_scalar("select count(*) from tasks.tasks").fetch_one(&pool).await.expect("count");
    assert_eq!(count, 1);
    assert_eq!(outbox(&cell).await.len(), 1);
}

#[tokio::test]
async fn a_task_of_another_organization_does_not_exist_for_the_caller() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut carol = Caller::new(&cell).await;
    let task = alice.create("Secret plan").await;

    let status = carol.client.get_task(carol.req(GetTaskRequest { task_id: task.id.clone() })).await.expect_err("404");
    assert_eq!((status.code(), reason(&status)), (Code::NotFound, "NOT_FOUND".to_string()));
    assert_eq!(metadata(&status, "resource").as_deref(), Some("task"));
    let missing = carol.client.get_task(carol.req(GetTaskRequest { task_id: Uuid::now_v7().to_string() })).await;
    let missing = missing.expect_err("404");
    assert_eq!((missing.code(), missing.message()), (status.code(), status.message()), "exactly like a missing id");
    let request = carol.req(AssignTaskRequest {
        task_id: task.id.clone(),
        assignee_id: carol.user.to_string(),
        note: String::new(),
    });
    let status = carol.client.assign_task(request).await.expect_err("404");
    assert_eq!(status.code(), Code::NotFound);
    let list = carol.client.list_tasks(carol.req(ListTasksRequest::default())).await.expect("list").into_inner();
    assert!(list.tasks.is_empty());
    assert_eq!(list.total_size, 0);

    // Carol's own first task starts her own numbering on her own board.
    let mine = carol.create("Mine").await;
    assert_eq!(mine.key, "TASK-1");
    assert_ne!(mine.board_id, task.board_id);

    let got = alice.client.get_task(alice.req(GetTaskRequest { task_id: task.id.clone() })).await.expect("get");
    let got = got.into_inner();
    assert_eq!(got.task.map(|t| t.title), Some("Secret plan".to_string()));
    let watchers: Vec<(String, i32)> = got.watchers.iter().map(|w| (w.user_id.clone(), w.reason)).collect();
    assert_eq!(watchers, [(alice.user.to_string(), WatchReason::Creator as i32)]);

    let status =
        alice.client.get_task(alice.req(GetTaskRequest { task_id: "x".to_string() })).await.expect_err("bad id");
    assert_eq!(violated_fields(&status), ["task_id"]);
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let status = alice.client.list_tasks(ListTasksRequest::default()).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = alice.client.list_tasks(authed(ListTasksRequest::default(), "not-a-jwt")).await.expect_err("garbage");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn lists_page_newest_first_with_tokens_bound_to_their_filters() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(alice.create(&format!("task {i}")).await.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = alice.req(ListTasksRequest { page_size: 2, page_token: token.clone(), ..Default::default() });
        let page = alice.client.list_tasks(request).await.expect("page").into_inner();
        assert_eq!(page.total_size, 5);
        assert!(page.tasks.len() <= 2);
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "every task once, newest first");

    // A token used with other filters, or altered, is rejected.
    let request = alice.req(ListTasksRequest { page_size: 2, ..Default::default() });
    let first = alice.client.list_tasks(request).await.expect("page").into_inner();
    let board_id = Uuid::now_v7().to_string();
    let request =
        alice.req(ListTasksRequest { page_token: first.next_page_token.clone(), board_id, ..Default::default() });
    let status = alice.client.list_tasks(request).await.expect_err("foreign token");
    assert_eq!((status.code(), reason(&status)), (Code::InvalidArgument, "INVALID_PAGE_TOKEN".to_string()));
    let request =
        alice.req(ListTasksRequest { page_token: format!("x{}", first.next_page_token), ..Default::default() });
    assert_eq!(alice.client.list_tasks(request).await.expect_err("altered").code(), Code::InvalidArgument);
    let request = alice.req(ListTasksRequest { page_size: -1, ..Default::default() });
    let status = alice.client.list_tasks(request).await.expect_err("negative");
    assert_eq!(violated_fields(&status), ["page_size"]);

    // Filters: the board and the assignee ("me" is the caller).
    let one = alice.create("mine").await;
    let request = alice.req(AssignTaskRequest {
        task_id: one.id.clone(),
        assignee_id: alice.user.to_string(),
        note: String::new(),
    });
    alice.client.assign_task(request).await.expect("assign");
    let request = alice.req(ListTasksRequest { assignee_id: "me".to_string(), ..Default::default() });
    let mine = alice.client.list_tasks(request).await.expect("mine").into_inner();
    assert_eq!((mine.total_size, mine.tasks[0].id.clone()), (1, one.id.clone()));
    let request = alice.req(ListTasksRequest { board_id: one.board_id.clone(), ..Default::default() });
    assert_eq!(alice.client.list_tasks(request).await.expect("board").into_inner().total_size, 6);
}

#[tokio::test]
async fn assigning_changes_the_assignee_adds_a_watcher_and_publishes_through_the_outbox() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let bob = Uuid::now_v7();
    let task = alice.create("Fix the login page").await;

    let request = alice.req(AssignTaskRequest {
        task_id: task.id.clone(),
        assignee_id: bob.to_string(),
        note: " before Friday ".to_string(),
    });
    let assigned = alice.client.assign_task(request).await.expect("assign").into_inner().task.expect("task");
    assert_eq!(assigned.assignee_id, bob.to_string());
    assert_eq!((assigned.version, assigned.watcher_count), (2, 2));

    // The same assignment again changes nothing and publishes nothing.
    let request =
        alice.req(AssignTaskRequest { task_id: task.id.clone(), assignee_id: bob.to_string(), note: String::new() });
    let again = alice.client.assign_task(request).await.expect("again").into_inner().task.expect("task");
    assert_eq!(again.version, 2);

    // Unassigning is an update.
    let request =
        alice.req(AssignTaskRequest { task_id: task.id.clone(), assignee_id: String::new(), note: String::new() });
    let unassigned = alice.client.assign_task(request).await.expect("unassign").into_inner().task.expect("task");
    assert_eq!((unassigned.assignee_id.as_str(), unassigned.version), ("", 3));

    let events = outbox(&cell).await;
    let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["tasks.task.created", "tasks.task.assigned", "tasks.task.updated"]);
    for e in &events {
        assert_eq!(e.org_id, alice.org.to_string());
        let actor = e.actor.clone().unwrap_or_default();
        assert_eq!((actor.kind.as_str(), actor.id), ("user", alice.user.to_string()));
    }
    let created: TaskCreated = events[0].payload.as_ref().and_then(|p| p.to_msg().ok()).expect("TaskCreated");
    assert_eq!((created.key.as_str(), created.creator_id.clone()), ("TASK-1", alice.user.to_string()));
    assert_eq!(created.watcher_ids, [alice.user.to_string()]);
    let event: TaskAssigned = events[1].payload.as_ref().and_then(|p| p.to_msg().ok()).expect("TaskAssigned");
    assert_eq!(event.task_id, task.id);
    assert_eq!((event.assignee_id.clone(), event.previous_assignee_id.as_str()), (bob.to_string(), ""));
    assert_eq!(
        (event.key.as_str(), event.title.as_str(), event.note.as_str()),
        ("TASK-1", "Fix the login page", "before Friday")
    );
    let mut watchers = event.watcher_ids.clone();
    watchers.sort();
    let mut expected = vec![alice.user.to_string(), bob.to_string()];
    expected.sort();
    assert_eq!(watchers, expected);
    let updated: TaskUpdated = events[2].payload.as_ref().and_then(|p| p.to_msg().ok()).expect("TaskUpdated");
    assert_eq!(updated.changed_fields, ["assignee_id"]);

    let request = alice.req(AssignTaskRequest {
        task_id: task.id.clone(),
        assignee_id: "bob".to_string(),
        note: "n".repeat(1001),
    });
    let status = alice.client.assign_task(request).await.expect_err("invalid");
    assert_eq!(violated_fields(&status), ["assignee_id", "note"]);
    let request = alice.req(AssignTaskRequest {
        task_id: Uuid::now_v7().to_string(),
        assignee_id: bob.to_string(),
        note: String::new(),
    });
    let status = alice.client.assign_task(request).await.expect_err("unknown task");
    assert_eq!((status.code(), reason(&status)), (Code::NotFound, "NOT_FOUND".to_string()));
}

#[tokio::test]
async fn creating_with_an_assignee_publishes_created_then_assigned() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let bob = Uuid::now_v7();
    let request = alice.req(CreateTaskRequest {
        title: "For Bob".to_string(),
        assignee_id: bob.to_string(),
        ..Default::default()
    });
    let task = alice.client.create_task(request).await.expect("create").into_inner().task.expect("task");
    assert_eq!((task.assignee_id, task.watcher_count), (bob.to_string(), 2));
    let events = outbox(&cell).await;
    let types: Vec<&str> = events.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["tasks.task.created", "tasks.task.assigned"]);
    let event: TaskAssigned = events[1].payload.as_ref().and_then(|p| p.to_msg().ok()).expect("TaskAssigned");
    assert_eq!(event.assignee_id, bob.to_string());
}

#[tokio::test]
async fn watchers_are_added_and_removed_idempotently() {
    use trellis_proto::trellis::tasks::v1::{AddWatcherRequest, ListWatchersRequest, RemoveWatcherRequest};
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let task = alice.create("watched").await;
    let bob = Uuid::now_v7();
    let add = |user: &str| AddWatcherRequest { task_id: task.id.clone(), user_id: user.to_string() };
    for _ in 0..2 {
        let watchers = alice.client.add_watcher(alice.req(add(&bob.to_string()))).await.expect("add").into_inner();
        let ids: Vec<String> = watchers.watchers.iter().map(|w| w.user_id.clone()).collect();
        assert_eq!(ids, [alice.user.to_string(), bob.to_string()], "the creator first, then Bob, once");
        assert_eq!(watchers.watchers[1].reason, WatchReason::Manual as i32);
    }
    for _ in 0..2 {
        let request = RemoveWatcherRequest { task_id: task.id.clone(), user_id: alice.user.to_string() };
        let left = alice.client.remove_watcher(alice.req(request)).await.expect("remove").into_inner();
        let ids: Vec<String> = left.watchers.iter().map(|w| w.user_id.clone()).collect();
        assert_eq!(ids, [bob.to_string()]);
    }
    let listed = alice.client.list_watchers(alice.req(ListWatchersRequest { task_id: task.id.clone() })).await;
    let listed: Vec<(String, i32)> =
        listed.expect("list").into_inner().watchers.into_iter().map(|w| (w.user_id, w.reason)).collect();
    assert_eq!(listed, [(bob.to_string(), WatchReason::Manual as i32)]);

    let mallory = Caller::new(&cell).await;
    let mut client = mallory.client.clone();
    let hidden = client.add_watcher(mallory.req(add(""))).await.expect_err("other org");
    assert_eq!(hidden.code(), Code::NotFound);
    let hidden = client.list_watchers(mallory.req(ListWatchersRequest { task_id: task.id.clone() })).await;
    assert_eq!(hidden.expect_err("other org").code(), Code::NotFound);
    let bad = client.list_watchers(mallory.req(ListWatchersRequest { task_id: "nope".into() })).await;
    assert_eq!(bad.expect_err("bad id").code(), Code::InvalidArgument);
}
