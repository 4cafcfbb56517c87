//! Custom roles over gRPC as end users call them through the gateway (spec flow 9): creation
//! with validation, assignment to users and teams, updates, deletion, the built-in roles, the
//! events, and re-expansion when the schema changes.

use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use trellis_kit::testing::TestCell;
use trellis_proto::trellis::permissions::v1 as pb;
use trellis_proto::trellis::permissions::v1::role_service_client::RoleServiceClient;

use super::grpc::{Clients, authed, clients, has, service_token, updates};
use super::*;

/// The acceptance module with the `share` hook added (flow 9: "adding a hook for share").
pub(crate) fn acceptance_with_share_hook(case: &Case) -> String {
    case.modules["acceptance"].replace(
        "permission share = owner + org->administer",
        "permission share = owner + org->administer + org->role__test_document__share",
    )
}

/// An org with the spec's people, as real ids: olivia owner, carol admin, bob, dave and pat
/// members, vera viewer; gina belongs to another org. The acceptance data is written with
/// `organization:<acme id>` in place of `organization:acme`.
pub(crate) struct Org {
    pub(crate) cell: TestCell,
    pub(crate) c: Clients,
    pub(crate) acme: Uuid,
    pub(crate) ids: BTreeMap<&'static str, Uuid>,
}

impl Org {
    pub(crate) async fn start() -> Org {
        let cell = TestCell::start(vec![trellis_permissions::module()]).await;
        let mut c = clients(&cell).await;
        let case = case();
        let acme = Uuid::now_v7();
        let ids: BTreeMap<&'static str, Uuid> =
            ["olivia", "carol", "bob", "dave", "pat", "vera", "gina", "eve", "max", "frank"]
                .into_iter()
                .map(|n| (n, Uuid::now_v7()))
                .collect();
        for (m, s) in [
            ("identity", IDENTITY.to_owned()),
            ("permissions", trellis_permissions::SCHEMA.to_owned()),
            ("acceptance", case.modules["acceptance"].clone()),
        ] {
            let req = pb::WriteSchemaRequest { module: m.into(), schema: s, dry_run: false };
            c.schema.write_schema(authed(req, &service_token(&cell, m, acme))).await.expect("schema");
        }
        let org = Org { cell, c, acme, ids };
        let tuples: Vec<Tuple> = case
            .relationships
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("globex"))
            .map(|l| org.tuple(l))
            .collect();
        let (own, identity): (Vec<Tuple>, Vec<Tuple>) =
            tuples.into_iter().partition(|t| t.resource.ty.starts_with("test_"));
        org.write("identity", pb::Operation::Touch, &identity).await;
        org.write("acceptance", pb::Operation::Touch, &own).await;
        org
    }

    /// A tuple of the spec's text with the people and the org replaced by their ids.
    pub(crate) fn tuple(&self, s: &str) -> Tuple {
        let mut t = tuple(s);
        let fix = |ty: &str, id: &mut String| {
            if ty == "organization" && id == "acme" {
                *id = self.acme.to_string();
            } else if ty == "user"
                && let Some(u) = self.ids.get(id.as_str())
            {
                *id = u.to_string();
            }
        };
        fix(&t.resource.ty.clone(), &mut t.resource.id);
        fix(&t.subject.ty.clone(), &mut t.subject.id);
        t
    }

    pub(crate) async fn write(&self, service: &str, op: pb::Operation, tuples: &[Tuple]) -> pb::ZedToken {
        let mut c = self.c.clone();
        c.rels
            .write_relationships(authed(updates(op, tuples), &self.service(service)))
            .await
            .expect("write")
            .into_inner()
            .written_at
            .expect("token")
    }

    pub(crate) fn service(&self, name: &str) -> String {
        service_token(&self.cell, name, self.acme)
    }

    pub(crate) fn user(&self, name: &str) -> String {
        self.cell.token(self.ids[name], self.acme)
    }

    pub(crate) fn id(&self, name: &str) -> String {
        self.ids[name].to_string()
    }

    /// Check as a service, fully consistent.
    pub(crate) async fn has(&self, s: &str) -> bool {
        let t = self.tuple(s);
        let mut c = self.c.clone();
        let full = Some(pb::Consistency { requirement: Some(pb::consistency::Requirement::FullyConsistent(true)) });
        has(&mut c, &self.service("acceptance"), &t.to_string(), full).await
    }

    pub(crate) async fn roles(&self) -> RoleServiceClient<Channel> {
        RoleServiceClient::new(self.cell.channel("permissions").await)
    }

    pub(crate) async fn outbox(&self, event_type: &str) -> i64 {
        let pool = self.cell.owner_pool().await;
        sqlx::query_scalar("select count(*) from permissions.outbox where event_type = $1")
            .bind(event_type)
            .fetch_one(&pool)
            .await
            .expect("outbox")
    }
}

fn reason(e: &tonic::Status) -> String {
    e.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

fn fields(e: &tonic::Status) -> Vec<String> {
    e.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn create(name: &str, permissions: &[&str]) -> pb::CreateRoleRequest {
    pb::CreateRoleRequest {
        name: name.into(),
        description: String::new(),
        permissions: permissions.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn assign(role: &str, ty: &str, id: &str) -> pb::AssignRoleRequest {
    pb::AssignRoleRequest { role_id: role.into(), subject: Some(pb::RoleSubject { r#type: ty.into(), id: id.into() }) }
}

#[tokio::test]
async fn a_custom_role_grants_through_users_and_teams_and_follows_updates() {
    let org = Org::start().await;
    let mut roles = org.roles().await;
    let carol = org.user("carol");

    // An admin creates the role; the spec's flow 9.
    let role = roles
        .create_role(authed(create("reviewer", &["test_document:edit"]), &carol))
        .await
        .expect("create")
        .into_inner()
        .role
        .expect("role");
    assert_eq!(role.expanded_permissions, vec!["test_document:edit"]);
    assert!(!role.is_system);
    assert_eq!(org.outbox("permissions.role.created").await, 1);

    assert!(!org.has("test_document:spec#edit@user:vera").await);
    roles.assign_role(authed(assign(&role.id, "user", &org.id("vera")), &carol)).await.expect("assign");
    assert!(org.has("test_document:spec#edit@user:vera").await, "the role grants edit");
    // Exclusions written around the hook still apply: view = (… + edit) - banned.
    assert!(org.has("test_document:spec#view@user:vera").await);
    let listed = roles
        .list_role_assignments(authed(
            pb::ListRoleAssignmentsRequest { role_id: role.id.clone(), page_size: 0, page_token: String::new() },
            &carol,
        ))
        .await
        .expect("assignments")
        .into_inner();
    assert_eq!((listed.total_size, listed.subjects[0].id.clone()), (1, org.id("vera")));
    let unassign = |ty: &str, id: String| pb::UnassignRoleRequest {
        role_id: role.id.clone(),
        subject_type: ty.into(),
        subject_id: id,
    };
    roles.unassign_role(authed(unassign("user", org.id("vera")), &carol)).await.expect("unassign");
    assert!(!org.has("test_document:spec#edit@user:vera").await);
    assert_eq!(org.outbox("permissions.role.assigned").await, 1);
    assert_eq!(org.outbox("permissions.role.unassigned").await, 1);

    // Through a team: team qa holds vera; the role is assigned to the team's members.
    let qa = [org.tuple("team:qa#org@organization:acme"), org.tuple("team:qa#member@user:vera")];
    org.write("identity", pb::Operation::Touch, &qa).await;
    roles.assign_role(authed(assign(&role.id, "team", "qa"), &carol)).await.expect("assign team");
    assert!(org.has("test_document:spec#edit@user:vera").await);
    org.write("identity", pb::Operation::Delete, &qa[1..]).await;
    assert!(!org.has("test_document:spec#edit@user:vera").await, "removed from qa, the grant is gone");
    org.write("identity", pb::Operation::Touch, &qa[1..]).await;

    // Someone outside the org, and a team of another org, cannot be assigned.
    let e = roles.assign_role(authed(assign(&role.id, "user", &org.id("gina")), &carol)).await.expect_err("outsider");
    assert_eq!((e.code(), reason(&e)), (Code::FailedPrecondition, "NOT_A_MEMBER".into()));
    let e = roles.assign_role(authed(assign(&role.id, "team", "elsewhere"), &carol)).await.expect_err("team");
    assert_eq!(reason(&e), "NOT_A_MEMBER");
    let e = roles.assign_role(authed(assign(&role.id, "group", "x"), &carol)).await.expect_err("type");
    assert_eq!((e.code(), fields(&e)), (Code::InvalidArgument, vec!["subject.type".to_owned()]));

    // Update: the grants are rewritten in one revision; the event carries the old patterns.
    let updated = roles
        .update_role(authed(
            pb::UpdateRoleRequest {
                role_id: role.id.clone(),
                name: "Reviewer".into(),
                permissions: vec!["organization:invite".into()],
                ..Default::default()
            },
            &carol,
        ))
        .await
        .expect("update")
        .into_inner()
        .role
        .expect("role");
    assert_eq!(
        (updated.name.as_str(), updated.expanded_permissions.clone()),
        ("Reviewer", vec!["organization:invite".to_owned()])
    );
    assert!(!org.has("test_document:spec#edit@user:vera").await);
    assert!(org.has("organization:acme#invite@user:vera").await, "an org permission through its own hook");
    assert_eq!(org.outbox("permissions.role.updated").await, 1);

    // Delete: the role and all of its tuples, assignments included, are gone.
    roles.delete_role(authed(pb::DeleteRoleRequest { role_id: role.id.clone() }, &carol)).await.expect("delete");
    assert!(!org.has("organization:acme#invite@user:vera").await);
    let e = roles.get_role(authed(pb::GetRoleRequest { role_id: role.id.clone() }, &carol)).await.expect_err("gone");
    assert_eq!((e.code(), reason(&e)), (Code::NotFound, "ROLE_NOT_FOUND".into()));
    let pool = org.cell.owner_pool().await;
    let left: i64 = sqlx::query_scalar(
        "select count(*) from permissions.relationships
          where (resource_type = 'role' and resource_id = $1) or (subject_type = 'role' and subject_id = $1)",
    )
    .bind(&role.id)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(left, 0);
    assert_eq!(org.outbox("permissions.role.deleted").await, 1);
    // The name is free again.
    roles.create_role(authed(create("reviewer", &["test_document:edit"]), &carol)).await.expect("re-create");
}

#[tokio::test]
async fn role_writes_are_validated_and_need_administer() {
    let org = Org::start().await;
    let mut roles = org.roles().await;
    let carol = org.user("carol");

    let e = roles.create_role(authed(create("viewers", &["test_document:view"]), &carol)).await.expect_err("view");
    assert_eq!((e.code(), reason(&e)), (Code::InvalidArgument, "NOT_GRANTABLE".into()));
    assert_eq!(fields(&e), vec!["permissions[0]"]);
    assert!(e.message().contains("org->role__test_document__view"), "names the hook: {}", e.message());
    let e = roles
        .create_role(authed(create("x", &["test_document:edit", "test_document:delete", "nothing:*"]), &carol))
        .await
        .expect_err("unknown");
    assert_eq!(
        (reason(&e), fields(&e)),
        ("UNKNOWN_PERMISSION".into(), vec!["permissions[1]".to_owned(), "permissions[2]".to_owned()])
    );
    for (name, perms, field, why) in [
        ("admin", vec!["test_document:edit"], "name", "RESERVED_ROLE_NAME"),
        ("", vec!["test_document:edit"], "name", "VALIDATION_ERROR"),
        ("ok", vec![], "permissions", "VALIDATION_ERROR"),
        ("ok", vec!["no-colon"], "permissions[0]", "VALIDATION_ERROR"),
    ] {
        let e = roles.create_role(authed(create(name, &perms), &carol)).await.expect_err(name);
        assert_eq!((e.code(), reason(&e), fields(&e)), (Code::InvalidArgument, why.into(), vec![field.to_owned()]));
    }
    // A member may not create roles; a duplicate name (any case) is a conflict.
    let e =
        roles.create_role(authed(create("r", &["test_document:edit"]), &org.user("bob"))).await.expect_err("member");
    assert_eq!(e.code(), Code::PermissionDenied);
    roles.create_role(authed(create("Editors", &["test_document:*"]), &carol)).await.expect("create");
    let e = roles.create_role(authed(create("editors", &["test_document:edit"]), &carol)).await.expect_err("dup");
    assert_eq!(
        (e.code(), reason(&e), fields(&e)),
        (Code::AlreadyExists, "ROLE_NAME_TAKEN".into(), vec!["name".to_owned()])
    );

    // Lists: the built-in roles first (read only, described by the organization definition),
    // then the custom ones; members may read.
    let list = roles
        .list_roles(authed(pb::ListRolesRequest { page_size: 3, ..Default::default() }, &org.user("bob")))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total_size, 5);
    let names: Vec<&str> = list.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["owner", "admin", "member"]);
    assert!(list.roles[1].expanded_permissions.contains(&"organization:manage_members".to_owned()));
    assert!(!list.roles[1].expanded_permissions.contains(&"organization:delete".to_owned()));
    assert_eq!(list.roles[1].assignee_count, 1, "carol");
    let rest = roles
        .list_roles(authed(
            pb::ListRolesRequest { page_size: 3, page_token: list.next_page_token, ..Default::default() },
            &org.user("bob"),
        ))
        .await
        .expect("page 2")
        .into_inner();
    let names: Vec<&str> = rest.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!((names, rest.next_page_token.as_str()), (vec!["viewer", "Editors"], ""));
    let e = roles
        .update_role(authed(
            pb::UpdateRoleRequest { role_id: "admin".into(), name: "boss".into(), ..Default::default() },
            &carol,
        ))
        .await
        .expect_err("system");
    assert_eq!((e.code(), reason(&e)), (Code::FailedPrecondition, "SYSTEM_ROLE_READ_ONLY".into()));
    // Another org sees none of acme's roles.
    let outsider = org.cell.token(org.ids["gina"], Uuid::now_v7());
    let e = roles.list_roles(authed(pb::ListRolesRequest::default(), &outsider)).await.expect_err("no view");
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn wildcard_patterns_follow_schema_changes() {
    let org = Org::start().await;
    let mut roles = org.roles().await;
    let carol = org.user("carol");
    let role = roles
        .create_role(authed(create("doc_all", &["test_document:*"]), &carol))
        .await
        .expect("create")
        .into_inner()
        .role
        .expect("role");
    assert_eq!(role.expanded_permissions, vec!["test_document:edit"]);
    roles.assign_role(authed(assign(&role.id, "user", &org.id("vera")), &carol)).await.expect("assign");
    assert!(!org.has("test_document:spec#share@user:vera").await);

    // The acceptance module adds a hook for share: the role now grants it too.
    let case = case();
    let mut c = org.c.clone();
    let write = |text: String| pb::WriteSchemaRequest { module: "acceptance".into(), schema: text, dry_run: false };
    c.schema
        .write_schema(authed(write(acceptance_with_share_hook(&case)), &org.service("acceptance")))
        .await
        .expect("hook added");
    let got = roles.get_role(authed(pb::GetRoleRequest { role_id: role.id.clone() }, &carol)).await.expect("get");
    assert_eq!(
        got.into_inner().role.expect("role").expanded_permissions,
        vec!["test_document:edit", "test_document:share"]
    );
    assert!(org.has("test_document:spec#share@user:vera").await);

    // The hook goes away again: the pair is no longer grantable and its tuples are deleted with
    // the schema change (no RELATION_IN_USE for generated relations).
    c.schema
        .write_schema(authed(write(case.modules["acceptance"].clone()), &org.service("acceptance")))
        .await
        .expect("removed");
    assert!(!org.has("test_document:spec#share@user:vera").await);
    let pool = org.cell.owner_pool().await;
    let grants: Vec<String> = sqlx::query_scalar(
        "select relation::text from permissions.relationships where resource_type = 'role' and resource_id = $1
            and relation like 'grant\\_\\_%' order by 1",
    )
    .bind(&role.id)
    .fetch_all(&pool)
    .await
    .expect("grants");
    assert_eq!(grants, vec!["grant__test_document__edit"]);
}
