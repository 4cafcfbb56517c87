//! Storage and evaluation against a real Postgres (`cargo xtask test -p trellis-permissions`):
//! the spec's correctness table evaluated through the Postgres reader, tenant isolation by RLS,
//! write semantics (revisions, TOUCH/CREATE/DELETE, validation, preconditions, atomicity) and
//! read-your-writes with revision tokens.

use std::collections::BTreeMap;

use serde::Deserialize;
use trellis_kit::db::Db;
use trellis_kit::testing::{TestEnv, test_config};
use trellis_permissions::eval::{Evaluator, ObjectRef, SubjectRef, Tuple};
use trellis_permissions::schema::{ModuleSource, Schema, compile};
use trellis_permissions::store::{self, Filter, Operation, PgReader, Precondition, WriteError, Zookie};
use uuid::Uuid;

const IDENTITY: &str = include_str!("../../../identity/schema.zed");
const ACCEPTANCE: &str = include_str!("../../testdata/acceptance.yaml");

#[derive(Deserialize)]
struct Case {
    modules: BTreeMap<String, String>,
    relationships: String,
    assertions: Assertions,
}

#[derive(Deserialize)]
struct Assertions {
    #[serde(rename = "true")]
    yes: Vec<String>,
    #[serde(rename = "false")]
    no: Vec<String>,
}

fn case() -> Case {
    serde_yaml_ng::from_str(ACCEPTANCE).expect("acceptance.yaml")
}

fn schema(case: &Case) -> Schema {
    let mut mods = vec![
        ModuleSource { module: "identity", source: IDENTITY },
        ModuleSource { module: "permissions", source: trellis_permissions::SCHEMA },
    ];
    mods.extend(case.modules.iter().map(|(m, s)| ModuleSource { module: m, source: s }));
    compile(&mods).expect("schema")
}

fn tuple(s: &str) -> Tuple {
    Tuple::parse(s.split_whitespace().next().unwrap_or("")).unwrap_or_else(|| panic!("bad tuple {s}"))
}

async fn db() -> Db {
    let env = TestEnv::get();
    let config = test_config(&env).await;
    trellis_kit::db::migrate(
        &config.database_url,
        "permissions",
        &config.service_db_password,
        Some(trellis_permissions::migrator()),
    )
    .await
    .expect("migrate");
    Db::connect("permissions", &config.db()).await.expect("connect")
}

async fn touch(db: &Db, org: Uuid, schema: &Schema, tuples: &[Tuple]) -> store::Written {
    let ups: Vec<_> = tuples.iter().map(|t| (Operation::Touch, t.clone())).collect();
    write(db, org, schema, &ups, &[]).await.expect("write")
}

async fn write(
    db: &Db,
    org: Uuid,
    schema: &Schema,
    ups: &[(Operation, Tuple)],
    pre: &[Precondition],
) -> Result<store::Written, WriteError> {
    let mut tx = db.tenant_tx_for(org, None).await.expect("tx");
    let r = store::write(&mut tx, org, schema, ups, pre, "service:test").await;
    if r.is_ok() {
        tx.commit().await.expect("commit");
    }
    r
}

async fn check(db: &Db, org: Uuid, schema: &Schema, s: &str) -> bool {
    let t = tuple(s);
    let mut tx = store::snapshot(db, org).await.expect("snapshot");
    let mut ev = Evaluator::new(schema, PgReader::new(&mut tx, org), 50);
    ev.check(&t.resource, &t.relation, &t.subject).await.expect("check")
}

async fn count(db: &Db, org: Uuid) -> i64 {
    let mut tx = db.tenant_tx_for(org, None).await.expect("tx");
    sqlx::query_scalar("select count(*) from permissions.relationships").fetch_one(&mut *tx).await.expect("count")
}

#[tokio::test]
async fn correctness_table_through_postgres_and_tenant_isolation() {
    let db = db().await;
    let case = case();
    let schema = schema(&case);
    let (acme, globex) = (Uuid::now_v7(), Uuid::now_v7());
    let tuples: Vec<Tuple> = case.relationships.lines().filter(|l| !l.trim().is_empty()).map(tuple).collect();
    let w = touch(&db, acme, &schema, &tuples).await;
    assert_eq!(w, store::Written { revision: 1, changed: true }, "one write, one revision");
    touch(&db, globex, &schema, &[tuple("organization:globex#admin@user:gina")]).await;

    for s in &case.assertions.yes {
        assert!(check(&db, acme, &schema, s).await, "{s}");
    }
    for s in &case.assertions.no {
        assert!(!check(&db, acme, &schema, s).await, "{s}");
    }
    // Lookups through the reverse index.
    let mut tx = store::snapshot(&db, acme).await.expect("snapshot");
    let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, acme), 50);
    let (ids, more) =
        ev.lookup_resources("test_document", "view", &SubjectRef::new("user", "bob"), None, 100).await.expect("lookup");
    assert_eq!((ids, more), (vec!["handbook".to_owned(), "public".to_owned(), "spec".to_owned()], false));
    drop(ev);
    tx.rollback().await.expect("rollback");

    // globex sees nothing of acme: carol is no admin there and spec does not exist.
    assert!(!check(&db, globex, &schema, "test_document:spec#edit@user:carol").await);
    assert!(check(&db, globex, &schema, "organization:globex#administer@user:gina").await);
    assert_eq!(count(&db, globex).await, 1);
    assert_eq!(count(&db, acme).await, tuples.len() as i64);
    // A write of another org's id from globex lands in globex and stays invisible to acme.
    touch(&db, globex, &schema, &[tuple("test_document:spec#owner@user:gina")]).await;
    assert!(!check(&db, acme, &schema, "test_document:spec#edit@user:gina").await);
    // RLS refuses moving rows to another org.
    let mut tx = db.tenant_tx_for(globex, None).await.expect("tx");
    let moved = sqlx::query("update permissions.relationships set org_id = $1").bind(acme).execute(&mut *tx).await;
    assert!(moved.expect_err("refused").to_string().contains("row-level security"));
}

#[tokio::test]
async fn platform_scope_is_readable_from_every_org() {
    let db = db().await;
    let schema = schema(&case());
    touch(&db, store::PLATFORM_ORG, &schema, &[tuple("platform:cell#admin@user:root")]).await;
    let org = Uuid::now_v7();
    assert!(check(&db, org, &schema, "platform:cell#administer@user:root").await);
    // An org cannot write platform rows: the row is written in its own org instead.
    let w = touch(&db, org, &schema, &[tuple("platform:cell#admin@user:mallory")]).await;
    assert!(w.changed);
    assert!(!check(&db, Uuid::now_v7(), &schema, "platform:cell#administer@user:mallory").await);
}

#[tokio::test]
async fn write_semantics() {
    let db = db().await;
    let schema = schema(&case());
    let org = Uuid::now_v7();
    let t = tuple("test_document:spec#viewer@user:vera");
    let first = touch(&db, org, &schema, std::slice::from_ref(&t)).await;
    assert_eq!(first, store::Written { revision: 1, changed: true });
    // TOUCH again: one row, and the revision is unchanged.
    let again = touch(&db, org, &schema, std::slice::from_ref(&t)).await;
    assert_eq!(again, store::Written { revision: 1, changed: false });
    assert_eq!(count(&db, org).await, 1);
    // CREATE of an existing row.
    let e = write(&db, org, &schema, &[(Operation::Create, t.clone())], &[]).await;
    assert_eq!(e, Err(WriteError::AlreadyExists { index: 0 }));
    // A permission, a subject type not allowed, a subject set required.
    for (s, field) in [
        ("test_document:spec#edit@user:x", "updates[0].relationship.relation"),
        ("test_document:spec#viewer@api_key:k1", "updates[0].relationship.subject.object.object_type"),
        ("test_document:spec#editor@team:eng", "updates[0].relationship.subject.optional_relation"),
        ("test_document:bad!id#viewer@user:x", "updates[0].relationship.resource.object_id"),
        ("test_document:spec#owner@user:*", "updates[0].relationship.subject.object.object_type"),
    ] {
        match write(&db, org, &schema, &[(Operation::Touch, tuple(s))], &[]).await {
            Err(WriteError::Invalid(v)) => assert_eq!(v[0].field, field, "{s}: {v:?}"),
            other => panic!("{s}: {other:?}"),
        }
    }
    // Duplicate updates.
    let dup = [(Operation::Touch, t.clone()), (Operation::Delete, t.clone())];
    assert!(
        matches!(write(&db, org, &schema, &dup, &[]).await, Err(WriteError::Invalid(v)) if v[0].reason == "DUPLICATE_UPDATE")
    );
    // A batch whose third update is invalid writes nothing.
    let batch = [
        (Operation::Touch, tuple("test_document:a#viewer@user:x")),
        (Operation::Touch, tuple("test_document:b#viewer@user:x")),
        (Operation::Touch, tuple("test_document:c#viewer@api_key:x")),
    ];
    assert!(matches!(write(&db, org, &schema, &batch, &[]).await, Err(WriteError::Invalid(_))));
    assert_eq!(count(&db, org).await, 1);
    // MUST_NOT_MATCH on an existing row: nothing written.
    let existing = Filter {
        resource_type: "test_document".into(),
        resource_id: Some("spec".into()),
        relation: Some("viewer".into()),
        subject_type: Some("user".into()),
        subject_id: Some("vera".into()),
        subject_relation: None,
    };
    let e = write(&db, org, &schema, &batch[..2], &[Precondition::MustNotMatch(existing.clone())]).await;
    assert_eq!(e, Err(WriteError::PreconditionFailed { index: 0 }));
    assert_eq!(count(&db, org).await, 1);
    // MUST_MATCH holds: both written in one revision, with two changelog rows.
    let w = write(&db, org, &schema, &batch[..2], &[Precondition::MustMatch(existing)]).await.expect("write");
    assert_eq!(w, store::Written { revision: 2, changed: true });
    let mut tx = db.tenant_tx_for(org, None).await.expect("tx");
    let log: Vec<(i64, i32, String)> =
        sqlx::query_as("select revision, ordinal, operation from permissions.changelog order by revision, ordinal")
            .fetch_all(&mut *tx)
            .await
            .expect("changelog");
    assert_eq!(log, vec![(1, 0, "touch".into()), (2, 0, "touch".into()), (2, 1, "touch".into())]);
    drop(tx);
    // DELETE of a missing row is a no-op at the current revision.
    let w = write(&db, org, &schema, &[(Operation::Delete, tuple("test_document:zz#viewer@user:x"))], &[]).await;
    assert_eq!(w, Ok(store::Written { revision: 2, changed: false }));
}

#[tokio::test]
async fn read_your_writes_with_tokens() {
    let db = db().await;
    let case = case();
    let schema = schema(&case);
    let (acme, globex) = (Uuid::now_v7(), Uuid::now_v7());
    let tuples: Vec<Tuple> = case.relationships.lines().filter(|l| !l.trim().is_empty()).map(tuple).collect();
    touch(&db, acme, &schema, &tuples).await;
    let vera = "test_document:spec#view@user:vera";
    assert!(!check(&db, acme, &schema, vera).await);
    let w = touch(&db, acme, &schema, &[tuple("test_document:spec#viewer@user:vera")]).await;
    let token = Zookie { org: acme, revision: w.revision }.encode();
    let z = Zookie::decode(&token, acme).expect("token");
    let mut tx = store::snapshot(&db, acme).await.expect("snapshot");
    assert!(store::revision(&mut tx, acme).await.expect("revision") >= z.revision);
    drop(tx);
    assert!(check(&db, acme, &schema, vera).await);
    let w2 = write(&db, acme, &schema, &[(Operation::Delete, tuple("test_document:spec#viewer@user:vera"))], &[])
        .await
        .expect("delete");
    assert!(w2.revision > w.revision);
    assert!(!check(&db, acme, &schema, vera).await);
    // A token of another org, and garbage.
    assert_eq!(Zookie::decode(&token, globex), Err(store::TokenError::OrgMismatch));
    assert_eq!(Zookie::decode("not-a-token", acme), Err(store::TokenError::Malformed));
}

#[tokio::test]
async fn subject_sets_are_read_in_bulk_from_postgres() {
    let db = db().await;
    let schema = schema(&case());
    let org = Uuid::now_v7();
    let mut tuples: Vec<Tuple> = (0..50).map(|i| tuple(&format!("team:top#member@team:t{i}#member"))).collect();
    tuples.push(tuple("team:t49#member@user:u"));
    touch(&db, org, &schema, &tuples).await;
    let mut tx = store::snapshot(&db, org).await.expect("snapshot");
    let mut reader = PgReader::new(&mut tx, org);
    let has = Evaluator::new(&schema, &mut reader, 50)
        .check(&ObjectRef::new("team", "top"), "member", &SubjectRef::new("user", "u"))
        .await;
    assert_eq!(has, Ok(true));
    assert_eq!(reader.queries, 2, "top#member, then the 50 nested teams in one query");
}

mod access_views;
mod cache;
mod grpc;
mod kit_authz;
mod registry;
mod roles;
mod schema_admin;
mod table;
