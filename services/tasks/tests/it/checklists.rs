//! Checklists over gRPC: completion events on every incomplete → complete change.

use prost_types::FieldMask;
use tonic::Code;
use trellis_proto::trellis::tasks::v1::checklist_service_client::ChecklistServiceClient;
use trellis_proto::trellis::tasks::v1::{
    CreateChecklistItemRequest, CreateChecklistRequest, DeleteChecklistItemRequest, UpdateChecklistItemRequest,
    UpdateChecklistRequest,
};

use crate::common::{Caller, cell, event_types, reason};

fn tick(checklist_id: &str, item_id: &str, done: bool) -> UpdateChecklistItemRequest {
    UpdateChecklistItemRequest {
        checklist_id: checklist_id.to_string(),
        item_id: item_id.to_string(),
        done,
        update_mask: Some(FieldMask { paths: vec!["done".into()] }),
        ..Default::default()
    }
}

async fn completions(cell: &trellis_kit::testing::TestCell) -> usize {
    event_types(cell).await.iter().filter(|t| *t == "tasks.task.checklist_completed").count()
}

#[tokio::test]
async fn ticking_the_last_item_completes_a_checklist_each_time_it_becomes_complete() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut checklists = ChecklistServiceClient::new(cell.channel("tasks").await);
    let task = alice.create("release").await;
    let created = checklists
        .create_checklist(alice.req(CreateChecklistRequest {
            task_id: task.id.clone(),
            title: "Release".into(),
            items: vec!["Tag".into(), "Announce".into()],
        }))
        .await
        .expect("create")
        .into_inner()
        .checklist
        .expect("checklist");
    let titles: Vec<&str> = created.items.iter().map(|i| i.title.as_str()).collect();
    assert_eq!(titles, ["Tag", "Announce"]);
    let (id, first, second) = (created.id.clone(), created.items[0].id.clone(), created.items[1].id.clone());

    let half = checklists.update_checklist_item(alice.req(tick(&id, &first, true))).await.expect("tick 1");
    let half = half.into_inner().checklist.expect("checklist");
    assert!(!half.complete && half.items[0].done && half.items[0].done_by == alice.user.to_string());
    assert_eq!(completions(&cell).await, 0);
    let full = checklists.update_checklist_item(alice.req(tick(&id, &second, true))).await.expect("tick 2");
    assert!(full.into_inner().checklist.expect("checklist").complete);
    assert_eq!(completions(&cell).await, 1, "exactly one event");
    // Ticking a ticked item again changes nothing.
    checklists.update_checklist_item(alice.req(tick(&id, &second, true))).await.expect("again");
    assert_eq!(completions(&cell).await, 1);
    // Unticking emits nothing; re-ticking emits again.
    checklists.update_checklist_item(alice.req(tick(&id, &second, false))).await.expect("untick");
    assert_eq!(completions(&cell).await, 1);
    checklists.update_checklist_item(alice.req(tick(&id, &second, true))).await.expect("retick");
    assert_eq!(completions(&cell).await, 2);

    // Adding an item reopens silently; deleting that open item completes it again.
    let added = checklists
        .create_checklist_item(alice.req(CreateChecklistItemRequest { checklist_id: id.clone(), title: "Blog".into() }))
        .await
        .expect("add")
        .into_inner()
        .checklist
        .expect("checklist");
    assert!(!added.complete);
    assert_eq!(completions(&cell).await, 2);
    let blog = added.items[2].id.clone();
    checklists
        .delete_checklist_item(
            alice.req(DeleteChecklistItemRequest { checklist_id: id.clone(), item_id: blog.clone() }),
        )
        .await
        .expect("delete");
    assert_eq!(completions(&cell).await, 3);

    let gone = checklists
        .delete_checklist_item(alice.req(DeleteChecklistItemRequest { checklist_id: id.clone(), item_id: blog }))
        .await
        .expect_err("gone");
    assert_eq!((gone.code(), reason(&gone).as_str()), (Code::NotFound, "NOT_FOUND"));

    // Another organization does not see the checklist.
    let mallory = Caller::new(&cell).await;
    let hidden = checklists.update_checklist_item(mallory.req(tick(&id, &first, false))).await.expect_err("hidden");
    assert_eq!(hidden.code(), Code::NotFound);
}

#[tokio::test]
async fn a_checklist_is_renamed_and_moved_among_the_tasks_checklists() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut checklists = ChecklistServiceClient::new(cell.channel("tasks").await);
    let task = alice.create("launch").await;
    let mut made = Vec::new();
    for title in ["A", "B", "C"] {
        let request = CreateChecklistRequest { task_id: task.id.clone(), title: title.into(), items: vec!["x".into()] };
        let created = checklists.create_checklist(alice.req(request)).await.expect("create").into_inner();
        made.push(created.checklist.expect("checklist"));
    }
    let (a, b, c) = (made[0].clone(), made[1].clone(), made[2].clone());
    assert!(a.position < b.position && b.position < c.position);
    let update = |id: &str, paths: &[&str]| UpdateChecklistRequest {
        checklist_id: id.into(),
        update_mask: Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
        ..Default::default()
    };

    // C right after A: A < C < B, items and title kept.
    let mut request = update(&c.id, &["after_checklist_id"]);
    request.after_checklist_id = a.id.clone();
    let moved = checklists.update_checklist(alice.req(request)).await.expect("move").into_inner();
    let moved = moved.checklist.expect("checklist");
    assert!(a.position < moved.position && moved.position < b.position, "{moved:?}");
    assert_eq!((moved.title.as_str(), moved.items.len()), ("C", 1));

    // A before nothing named and after nothing named: last; then renamed alone.
    let last = checklists.update_checklist(alice.req(update(&a.id, &["before_checklist_id"]))).await.expect("last");
    assert!(last.into_inner().checklist.expect("checklist").position > b.position);
    let mut request = update(&b.id, &["title"]);
    request.title = " Go-live ".into();
    let renamed = checklists.update_checklist(alice.req(request)).await.expect("rename").into_inner();
    let renamed = renamed.checklist.expect("checklist");
    assert_eq!((renamed.title.as_str(), renamed.position.as_str()), ("Go-live", b.position.as_str()));

    // Neighbours must be other checklists of the task, and adjacent when both are named.
    let other = alice.create("other").await;
    let request = CreateChecklistRequest { task_id: other.id.clone(), title: "Z".into(), items: vec![] };
    let foreign = checklists.create_checklist(alice.req(request)).await.expect("create").into_inner();
    let mut request = update(&b.id, &["after_checklist_id"]);
    request.after_checklist_id = foreign.checklist.expect("checklist").id;
    let status = checklists.update_checklist(alice.req(request)).await.expect_err("foreign");
    assert_eq!(
        (status.code(), crate::common::violated_fields(&status)),
        (Code::InvalidArgument, vec!["after_checklist_id".to_string()])
    );
    let mut request = update(&b.id, &["after_checklist_id", "before_checklist_id"]);
    (request.after_checklist_id, request.before_checklist_id) = (a.id.clone(), c.id.clone());
    let status = checklists.update_checklist(alice.req(request)).await.expect_err("not adjacent");
    assert_eq!(crate::common::violated_fields(&status), ["before_checklist_id"]);
    let status = checklists.update_checklist(alice.req(update(&b.id, &["items"]))).await.expect_err("mask");
    assert_eq!(crate::common::violated_fields(&status), ["update_mask"]);

    let stranger = Caller::new(&cell).await;
    let mut request = update(&b.id, &["title"]);
    request.title = "mine".into();
    let status = checklists.update_checklist(stranger.req(request)).await.expect_err("other org");
    assert_eq!(status.code(), Code::NotFound);
}
