//! Check, cached and uncached, and LookupResources, measured at the gRPC client against a
//! permissions service on the throwaway servers of `cargo xtask bench -p trellis-permissions`,
//! next to a raw Postgres primary-key lookup measured in the same run.
//!
//! Data sets (spec "Limits and performance"), at two scales so that the growth is visible:
//! - full: org `bench` with 10,000 users; 1,000 teams of 20 members, 200 of them nested under 100
//!   parent teams; 240,000 `test_document`s with `org`, `owner`, `editor → team#member` and
//!   `viewer → user`; 20 small orgs as noise; plus one team that edits 10,000 documents (the
//!   LookupResources subject). About 1,000,000 relationships.
//! - small: the same shape divided by 100 (plus the same 10,000-document team).
//!
//! `TRELLIS_BENCH_QUICK=1` runs only the small set, briefly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Request;
use tonic::transport::Channel;
use trellis_kit::auth::Claims;
use trellis_kit::testing::bench::{self, Measurement, Report};
use trellis_kit::testing::{TestCell, TestEnv, test_config};
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::check_service_client::CheckServiceClient;
use trellis_proto::trellis::permissions::v1::schema_service_client::SchemaServiceClient;
use uuid::Uuid;

const IDENTITY: &str = include_str!("../../identity/schema.zed");
const BENCH_SCHEMA: &str = "
definition test_document {
  relation org: organization
  relation owner: user
  relation editor: user | team#member
  relation viewer: user | team#member
  permission edit = owner + editor + org->administer
  permission view = viewer + edit
}
";

/// The shape of one data set.
#[derive(Clone, Copy, Debug)]
struct Shape {
    users: i64,
    teams: i64,
    parents: i64,
    children: i64,
    docs: i64,
    noise_orgs: i64,
    big: i64,
}

impl Shape {
    fn full() -> Self {
        Self { users: 10_000, teams: 1_000, parents: 100, children: 200, docs: 240_000, noise_orgs: 20, big: 10_000 }
    }
    fn small() -> Self {
        Self { users: 100, teams: 10, parents: 1, children: 2, docs: 2_400, noise_orgs: 2, big: 10_000 }
    }
}

fn service_token(cell: &TestCell, service: &str, org: Uuid) -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    cell.keys.sign(&Claims {
        iss: cell.config.jwt_issuer.clone(),
        sub: format!("service:{service}"),
        aud: cell.config.jwt_audience.clone(),
        exp: now + 3600,
        nbf: None,
        iat: now,
        jti: Uuid::now_v7().to_string(),
        org: Some(org.to_string()),
        sid: None,
        roles: Vec::new(),
        scopes: Vec::new(),
        plan: None,
    })
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

/// Loads a data set into `org` with `insert … select generate_series` through the owner pool, and
/// returns the number of relationships written.
async fn load(pool: &sqlx::PgPool, org: Uuid, s: Shape) -> i64 {
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("select set_config('app.org_id', $1, true)")
        .bind(org.to_string())
        .execute(&mut *tx)
        .await
        .expect("org");
    let o = org.to_string();
    let statements: Vec<(&str, Vec<i64>)> = vec![
        // Org roles: user 0 is the owner, users 1..4 admins, the rest members.
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             select $1, 'organization', $2, case when i = 0 then 'owner' when i < 5 then 'admin' else 'member' end, 'user', 'u' || i, 1
               from generate_series(0, $3 - 1) i",
            vec![s.users],
        ),
        // Teams: org tuple and 20 members each (user (t*20+k) mod users).
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             select $1, 'team', 't' || t, 'org', 'organization', $2, 1 from generate_series(0, $3 - 1) t",
            vec![s.teams],
        ),
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             select $1, 'team', 't' || t, 'member', 'user', 'u' || ((t * 20 + k) % $3), 1
               from generate_series(0, $2 - 1) t, generate_series(0, 19) k
             on conflict do nothing",
            vec![s.teams, s.users],
        ),
        // Nesting: child team (parents + c) is a member of parent team (c mod parents).
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, subject_relation, created_revision)
             select $1, 'team', 't' || (c % $2), 'member', 'team', 't' || ($2 + c), 'member', 1 from generate_series(0, $3 - 1) c",
            vec![s.parents, s.children],
        ),
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             select $1, 'team', 't' || ($2 + c), 'parent', 'team', 't' || (c % $2), 1 from generate_series(0, $3 - 1) c",
            vec![s.parents, s.children],
        ),
        // Documents: org, owner, editor team, viewer user.
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             select $1, 'test_document', 'd' || lpad(i::text, 7, '0'), 'org', 'organization', $2, 1 from generate_series(0, $3 - 1) i",
            vec![s.docs],
        ),
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             select $1, 'test_document', 'd' || lpad(i::text, 7, '0'), 'owner', 'user', 'u' || ((i * 7) % $3), 1 from generate_series(0, $2 - 1) i",
            vec![s.docs, s.users],
        ),
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, subject_relation, created_revision)
             select $1, 'test_document', 'd' || lpad(i::text, 7, '0'), 'editor', 'team', 't' || (i % $3), 'member', 1 from generate_series(0, $2 - 1) i",
            vec![s.docs, s.teams],
        ),
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             select $1, 'test_document', 'd' || lpad(i::text, 7, '0'), 'viewer', 'user', 'u' || ((i * 13 + 1) % $3), 1 from generate_series(0, $2 - 1) i",
            vec![s.docs, s.users],
        ),
        // The LookupResources subject: team `big` (member `bigu`) edits `big` documents.
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, subject_relation, created_revision)
             select $1, 'test_document', 'b' || lpad(i::text, 6, '0'), 'editor', 'team', 'big', 'member', 1 from generate_series(0, $2 - 1) i",
            vec![s.big],
        ),
        (
            "insert into permissions.relationships (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
             values ($1, 'team', 'big', 'member', 'user', 'bigu', 1)",
            vec![],
        ),
    ];
    for (sql, args) in statements {
        let mut q = sqlx::query(sql).bind(org);
        if sql.contains("'organization', $2") {
            q = q.bind(&o);
        }
        for a in args {
            q = q.bind(a);
        }
        q.execute(&mut *tx).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    sqlx::query("insert into permissions.org_revisions (org_id, revision) values ($1, 1) on conflict do nothing")
        .bind(org)
        .execute(&mut *tx)
        .await
        .expect("revision");
    let n: i64 = sqlx::query_scalar("select count(*) from permissions.relationships where org_id = $1")
        .bind(org)
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    tx.commit().await.expect("commit");
    n
}

async fn load_noise(pool: &sqlx::PgPool, count: i64) -> i64 {
    let mut total = 0;
    for _ in 0..count {
        let org = Uuid::now_v7();
        total +=
            load(pool, org, Shape { users: 50, teams: 5, parents: 1, children: 2, docs: 200, noise_orgs: 0, big: 0 })
                .await;
    }
    total
}

fn check_req(doc: &str, permission: &str, user: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        resource: Some(pb::ObjectReference { object_type: "test_document".into(), object_id: doc.into() }),
        permission: permission.into(),
        subject: Some(pb::SubjectReference {
            object: Some(pb::ObjectReference { object_type: "user".into(), object_id: user.into() }),
            optional_relation: String::new(),
        }),
        consistency: None,
        max_depth: 0,
        with_trace: false,
    }
}

/// A depth-3 check: document `i` (whose editor is a parent team) for a member of one of that
/// parent's child teams (positive when `positive`), or for a user in no related team.
fn depth3(s: Shape, i: u64, positive: bool) -> (String, String) {
    // Documents whose editor team is a parent: doc index ≡ p (mod teams) with p < parents.
    let p = (i as i64) % s.parents;
    let round = (i as i64 / s.parents) % (s.docs / s.teams);
    let doc = format!("d{:07}", round * s.teams + p);
    let child = s.parents + p; // child c = p has parent c mod parents = p
    let k = (i as i64 / s.parents) % 20;
    let member = (child * 20 + k) % s.users;
    if positive {
        (doc, format!("u{member}"))
    } else {
        // A user id no tuple mentions: every branch is walked to its end.
        (doc, format!("x{i}"))
    }
}

struct Client {
    check: CheckServiceClient<Channel>,
    token: String,
}

async fn measure(report: &mut Report, cell: &TestCell, label: &str, org: Uuid, s: Shape, quick: bool) {
    let (warmup, duration) = if quick {
        (Duration::from_millis(200), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let channel = cell.channel("permissions").await;
    let token = service_token(cell, "bench", org);
    let client = Arc::new(Client { check: CheckServiceClient::new(channel.clone()), token });

    // Raw Postgres primary-key lookups, same data, same concurrency.
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&cell.config.database_url).await.expect("pool");
    let users = s.users;
    for concurrency in [1usize, 4] {
        let pool = pool.clone();
        let m = bench::run(format!("{label}: raw Postgres PK lookup"), concurrency, warmup, duration, move |w, i| {
            let pool = pool.clone();
            async move {
                let doc = format!("d{:07}", (i * 4 + w as u64) % 1000);
                sqlx::query_scalar::<_, i32>(
                    "select 1 from permissions.relationships where org_id = $1 and resource_type = 'test_document'
                       and resource_id = $2 and relation = 'viewer' and subject_type = 'user' and subject_id = $3 and subject_relation = ''",
                )
                .bind(org)
                .bind(doc)
                .bind(format!("u{}", i as i64 % users))
                .fetch_optional(&pool)
                .await
                .map(|_| ())
            }
        })
        .await;
        let raw = report.add(m).clone();

        // Warm cache: 1,000 distinct checks, evaluated right before the measured phase. The
        // phase outlasts `max_staleness` (5 s by default): keys in use are refreshed in the
        // background before they expire, so it measures the steady state. Right after loading 1M
        // rows a first pass reads cold Postgres buffers and can itself take longer than the
        // staleness bound; passes repeat (at most three) until one is well within it, so the
        // measurement starts from fresh entries.
        let keys: Arc<Vec<(String, String)>> =
            Arc::new((0..1000u64).map(|i| depth3(s, i, i.is_multiple_of(2))).collect());
        let mut c = client.check.clone();
        for pass in 1..=3 {
            let started = Instant::now();
            for (doc, user) in keys.iter() {
                c.check(authed(check_req(doc, "view", user), &client.token)).await.expect("warm");
            }
            let took = started.elapsed();
            if took < Duration::from_secs(2) {
                break;
            }
            report.note(format!(
                "{label}: warm-up pass {pass} at concurrency {concurrency} took {:.1} s",
                took.as_secs_f64()
            ));
        }
        let (c, k) = (client.clone(), keys.clone());
        let warm = bench::run(format!("{label}: Check, warm cache"), concurrency, warmup, duration, move |w, i| {
            let (c, k) = (c.clone(), k.clone());
            async move {
                let (doc, user) = &k[((i * 7 + w as u64 * 131) % k.len() as u64) as usize];
                let mut check = c.check.clone();
                check.check(authed(check_req(doc, "view", user), &c.token)).await.map(|_| ())
            }
        })
        .await;
        let warm = report.add(warm).clone();
        report.throughput_ratio(
            &format!("{label}: warm Check / raw PK lookup throughput at concurrency {concurrency}"),
            &warm,
            &raw,
            "warm p99 goal < 1 ms",
        );
    }

    // Cold cache, depth 3: every key unique (offset far from the warm keys), 50/50 positive.
    let c = client.clone();
    let base = 1_000_000u64;
    let cold: Measurement =
        bench::run(format!("{label}: Check, cold cache, depth 3"), 1, warmup, duration, move |w, i| {
            let c = c.clone();
            async move {
                let n = base + i * 8 + w as u64;
                let (doc, user) = depth3(s, n, n.is_multiple_of(2));
                let mut check = c.check.clone();
                // fully_consistent never reads the cache: every check is evaluated on a fresh snapshot.
                let mut req = check_req(&doc, "view", &user);
                req.consistency =
                    Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::FullyConsistent(true)) });
                let r = check.check(authed(req, &c.token)).await?.into_inner();
                let has = r.permissionship == pb::Permissionship::HasPermission as i32;
                if has != (n.is_multiple_of(2)) {
                    return Err(tonic::Status::internal(format!("unexpected answer for {doc} {user}")));
                }
                Ok::<(), tonic::Status>(())
            }
        })
        .await;
    report.add(cold);

    // LookupResources returning 10,000 ids.
    let c = client.clone();
    let lookups = bench::run(format!("{label}: LookupResources, 10,000 ids"), 1, warmup, duration * 2, move |_, _| {
        let c = c.clone();
        async move {
            let req = pb::LookupResourcesRequest {
                resource_type: "test_document".into(),
                permission: "view".into(),
                subject: Some(pb::SubjectReference {
                    object: Some(pb::ObjectReference { object_type: "user".into(), object_id: "bigu".into() }),
                    optional_relation: String::new(),
                }),
                consistency: None,
                limit: 10_000,
                cursor: String::new(),
                allow_org_wide: false,
            };
            let mut check = c.check.clone();
            let mut stream = check.lookup_resources(authed(req, &c.token)).await?.into_inner();
            let mut n = 0;
            while stream.message().await?.is_some() {
                n += 1;
            }
            if n != 10_000 {
                return Err(tonic::Status::internal(format!("{n} ids, expected 10,000")));
            }
            Ok::<(), tonic::Status>(())
        }
    })
    .await;
    report.add(lookups);
}

/// The plans of the evaluator's three queries on the loaded data, as notes (the index each uses).
async fn explain(report: &mut Report, pool: &sqlx::PgPool, label: &str, org: Uuid) {
    use sqlx::Row;
    // Check's reads run with generic plans (`store::check_snapshot`): show the plan Postgres
    // caches for the statement the reader sends, not a plan for literal values.
    let checks: [(&str, usize, &str); 3] = [
        (
            "Check: the relations of a permission on one object",
            1,
            "'test_document', 'd0000001', 'viewer', 'owner', 'editor', 'org'",
        ),
        ("Check: the members of a batch of teams", 2, "'team', 't0', 't1', 'member'"),
        ("Check: the members of a batch of six teams", 6, "'team', '{t0,t1,t2,t3,t4,t5}', 'member'"),
    ];
    for (what, ids, args) in checks {
        let relations = if ids == 1 { 4 } else { 1 };
        // Up to four ids are separate parameters, more are one array (see `relation_rows_sql`).
        let id_types = if ids <= 4 { vec!["text"; ids].join(", ") } else { "text[]".to_owned() };
        let types = format!("text, {id_types}, {}", vec!["text"; relations].join(", "));
        let sql = format!(
            "begin; select set_config('app.org_id', '{org}', true); set local plan_cache_mode = force_generic_plan;
             prepare generic_read(uuid, uuid, {types}) as {};
             explain (costs off) execute generic_read('{org}', '{}', {args});
             deallocate generic_read; commit",
            trellis_permissions::store::relation_rows_sql(ids, relations),
            Uuid::nil()
        );
        let rows = sqlx::raw_sql(&sql).fetch_all(pool).await.expect("explain a generic plan");
        let plan: Vec<String> = rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()).collect();
        let scans: Vec<&str> = plan.iter().map(|l| l.trim()).filter(|l| l.contains(" on ")).collect();
        report.note(format!("{label}: {what} (generic plan): {}", scans.join("; ")));
    }
    let orgs = vec![org, Uuid::nil()];
    let (what, sql) = (
        "LookupResources: the reverse walk from a team's members",
        "explain (costs off)
         select resource_id::text from permissions.relationships
          where org_id = any($1) and subject_type = 'team' and subject_id = any(array['big']) and subject_relation = 'member'
            and resource_type = 'test_document' and relation = 'editor'",
    );
    let plan: Vec<String> = sqlx::query_scalar(sql).bind(&orgs).fetch_all(pool).await.expect("explain");
    let scans: Vec<&str> = plan.iter().map(|l| l.trim()).filter(|l| l.contains(" on ")).collect();
    report.note(format!("{label}: {what}: {}", scans.join("; ")));
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("TRELLIS_BENCH_QUICK").is_ok_and(|v| v == "1");
    let env = TestEnv::get();
    let config = test_config(&env).await;
    let cell = TestCell::start_with(config, vec![trellis_permissions::module()]).await;
    let channel = cell.channel("permissions").await;
    let mut schema = SchemaServiceClient::new(channel);
    let setup_org = Uuid::now_v7();
    for (module, text) in
        [("identity", IDENTITY), ("permissions", trellis_permissions::SCHEMA), ("bench", BENCH_SCHEMA)]
    {
        let req = pb::WriteSchemaRequest { module: module.into(), schema: text.into(), dry_run: false };
        schema.write_schema(authed(req, &service_token(&cell, module, setup_org))).await.expect("schema");
    }
    let pool = cell.owner_pool().await;
    let mut report = Report::new("Permissions: Check and LookupResources at the gRPC client");
    let mut shapes = vec![("10k", Shape::small())];
    if !quick {
        shapes.push(("1M", Shape::full()));
    }
    for (label, shape) in shapes {
        let org = Uuid::now_v7();
        let started = Instant::now();
        let mut n = load(&pool, org, shape).await;
        n += load_noise(&pool, shape.noise_orgs).await;
        sqlx::query("analyze permissions.relationships").execute(&pool).await.expect("analyze");
        let total: i64 =
            sqlx::query_scalar("select count(*) from permissions.relationships").fetch_one(&pool).await.expect("count");
        report.note(format!(
            "{label}: loaded {n} relationships (table now {total}) in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        explain(&mut report, &pool, label, org).await;
        measure(&mut report, &cell, label, org, shape, quick).await;
    }
    report.print();
}
