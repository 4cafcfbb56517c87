//! Schema registration (spec end-to-end flows 1 and 2, at the storage level).

use trellis_permissions::registry::{self, RegisterError, Registered};
use trellis_permissions::schema::Code;

use super::*;

async fn register(db: &Db, module: &str, source: &str) -> Result<Registered, RegisterError> {
    let mut tx = db.tx().await.expect("tx");
    let r = registry::register(&mut tx, module, source, &format!("service:{module}"), false).await;
    if r.is_ok() {
        tx.commit().await.expect("commit");
    }
    r
}

async fn merged_hash(db: &Db) -> Option<Vec<u8>> {
    sqlx::query_scalar("select hash from permissions.merged_schema").fetch_optional(db.pool()).await.expect("hash")
}

#[tokio::test]
async fn registration_order_errors_and_idempotence() {
    let db = db().await;
    let case = case();
    let acceptance = &case.modules["acceptance"];
    // Before identity: a missing dependency, not a typo.
    match register(&db, "acceptance", acceptance).await {
        Err(RegisterError::MissingDependency(types)) => {
            assert!(types.contains(&"organization".to_owned()), "{types:?}")
        }
        other => panic!("{other:?}"),
    }
    let first = register(&db, "identity", IDENTITY).await.expect("identity");
    assert!(first.changed);
    assert!(first.added.contains(&"organization#administer".to_owned()));
    register(&db, "permissions", trellis_permissions::SCHEMA).await.expect("permissions");
    let reg = register(&db, "acceptance", acceptance).await.expect("acceptance");
    assert!(reg.changed);
    assert!(reg.schema.grantable.contains(&("test_document".to_owned(), "edit".to_owned())));
    // Unchanged text: changed:false, same hash.
    let again = register(&db, "acceptance", acceptance).await.expect("again");
    assert_eq!((again.changed, &again.hash), (false, &reg.hash));
    let text: String =
        sqlx::query_scalar("select text from permissions.merged_schema").fetch_one(db.pool()).await.expect("text");
    assert!(text.contains("permission role__test_document__edit = custom_role->test_document__edit"), "{text}");
    let stored = merged_hash(&db).await;

    // Bad schemas: line, column and code; nothing changes.
    for (src, code, line, column) in [
        ("definition test_x {\n  relation viewer: usr\n}", Code::UnknownType, 2, 20),
        (
            "definition test_x {\n  relation viewer: user\n  permission view = viewer + edtor\n}",
            Code::UnknownName,
            3,
            30,
        ),
        (
            "definition test_x {\n  relation a: user\n  relation b: user\n  relation c: user\n  permission v = a + b - c\n}",
            Code::MixedOperators,
            5,
            24,
        ),
        ("definition test_x {\n  relation a: user\n", Code::Syntax, 3, 1),
        (
            "definition test_x {\n  relation member: team#member\n  permission v = member->view\n}",
            Code::ArrowLeftNotRelation,
            3,
            18,
        ),
    ] {
        match register(&db, "other", src).await {
            Err(RegisterError::Invalid(errors)) => {
                let e = &errors[0];
                assert_eq!(
                    (e.code, e.line, e.column, e.module.as_str()),
                    (code, line, column, "other"),
                    "{src}: {errors:?}"
                );
            }
            other => panic!("{src}: {other:?}"),
        }
    }
    // Another module declaring an owned definition.
    assert!(matches!(register(&db, "other", "definition team {}").await, Err(RegisterError::Conflict(_))));
    assert_eq!(merged_hash(&db).await, stored, "the stored schema is unchanged");
}

#[tokio::test]
async fn removing_a_relation_in_use_is_refused() {
    let db = db().await;
    let case = case();
    let acceptance = case.modules["acceptance"].clone();
    register(&db, "identity", IDENTITY).await.expect("identity");
    register(&db, "permissions", trellis_permissions::SCHEMA).await.expect("permissions");
    let reg = register(&db, "acceptance", &acceptance).await.expect("acceptance");
    let (acme, globex) = (Uuid::now_v7(), Uuid::now_v7());
    touch(&db, acme, &reg.schema, &[tuple("test_document:spec#banned@user:pat")]).await;
    touch(&db, globex, &reg.schema, &[tuple("test_document:x#banned@user:eve")]).await;
    let stored = merged_hash(&db).await;

    let without_banned = acceptance.replace("  relation banned: user\n", "").replace(
        "permission view = (viewer + edit + folder->view) - banned",
        "permission view = viewer + edit + folder->view",
    );
    assert_ne!(without_banned, acceptance);
    match register(&db, "acceptance", &without_banned).await {
        Err(RegisterError::InUse { code, what, count, sample }) => {
            assert_eq!((code, what.as_str(), count), ("RELATION_IN_USE", "test_document#banned", 2));
            assert!(sample.contains("#banned@user:"), "{sample}");
        }
        other => panic!("{other:?}"),
    }
    // Narrowing the subject types orphans rows too.
    let narrowed = acceptance.replace("relation banned: user", "relation banned: api_key");
    assert!(matches!(register(&db, "acceptance", &narrowed).await, Err(RegisterError::InUse { count: 2, .. })));
    // Removing the whole definition.
    let no_docs = acceptance.split("definition test_document").next().unwrap_or_default().to_owned();
    assert!(matches!(
        register(&db, "acceptance", &no_docs).await,
        Err(RegisterError::InUse { code: "DEFINITION_IN_USE", .. })
    ));
    assert_eq!(merged_hash(&db).await, stored);

    // Once the data is migrated, the removal goes through and is recorded in the history.
    let del = [(Operation::Delete, tuple("test_document:spec#banned@user:pat"))];
    write(&db, acme, &reg.schema, &del, &[]).await.expect("delete");
    let del = [(Operation::Delete, tuple("test_document:x#banned@user:eve"))];
    write(&db, globex, &reg.schema, &del, &[]).await.expect("delete");
    let done = register(&db, "acceptance", &without_banned).await.expect("removal");
    assert_eq!(done.removed, vec!["test_document#banned".to_owned()]);
    let versions: Vec<i32> =
        sqlx::query_scalar("select version from permissions.schema_history where module = 'acceptance' order by id")
            .fetch_all(db.pool())
            .await
            .expect("history");
    assert_eq!(versions, vec![1, 2]);
}
