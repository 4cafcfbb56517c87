//! ReadSchema and ValidateSchema for platform administrators, and the schema event (spec
//! "Schema", flows 1 and 2).

use tonic::Code;
use trellis_proto::trellis::permissions::v1 as pb;

use super::grpc::{authed, service_token, updates};
use super::roles::Org;
use super::*;

fn validate(module: &str, schema: &str) -> pb::ValidateSchemaRequest {
    pb::ValidateSchemaRequest { module: module.into(), schema: schema.into() }
}

#[tokio::test]
async fn platform_admins_read_and_validate_the_schema_without_changing_it() {
    let org = Org::start().await;
    let mut c = org.c.clone();
    let case = case();
    // vera is a platform administrator (a platform-scope relationship written by identity).
    let platform = service_token(&org.cell, "identity", store::PLATFORM_ORG);
    c.rels
        .write_relationships(authed(
            updates(pb::Operation::Touch, &[org.tuple("platform:cell#admin@user:vera")]),
            &platform,
        ))
        .await
        .expect("platform admin");
    let vera = org.user("vera");
    let read = |module: &str| pb::ReadSchemaRequest { module: module.into() };

    let merged = c.schema.read_schema(authed(read(""), &vera)).await.expect("merged").into_inner();
    assert!(merged.schema.contains("definition test_document"), "{}", merged.schema);
    assert!(merged.schema.contains("// generated: custom-role hooks"), "the generated parts are marked");
    assert!(merged.schema.contains("permission role__test_document__edit = custom_role->test_document__edit"));
    let own = c.schema.read_schema(authed(read("acceptance"), &vera)).await.expect("module").into_inner();
    assert_eq!(own.schema, case.modules["acceptance"]);
    let e = c.schema.read_schema(authed(read(""), &org.user("carol"))).await.expect_err("an org admin only");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c.schema.read_schema(authed(read("nothing"), &vera)).await.expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);

    // Flow 2 through ValidateSchema: the same line, column and code as WriteSchema; nothing stored.
    let answer = c
        .schema
        .validate_schema(authed(validate("acceptance", "definition test_x {\n  relation viewer: usr\n}"), &vera))
        .await
        .expect("validate")
        .into_inner();
    let got: Vec<(u32, u32, String)> = answer.errors.iter().map(|e| (e.line, e.column, e.code.clone())).collect();
    assert_eq!((answer.valid, got), (false, vec![(2, 20, "UNKNOWN_TYPE".to_owned())]));
    let mixed = "definition test_x {\n  relation a: user\n  relation b: user\n  relation c: user\n  permission v = a + b - c\n}";
    let answer = c.schema.validate_schema(authed(validate("acceptance", mixed), &vera)).await.expect("v").into_inner();
    assert_eq!(answer.errors.first().map(|e| e.code.as_str()), Some("MIXED_OPERATORS"));
    // Removing test_document#banned while banned relationships exist.
    let without_banned = case.modules["acceptance"].replace("  relation banned: user\n", "").replace(
        "permission view = (viewer + edit + folder->view) - banned",
        "permission view = viewer + edit + folder->view",
    );
    let answer =
        c.schema.validate_schema(authed(validate("acceptance", &without_banned), &vera)).await.expect("v").into_inner();
    assert_eq!(answer.errors.first().map(|e| e.code.as_str()), Some("RELATION_IN_USE"), "{answer:?}");
    assert!(answer.errors[0].message.contains("2 stored relationships"), "{answer:?}");
    // A valid change reports its diff and still stores nothing.
    let with_hook = super::roles::acceptance_with_share_hook(&case);
    let answer = c
        .schema
        .validate_schema(authed(validate("acceptance", &with_hook), &org.service("acceptance")))
        .await
        .expect("service validates its own module")
        .into_inner();
    assert!(answer.valid, "{answer:?}");
    let after = c.schema.read_schema(authed(read(""), &vera)).await.expect("merged").into_inner();
    assert_eq!(after.hash, merged.hash, "validation changes nothing");
    let e = c
        .schema
        .validate_schema(authed(validate("acceptance", &with_hook), &org.service("tasks")))
        .await
        .expect_err("another module");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .schema
        .validate_schema(authed(validate("acceptance", mixed), &org.user("carol")))
        .await
        .expect_err("org admin");
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn each_schema_change_publishes_schema_updated() {
    let org = Org::start().await;
    // identity, permissions and acceptance were registered once each.
    assert_eq!(org.outbox("permissions.schema.updated").await, 3);
    let mut c = org.c.clone();
    let case = case();
    let write = |text: String| pb::WriteSchemaRequest { module: "acceptance".into(), schema: text, dry_run: false };
    // Unchanged text and dry runs publish nothing.
    c.schema
        .write_schema(authed(write(case.modules["acceptance"].clone()), &org.service("acceptance")))
        .await
        .expect("same");
    let dry = pb::WriteSchemaRequest { dry_run: true, ..write(super::roles::acceptance_with_share_hook(&case)) };
    c.schema.write_schema(authed(dry, &org.service("acceptance"))).await.expect("dry run");
    assert_eq!(org.outbox("permissions.schema.updated").await, 3);
    c.schema
        .write_schema(authed(write(super::roles::acceptance_with_share_hook(&case)), &org.service("acceptance")))
        .await
        .expect("changed");
    assert_eq!(org.outbox("permissions.schema.updated").await, 4);
}
