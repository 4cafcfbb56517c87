//! Comments, tags, links and activity of tasks (kit::collab), over gRPC.

use prost::Message;
use prost_types::FieldMask;
use tonic::Code;
use tonic::transport::Channel;
use trellis_kit::testing::TestCell;
use trellis_proto::trellis::common::v1::{EntityRef, LinkChanged};
use trellis_proto::trellis::tasks::v1::collab_service_client::CollabServiceClient;
use trellis_proto::trellis::tasks::v1::{
    CommentChanged, CompleteTaskRequest, CreateCommentRequest, CreateLinkRequest, CreateTagRequest,
    DeleteCommentRequest, DeleteLinkRequest, DeleteTagRequest, GetTaskRequest, ListCommentsRequest, ListLinksRequest,
    ListTaskActivityRequest, ListTasksRequest, TagTaskRequest, UntagTaskRequest, UpdateCommentRequest,
    UpdateTagRequest, UpdateTaskRequest,
};
use uuid::Uuid;

use crate::common::{Caller, cell, outbox, reason, violated_fields};

async fn collab(cell: &TestCell) -> CollabServiceClient<Channel> {
    CollabServiceClient::new(cell.channel("tasks").await)
}

#[tokio::test]
async fn comments_mention_watch_thread_and_publish() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let bob = Caller::in_org(&cell, alice.org).await;
    let carol = Uuid::now_v7();
    let mut api = collab(&cell).await;
    let task = alice.create("Write the release notes").await;

    let body = format!("@[Carol](user:{carol}) please review");
    let root = api
        .create_comment(alice.req(CreateCommentRequest { task_id: task.id.clone(), body, parent_id: String::new() }))
        .await
        .expect("comment")
        .into_inner()
        .comment
        .expect("comment");
    assert_eq!(root.mentioned_user_ids, [carol.to_string()]);
    let reply = api
        .create_comment(bob.req(CreateCommentRequest {
            task_id: task.id.clone(),
            body: "On it".into(),
            parent_id: root.id.clone(),
        }))
        .await
        .expect("reply")
        .into_inner()
        .comment
        .expect("reply");
    let nested = api
        .create_comment(alice.req(CreateCommentRequest {
            task_id: task.id.clone(),
            body: "Thanks".into(),
            parent_id: reply.id.clone(),
        }))
        .await
        .expect("reply to a reply")
        .into_inner()
        .comment
        .expect("nested");
    assert_eq!(nested.parent_id, root.id, "a reply to a reply attaches to the root");

    let detail = alice.client.get_task(alice.req(GetTaskRequest { task_id: task.id.clone() })).await.expect("get");
    let mut watchers: Vec<String> = detail.into_inner().watchers.into_iter().map(|w| w.user_id).collect();
    watchers.sort();
    let mut expected = vec![alice.user.to_string(), bob.user.to_string(), carol.to_string()];
    expected.sort();
    assert_eq!(watchers, expected, "creator, commenter and mentioned user watch");

    let events: Vec<CommentChanged> = outbox(&cell)
        .await
        .into_iter()
        .filter(|e| e.r#type == "tasks.comment.created")
        .map(|e| CommentChanged::decode(e.payload.expect("payload").value.as_slice()).expect("payload"))
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(
        (events[0].mentioned_user_ids.clone(), events[0].key.clone()),
        (vec![carol.to_string()], task.key.clone())
    );
    assert_eq!(events[2].participant_ids, [bob.user.to_string()], "earlier authors of the thread but the author");

    // Only the author edits; a body that is too long names the field.
    let status = api
        .update_comment(bob.req(UpdateCommentRequest {
            task_id: task.id.clone(),
            comment_id: root.id.clone(),
            body: "hijack".into(),
        }))
        .await
        .expect_err("not the author");
    assert_eq!((status.code(), reason(&status)), (Code::PermissionDenied, "NOT_COMMENT_AUTHOR".to_string()));
    let status = api
        .create_comment(alice.req(CreateCommentRequest {
            task_id: task.id.clone(),
            body: "x".repeat(10_001),
            parent_id: String::new(),
        }))
        .await
        .expect_err("too long");
    assert_eq!(violated_fields(&status), ["body"]);
    let edited = api
        .update_comment(alice.req(UpdateCommentRequest {
            task_id: task.id.clone(),
            comment_id: root.id.clone(),
            body: "Please review the changelog".into(),
        }))
        .await
        .expect("edit")
        .into_inner()
        .comment
        .expect("edited");
    assert!(edited.edited_at.is_some());

    // A deleted comment with replies stays as [deleted]; search finds bodies.
    api.delete_comment(alice.req(DeleteCommentRequest { task_id: task.id.clone(), comment_id: root.id.clone() }))
        .await
        .expect("delete");
    let list = api
        .list_comments(alice.req(ListCommentsRequest { task_id: task.id.clone(), ..Default::default() }))
        .await
        .expect("list")
        .into_inner();
    let bodies: Vec<&str> = list.comments.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(bodies, ["[deleted]", "On it", "Thanks"]);
    let found = api
        .list_comments(alice.req(ListCommentsRequest {
            task_id: task.id.clone(),
            q: "thanks".into(),
            ..Default::default()
        }))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.comments.len(), 1);
    let paged = api
        .list_comments(alice.req(ListCommentsRequest { task_id: task.id.clone(), page_size: 2, ..Default::default() }))
        .await
        .expect("page")
        .into_inner();
    let rest = api
        .list_comments(alice.req(ListCommentsRequest {
            task_id: task.id.clone(),
            page_size: 2,
            page_token: paged.next_page_token,
            ..Default::default()
        }))
        .await
        .expect("next page")
        .into_inner();
    assert_eq!((paged.comments.len(), rest.comments.len(), rest.next_page_token.as_str()), (2, 1, ""));

    // Another organization sees no task and no comments.
    let stranger = Caller::new(&cell).await;
    let status = api
        .list_comments(stranger.req(ListCommentsRequest { task_id: task.id.clone(), ..Default::default() }))
        .await
        .expect_err("other org");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn tags_attach_by_name_filter_lists_and_are_limited_per_task() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut api = collab(&cell).await;
    let a = alice.create("A").await;
    let b = alice.create("B").await;
    alice.create("C").await;

    let tag =
        |task: &str, name: &str| TagTaskRequest { task_id: task.into(), name: name.into(), tag_id: String::new() };
    let tags = api.tag_task(alice.req(tag(&a.id, "Urgent"))).await.expect("tag").into_inner().tags;
    assert_eq!(tags.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["Urgent"]);
    let again = api.tag_task(alice.req(tag(&a.id, "urgent"))).await.expect("idempotent").into_inner().tags;
    assert_eq!(again.len(), 1, "names match ignoring case");
    api.tag_task(alice.req(tag(&b.id, "backend"))).await.expect("tag b");

    let listed = |tags: Vec<&str>, filter: &str| ListTasksRequest {
        tags: tags.into_iter().map(String::from).collect(),
        filter: filter.into(),
        order_by: "title".into(),
        ..Default::default()
    };
    let got =
        alice.client.list_tasks(alice.req(listed(vec!["URGENT,backend"], ""))).await.expect("any of").into_inner();
    assert_eq!(got.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(), ["A", "B"]);
    let got = alice.client.list_tasks(alice.req(listed(vec![], "tags:urgent"))).await.expect("filter").into_inner();
    assert_eq!(got.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(), ["A"]);
    let got = alice.client.list_tasks(alice.req(listed(vec![], "NOT tags:urgent"))).await.expect("not").into_inner();
    assert_eq!(got.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(), ["B", "C"]);

    let status = api
        .create_tag(alice.req(CreateTagRequest { name: "URGENT".into(), ..Default::default() }))
        .await
        .expect_err("taken");
    assert_eq!((status.code(), reason(&status)), (Code::AlreadyExists, "TAG_EXISTS".to_string()));
    let status = api
        .create_tag(alice.req(CreateTagRequest { name: "x".into(), color: "red".into(), ..Default::default() }))
        .await
        .expect_err("color");
    assert_eq!(violated_fields(&status), ["color"]);

    // UpdateTag: rename and recolor under the mask; the task keeps the tag; a taken name is refused.
    let update = |name: &str, color: &str, paths: &[&str]| UpdateTagRequest {
        tag_id: tags[0].id.clone(),
        name: name.into(),
        color: color.into(),
        category: String::new(),
        update_mask: Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
    };
    let renamed = api.update_tag(alice.req(update("Critical", "#FF0000", &["name", "color"]))).await;
    let renamed = renamed.expect("rename").into_inner().tag.expect("tag");
    assert_eq!(
        (renamed.id.as_str(), renamed.name.as_str(), renamed.color.as_str()),
        (tags[0].id.as_str(), "Critical", "#FF0000")
    );
    let got = alice.client.list_tasks(alice.req(listed(vec![], "tags:critical"))).await.expect("filter").into_inner();
    assert_eq!(got.tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(), ["A"], "A keeps the renamed tag");
    let cleared = api.update_tag(alice.req(update("ignored", "", &["color"]))).await.expect("clear color");
    let cleared = cleared.into_inner().tag.expect("tag");
    assert_eq!((cleared.name.as_str(), cleared.color.as_str()), ("Critical", ""), "only the masked field changes");
    let status = api.update_tag(alice.req(update("BACKEND", "", &["name"]))).await.expect_err("taken");
    assert_eq!((status.code(), reason(&status)), (Code::AlreadyExists, "TAG_EXISTS".to_string()));
    let status = api.update_tag(alice.req(update("", "", &["name", "title"]))).await.expect_err("invalid");
    assert_eq!(violated_fields(&status), ["name", "update_mask"]);
    let mut unknown = update("x", "", &["name"]);
    unknown.tag_id = Uuid::now_v7().to_string();
    assert_eq!(api.update_tag(alice.req(unknown)).await.expect_err("unknown").code(), Code::NotFound);
    let status = api.update_tag(alice.req(update("Urgent", "", &["name"]))).await.expect("back to Urgent");
    assert_eq!(status.into_inner().tag.expect("tag").name, "Urgent");

    for i in 1..20 {
        api.tag_task(alice.req(tag(&a.id, &format!("t{i}")))).await.expect("up to 20");
    }
    let status = api.tag_task(alice.req(tag(&a.id, "one-too-many"))).await.expect_err("21st");
    assert_eq!((status.code(), reason(&status)), (Code::InvalidArgument, "TOO_MANY_TAGS".to_string()));
    let urgent = tags[0].id.clone();
    let left = api
        .untag_task(alice.req(UntagTaskRequest { task_id: a.id.clone(), tag_id: urgent.clone() }))
        .await
        .expect("untag")
        .into_inner()
        .tags;
    assert_eq!(left.len(), 19);
    api.delete_tag(alice.req(DeleteTagRequest { tag_id: left[0].id.clone() })).await.expect("delete tag");
    let left = api.tag_task(alice.req(tag(&a.id, "t5"))).await.expect("still there").into_inner().tags;
    assert_eq!(left.len(), 18 + 1 - 1, "the deleted tag is gone from the task");
}

#[tokio::test]
async fn links_connect_tasks_both_ways_and_publish_link_events() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut api = collab(&cell).await;
    let a = alice.create("A").await;
    let b = alice.create("B").await;
    let target = |t: &str, id: &str| Some(EntityRef { r#type: t.into(), id: id.into() });
    let link = api
        .create_link(alice.req(CreateLinkRequest {
            task_id: a.id.clone(),
            target: target("task", &b.id),
            relationship: String::new(),
        }))
        .await
        .expect("link")
        .into_inner()
        .link
        .expect("link");
    assert_eq!(link.relationship, "related");
    let from_b =
        api.list_links(alice.req(ListLinksRequest { task_id: b.id.clone() })).await.expect("list").into_inner();
    let ids: Vec<&str> = from_b.links.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, [link.id.as_str()], "both sides list it");

    let again = api
        .create_link(alice.req(CreateLinkRequest {
            task_id: a.id.clone(),
            target: target("task", &b.id),
            relationship: "related".into(),
        }))
        .await
        .expect_err("duplicate");
    assert_eq!((again.code(), reason(&again)), (Code::AlreadyExists, "LINK_EXISTS".to_string()));
    let unknown = api
        .create_link(alice.req(CreateLinkRequest {
            task_id: a.id.clone(),
            target: target("spaceship", &Uuid::now_v7().to_string()),
            relationship: String::new(),
        }))
        .await
        .expect_err("unknown type");
    assert_eq!(reason(&unknown), "UNKNOWN_ENTITY_TYPE");
    let missing = api
        .create_link(alice.req(CreateLinkRequest {
            task_id: a.id.clone(),
            target: target("task", &Uuid::now_v7().to_string()),
            relationship: String::new(),
        }))
        .await
        .expect_err("missing target");
    assert_eq!(missing.code(), Code::NotFound);

    api.delete_link(alice.req(DeleteLinkRequest { task_id: b.id.clone(), link_id: link.id.clone() }))
        .await
        .expect("delete from the other side");
    let events: Vec<(String, LinkChanged)> = outbox(&cell)
        .await
        .into_iter()
        .filter(|e| e.r#type.starts_with("tasks.link."))
        .map(|e| {
            (e.r#type.clone(), LinkChanged::decode(e.payload.expect("payload").value.as_slice()).expect("payload"))
        })
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].0.as_str(), events[1].0.as_str()), ("tasks.link.created", "tasks.link.deleted"));
    assert_eq!(events[0].1.target, target("task", &b.id));
    assert_eq!(events[0].1.source, target("task", &a.id));
}

#[tokio::test]
async fn every_change_leaves_an_activity_entry_newest_first() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut api = collab(&cell).await;
    let task = alice.create("Draft").await;
    alice
        .client
        .update_task(alice.req(UpdateTaskRequest {
            task_id: task.id.clone(),
            title: "Final".into(),
            update_mask: Some(FieldMask { paths: vec!["title".into()] }),
            ..Default::default()
        }))
        .await
        .expect("update");
    alice
        .client
        .complete_task(alice.req(CompleteTaskRequest { task_id: task.id.clone(), ..Default::default() }))
        .await
        .expect("complete");
    api.tag_task(alice.req(TagTaskRequest { task_id: task.id.clone(), name: "shipped".into(), tag_id: String::new() }))
        .await
        .expect("tag");

    let entries = api
        .list_task_activity(alice.req(ListTaskActivityRequest { task_id: task.id.clone(), ..Default::default() }))
        .await
        .expect("activity")
        .into_inner()
        .entries;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.first(), Some(&"tagged"));
    assert_eq!(actions.last(), Some(&"created"));
    assert!(actions.contains(&"completed") && actions.contains(&"updated"), "{actions:?}");
    assert!(entries.iter().all(|e| e.actor == format!("user:{}", alice.user)));
    let updated = entries.iter().find(|e| e.action == "updated").expect("updated");
    let title = updated.changes.as_ref().and_then(|c| c.fields.get("title")).expect("title change");
    assert!(format!("{title:?}").contains("Final"));
}

fn entity(t: &str, id: &str) -> Option<EntityRef> {
    Some(EntityRef { r#type: t.into(), id: id.into() })
}

/// Publishes another module's event through the tasks outbox (the relay sends it to the exchange
/// like any other), as that module would.
async fn publish_as_other_module(cell: &TestCell, org: Uuid, event_type: &str, payload: &LinkChanged) {
    let ctx = trellis_kit::RequestContext::system(org, "crm-test");
    let envelope = trellis_kit::events::envelope(&ctx, org, event_type, payload);
    let pool = cell.owner_pool().await;
    sqlx::query("insert into tasks.outbox (id, event_type, envelope) values ($1, $2, $3)")
        .bind(envelope.id.parse::<Uuid>().expect("envelope id"))
        .bind(event_type)
        .bind(envelope.encode_to_vec())
        .execute(&pool)
        .await
        .expect("staging the foreign event");
}

#[tokio::test]
async fn links_from_other_modules_to_a_task_are_mirrored_once_and_removed_with_their_owner() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut api = collab(&cell).await;
    let task = alice.create("Call the customer").await;
    let other = alice.create("Unrelated").await;
    let contact = Uuid::now_v7().to_string();
    let link = LinkChanged {
        link_id: Uuid::now_v7().to_string(),
        source: entity("contact", &contact),
        target: entity("task", &task.id),
        relationship: "follow_up".into(),
    };
    // Delivered twice (a redelivery under a new envelope id): one mirrored row.
    publish_as_other_module(&cell, alice.org, "crm.link.created", &link).await;
    publish_as_other_module(&cell, alice.org, "crm.link.created", &link).await;
    // A link of a contact to a deal is not ours to mirror.
    let foreign = LinkChanged { target: entity("deal", &Uuid::now_v7().to_string()), ..link.clone() };
    let foreign = LinkChanged { link_id: Uuid::now_v7().to_string(), ..foreign };
    publish_as_other_module(&cell, alice.org, "crm.link.created", &foreign).await;
    let links = |api: &mut CollabServiceClient<Channel>, alice: &Caller, id: &str| {
        let mut api = api.clone();
        let request = alice.req(ListLinksRequest { task_id: id.to_string() });
        async move { api.list_links(request).await.expect("list links").into_inner().links }
    };
    let pool = cell.owner_pool().await;
    trellis_kit::testing::wait_until(std::time::Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from tasks.inbox where event_type = 'crm.link.created'")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n >= 3)
        }
    })
    .await;
    let mirrored = links(&mut api, &alice, &task.id).await;
    assert_eq!(mirrored.len(), 1, "{mirrored:?}");
    assert_eq!((mirrored[0].id.as_str(), mirrored[0].mirrored), (link.link_id.as_str(), true));
    assert_eq!(
        (mirrored[0].source.clone(), mirrored[0].relationship.as_str()),
        (entity("contact", &contact), "follow_up")
    );
    assert!(links(&mut api, &alice, &other.id).await.is_empty());
    let rows: i64 = sqlx::query_scalar("select count(*) from tasks.entity_links").fetch_one(&pool).await.expect("rows");
    assert_eq!(rows, 1, "the deal link was not mirrored");
    // A mirrored link is removed by its owner, not from here.
    let status = api
        .delete_link(alice.req(DeleteLinkRequest { task_id: task.id.clone(), link_id: link.link_id.clone() }))
        .await
        .expect_err("not ours");
    assert_eq!(status.code(), Code::NotFound);
    publish_as_other_module(&cell, alice.org, "crm.link.deleted", &link).await;
    trellis_kit::testing::wait_until(std::time::Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from tasks.entity_links")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await;
    assert!(links(&mut api, &alice, &task.id).await.is_empty());
}
