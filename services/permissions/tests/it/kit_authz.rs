//! `kit::authz` against the served permissions module: registration with retry while a
//! dependency is missing, touch/delete, check, check_bulk and lookup_resources.

use std::sync::Arc;
use std::time::Duration;

use trellis_kit::authz::{Authz, Credentials, Ref, TokenFuture};
use trellis_kit::testing::TestCell;

use super::*;

/// Pre-signed service tokens: one acting in the org, one without an org.
#[derive(Debug)]
struct Fixed {
    with_org: String,
    without: String,
}

impl Credentials for Fixed {
    fn token(&self, org: Option<Uuid>) -> TokenFuture<'_> {
        let t = if org.is_some() { self.with_org.clone() } else { self.without.clone() };
        Box::pin(async move { Ok(t) })
    }
}

fn client(cell: &TestCell, service: &str, org: Uuid) -> Authz {
    let token = grpc::service_token(cell, service, org);
    let url = cell.config.urls.get("permissions").expect("url");
    Authz::new(url, Arc::new(Fixed { with_org: token.clone(), without: token })).expect("client")
}

#[tokio::test]
async fn kit_client_registers_with_retry_and_evaluates() {
    let cell = TestCell::start(vec![trellis_permissions::module()]).await;
    let case = case();
    let acme = Uuid::now_v7();
    let acceptance = client(&cell, "acceptance", acme);
    let identity = client(&cell, "identity", acme);
    let permissions = client(&cell, "permissions", acme);

    // Registered before identity: retried until identity is there.
    let source: &'static str = Box::leak(case.modules["acceptance"].clone().into_boxed_str());
    let pending = {
        let c = acceptance.clone();
        tokio::spawn(async move { c.register_schema("acceptance", source, Duration::from_millis(200)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "must wait for identity");
    assert!(identity.register_schema("identity", IDENTITY, Duration::from_secs(1)).await.expect("identity"));
    permissions
        .register_schema("permissions", trellis_permissions::SCHEMA, Duration::from_secs(1))
        .await
        .expect("role");
    let changed = tokio::time::timeout(Duration::from_secs(10), pending).await.expect("in time").expect("join");
    assert!(changed.expect("registered"), "first registration changes the schema");
    // An invalid schema is not retried.
    let e = acceptance.register_schema("acceptance", "definition {", Duration::from_secs(1)).await.expect_err("bad");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    let r = |s: &str| {
        let t = tuple(s);
        (
            Ref::new(&t.resource.ty, &t.resource.id),
            t.relation.clone(),
            Ref::set(&t.subject.ty, &t.subject.id, &t.subject.relation),
        )
    };
    identity
        .touch(acme, &[r("organization:acme#admin@user:carol"), r("organization:acme#member@user:bob")])
        .await
        .expect("org");
    let written = acceptance
        .touch(
            acme,
            &[
                r("test_document:a#org@organization:acme"),
                r("test_document:b#viewer@user:bob"),
                r("test_document:c#owner@user:bob"),
            ],
        )
        .await
        .expect("docs");
    let doc = |id: &str| Ref::new("test_document", id);
    let bob = Ref::new("user", "bob");
    assert!(acceptance.check(acme, &doc("b"), "view", &bob, Some(&written)).await.expect("check"));
    assert!(!acceptance.check(acme, &doc("a"), "edit", &bob, Some(&written)).await.expect("check"));
    let bulk = acceptance
        .check_bulk(
            acme,
            &[(doc("a"), "edit".into(), Ref::new("user", "carol")), (doc("a"), "nope".into(), bob.clone())],
            None,
        )
        .await
        .expect("bulk");
    assert_eq!(bulk, vec![Ok(true), Err("UNKNOWN_PERMISSION".to_owned())]);
    let ids = acceptance.lookup_resources(acme, "test_document", "view", &bob, 1, None).await.expect("lookup");
    assert_eq!(ids, vec!["b", "c"]);
    let after = acceptance.delete(acme, &[r("test_document:b#viewer@user:bob")]).await.expect("delete");
    assert!(!acceptance.check(acme, &doc("b"), "view", &bob, Some(&after)).await.expect("check"));
}
