//! The spec's acceptance flows over gRPC, as services call them: the correctness table (rows 1–28
//! exactly), the lookups, Expand, cycles and depth; delete by filter (flow 5); ReadRelationships;
//! Watch (flow 6). The org `acme` is a UUID, so its object is `organization:<uuid>`.

use tonic::{Code, Status};
use tonic_types::StatusExt;
use trellis_kit::testing::TestCell;
use trellis_proto::trellis::permissions::v1 as pb;

use super::grpc::{Clients, authed, check_req, clients, has, service_token, updates};
use super::*;

pub(crate) struct World {
    pub cell: TestCell,
    pub c: Clients,
    pub acme: Uuid,
    pub globex: Uuid,
}

impl World {
    pub fn sub(&self, s: &str) -> String {
        s.replace("organization:acme", &format!("organization:{}", self.acme))
            .replace("organization:globex", &format!("organization:{}", self.globex))
    }
    pub fn token(&self, service: &str) -> String {
        service_token(&self.cell, service, self.acme)
    }
    pub fn token_in(&self, service: &str, org: Uuid) -> String {
        service_token(&self.cell, service, org)
    }
}

pub(crate) fn reason(e: &Status) -> Option<String> {
    e.get_error_details().error_info().map(|i| i.reason.clone())
}

/// A permissions cell with the acceptance schema and the table's relationships in acme (and
/// gina's admin tuple in globex).
pub(crate) async fn world() -> World {
    let cell = TestCell::start(vec![trellis_permissions::module()]).await;
    let mut c = clients(&cell).await;
    let (acme, globex) = (Uuid::now_v7(), Uuid::now_v7());
    let case = case();
    let req = |m: &str, s: &str| pb::WriteSchemaRequest { module: m.into(), schema: s.into(), dry_run: false };
    for (m, s) in [
        ("identity", IDENTITY),
        ("permissions", trellis_permissions::SCHEMA),
        ("acceptance", &case.modules["acceptance"]),
    ] {
        c.schema.write_schema(authed(req(m, s), &service_token(&cell, m, acme))).await.expect("schema");
    }
    let w = World { cell, c, acme, globex };
    let tuples: Vec<Tuple> =
        case.relationships.lines().filter(|l| !l.trim().is_empty()).map(|l| tuple(&w.sub(l))).collect();
    let (own, identity): (Vec<Tuple>, Vec<Tuple>) =
        tuples.into_iter().partition(|t| t.resource.ty.starts_with("test_"));
    let mut c = w.c.clone();
    c.rels
        .write_relationships(authed(updates(pb::Operation::Touch, &identity), &w.token("identity")))
        .await
        .expect("id");
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &own), &w.token("acceptance"))).await.expect("own");
    let gina = [tuple(&w.sub("organization:globex#admin@user:gina"))];
    c.rels
        .write_relationships(authed(updates(pb::Operation::Touch, &gina), &w.token_in("identity", globex)))
        .await
        .expect("globex");
    w
}

async fn lookup(w: &World, ty: &str, perm: &str, subject: &str, org_wide: bool) -> (Vec<String>, bool) {
    let mut c = w.c.clone();
    let req = pb::LookupResourcesRequest {
        resource_type: ty.into(),
        permission: perm.into(),
        subject: check_req(&format!("x:y#z@{subject}"), None).subject,
        consistency: None,
        limit: 0,
        cursor: String::new(),
        allow_org_wide: org_wide,
    };
    let mut stream = c.check.lookup_resources(authed(req, &w.token("acceptance"))).await.expect("lookup").into_inner();
    let (mut ids, mut wide) = (Vec::new(), false);
    while let Some(m) = stream.message().await.expect("message") {
        if m.org_wide {
            wide = true;
        } else {
            ids.push(m.resource_id);
        }
    }
    (ids, wide)
}

async fn subjects(w: &World, resource: &str, perm: &str, ty: &str) -> Vec<(String, Vec<String>)> {
    let mut c = w.c.clone();
    let r = check_req(&format!("{}#{perm}@x:y", w.sub(resource)), None);
    let req = pb::LookupSubjectsRequest {
        resource: r.resource,
        permission: perm.into(),
        subject_type: ty.into(),
        subject_relation: String::new(),
        consistency: None,
        limit: 0,
        cursor: String::new(),
    };
    let mut stream = c.check.lookup_subjects(authed(req, &w.token("acceptance"))).await.expect("subjects").into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.expect("message") {
        out.push((m.subject_id, m.excluded_subject_ids));
    }
    out
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_correctness_table_lookups_expand_cycles_and_depth_over_grpc() {
    let w = world().await;
    let mut c = w.c.clone();
    let t = w.token("acceptance");
    // The table, row by row: (check, expected) with `None` for INVALID_ARGUMENT.
    let table: [(&str, Option<bool>); 28] = [
        ("test_document:spec#edit@user:dave", Some(true)),
        ("test_document:spec#edit@user:bob", Some(true)),
        ("test_document:spec#edit@user:pat", Some(true)),
        ("test_document:spec#edit@user:carol", Some(true)),
        ("test_document:spec#edit@user:olivia", Some(true)),
        ("test_document:spec#edit@user:gina", Some(false)),
        ("test_document:spec#edit@user:vera", Some(false)),
        ("test_document:spec#view@user:pat", Some(false)),
        ("test_document:spec#view@user:bob", Some(true)),
        ("test_document:spec#approve@user:bob", Some(true)),
        ("test_document:spec#approve@user:vera", Some(false)),
        ("test_document:spec#approve@user:carol", Some(false)),
        ("test_document:spec#share@user:bob", Some(false)),
        ("test_document:handbook#view@user:vera", Some(true)),
        ("test_document:handbook#view@api_key:k1", Some(true)),
        ("test_document:handbook#view@user:gina", Some(false)),
        ("test_document:handbook#edit@user:dave", Some(false)),
        ("test_document:public#view@user:frank", Some(true)),
        ("test_document:public#view@user:eve", Some(false)),
        ("test_document:public#view@api_key:k1", Some(false)),
        ("test_document:public#view@user:gina", Some(true)),
        ("team:eng#member@user:pat", Some(true)),
        ("team:platform#view@user:bob", Some(false)),
        ("team:platform#manage@user:max", Some(true)),
        ("team:eng#manage@user:pat", Some(false)),
        ("organization:acme#view@user:frank", Some(false)),
        ("test_document:nothere#view@user:olivia", Some(false)),
        ("test_document:spec#delete@user:olivia", None),
    ];
    for (i, (s, expect)) in table.iter().enumerate() {
        let s = w.sub(s);
        let got = c.check.check(authed(check_req(&s, None), &t)).await;
        match expect {
            Some(e) => {
                let got = got.unwrap_or_else(|e| panic!("row {}: {s}: {e:?}", i + 1)).into_inner().permissionship;
                let want = if *e { pb::Permissionship::HasPermission } else { pb::Permissionship::NoPermission } as i32;
                assert_eq!(got, want, "row {}: {s}", i + 1);
            }
            None => {
                let e = got.expect_err("unknown permission");
                assert_eq!((e.code(), reason(&e)), (Code::InvalidArgument, Some("UNKNOWN_PERMISSION".into())));
            }
        }
    }

    // Lookups on the same data.
    assert_eq!(
        lookup(&w, "test_document", "view", "user:bob", false).await,
        (ids(&["handbook", "public", "spec"]), false)
    );
    assert_eq!(lookup(&w, "test_document", "view", "user:pat", false).await, (ids(&["handbook", "public"]), false));
    assert_eq!(lookup(&w, "test_document", "view", "user:eve", false).await, (ids(&[]), false));
    assert_eq!(lookup(&w, "test_document", "view", "user:frank", false).await, (ids(&["public"]), false));
    assert_eq!(lookup(&w, "test_document", "edit", "user:carol", true).await, (ids(&[]), true));
    assert_eq!(
        lookup(&w, "test_document", "edit", "user:carol", false).await,
        (ids(&["handbook", "public", "spec"]), false)
    );
    // bob is not an org admin: no shortcut, the ids stream.
    assert_eq!(lookup(&w, "test_document", "edit", "user:bob", true).await, (ids(&["spec"]), false));
    let plain = |v: &[&str]| v.iter().map(|s| (s.to_string(), Vec::new())).collect::<Vec<_>>();
    assert_eq!(
        subjects(&w, "test_document:spec", "edit", "user").await,
        plain(&["bob", "carol", "dave", "olivia", "pat"])
    );
    assert_eq!(subjects(&w, "test_document:spec", "view", "user").await, plain(&["bob", "carol", "dave", "olivia"]));
    let mut public = vec![("*".to_string(), ids(&["eve"]))];
    public.extend(plain(&["carol", "olivia"]));
    assert_eq!(subjects(&w, "test_document:public", "view", "user").await, public);
    assert_eq!(subjects(&w, "test_document:handbook", "view", "api_key").await, plain(&["k1"]));
    assert_eq!(subjects(&w, "team:eng", "member", "user").await, plain(&["bob", "pat"]));

    // Expand(spec, edit) = union[owner; editor; org->administer; org->role__test_document__edit].
    let r = check_req("test_document:spec#edit@x:y", None);
    let tree = c
        .check
        .expand(authed(pb::ExpandRequest { resource: r.resource, permission: "edit".into(), consistency: None }, &t))
        .await
        .expect("expand")
        .into_inner()
        .tree
        .expect("tree");
    use pb::expand_node::Kind;
    assert_eq!((tree.kind(), tree.name.as_str()), (Kind::Permission, "edit"));
    let union = &tree.children[0];
    assert_eq!(union.kind(), Kind::Union);
    let leaves: Vec<(Kind, String, String, Vec<String>)> = union
        .children
        .iter()
        .map(|n| {
            let subjects = n
                .subjects
                .iter()
                .map(|s| {
                    let o = s.object.as_ref().expect("object");
                    let set = if s.optional_relation.is_empty() {
                        String::new()
                    } else {
                        format!("#{}", s.optional_relation)
                    };
                    format!("{}:{}{set}", o.object_type, o.object_id)
                })
                .collect();
            (n.kind(), n.arrow_relation.clone(), n.name.clone(), subjects)
        })
        .collect();
    let org = format!("organization:{}", w.acme);
    assert_eq!(
        leaves,
        vec![
            (Kind::Relation, String::new(), "owner".into(), vec!["user:dave".to_string()]),
            (Kind::Relation, String::new(), "editor".into(), vec!["team:eng#member".to_string()]),
            (Kind::Arrow, "org".into(), "administer".into(), vec![format!("{org}#administer")]),
            (
                Kind::Arrow,
                "org".into(),
                "role__test_document__edit".into(),
                vec![format!("{org}#role__test_document__edit")]
            ),
        ]
    );

    // Cycle (org loop) and depth (org depth) data.
    let lp = Uuid::now_v7();
    let as_identity = w.token_in("identity", lp);
    let cycle = ["team:a#member@team:b#member", "team:b#member@team:a#member", "team:a#member@user:x"].map(tuple);
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &cycle), &as_identity)).await.expect("cycle");
    assert!(has(&mut c, &as_identity, "team:b#member@user:x", None).await);
    assert!(!has(&mut c, &as_identity, "team:a#member@user:y", None).await);
    let mut chain: Vec<Tuple> = (1..60).map(|i| tuple(&format!("team:t{i}#member@team:t{}#member", i + 1))).collect();
    chain.push(tuple("team:t60#member@user:z"));
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &chain), &as_identity)).await.expect("chain");
    assert!(has(&mut c, &as_identity, "team:t30#member@user:z", None).await);
    let e = c.check.check(authed(check_req("team:t1#member@user:z", None), &as_identity)).await.expect_err("deep");
    assert_eq!((e.code(), reason(&e)), (Code::ResourceExhausted, Some("MAX_DEPTH_EXCEEDED".into())));
}

async fn read_all(w: &World, token: &str, f: pb::RelationshipFilter) -> Vec<String> {
    let mut c = w.c.clone();
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::ReadRelationshipsRequest {
            filter: Some(f.clone()),
            consistency: None,
            page_size: 1000,
            page_token: page_token.clone(),
        };
        let r = c.rels.read_relationships(authed(req, token)).await.expect("read").into_inner();
        out.extend(r.relationships.iter().map(|r| {
            let s = r.subject.as_ref().expect("subject");
            let (res, so) = (r.resource.as_ref().expect("resource"), s.object.as_ref().expect("object"));
            let set = if s.optional_relation.is_empty() { String::new() } else { format!("#{}", s.optional_relation) };
            format!("{}:{}#{}@{}:{}{set}", res.object_type, res.object_id, r.relation, so.object_type, so.object_id)
        }));
        if r.next_page_token.is_empty() {
            return out;
        }
        page_token = r.next_page_token;
    }
}

fn by_subject(ty: &str, st: &str, sid: &str) -> pb::RelationshipFilter {
    pb::RelationshipFilter {
        resource_type: ty.into(),
        optional_subject_type: st.into(),
        optional_subject_id: sid.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn delete_by_filter_is_all_or_nothing_and_read_pages_in_key_order() {
    let w = world().await;
    let mut c = w.c.clone();
    let (ti, ta) = (w.token("identity"), w.token("acceptance"));
    // A bob tuple in globex, which the acme delete must not touch.
    let gb = w.token_in("identity", w.globex);
    let globex_bob = [tuple(&w.sub("organization:globex#member@user:bob"))];
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &globex_bob), &gb)).await.expect("globex");

    // ReadRelationships: PK order, filtered.
    let acme_org = format!("organization:{}", w.acme);
    assert_eq!(
        read_all(&w, &ta, by_subject("test_document", "user", "bob")).await,
        vec!["test_document:spec#approver@user:bob".to_string()]
    );
    assert_eq!(
        read_all(
            &w,
            &ta,
            pb::RelationshipFilter {
                resource_type: "team".into(),
                optional_resource_id: "eng".into(),
                ..Default::default()
            }
        )
        .await,
        vec![
            "team:eng#maintainer@user:max".to_string(),
            "team:eng#member@team:platform#member".into(),
            "team:eng#member@user:bob".into(),
            format!("team:eng#org@{acme_org}"),
        ]
    );
    let bad = pb::ReadRelationshipsRequest {
        filter: Some(by_subject("team", "", "")),
        consistency: None,
        page_size: 1,
        page_token: "tampered.token".into(),
    };
    let e = c.rels.read_relationships(authed(bad, &ta)).await.expect_err("bad page token");
    assert_eq!(reason(&e), Some("INVALID_PAGE_TOKEN".into()));

    // Only identity deletes by subject alone; everyone else names a type of its own module.
    let by_bob = pb::RelationshipFilter {
        optional_subject_type: "user".into(),
        optional_subject_id: "bob".into(),
        ..Default::default()
    };
    let del = |f: pb::RelationshipFilter, limit: u32, partial: bool| pb::DeleteRelationshipsRequest {
        filter: Some(f),
        preconditions: Vec::new(),
        limit,
        allow_partial: partial,
    };
    let e = c.rels.delete_relationships(authed(del(by_bob.clone(), 0, false), &ta)).await.expect_err("not identity");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .rels
        .delete_relationships(authed(del(by_subject("team", "user", "bob"), 0, false), &ta))
        .await
        .expect_err("foreign");
    assert_eq!((e.code(), reason(&e)), (Code::PermissionDenied, Some("FOREIGN_TYPE".into())));
    // A failed precondition deletes nothing.
    let mut guarded = del(by_bob.clone(), 0, false);
    guarded.preconditions.push(pb::Precondition {
        operation: pb::precondition::PreconditionOperation::MustNotMatch as i32,
        filter: Some(by_subject("team", "user", "bob")),
    });
    let e = c.rels.delete_relationships(authed(guarded, &ti)).await.expect_err("precondition");
    assert_eq!((e.code(), reason(&e)), (Code::FailedPrecondition, Some("PRECONDITION_FAILED".into())));
    assert!(has(&mut c, &ta, "team:eng#member@user:bob", None).await);

    // Flow 5: every bob tuple in acme goes, in one revision; globex is untouched.
    let r = c.rels.delete_relationships(authed(del(by_bob, 0, false), &ti)).await.expect("delete").into_inner();
    assert_eq!((r.deleted_count, r.partial), (3, false), "org member, team member, approver: {r:?}");
    let token = r.written_at.expect("token");
    for ty in ["organization", "team", "test_document"] {
        assert!(read_all(&w, &ta, by_subject(ty, "user", "bob")).await.is_empty(), "{ty}");
    }
    assert!(!has(&mut c, &ta, "test_document:spec#edit@user:bob", super::grpc::fresh(&token)).await);
    assert_eq!(
        read_all(&w, &gb, by_subject("organization", "user", "bob")).await,
        vec![w.sub("organization:globex#member@user:bob")]
    );

    // 12,000 matches with the limit 10,000: refused whole, or 10,000 with allow_partial.
    for chunk in 0..12 {
        let batch: Vec<Tuple> =
            (0..1000).map(|i| tuple(&format!("test_document:bulk#viewer@user:u{:05}", chunk * 1000 + i))).collect();
        c.rels.write_relationships(authed(updates(pb::Operation::Touch, &batch), &ta)).await.expect("bulk");
    }
    let bulk = pb::RelationshipFilter {
        resource_type: "test_document".into(),
        optional_resource_id: "bulk".into(),
        ..Default::default()
    };
    let e = c.rels.delete_relationships(authed(del(bulk.clone(), 10_000, false), &ta)).await.expect_err("too many");
    assert_eq!((e.code(), reason(&e)), (Code::FailedPrecondition, Some("TOO_MANY_MATCHES".into())));
    let all = read_all(&w, &ta, bulk.clone()).await;
    assert_eq!(all.len(), 12_000);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "primary-key order across pages");
    let r =
        c.rels.delete_relationships(authed(del(bulk.clone(), 10_000, true), &ta)).await.expect("partial").into_inner();
    assert_eq!((r.deleted_count, r.partial), (10_000, true));
    assert_eq!(read_all(&w, &ta, bulk).await, all[10_000..].to_vec(), "the first 10,000 in key order went");
}

async fn next(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("a message within 5 s")
        .expect("stream")
        .expect("open")
}

fn names(m: &pb::WatchResponse) -> Vec<(i32, String)> {
    m.updates
        .iter()
        .map(|u| {
            let r = u.relationship.as_ref().expect("relationship");
            let s = r.subject.as_ref().and_then(|s| s.object.as_ref()).expect("subject");
            (u.operation, format!("{}#{}@{}", r.resource.as_ref().expect("r").object_id, r.relation, s.object_id))
        })
        .collect()
}

#[tokio::test]
async fn watch_streams_changes_in_revision_order_resumes_and_stays_in_its_org() {
    let w = world().await;
    let mut c = w.c.clone();
    let ta = w.token("acceptance");
    let tg = w.token_in("acceptance", w.globex);
    let watch = |cursor: Option<pb::ZedToken>| pb::WatchRequest { object_types: Vec::new(), start_cursor: cursor };
    let mut acme = c.check.watch(authed(watch(None), &ta)).await.expect("watch").into_inner();
    let mut globex = c.check.watch(authed(watch(None), &tg)).await.expect("watch").into_inner();
    let first = [tuple("test_document:w1#viewer@user:a"), tuple("test_document:w2#viewer@user:b")];
    c.rels.write_relationships(authed(updates(pb::Operation::Touch, &first), &ta)).await.expect("first");
    c.rels.write_relationships(authed(updates(pb::Operation::Delete, &first[..1]), &ta)).await.expect("second");
    let (touch, delete) = (pb::Operation::Touch as i32, pb::Operation::Delete as i32);
    let m1 = next(&mut acme).await;
    assert_eq!(names(&m1), vec![(touch, "w1#viewer@a".into()), (touch, "w2#viewer@b".into())]);
    let m2 = next(&mut acme).await;
    assert_eq!(names(&m2), vec![(delete, "w1#viewer@a".into())]);
    let (c1, c2) = (m1.changes_through.clone().expect("cursor"), m2.changes_through.clone().expect("cursor"));
    assert!(
        Zookie::decode(&c2.token, w.acme).expect("c2").revision
            > Zookie::decode(&c1.token, w.acme).expect("c1").revision
    );
    // Resuming from the first cursor delivers only the rest.
    let mut resumed = c.check.watch(authed(watch(Some(c1.clone())), &ta)).await.expect("resume").into_inner();
    assert_eq!(names(&next(&mut resumed).await), names(&m2));
    // globex sees its own change first, none of acme's.
    c.rels
        .write_relationships(authed(updates(pb::Operation::Touch, &[tuple("test_document:g#viewer@user:g")]), &tg))
        .await
        .expect("globex");
    assert_eq!(names(&next(&mut globex).await), vec![(touch, "g#viewer@g".into())]);
    // Object types filter the updates.
    let mut teams = c
        .check
        .watch(authed(pb::WatchRequest { object_types: vec!["team".into()], start_cursor: Some(c1.clone()) }, &ta))
        .await
        .expect("typed")
        .into_inner();
    let m = next(&mut teams).await;
    assert!(m.updates.is_empty(), "no team changes: {m:?}");
    // Past the retention the cursor is refused.
    let pool = w.cell.owner_pool().await;
    sqlx::query("select permissions.purge_changelog(0)").execute(&pool).await.expect("purge");
    let e = c.check.watch(authed(watch(Some(c1)), &ta)).await.expect_err("expired");
    assert_eq!((e.code(), reason(&e)), (Code::FailedPrecondition, Some("REVISION_EXPIRED".into())));
    // A user token is refused.
    let user = w.cell.token(Uuid::now_v7(), w.acme);
    assert_eq!(c.check.watch(authed(watch(None), &user)).await.expect_err("user").code(), Code::PermissionDenied);
}
