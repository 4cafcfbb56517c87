//! ListTasks filters (AIP-160), order_by, full-text search, calendar and gantt views and
//! aggregations, over gRPC.

use chrono::{Duration, Utc};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;
use trellis_proto::trellis::tasks::v1::{
    AddDependencyRequest, CompleteTaskRequest, DeleteTaskRequest, DependencyType, ListTasksRequest, ListTasksResponse,
    Task, TaskPriority, UpdateTaskRequest,
};

use crate::common::{Caller, cell, reason, violated_fields};

fn ts(t: chrono::DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: 0 }
}

async fn update(caller: &mut Caller, task: &Task, mut update: UpdateTaskRequest, paths: &[&str]) -> Task {
    update.task_id = task.id.clone();
    update.update_mask = Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });
    caller
        .client
        .update_task(caller.req(update))
        .await
        .unwrap_or_else(|s| panic!("update {}: {s:?}", task.title))
        .into_inner()
        .task
        .expect("task")
}

async fn list(caller: &mut Caller, request: ListTasksRequest) -> Result<ListTasksResponse, tonic::Status> {
    caller.client.list_tasks(caller.req(request)).await.map(|r| r.into_inner())
}

fn titles(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.title.as_str()).collect()
}

#[tokio::test]
async fn filters_select_by_declared_fields_and_bad_filters_name_the_filter_field() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let low = alice.create("low").await;
    let high = alice.create("high").await;
    let urgent = alice.create("urgent").await;
    update(
        &mut alice,
        &low,
        UpdateTaskRequest { priority: TaskPriority::Low as i32, ..Default::default() },
        &["priority"],
    )
    .await;
    let soon = Utc::now() + Duration::days(3);
    let yesterday = Utc::now() - Duration::days(1);
    update(
        &mut alice,
        &high,
        UpdateTaskRequest { priority: TaskPriority::High as i32, due_date: Some(ts(soon)), ..Default::default() },
        &["priority", "due_date"],
    )
    .await;
    update(
        &mut alice,
        &urgent,
        UpdateTaskRequest {
            priority: TaskPriority::Urgent as i32,
            due_date: Some(ts(yesterday)),
            ..Default::default()
        },
        &["priority", "due_date"],
    )
    .await;

    let run =
        |filter: &str| ListTasksRequest { filter: filter.to_string(), order_by: "title".into(), ..Default::default() };
    let got = list(&mut alice, run("priority >= high")).await.expect("ordered enum");
    assert_eq!((titles(&got.tasks), got.total_size), (vec!["high", "urgent"], 2));
    let day = soon.format("%Y-%m-%d").to_string();
    let got = list(&mut alice, run(&format!("priority >= high AND due_date < {day}"))).await.expect("and");
    assert_eq!(titles(&got.tasks), ["urgent"], "a date is midnight UTC");
    let got = list(&mut alice, run("is_overdue = true")).await.expect("overdue");
    assert_eq!(titles(&got.tasks), ["urgent"]);
    let got = list(&mut alice, run("NOT due_date:* OR priority = urgent")).await.expect("or, not, has");
    assert_eq!(titles(&got.tasks), ["low", "urgent"]);
    let got = list(&mut alice, run("title:IGH")).await.expect("substring");
    assert_eq!(titles(&got.tasks), ["high"]);
    let got = list(&mut alice, run("metadata.team = \"core\"")).await.expect("metadata");
    assert!(got.tasks.is_empty());

    for bad in ["colour = red", "priority = purple", "status =", "(status = todo", "due_date > soon"] {
        let status = list(&mut alice, run(bad)).await.expect_err(bad);
        assert_eq!((status.code(), reason(&status)), (Code::InvalidArgument, "VALIDATION_ERROR".to_string()), "{bad}");
        assert_eq!(violated_fields(&status), ["filter"], "{bad}");
    }
    let status = list(&mut alice, ListTasksRequest { order_by: "colour".into(), ..Default::default() })
        .await
        .expect_err("order_by");
    assert_eq!(violated_fields(&status), ["order_by"]);
}

#[tokio::test]
async fn order_by_pages_stably_with_unset_values_last_and_tokens_bound_to_the_order() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let base = Utc::now() + Duration::days(10);
    // Two tasks share a due date: the id breaks the tie.
    let mut expected = Vec::new();
    for (i, days) in [(0, Some(3)), (1, None), (2, Some(1)), (3, Some(3)), (4, None), (5, Some(2))] {
        let task = alice.create(&format!("t{i}")).await;
        let task = match days {
            Some(d) => {
                let due = Some(ts(base + Duration::days(d)));
                update(&mut alice, &task, UpdateTaskRequest { due_date: due, ..Default::default() }, &["due_date"])
                    .await
            }
            None => task,
        };
        expected.push((days, task.id.clone(), task.title.clone()));
    }
    let sorted = |desc: bool| {
        let mut e = expected.clone();
        e.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) if desc => y.cmp(&x).then(b.1.cmp(&a.1)),
            (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) if desc => b.1.cmp(&a.1),
            (None, None) => a.1.cmp(&b.1),
        });
        e.into_iter().map(|e| e.2).collect::<Vec<_>>()
    };
    for (order_by, desc) in [("due_date", false), ("due_date desc", true)] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(
                &mut alice,
                ListTasksRequest { order_by: order_by.into(), page_size: 2, page_token: token, ..Default::default() },
            )
            .await
            .expect("page");
            assert_eq!(page.total_size, 6);
            seen.extend(page.tasks.iter().map(|t| t.title.clone()));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
            assert!(seen.len() <= 6, "paging does not end");
        }
        assert_eq!(seen, sorted(desc), "{order_by}");
    }

    let first = list(&mut alice, ListTasksRequest { order_by: "due_date".into(), page_size: 2, ..Default::default() })
        .await
        .expect("first page");
    for other in [
        ListTasksRequest { order_by: "title".into(), ..Default::default() },
        ListTasksRequest { order_by: "due_date".into(), filter: "status = todo".into(), ..Default::default() },
    ] {
        let status =
            list(&mut alice, ListTasksRequest { page_token: first.next_page_token.clone(), page_size: 2, ..other })
                .await
                .expect_err("token of another query");
        assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");
    }
}

#[tokio::test]
async fn search_matches_words_and_prefixes_ranks_titles_first_and_puts_an_exact_key_on_top() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let notes = alice.create("Release notes").await;
    update(
        &mut alice,
        &notes,
        UpdateTaskRequest { description: "Mention the deploy pipeline".into(), ..Default::default() },
        &["description"],
    )
    .await;
    alice.create("Deploy pipeline").await;
    let other = alice.create("Unrelated chore").await;
    let gone = alice.create("Deploy the old pipeline").await;
    alice.client.delete_task(alice.req(DeleteTaskRequest { task_id: gone.id.clone() })).await.expect("delete");

    let q = |q: &str| ListTasksRequest { q: q.to_string(), ..Default::default() };
    let got = list(&mut alice, q("deplo")).await.expect("prefix");
    assert_eq!(titles(&got.tasks), ["Deploy pipeline", "Release notes"], "title before description; trash excluded");
    let got = list(&mut alice, q("pipeline deploy")).await.expect("words");
    assert_eq!(got.total_size, 2);
    let got = list(&mut alice, q("\"deploy pipeline\" -release")).await.expect("websearch");
    assert_eq!(titles(&got.tasks), ["Deploy pipeline"]);
    let got = list(&mut alice, q(&other.key.to_lowercase())).await.expect("key");
    assert_eq!(got.tasks.first().map(|t| t.id.clone()), Some(other.id.clone()), "the exact key comes first");
    let got = list(&mut alice, q("nothing-matches-this")).await.expect("none");
    assert_eq!(got.total_size, 0);

    // Ranked results page by offset within the same query.
    let first = list(&mut alice, ListTasksRequest { q: "deplo".into(), page_size: 1, ..Default::default() })
        .await
        .expect("page 1");
    let second = list(
        &mut alice,
        ListTasksRequest { q: "deplo".into(), page_size: 1, page_token: first.next_page_token, ..Default::default() },
    )
    .await
    .expect("page 2");
    assert_eq!((titles(&first.tasks), titles(&second.tasks)), (vec!["Deploy pipeline"], vec!["Release notes"]));
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn the_calendar_shows_dated_tasks_meeting_the_range_and_validates_it() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let start = Utc::now() + Duration::days(30);
    let spans = [
        ("inside", Some(2), Some(4)),
        ("overlaps", Some(-3), Some(1)),
        ("after", Some(20), None),
        ("undated", None, None),
    ];
    for (title, s, d) in spans {
        let task = alice.create(title).await;
        let start_date = s.map(|s| ts(start + Duration::days(s)));
        let due_date = d.map(|d| ts(start + Duration::days(d)));
        if start_date.is_some() || due_date.is_some() {
            update(
                &mut alice,
                &task,
                UpdateTaskRequest { start_date, due_date, ..Default::default() },
                &["start_date", "due_date"],
            )
            .await;
        }
    }
    let calendar = |from: i64, to: i64| ListTasksRequest {
        view: "calendar".into(),
        from: Some(ts(start + Duration::days(from))),
        to: Some(ts(start + Duration::days(to))),
        ..Default::default()
    };
    let got = list(&mut alice, calendar(0, 7)).await.expect("calendar");
    assert_eq!((titles(&got.tasks), got.truncated), (vec!["overlaps", "inside"], false), "by first date");
    let got = list(&mut alice, calendar(0, 60)).await.expect("wider");
    assert_eq!(titles(&got.tasks), ["overlaps", "inside", "after"]);

    let status = list(&mut alice, ListTasksRequest { view: "calendar".into(), ..Default::default() })
        .await
        .expect_err("no range");
    assert_eq!(violated_fields(&status), ["from"]);
    let status = list(&mut alice, calendar(0, 94)).await.expect_err("too long");
    assert_eq!(violated_fields(&status), ["to"]);
    let status = list(&mut alice, calendar(5, 1)).await.expect_err("backwards");
    assert_eq!(violated_fields(&status), ["to"]);
    let status = list(&mut alice, ListTasksRequest { view: "timeline".into(), ..Default::default() })
        .await
        .expect_err("unknown view");
    assert_eq!(violated_fields(&status), ["view"]);
}

#[tokio::test]
async fn the_gantt_view_flags_violated_constraints_and_lists_undated_and_foreign_blockers() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let board = alice.board("Engineering", "ENG").await;
    let other_board = alice.board("Platform", "PLT").await;
    let base = Utc::now() + Duration::days(5);
    let a = alice.task_in(&board, 1, "A").await;
    let b = alice.task_in(&board, 1, "B").await;
    let undated = alice.task_in(&board, 1, "U").await;
    let foreign = alice.task_in(&other_board, 1, "F").await;
    update(&mut alice, &a, UpdateTaskRequest { due_date: Some(ts(base)), ..Default::default() }, &["due_date"]).await;
    // B starts one day after A is due: a finish-to-start lag of 2 days is violated.
    update(
        &mut alice,
        &b,
        UpdateTaskRequest { start_date: Some(ts(base + Duration::days(1))), ..Default::default() },
        &["start_date"],
    )
    .await;
    for (dependent, blocker, lag) in [(&b, &a, 2), (&b, &foreign, 0), (&undated, &a, 0)] {
        alice
            .client
            .add_dependency(alice.req(AddDependencyRequest {
                task_id: dependent.id.clone(),
                depends_on_id: blocker.id.clone(),
                r#type: DependencyType::FinishToStart as i32,
                lag_days: lag,
            }))
            .await
            .expect("dependency");
    }
    let got =
        list(&mut alice, ListTasksRequest { view: "gantt".into(), board_id: board.id.clone(), ..Default::default() })
            .await
            .expect("gantt");
    assert_eq!(titles(&got.tasks), ["A", "B"]);
    assert_eq!(titles(&got.unscheduled), ["U"]);
    let violated = |dependent: &Task, blocker: &Task| {
        got.dependencies
            .iter()
            .find(|d| d.task_id == dependent.id && d.depends_on_id == blocker.id)
            .map(|d| (d.lag_days, d.violated))
    };
    assert_eq!(violated(&b, &a), Some((2, true)));
    assert_eq!(violated(&b, &foreign), Some((0, false)), "the foreign blocker has no dates");
    assert_eq!(violated(&undated, &a), Some((0, false)), "missing dates are not evaluated");
    let foreign_keys: Vec<&str> = got.external_blockers.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(foreign_keys, [foreign.key.as_str()]);

    let status = list(&mut alice, ListTasksRequest { view: "gantt".into(), ..Default::default() })
        .await
        .expect_err("board required");
    assert_eq!(violated_fields(&status), ["board_id"]);
}

#[tokio::test]
async fn aggregations_count_the_whole_filtered_set() {
    let cell = cell().await;
    let mut alice = Caller::new(&cell).await;
    let overdue = alice.create("overdue").await;
    let done = alice.create("done").await;
    let due = alice.create("due this week").await;
    alice.create("plain").await;
    let past = Some(ts(Utc::now() - Duration::days(2)));
    update(&mut alice, &overdue, UpdateTaskRequest { due_date: past, ..Default::default() }, &["due_date"]).await;
    let soon = Some(ts(Utc::now() + Duration::minutes(1)));
    update(
        &mut alice,
        &due,
        UpdateTaskRequest { due_date: soon, priority: TaskPriority::High as i32, ..Default::default() },
        &["due_date", "priority"],
    )
    .await;
    alice
        .client
        .complete_task(alice.req(CompleteTaskRequest { task_id: done.id.clone(), ..Default::default() }))
        .await
        .expect("complete");

    let got = list(&mut alice, ListTasksRequest { include_aggregations: true, page_size: 1, ..Default::default() })
        .await
        .expect("aggregations");
    let a = got.aggregations.expect("aggregations");
    assert_eq!(got.tasks.len(), 1, "aggregations cover more than the page");
    assert_eq!((a.by_status.get("todo"), a.by_status.get("done")), (Some(&3), Some(&1)));
    assert_eq!((a.by_priority.get("medium"), a.by_priority.get("high")), (Some(&3), Some(&1)));
    assert_eq!((a.overdue_count, a.completed_this_week), (1, 1));
    assert!(a.due_this_week >= 1, "the task due in a minute is due this week (or the week just turned)");

    let got = list(
        &mut alice,
        ListTasksRequest {
            include_aggregations: true,
            include_closed: Some(false),
            time_zone: "Europe/Berlin".into(),
            ..Default::default()
        },
    )
    .await
    .expect("open only");
    assert_eq!(got.total_size, 3);
    assert_eq!(got.aggregations.expect("aggregations").by_status.get("done"), None);
    let status = list(&mut alice, ListTasksRequest { time_zone: "Mars/Olympus".into(), ..Default::default() })
        .await
        .expect_err("zone");
    assert_eq!(violated_fields(&status), ["time_zone"]);
}
