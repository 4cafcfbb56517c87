//! The router's handler, called directly with constructed events, and the inbox it fills.

use tonic::Code;
use tonic_types::StatusExt;
use trellis_kit::RequestContext;
use trellis_kit::testing::TestCell;
use trellis_proto::trellis::notifications::v1::ListNotificationsRequest;
use trellis_proto::trellis::tasks::v1::TaskCreated;
use uuid::Uuid;

use crate::common::{api_key_token, assigned_event, authed, client, event, handle, inbox, service_db, token_for};

async fn cell() -> TestCell {
    TestCell::start(vec![trellis_notifications::module()]).await
}

#[tokio::test]
async fn an_assignment_lands_in_the_assignees_inbox_and_not_the_actors() {
    let cell = cell().await;
    let db = service_db(&cell).await;
    let (org, alice, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let e = assigned_event(org, alice, bob, "Fix the login page");
    handle(&db, &e).await.expect("handled");

    let bobs = inbox(&cell, bob, org).await;
    assert_eq!(bobs.len(), 1);
    let n = &bobs[0];
    assert_eq!((n.r#type.as_str(), n.reason.as_str()), ("tasks.task.assigned", "assigned"));
    assert!(n.title.contains("TASK-1") && n.title.contains("Fix the login page"), "{}", n.title);
    assert_eq!(n.body, "Please look at it");
    let task_id = e.payload::<trellis_proto::trellis::tasks::v1::TaskAssigned>().expect("payload").task_id;
    assert_eq!(n.url, format!("/tasks/{task_id}"));
    let entity = n.entity.clone().expect("entity");
    assert_eq!((entity.r#type.as_str(), entity.id), ("task", task_id));
    let actor = n.actor.clone().expect("actor");
    assert_eq!((actor.kind.as_str(), actor.id), ("user", alice.to_string()));
    assert!(n.read_at.is_none() && n.seen_at.is_none() && n.created_at.is_some());

    // Alice is the actor (and a watcher): she hears nothing.
    assert!(inbox(&cell, alice, org).await.is_empty());

    // Assigning oneself notifies nobody.
    handle(&db, &assigned_event(org, bob, bob, "Self-assigned")).await.expect("handled");
    assert_eq!(inbox(&cell, bob, org).await.len(), 1);
}

#[tokio::test]
async fn a_redelivered_event_notifies_once() {
    let cell = cell().await;
    let db = service_db(&cell).await;
    let (org, alice, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let e = assigned_event(org, alice, bob, "Once");
    handle(&db, &e).await.expect("first delivery");
    handle(&db, &e).await.expect("redelivery");
    assert_eq!(inbox(&cell, bob, org).await.len(), 1);
}

#[tokio::test]
async fn the_inbox_belongs_to_one_user_in_one_organization() {
    let cell = cell().await;
    let db = service_db(&cell).await;
    let (org, other_org, alice, bob, carol) =
        (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    handle(&db, &assigned_event(org, alice, bob, "In org A")).await.expect("handled");

    assert_eq!(inbox(&cell, bob, org).await.len(), 1);
    assert!(inbox(&cell, carol, org).await.is_empty(), "another user of the org");
    assert!(inbox(&cell, bob, other_org).await.is_empty(), "the same user in another org");

    let mut client = client(&cell).await;
    let status = client
        .list_notifications(authed(ListNotificationsRequest::default(), &api_key_token(&cell, org)))
        .await
        .expect_err("API keys have no inbox");
    assert_eq!(status.code(), Code::PermissionDenied);
    let reason = status.get_error_details().error_info().map(|i| i.reason.clone());
    assert_eq!(reason.as_deref(), Some("USER_TOKEN_REQUIRED"));
    let status = client.list_notifications(ListNotificationsRequest::default()).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn the_inbox_pages_newest_first() {
    let cell = cell().await;
    let db = service_db(&cell).await;
    let (org, alice, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for i in 0..5 {
        handle(&db, &assigned_event(org, alice, bob, &format!("task {i}"))).await.expect("handled");
    }
    let mut client = client(&cell).await;
    let token = token_for(&cell, bob, org);
    let (mut titles, mut page_token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let request = authed(ListNotificationsRequest { page_size: 2, page_token: page_token.clone() }, &token);
        let page = client.list_notifications(request).await.expect("page").into_inner();
        assert_eq!(page.total_size, 5);
        titles.extend(page.notifications.into_iter().map(|n| n.title));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..5).rev().map(|i| format!("You were assigned TASK-1: task {i}")).collect();
    assert_eq!(titles, expected);

    // Another user's token cannot continue Bob's paging.
    let first = client
        .list_notifications(authed(ListNotificationsRequest { page_size: 2, ..Default::default() }, &token))
        .await
        .expect("page")
        .into_inner();
    let carol = token_for(&cell, Uuid::now_v7(), org);
    let request = authed(ListNotificationsRequest { page_size: 2, page_token: first.next_page_token }, &carol);
    assert_eq!(client.list_notifications(request).await.expect_err("foreign token").code(), Code::InvalidArgument);
    let request = authed(ListNotificationsRequest { page_size: -1, ..Default::default() }, &token);
    assert_eq!(client.list_notifications(request).await.expect_err("negative").code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_event_type_without_a_route_fails_and_stores_nothing() {
    let cell = cell().await;
    let db = service_db(&cell).await;
    let (org, alice) = (Uuid::now_v7(), Uuid::now_v7());
    let payload = TaskCreated { task_id: Uuid::now_v7().to_string(), ..Default::default() };
    let e = event(org, &RequestContext::user(alice, org), "tasks.task.created", &payload);
    let err = handle(&db, &e).await.expect_err("no route");
    assert_eq!(err.reason(), "UNROUTED_EVENT");

    // A payload of the wrong type is poison too.
    let e = event(org, &RequestContext::user(alice, org), "tasks.task.assigned", &payload);
    assert!(handle(&db, &e).await.is_err());
}
