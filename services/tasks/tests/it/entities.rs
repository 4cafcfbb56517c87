//! `trellis.common.v1.EntityService` of the tasks module: resolve, search, count.

use tonic::Code;
use trellis_proto::trellis::common::v1::entity_service_client::EntityServiceClient;
use trellis_proto::trellis::common::v1::{CountRequest, EntityRef, ResolveRequest, SearchRequest};
use trellis_proto::trellis::tasks::v1::DeleteTaskRequest;
use uuid::Uuid;

use crate::common::{Caller, cell, violated_fields};

fn task_ref(id: &str) -> EntityRef {
    EntityRef { r#type: "task".into(), id: id.into() }
}

#[tokio::test]
async fn resolve_search_and_count_show_only_live_viewable_entities() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let mut entities = EntityServiceClient::new(cell.channel("tasks").await);
    let board = alice.board("Engineering", "ENG").await;
    let fix = alice.task_in(&board, 1, "Fix login").await;
    let docs = alice.task_in(&board, 1, "Write login docs").await;
    let gone = alice.task_in(&board, 1, "Old login page").await;
    alice.client.delete_task(alice.req(DeleteTaskRequest { task_id: gone.id.clone() })).await.expect("delete");
    let stranger = Caller::new(&cell).await;

    let refs = vec![
        task_ref(&docs.id),
        EntityRef { r#type: "board".into(), id: board.id.clone() },
        task_ref(&gone.id),
        task_ref(&fix.id),
        task_ref(&Uuid::now_v7().to_string()),
    ];
    let resolved =
        entities.resolve(alice.req(ResolveRequest { refs: refs.clone() })).await.expect("resolve").into_inner();
    let titles: Vec<&str> = resolved.summaries.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(
        titles,
        [format!("{} · Write login docs", docs.key).as_str(), "Engineering", &format!("{} · Fix login", fix.key)]
    );
    assert_eq!(resolved.summaries[1].subtitle, "2 open tasks");
    assert_eq!(resolved.summaries[0].url, format!("/tasks/{}", docs.id));
    assert_eq!(resolved.missing.len(), 2, "the deleted and the unknown task");
    let foreign = entities.resolve(stranger.req(ResolveRequest { refs })).await.expect("other org").into_inner();
    assert!(foreign.summaries.is_empty(), "another organization resolves nothing");

    let found = entities
        .search(alice.req(SearchRequest { query: fix.key.to_lowercase(), ..Default::default() }))
        .await
        .expect("search by key")
        .into_inner();
    assert_eq!(found.groups[0].r#type, "task");
    assert_eq!(found.groups[0].items[0].id, fix.id, "the exact key first");
    let found = entities
        .search(alice.req(SearchRequest { query: "login".into(), types: vec!["task".into()], ..Default::default() }))
        .await
        .expect("search")
        .into_inner();
    let ids: Vec<&str> = found.groups[0].items.iter().map(|s| s.id.as_str()).collect();
    assert!(ids.contains(&fix.id.as_str()) && ids.contains(&docs.id.as_str()) && !ids.contains(&gone.id.as_str()));
    let boards = entities
        .search(alice.req(SearchRequest { query: "engin".into(), ..Default::default() }))
        .await
        .expect("boards")
        .into_inner();
    assert_eq!(boards.groups.iter().map(|g| g.r#type.as_str()).collect::<Vec<_>>(), ["board"]);

    let status = entities
        .search(alice.req(SearchRequest {
            query: String::new(),
            limit: 51,
            types: vec!["deal".into()],
            ..Default::default()
        }))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["query", "limit", "types[0]"]);

    let counts = entities.count(alice.req(CountRequest::default())).await.expect("count").into_inner().counts;
    assert_eq!((counts.get("tasks"), counts.get("boards")), (Some(&2), Some(&1)));
    let counts = entities.count(stranger.req(CountRequest::default())).await.expect("count").into_inner().counts;
    assert_eq!(counts.get("tasks"), Some(&0));
}
