//! Tasks benchmarks (`cargo xtask bench -p trellis-tasks`; `--quick` for a short run):
//! - create-task at concurrency 16 over gRPC to the service and through the gateway (REST), next
//!   to a raw Postgres single-row insert measured in the same run (ratios);
//! - the kanban view of a board holding 5 000 tasks (goal: p99 < 50 ms), over gRPC and REST.
//!
//! The cell runs as production runs tasks: the permissions module next to tasks, every check
//! going through it (`AccessMode::Permissions`, ADR 0046), with the identity and tasks schemas
//! registered and the organization roles written as identity writes them. The cell and the
//! gateway run in this process, against the servers the xtask starts; 16 members of one
//! organization create tasks on one board, so the board's task counter is contended as it is in
//! a busy team.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tonic::Request;
use trellis_gateway::{Builder, GatewayConfig};
use trellis_kit::authz::{Authz, Ref};
use trellis_kit::testing::bench::{self, Report};
use trellis_kit::testing::{TestCell, TestCredentials};
use trellis_proto::trellis::tasks::v1::board_service_client::BoardServiceClient;
use trellis_proto::trellis::tasks::v1::task_service_client::TaskServiceClient;
use trellis_proto::trellis::tasks::v1::{CreateBoardRequest, CreateTaskRequest, ListTasksRequest};
use uuid::Uuid;

const CONCURRENCY: usize = 16;

fn authz_as(cell: &TestCell, service: &'static str) -> Authz {
    let credentials = Arc::new(TestCredentials { keys: cell.keys.clone(), config: cell.config.clone(), service });
    Authz::new(&cell.url("permissions"), credentials).unwrap_or_else(|e| panic!("authz: {e}"))
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap_or_else(|e| panic!("token header: {e}"));
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("TRELLIS_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (warmup, duration) = if quick {
        (Duration::from_millis(300), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    let kanban_tasks: i32 = if quick { 500 } else { 5_000 };

    let cell = TestCell::start(vec![trellis_permissions::module(), trellis_tasks::module()]).await;
    for (module, schema) in [("identity", trellis_identity::relationships::SCHEMA), ("tasks", trellis_tasks::SCHEMA)] {
        authz_as(&cell, module)
            .register_schema(module, schema, Duration::from_millis(500))
            .await
            .unwrap_or_else(|e| panic!("registering the {module} schema: {e:?}"));
    }
    let gateway = Builder::new(cell.config.clone(), GatewayConfig::from_env().without_practical_rate_limits())
        .authenticator(cell.auth.clone())
        .spawn()
        .await
        .unwrap_or_else(|e| panic!("starting the gateway: {e:#}"));
    let base = format!("http://{}", gateway.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).build().expect("http client");

    let org = Uuid::now_v7();
    let users: Vec<Uuid> = (0..CONCURRENCY).map(|_| Uuid::now_v7()).collect();
    // Organization members, as identity writes them (`organization:{org}#member@user:{id}`).
    let roles: Vec<_> = users
        .iter()
        .map(|u| (Ref::new("organization", org.to_string()), "member".to_string(), Ref::new("user", u.to_string())))
        .collect();
    authz_as(&cell, "identity").touch(org, &roles).await.unwrap_or_else(|e| panic!("organization roles: {e:?}"));
    let tokens: Arc<Vec<String>> = Arc::new(users.iter().map(|u| cell.token(*u, org)).collect());
    let channel = cell.channel("tasks").await;
    let mut boards = BoardServiceClient::new(channel.clone());
    let board = boards
        .create_board(authed(
            CreateBoardRequest { name: "Bench".into(), key: "BENCH".into(), ..Default::default() },
            &tokens[0],
        ))
        .await
        .expect("board")
        .into_inner()
        .board
        .expect("board");
    let board_id = board.id.clone();
    let mut report = Report::new(if quick { "Tasks (quick)" } else { "Tasks" });

    // Raw Postgres: one single-row insert per operation, 16 connections.
    let database_url = cell.config.database_url.clone();
    let pool = PgPoolOptions::new().max_connections(CONCURRENCY as u32).connect(&database_url).await.expect("pool");
    sqlx::query(
        "create table if not exists public.bench_raw_insert \
         (id uuid primary key, org_id uuid not null, title text not null, created_at timestamptz not null default now())",
    )
    .execute(&pool)
    .await
    .expect("raw table");
    let raw_pool = pool.clone();
    let raw = report
        .add(
            bench::run("raw Postgres single-row insert", CONCURRENCY, warmup, duration, move |_, _| {
                let pool = raw_pool.clone();
                async move {
                    sqlx::query("insert into public.bench_raw_insert (id, org_id, title) values ($1, $2, $3)")
                        .bind(Uuid::now_v7())
                        .bind(Uuid::now_v7())
                        .bind("raw insert")
                        .execute(&pool)
                        .await
                        .map(|_| ())
                }
            })
            .await,
        )
        .clone();

    // CreateTask over gRPC, straight to the service.
    let grpc = TaskServiceClient::new(channel.clone());
    let (t, b) = (tokens.clone(), board_id.clone());
    let create_grpc = report
        .add(
            bench::run("CreateTask over gRPC (service)", CONCURRENCY, warmup, duration, move |worker, i| {
                let mut client = grpc.clone();
                let request = authed(
                    CreateTaskRequest {
                        title: format!("grpc {worker}-{i}"),
                        board_id: b.clone(),
                        ..Default::default()
                    },
                    &t[worker],
                );
                async move { client.create_task(request).await.map(|_| ()) }
            })
            .await,
        )
        .clone();

    // CreateTask through the gateway: REST/JSON as a browser sends it.
    let (t, b, url, client) = (tokens.clone(), board_id.clone(), format!("{base}/api/v1/tasks"), http.clone());
    let create_rest = report
        .add(
            bench::run("POST /api/v1/tasks through the gateway", CONCURRENCY, warmup, duration, move |worker, i| {
                let request = client
                    .post(&url)
                    .bearer_auth(&t[worker])
                    .json(&serde_json::json!({"title": format!("rest {worker}-{i}"), "board_id": b}));
                async move {
                    let response = request.send().await.map_err(|e| e.to_string())?;
                    if response.status().as_u16() == 201 {
                        Ok(())
                    } else {
                        Err(format!("status {}", response.status()))
                    }
                }
            })
            .await,
        )
        .clone();
    report.throughput_ratio("CreateTask gRPC / raw insert", &create_grpc, &raw, "for the record");
    report.throughput_ratio("CreateTask through the gateway / raw insert", &create_rest, &raw, "for the record");
    report.throughput_ratio("CreateTask gateway / gRPC", &create_rest, &create_grpc, "for the record");

    // Kanban: a second board with `kanban_tasks` tasks spread over its five columns, inserted in
    // bulk as the owner (positions and numbers as the service would give them).
    let kanban_board = boards
        .create_board(authed(
            CreateBoardRequest { name: "Big".into(), key: "BIG".into(), ..Default::default() },
            &tokens[0],
        ))
        .await
        .expect("kanban board")
        .into_inner()
        .board
        .expect("kanban board");
    let columns: Vec<Uuid> = kanban_board.columns.iter().map(|c| c.id.parse().expect("column id")).collect();
    let kanban_id: Uuid = kanban_board.id.parse().expect("board id");
    sqlx::query(
        "insert into tasks.tasks (id, org_id, board_id, column_id, number, title, description, status, priority, \
         position, created_by, completed_at) \
         select gen_random_uuid(), $1, $2, ($3::uuid[])[1 + (n % 5)], n, 'Task ' || n, 'Bench task number ' || n, \
         (array['backlog', 'todo', 'in_progress', 'in_review', 'done'])[1 + (n % 5)], \
         (array['low', 'medium', 'high', 'urgent'])[1 + (n % 4)], lpad(n::text, 8, '0'), $4, \
         case when n % 5 = 4 then now() end \
         from generate_series(1, $5) as n",
    )
    .bind(org)
    .bind(kanban_id)
    .bind(&columns)
    .bind(Uuid::now_v7())
    .bind(kanban_tasks)
    .execute(&pool)
    .await
    .expect("seeding the kanban board");
    sqlx::query("update tasks.boards set next_task_number = $2 + 1 where id = $1")
        .bind(kanban_id)
        .bind(kanban_tasks)
        .execute(&pool)
        .await
        .expect("board counter");
    // As autovacuum leaves a table that is read more than written: statistics and visibility map.
    sqlx::query("vacuum (analyze) tasks.tasks").execute(&pool).await.expect("vacuum");

    // The creates above staged a relationship change each; the relay and the
    // `tasks.relationships` consumer replay them (each a new revision). The views are measured
    // once that backlog is gone, as a board is usually viewed; how long it took is reported.
    let started = std::time::Instant::now();
    let mut unsent: i64 = 0;
    while started.elapsed() < Duration::from_secs(120) {
        unsent = sqlx::query_scalar("select count(*) from tasks.outbox where sent_at is null")
            .fetch_one(&pool)
            .await
            .expect("outbox backlog");
        if unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    report.note(format!(
        "outbox backlog after the creates: {unsent} unsent after {:.1} s of waiting",
        started.elapsed().as_secs_f64()
    ));

    // The one permission check of a kanban view, alone (the cache warm after the first call).
    let authz = authz_as(&cell, "tasks");
    let (board_ref, viewer) = (Ref::new("board", kanban_board.id.clone()), Ref::new("user", users[0].to_string()));
    report.add(
        bench::run("board#view Check alone (permissions service)", 1, warmup, duration, move |_, _| {
            let (authz, board_ref, viewer) = (authz.clone(), board_ref.clone(), viewer.clone());
            async move {
                match authz.check(org, &board_ref, "view", &viewer, None).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("denied".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await,
    );

    let grpc = TaskServiceClient::new(channel.clone());
    let (t, b) = (tokens.clone(), kanban_board.id.clone());
    let name = format!("kanban view, {kanban_tasks} tasks, 5 columns, over gRPC");
    let kanban_grpc = report
        .add(
            bench::run(name, 1, warmup, duration, move |_, _| {
                let mut client = grpc.clone();
                let request = authed(
                    ListTasksRequest { board_id: b.clone(), view: "kanban".into(), ..Default::default() },
                    &t[0],
                );
                async move {
                    let groups = client.list_tasks(request).await?.into_inner().groups;
                    if groups.len() == 5 { Ok(()) } else { Err(tonic::Status::internal("wrong group count")) }
                }
            })
            .await,
        )
        .clone();
    let (t, client) = (tokens.clone(), http.clone());
    let url = format!("{base}/api/v1/tasks?view=kanban&board_id={}", kanban_board.id);
    let name = format!("kanban view, {kanban_tasks} tasks, 5 columns, through the gateway");
    let kanban_rest = report
        .add(
            bench::run(name, 1, warmup, duration, move |_, _| {
                let request = client.get(&url).bearer_auth(&t[0]);
                async move {
                    let response = request.send().await.map_err(|e| e.to_string())?;
                    if response.status().is_success() { Ok(()) } else { Err(format!("status {}", response.status())) }
                }
            })
            .await,
        )
        .clone();
    for (label, m) in [("gRPC", &kanban_grpc), ("gateway", &kanban_rest)] {
        let p99 = m.p99();
        let verdict = if p99 < Duration::from_millis(50) { "met" } else { "NOT met" };
        report.note(format!("kanban p99 over {label}: {:.1} ms (goal < 50 ms: {verdict})", p99.as_secs_f64() * 1e3));
    }
    report.print();
    gateway.shutdown.cancel();
}
