//! The task trash: listing and purging, over gRPC.

use tonic::Code;
use trellis_proto::trellis::tasks::v1::collab_service_client::CollabServiceClient;
use trellis_proto::trellis::tasks::v1::{
    CreateCommentRequest, CreateSubtaskRequest, DeleteTaskRequest, ListCommentsRequest, ListTrashedTasksRequest,
    PurgeTaskRequest, RestoreTaskRequest, TagTaskRequest,
};

use crate::common::{Caller, authed, cell, event_types};

#[tokio::test]
async fn trashed_tasks_are_listed_and_purged_with_their_subtasks_and_collab_rows() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut collab = CollabServiceClient::new(cell.channel("tasks").await);
    let parent = alice.create("Parent").await;
    let child = alice
        .client
        .create_subtask(alice.req(CreateSubtaskRequest {
            task_id: parent.id.clone(),
            title: "Child".into(),
            ..Default::default()
        }))
        .await
        .expect("subtask")
        .into_inner()
        .task
        .expect("subtask");
    let keep = alice.create("Keep").await;
    collab
        .create_comment(alice.req(CreateCommentRequest {
            task_id: parent.id.clone(),
            body: "note".into(),
            parent_id: String::new(),
        }))
        .await
        .expect("comment");
    collab
        .tag_task(alice.req(TagTaskRequest { task_id: child.id.clone(), name: "x".into(), tag_id: String::new() }))
        .await
        .expect("tag");
    alice.client.delete_task(alice.req(DeleteTaskRequest { task_id: parent.id.clone() })).await.expect("delete");
    alice.client.delete_task(alice.req(DeleteTaskRequest { task_id: keep.id.clone() })).await.expect("delete keep");

    let trash = alice
        .client
        .list_trashed_tasks(alice.req(ListTrashedTasksRequest { page_size: 2, ..Default::default() }))
        .await
        .expect("trash")
        .into_inner();
    assert_eq!(trash.tasks.len(), 2);
    assert!(trash.tasks.iter().all(|t| t.deleted_at.is_some()));
    assert_eq!(trash.tasks[0].title, "Keep", "most recently deleted first");
    let rest = alice
        .client
        .list_trashed_tasks(alice.req(ListTrashedTasksRequest {
            page_size: 2,
            page_token: trash.next_page_token.clone(),
            ..Default::default()
        }))
        .await
        .expect("next page")
        .into_inner();
    assert_eq!((rest.tasks.len(), rest.next_page_token.as_str()), (1, ""));

    // A member who is not an owner or admin may not purge; a live task is not in the trash.
    let member = authed(
        PurgeTaskRequest { task_id: parent.id.clone() },
        &cell.keys.user_token(&cell.config, alice.user, alice.org, &["member"]),
    );
    assert_eq!(alice.client.purge_task(member).await.expect_err("member").code(), Code::PermissionDenied);
    let live = alice.create("Live").await;
    let status =
        alice.client.purge_task(alice.req(PurgeTaskRequest { task_id: live.id.clone() })).await.expect_err("live");
    assert_eq!(status.code(), Code::NotFound);

    let purged = alice
        .client
        .purge_task(alice.req(PurgeTaskRequest { task_id: parent.id.clone() }))
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(purged.purged_count, 2, "the subtask goes with it");
    assert!(event_types(&cell).await.contains(&"tasks.task.purged".to_string()));
    let status = alice
        .client
        .restore_task(alice.req(RestoreTaskRequest { task_id: parent.id.clone() }))
        .await
        .expect_err("gone for good");
    assert_eq!(status.code(), Code::NotFound);
    let status = collab
        .list_comments(alice.req(ListCommentsRequest { task_id: parent.id.clone(), ..Default::default() }))
        .await
        .expect_err("comments gone");
    assert_eq!(status.code(), Code::NotFound);
    let pool = cell.owner_pool().await;
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from tasks.comments where entity_id = $1) + \
         (select count(*) from tasks.entity_tags where entity_id = $2) + \
         (select count(*) from tasks.activity where entity_id = any(array[$1, $2]))",
    )
    .bind(uuid::Uuid::parse_str(&parent.id).expect("id"))
    .bind(uuid::Uuid::parse_str(&child.id).expect("id"))
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(left, 0, "collab rows of purged tasks are deleted");
    let trash = alice
        .client
        .list_trashed_tasks(alice.req(ListTrashedTasksRequest::default()))
        .await
        .expect("trash")
        .into_inner();
    assert_eq!(trash.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(), ["Keep"]);
}
