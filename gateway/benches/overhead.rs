//! What the gateway adds: the same unary methods called directly over gRPC and through the
//! gateway over REST/JSON, at the same concurrency, in the same run (`cargo xtask bench -p
//! trellis-gateway`). Goals (issue 5): added p50 under 0.1 ms, throughput at least 0.7 of direct.
//! Also reports the process's resident memory growth while the gateway is under load and the
//! gateway's requests per second per core (from the process CPU time the REST phase spends beyond
//! the direct phase at the same rate).

use std::time::{Duration, Instant};

use tonic::Request;
use trellis_kit::testing::TestCell;
use trellis_kit::testing::bench::{self, Report};
use trellis_proto::trellis::identity::v1::GetJwksRequest;
use trellis_proto::trellis::identity::v1::token_service_client::TokenServiceClient;
use trellis_proto::trellis::tasks::v1::task_service_client::TaskServiceClient;
use trellis_proto::trellis::tasks::v1::{CreateTaskRequest, GetTaskRequest};
use uuid::Uuid;

fn quick() -> bool {
    std::env::var_os("TRELLIS_BENCH_QUICK").is_some()
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at `state`.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `state`; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of this process in MiB, from `/proc/self/status`.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

#[tokio::main]
async fn main() {
    let (warmup, duration) = if quick() {
        (Duration::from_millis(200), Duration::from_secs(1))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    let concurrency = 16;
    let cell = TestCell::start(vec![
        trellis_identity::module(),
        trellis_tasks::module_with(trellis_tasks::AccessMode::OrgRoles),
    ])
    .await;
    let rss_before_gateway = rss_mib();
    let (addr, _gateway) = trellis_gateway::spawn_for_tests(cell.config.clone(), cell.auth.clone()).await;
    let base = format!("http://{addr}");
    let (user, org) = (Uuid::now_v7(), Uuid::now_v7());
    let token = cell.token(user, org);
    let tasks = TaskServiceClient::new(cell.channel("tasks").await);
    let task = tasks
        .clone()
        .create_task(authed(CreateTaskRequest { title: "Benchmark me".into(), ..Default::default() }, &token))
        .await
        .expect("create a task")
        .into_inner()
        .task
        .expect("task");
    let identity = TokenServiceClient::new(cell.channel("identity").await);
    // One HTTP/1.1 keep-alive connection per worker, as browsers and SDKs use them.
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client");

    let mut report = Report::new(format!("Gateway overhead (concurrency 1 and {concurrency}, same run)"));

    // 0. GetTask one call at a time: the latency the gateway adds when nothing queues (at
    // concurrency 16 on two cores, p50 mostly restates the throughput).
    let one = |name: &'static str, rest: bool| {
        let (tasks, http, token, id) = (tasks.clone(), http.clone(), token.clone(), task.id.clone());
        let url = format!("{base}/api/v1/tasks/{id}");
        bench::run(name, 1, warmup, duration, move |_, _| {
            let (mut tasks, http, token, id, url) =
                (tasks.clone(), http.clone(), token.clone(), id.clone(), url.clone());
            async move {
                if !rest {
                    return tasks
                        .get_task(authed(GetTaskRequest { task_id: id }, &token))
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                }
                let r = http.get(&url).bearer_auth(&token).send().await.map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("status {}", r.status()));
                }
                r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
    };
    let direct_one = report.add(one("GetTask, gRPC direct", false).await).clone();
    let rest_one = report.add(one("GetTask, REST through the gateway", true).await).clone();
    let added = rest_one.p50().as_secs_f64() * 1e3 - direct_one.p50().as_secs_f64() * 1e3;
    report.note(format!(
        "GetTask added p50 at concurrency 1: {added:.3} ms (goal < 0.1 ms; Envoy's transcoder adds about 0.15 ms)"
    ));

    // 1. GetTask: authenticated, a row read under RLS.
    let cpu = cpu_seconds();
    let direct = bench::run("GetTask, gRPC direct", concurrency, warmup, duration, {
        let (tasks, token, id) = (tasks.clone(), token.clone(), task.id.clone());
        move |_, _| {
            let (mut tasks, token, id) = (tasks.clone(), token.clone(), id.clone());
            async move { tasks.get_task(authed(GetTaskRequest { task_id: id }, &token)).await.map(|_| ()) }
        }
    })
    .await;
    let direct_cpu = cpu_seconds() - cpu;
    let direct = report.add(direct).clone();
    let cpu = cpu_seconds();
    let mut peak_rss = rss_mib();
    let rest = bench::run("GetTask, REST through the gateway", concurrency, warmup, duration, {
        let (http, url, token) = (http.clone(), format!("{base}/api/v1/tasks/{}", task.id), token.clone());
        move |_, _| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let r = http.get(&url).bearer_auth(&token).send().await.map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("status {}", r.status()));
                }
                r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    })
    .await;
    let rest_cpu = cpu_seconds() - cpu;
    peak_rss = peak_rss.max(rss_mib());
    let rest = report.add(rest).clone();
    let added = rest.p50().as_secs_f64() * 1e3 - direct.p50().as_secs_f64() * 1e3;
    report.note(format!("GetTask added p50 at concurrency {concurrency}: {added:.3} ms"));
    report.throughput_ratio("GetTask throughput, gateway / direct", &rest, &direct, "goal ≥ 0.70");
    // CPU the REST phase spent beyond what the direct phase spends for the same number of calls.
    let per_call_direct = direct_cpu / direct.operations.max(1) as f64;
    let gateway_cpu = rest_cpu - per_call_direct * rest.operations as f64;
    if gateway_cpu > 0.0 {
        report.note(format!(
            "gateway requests per second per core (REST, estimated from process CPU time): {:.0}",
            rest.operations as f64 / gateway_cpu
        ));
    }

    // 2. GetJwks: public, no database.
    let direct = bench::run("GetJwks, gRPC direct", concurrency, warmup, duration, {
        let identity = identity.clone();
        move |_, _| {
            let mut identity = identity.clone();
            async move { identity.get_jwks(GetJwksRequest {}).await.map(|_| ()) }
        }
    })
    .await;
    let direct = report.add(direct).clone();
    let started = Instant::now();
    let rest = bench::run("GetJwks, REST through the gateway", concurrency, warmup, duration, {
        let (http, url) = (http.clone(), format!("{base}/.well-known/jwks.json"));
        move |_, _| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("status {}", r.status()));
                }
                r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    })
    .await;
    peak_rss = peak_rss.max(rss_mib());
    let rest = report.add(rest).clone();
    let added = rest.p50().as_secs_f64() * 1e3 - direct.p50().as_secs_f64() * 1e3;
    report.note(format!("GetJwks added p50 at concurrency {concurrency}: {added:.3} ms"));
    report.throughput_ratio("GetJwks throughput, gateway / direct", &rest, &direct, "goal ≥ 0.70");
    report.note(format!(
        "process resident memory: {rss_before_gateway:.1} MiB before the gateway started, {peak_rss:.1} MiB peak under \
         load ({:.1} MiB growth; backends, client and gateway share the process); last phase {:.1} s",
        peak_rss - rss_before_gateway,
        started.elapsed().as_secs_f64()
    ));
    report.print();
}
