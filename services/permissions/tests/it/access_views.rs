//! MyAccess and AccessAudit on the spec's data (flow 10), as end users call them.

use tonic::Code;
use tonic_types::StatusExt;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::access_service_client::AccessServiceClient;

use super::grpc::authed;
use super::roles::Org;

fn my_access(namespace: &str, permission: &str, page_size: i32, page_token: &str) -> pb::MyAccessRequest {
    pb::MyAccessRequest {
        namespace: namespace.into(),
        permission: permission.into(),
        page_size,
        page_token: page_token.into(),
        order_by: String::new(),
    }
}

fn audit(object_id: &str) -> pb::AccessAuditRequest {
    pb::AccessAuditRequest {
        namespace: "test_document".into(),
        object_id: object_id.into(),
        page_size: 0,
        page_token: String::new(),
    }
}

#[tokio::test]
async fn my_access_lists_relations_and_permissions_of_the_caller() {
    let org = Org::start().await;
    let mut access = AccessServiceClient::new(org.cell.channel("permissions").await);
    let bob = org.user("bob");

    let all = access.my_access(authed(my_access("test_document", "", 0, ""), &bob)).await.expect("my access");
    let got: Vec<(String, Vec<String>, Vec<String>)> =
        all.into_inner().objects.into_iter().map(|o| (o.object_id, o.relations, o.permissions)).collect();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("handbook".into(), s(&[]), s(&["view"])),
            ("public".into(), s(&["viewer"]), s(&["view"])),
            ("spec".into(), s(&["editor", "approver"]), s(&["edit", "view", "approve"])),
        ]
    );

    // Only the objects with a permission; paged by object id.
    let approve = access.my_access(authed(my_access("test_document", "approve", 0, ""), &bob)).await.expect("approve");
    let ids: Vec<String> = approve.into_inner().objects.into_iter().map(|o| o.object_id).collect();
    assert_eq!(ids, vec!["spec"]);
    let first = access.my_access(authed(my_access("test_document", "view", 2, ""), &bob)).await.expect("page");
    let first = first.into_inner();
    assert_eq!((first.objects.len(), first.total_size), (2, 3));
    let second = access
        .my_access(authed(my_access("test_document", "view", 2, &first.next_page_token), &bob))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.objects.iter().map(|o| o.object_id.as_str()).collect::<Vec<_>>(), vec!["spec"]);
    assert!(second.next_page_token.is_empty());

    // pat is banned from spec: edit, but not view.
    let pat = access.my_access(authed(my_access("test_document", "", 0, ""), &org.user("pat"))).await.expect("pat");
    let spec = pat.into_inner().objects.into_iter().find(|o| o.object_id == "spec").expect("spec");
    assert_eq!((spec.relations, spec.permissions), (s(&["editor", "banned"]), s(&["edit"])));

    for (ns, perm) in [("nothing", ""), ("test_document", "delete")] {
        let e = access.my_access(authed(my_access(ns, perm, 0, ""), &bob)).await.expect_err("unknown");
        assert_eq!(e.code(), Code::InvalidArgument, "{ns} {perm}");
    }
    let e = access
        .my_access(authed(my_access("test_document", "", 0, ""), &org.service("acceptance")))
        .await
        .expect_err("service");
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn access_audit_explains_who_has_access_and_is_for_sharers_and_admins() {
    let org = Org::start().await;
    let mut access = AccessServiceClient::new(org.cell.channel("permissions").await);

    let answer = access.access_audit(authed(audit("spec"), &org.user("dave"))).await.expect("audit").into_inner();
    let mut names: Vec<&str> = answer
        .subjects
        .iter()
        .filter_map(|s| {
            let id = &s.subject.as_ref()?.object.as_ref()?.object_id;
            org.ids.iter().find(|(_, v)| v.to_string() == *id).map(|(k, _)| *k)
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["bob", "carol", "dave", "olivia", "pat"]);
    assert_eq!(answer.total_size, 5);
    assert_eq!(answer.direct.len(), 6, "the relationships on spec");
    let of = |name: &str| {
        answer
            .subjects
            .iter()
            .find(|s| s.subject.as_ref().and_then(|x| x.object.as_ref()).is_some_and(|o| o.object_id == org.id(name)))
            .cloned()
            .expect("listed")
    };
    let path = |name: &str, permission: &str| {
        of(name).grants.into_iter().find(|g| g.permission == permission).map(|g| g.path).unwrap_or_default()
    };
    assert_eq!(
        path("bob", "edit"),
        vec!["test_document:spec#editor@team:eng#member".to_owned(), format!("team:eng#member@user:{}", org.id("bob")),]
    );
    assert_eq!(
        path("pat", "edit"),
        vec![
            "test_document:spec#editor@team:eng#member".to_owned(),
            "team:eng#member@team:platform#member".to_owned(),
            format!("team:platform#member@user:{}", org.id("pat")),
        ]
    );
    assert_eq!(
        path("carol", "edit"),
        vec!["org->administer".to_owned(), format!("organization:{}#admin@user:{}", org.acme, org.id("carol")),]
    );
    assert_eq!(of("pat").permissions, vec!["edit"], "banned from view");
    assert_eq!(of("bob").permissions, vec!["edit", "view", "approve"]);

    // Everyone (the wildcard) on public, minus eve.
    let public = access.access_audit(authed(audit("public"), &org.user("carol"))).await.expect("admin").into_inner();
    let everyone = public
        .subjects
        .iter()
        .find(|s| s.subject.as_ref().and_then(|x| x.object.as_ref()).is_some_and(|o| o.object_id == "*"))
        .expect("user:*");
    assert_eq!(everyone.excluded_subject_ids, vec![org.id("eve")]);
    assert_eq!(everyone.grants[0].path, vec!["test_document:public#viewer@user:*"]);

    // bob edits spec but cannot share it.
    let e = access.access_audit(authed(audit("spec"), &org.user("bob"))).await.expect_err("bob");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = access
        .access_audit(authed(pb::AccessAuditRequest { namespace: "nope".into(), ..audit("spec") }, &org.user("carol")))
        .await
        .expect_err("unknown");
    assert_eq!(
        (e.code(), e.get_error_details().error_info().map(|i| i.reason.clone())),
        (Code::InvalidArgument, Some("UNKNOWN_TYPE".into()))
    );
}

fn traced(org: &Org, check: &str) -> pb::CheckRequest {
    let t = org.tuple(check);
    let r = super::grpc::rel(&t);
    pb::CheckRequest {
        resource: r.resource,
        permission: r.relation,
        subject: r.subject,
        consistency: None,
        max_depth: 0,
        with_trace: true,
    }
}

fn find<'a>(n: &'a pb::TraceNode, f: &impl Fn(&pb::TraceNode) -> bool) -> Option<&'a pb::TraceNode> {
    if f(n) {
        return Some(n);
    }
    n.children.iter().find_map(|c| find(c, f))
}

#[tokio::test]
async fn check_with_trace_explains_yes_and_no_for_admins_only() {
    use trellis_proto::trellis::permissions::v1::check_service_client::CheckServiceClient;
    let org = Org::start().await;
    let mut check = CheckServiceClient::new(org.cell.channel("permissions").await);
    let carol = org.user("carol");

    // Flow 10: carol asks why pat can edit spec: through platform ⊂ eng.
    let yes = check.check(authed(traced(&org, "test_document:spec#edit@user:pat"), &carol)).await.expect("trace");
    let yes = yes.into_inner();
    assert_eq!(yes.permissionship, pb::Permissionship::HasPermission as i32);
    let trace = yes.trace.expect("trace");
    assert_eq!(
        trace.explanation,
        vec![format!(
            "user:{} ∈ team:platform#member ⊂ team:eng#member → test_document:spec#editor ⇒ edit",
            org.id("pat")
        )]
    );
    let root = trace.root.expect("root");
    assert_eq!((root.kind, root.name.as_str(), root.result), (pb::trace_node::Kind::Permission as i32, "edit", true));
    let direct = find(&root, &|n| n.kind == pb::trace_node::Kind::Direct as i32).expect("direct node");
    let r = direct.relationship.as_ref().expect("relationship");
    assert_eq!(r.resource.as_ref().map(|o| o.object_id.as_str()), Some("platform"));

    // And why pat cannot view it: the banned branch.
    let no = check.check(authed(traced(&org, "test_document:spec#view@user:pat"), &carol)).await.expect("trace");
    let no = no.into_inner();
    assert_eq!(no.permissionship, pb::Permissionship::NoPermission as i32);
    let trace = no.trace.expect("trace");
    assert!(trace.explanation[0].contains("test_document:spec#banned"), "{:?}", trace.explanation);
    let root = trace.root.expect("root");
    let exclusion = find(&root, &|n| n.kind == pb::trace_node::Kind::Exclusion as i32).expect("exclusion");
    assert_eq!(exclusion.children.iter().map(|c| c.result).collect::<Vec<_>>(), vec![true, true]);
    assert_eq!(exclusion.children[1].name, "banned");

    // A member may not trace, not even their own check; without a trace nothing changes.
    let e = check
        .check(authed(traced(&org, "test_document:spec#edit@user:bob"), &org.user("bob")))
        .await
        .expect_err("member");
    assert_eq!(e.code(), Code::PermissionDenied);
    let plain = pb::CheckRequest { with_trace: false, ..traced(&org, "test_document:spec#edit@user:bob") };
    let plain = check.check(authed(plain, &org.user("bob"))).await.expect("plain").into_inner();
    assert!(plain.trace.is_none());

    // Ten traces a minute per user: carol has used two.
    for _ in 0..8 {
        check.check(authed(traced(&org, "test_document:spec#edit@user:bob"), &carol)).await.expect("within limit");
    }
    let e = check.check(authed(traced(&org, "test_document:spec#edit@user:bob"), &carol)).await.expect_err("limit");
    let details = e.get_error_details();
    assert_eq!(
        (e.code(), details.error_info().map(|i| i.reason.clone())),
        (Code::ResourceExhausted, Some("RATE_LIMITED".into()))
    );
    assert!(details.retry_info().is_some());
    // Services are not limited.
    let service = org.service("acceptance");
    for _ in 0..3 {
        check.check(authed(traced(&org, "test_document:spec#edit@user:bob"), &service)).await.expect("service");
    }
}
