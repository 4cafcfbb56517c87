//! Dependencies over gRPC: blocking, cycles, unblocking on completion and deletion.

use prost::Message;
use prost_types::FieldMask;
use tonic::Code;
use trellis_proto::trellis::tasks::v1::{
    AddDependencyRequest, BoardSettings, CompleteTaskRequest, DeleteTaskRequest, DependencyType, GetTaskRequest,
    ListDependenciesRequest, MoveTaskRequest, RemoveDependencyRequest, RestoreTaskRequest, Task, TaskBlocked,
    TaskStatus, TaskUnblocked, UpdateBoardRequest, UpdateDependencyRequest, UpdateTaskRequest,
};

use crate::common::{Caller, cell, metadata, outbox, reason, violated_fields};

fn depends(task: &Task, on: &Task) -> AddDependencyRequest {
    AddDependencyRequest {
        task_id: task.id.clone(),
        depends_on_id: on.id.clone(),
        r#type: DependencyType::FinishToStart as i32,
        lag_days: 2,
    }
}

async fn unblocked_events(cell: &trellis_kit::testing::TestCell) -> Vec<TaskUnblocked> {
    outbox(cell)
        .await
        .into_iter()
        .filter(|e| e.r#type == "tasks.task.unblocked")
        .map(|e| TaskUnblocked::decode(e.payload.expect("payload").value.as_slice()).expect("payload"))
        .collect()
}

async fn blocked_events(cell: &trellis_kit::testing::TestCell) -> Vec<TaskBlocked> {
    outbox(cell)
        .await
        .into_iter()
        .filter(|e| e.r#type == "tasks.task.blocked")
        .map(|e| TaskBlocked::decode(e.payload.expect("payload").value.as_slice()).expect("payload"))
        .collect()
}

#[tokio::test]
async fn a_dependency_blocks_until_the_blocker_completes_and_cycles_are_refused() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let a = alice.create("A").await;
    let b = alice.create("B").await;

    let added = alice.client.add_dependency(alice.req(depends(&b, &a))).await.expect("add").into_inner();
    assert!(added.task.expect("task").is_blocked);
    let dep = added.dependency.expect("dependency");
    assert_eq!((dep.lag_days, dep.satisfied, dep.other_key.as_str()), (2, false, a.key.as_str()));
    let blocked = blocked_events(&cell).await;
    assert_eq!(blocked.len(), 1);
    assert_eq!((blocked[0].task_id.as_str(), blocked[0].blocker_ids.clone()), (b.id.as_str(), vec![a.id.clone()]));

    let cycle = alice.client.add_dependency(alice.req(depends(&a, &b))).await.expect_err("cycle");
    assert_eq!((cycle.code(), reason(&cycle).as_str()), (Code::FailedPrecondition, "DEPENDENCY_CYCLE"));
    assert_eq!(metadata(&cycle, "cycle"), Some(format!("{},{},{}", a.id, b.id, a.id)));
    let twice = alice.client.add_dependency(alice.req(depends(&b, &a))).await.expect_err("exists");
    assert_eq!((twice.code(), reason(&twice).as_str()), (Code::AlreadyExists, "DEPENDENCY_EXISTS"));
    let own = alice.client.add_dependency(alice.req(depends(&b, &b))).await.expect_err("self");
    assert_eq!((own.code(), violated_fields(&own)), (Code::InvalidArgument, vec!["depends_on_id".to_string()]));

    let listed = alice.client.list_dependencies(alice.req(ListDependenciesRequest { task_id: a.id.clone() }));
    let listed = listed.await.expect("list").into_inner();
    assert_eq!((listed.blockers.len(), listed.dependents.len()), (0, 1));

    let done = alice
        .client
        .complete_task(alice.req(CompleteTaskRequest { task_id: a.id.clone(), resolution_notes: "shipped".into() }))
        .await
        .expect("complete")
        .into_inner();
    let unblocked: Vec<String> = done.unblocked_tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(unblocked, std::slice::from_ref(&b.id));
    assert!(!done.unblocked_tasks[0].is_blocked);
    assert_eq!(done.task.expect("task").resolution_notes, "shipped");
    let events = unblocked_events(&cell).await;
    assert_eq!(events.len(), 1, "exactly one task.unblocked");
    assert_eq!((events[0].task_id.as_str(), events[0].blocker_ids.clone()), (b.id.as_str(), vec![a.id.clone()]));

    // Completing again changes nothing and emits nothing.
    let again =
        alice.client.complete_task(alice.req(CompleteTaskRequest { task_id: a.id.clone(), ..Default::default() }));
    assert!(again.await.expect("again").into_inner().unblocked_tasks.is_empty());
    assert_eq!(unblocked_events(&cell).await.len(), 1);
}

#[tokio::test]
async fn concurrent_opposite_inserts_let_exactly_one_through() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let a = alice.create("A").await;
    let b = alice.create("B").await;
    for _ in 0..3 {
        let (mut c1, mut c2) = (alice.client.clone(), alice.client.clone());
        let (r1, r2) =
            tokio::join!(c1.add_dependency(alice.req(depends(&a, &b))), c2.add_dependency(alice.req(depends(&b, &a))));
        let ok = [r1.is_ok(), r2.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(ok, 1, "exactly one direction is accepted");
        // Reset for the next round.
        for (task, result) in [(&a, r1), (&b, r2)] {
            if let Ok(r) = result {
                let id = r.into_inner().dependency.expect("dependency").id;
                alice
                    .client
                    .remove_dependency(
                        alice.req(RemoveDependencyRequest { task_id: task.id.clone(), dependency_id: id }),
                    )
                    .await
                    .expect("remove");
            }
        }
    }
}

#[tokio::test]
async fn enforced_dependencies_refuse_starting_a_blocked_task() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    alice
        .boards
        .update_board(alice.req(UpdateBoardRequest {
            board_id: board.id.clone(),
            settings: Some(BoardSettings { enforce_wip_limits: false, enforce_dependencies: true }),
            update_mask: Some(FieldMask { paths: vec!["settings.enforce_dependencies".into()] }),
            ..Default::default()
        }))
        .await
        .expect("enforce");
    let a = alice.task_in(&board, 1, "A").await;
    let b = alice.task_in(&board, 1, "B").await;
    alice.client.add_dependency(alice.req(depends(&b, &a))).await.expect("add");
    let start =
        || MoveTaskRequest { task_id: b.id.clone(), column_id: board.columns[2].id.clone(), ..Default::default() };
    let refused = alice.client.move_task(alice.req(start())).await.expect_err("blocked");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "DEPENDENCY_UNSATISFIED"));
    assert_eq!(metadata(&refused, "blocker_ids"), Some(a.id.clone()));

    alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: a.id.clone(),
            status: TaskStatus::Cancelled as i32,
            update_mask: Some(FieldMask { paths: vec!["status".into()] }),
            ..Default::default()
        }))
        .await
        .expect("cancel A");
    let moved = alice.client.move_task(alice.req(start())).await.expect("unblocked now").into_inner();
    assert_eq!(moved.task.expect("task").status, TaskStatus::InProgress as i32);
}

#[tokio::test]
async fn trashing_a_blocker_unblocks_and_restoring_it_blocks_again() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let a = alice.create("A").await;
    let b = alice.create("B").await;
    alice.client.add_dependency(alice.req(depends(&b, &a))).await.expect("add");

    let deleted = alice.client.delete_task(alice.req(DeleteTaskRequest { task_id: a.id.clone() })).await;
    assert!(deleted.expect("delete").into_inner().task.expect("task").deleted_at.is_some());
    let gone = alice.client.get_task(alice.req(GetTaskRequest { task_id: a.id.clone() })).await.expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);
    let events = unblocked_events(&cell).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].task_id, b.id);
    let b_now = alice.client.get_task(alice.req(GetTaskRequest { task_id: b.id.clone() })).await.expect("get");
    assert!(!b_now.into_inner().task.expect("task").is_blocked);

    let restored = alice.client.restore_task(alice.req(RestoreTaskRequest { task_id: a.id.clone() })).await;
    assert!(restored.expect("restore").into_inner().task.expect("task").deleted_at.is_none());
    assert_eq!(blocked_events(&cell).await.len(), 2, "blocked on insert, and again on restore");
    let b_now = alice.client.get_task(alice.req(GetTaskRequest { task_id: b.id.clone() })).await.expect("get");
    assert!(b_now.into_inner().task.expect("task").is_blocked);
    let types: Vec<String> = outbox(&cell).await.into_iter().map(|e| e.r#type).collect();
    assert!(types.contains(&"tasks.task.deleted".to_string()) && types.contains(&"tasks.task.restored".to_string()));
}

#[tokio::test]
async fn changing_a_dependency_type_unblocks_or_blocks_and_lag_is_kept_in_range() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let a = alice.create("A").await;
    let b = alice.create("B").await;
    let added = alice.client.add_dependency(alice.req(depends(&b, &a))).await.expect("add").into_inner();
    let dep = added.dependency.expect("dependency");
    let update = |paths: &[&str], kind: DependencyType, lag_days: i32| UpdateDependencyRequest {
        task_id: b.id.clone(),
        dependency_id: dep.id.clone(),
        r#type: kind as i32,
        lag_days,
        update_mask: Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
    };

    // Finish-to-finish does not hold back the start: B is unblocked, once.
    let changed = alice.client.update_dependency(alice.req(update(&["type"], DependencyType::FinishToFinish, 0))).await;
    let changed = changed.expect("to FF").into_inner();
    assert!(!changed.task.expect("task").is_blocked);
    let ff = changed.dependency.expect("dependency");
    assert_eq!((ff.r#type(), ff.lag_days), (DependencyType::FinishToFinish, 2), "the lag is kept");
    let unblocked = unblocked_events(&cell).await;
    assert_eq!(unblocked.iter().map(|e| e.task_id.as_str()).collect::<Vec<_>>(), [b.id.as_str()]);

    // Lag alone; then back to finish-to-start blocks again.
    let lag = alice.client.update_dependency(alice.req(update(&["lag_days"], DependencyType::Unspecified, -3))).await;
    assert_eq!(lag.expect("lag").into_inner().dependency.expect("dependency").lag_days, -3);
    let back = alice.client.update_dependency(alice.req(update(&["type"], DependencyType::FinishToStart, 0))).await;
    assert!(back.expect("to FS").into_inner().task.expect("task").is_blocked);
    assert_eq!(blocked_events(&cell).await.len(), 2, "blocked on add and again on the change back");

    let bad = alice
        .client
        .update_dependency(alice.req(update(&["type", "lag_days", "depends_on_id"], DependencyType::Unspecified, 400)))
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&bad), ["type", "lag_days", "update_mask"]);
    let mut unknown = update(&["lag_days"], DependencyType::Unspecified, 1);
    unknown.dependency_id = uuid::Uuid::now_v7().to_string();
    let status = alice.client.update_dependency(alice.req(unknown)).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
}
