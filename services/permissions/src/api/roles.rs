//! RoleService: custom roles of the caller's org and their assignments (spec "Custom roles",
//! rule 17), plus the re-expansion of every role's grants when the schema changes. The rules
//! are in [`crate::roles`]; this translates and authorizes.

use std::collections::{BTreeMap, BTreeSet};

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_kit::error::Error;
use trellis_kit::paging::{self, PageTokens};
use trellis_proto::trellis::permissions::v1 as proto;
use trellis_proto::trellis::permissions::v1::role_service_server::RoleService;
use uuid::Uuid;

use super::{PermissionsApi, end_user, eval_error, token, write_error};
use crate::access;
use crate::cache::Invalidation;
use crate::eval::{DEFAULT_MAX_DEPTH, Evaluator, ObjectRef, SubjectRef, Tuple};
use crate::roles::store::{self as roles_store, RoleRow};
use crate::roles::{self, PatternError};
use crate::schema::{ORG_DEFINITION, ROLE_DEFINITION, Schema};
use crate::store::{self, Filter, Operation, PgReader};

/// Routing keys of the role events.
pub const ROLE_CREATED: &str = "permissions.role.created";
pub const ROLE_UPDATED: &str = "permissions.role.updated";
pub const ROLE_DELETED: &str = "permissions.role.deleted";
pub const ROLE_ASSIGNED: &str = "permissions.role.assigned";
pub const ROLE_UNASSIGNED: &str = "permissions.role.unassigned";

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn org_object(org: Uuid) -> ObjectRef {
    ObjectRef::new(ORG_DEFINITION, org.to_string())
}

fn actor(ctx: &RequestContext) -> String {
    let (kind, id) = ctx.actor();
    format!("{kind}:{id}")
}

fn not_found(id: &str) -> Error {
    Error::not_found("ROLE_NOT_FOUND", format!("No role `{id}` in this organization"))
        .with_field("role_id", "not found")
}

fn read_only(id: &str) -> Error {
    Error::failed_precondition(
        "SYSTEM_ROLE_READ_ONLY",
        format!("`{id}` is a built-in role; change organization memberships through identity"),
    )
}

/// Which role an id names.
enum RoleId {
    System(&'static str),
    Custom(Uuid),
}

fn role_id(raw: &str) -> Result<RoleId, Error> {
    if let Some(s) = roles::SYSTEM_ROLES.iter().find(|s| **s == raw) {
        return Ok(RoleId::System(s));
    }
    raw.parse::<Uuid>().map(RoleId::Custom).map_err(|_| not_found(raw))
}

/// INVALID_ARGUMENT for refused patterns: NOT_GRANTABLE before UNKNOWN_PERMISSION before
/// VALIDATION_ERROR, every pattern named as `permissions[i]`.
fn pattern_error(errors: Vec<PatternError>) -> Error {
    let reason = ["NOT_GRANTABLE", "UNKNOWN_PERMISSION"]
        .into_iter()
        .find(|r| errors.iter().any(|e| e.reason == *r))
        .unwrap_or("VALIDATION_ERROR");
    let first = errors.first().map(|e| e.message.clone()).unwrap_or_default();
    let mut err = Error::invalid_argument(reason, first);
    for e in errors {
        err = err.with_field(format!("permissions[{}]", e.index), e.message);
    }
    err
}

/// Validates name, description and patterns of a role being written.
fn validate(
    schema: &Schema,
    name: Option<&str>,
    description: Option<&str>,
    patterns: Option<&[String]>,
) -> Result<(), Error> {
    let mut err: Option<Error> = None;
    let mut add = |reason: &'static str, field: &str, message: String| {
        err = Some(match err.take() {
            Some(e) => e.with_field(field, message),
            None => Error::invalid_argument(reason, message.clone()).with_field(field, message),
        });
    };
    if let Some(n) = name
        && let Some((reason, message)) = roles::name_problem(n)
    {
        add(reason, "name", message);
    }
    if let Some(d) = description
        && d.chars().count() > roles::MAX_DESCRIPTION
    {
        add("VALIDATION_ERROR", "description", format!("at most {} characters", roles::MAX_DESCRIPTION));
    }
    if let Some(p) = patterns
        && (p.is_empty() || p.len() > roles::MAX_PATTERNS)
    {
        add("VALIDATION_ERROR", "permissions", format!("1..{} patterns", roles::MAX_PATTERNS));
    }
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(p) = patterns {
        roles::expand(schema, p).map_err(pattern_error)?;
    }
    Ok(())
}

/// The grant pairs a role holds now (its `grant__T__P` relationships).
fn current_grants(tuples: &[Tuple]) -> BTreeSet<(String, String)> {
    tuples.iter().filter_map(|t| roles::granted_pair(&t.relation)).collect()
}

fn keys_of(tuples: &[(Operation, Tuple)]) -> Vec<(String, String, String)> {
    tuples
        .iter()
        .map(|(_, t)| (t.resource.ty.clone(), t.resource.id.clone(), t.relation.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The description of a built-in role.
fn system_description(name: &str) -> &'static str {
    match name {
        "owner" => "Owns the organization: every permission, including deletion, transfer and billing",
        "admin" => "Administers the organization: members, teams, API keys and settings",
        "member" => "Contributes to the organization",
        _ => "Reads what the organization shares with its members",
    }
}

impl PermissionsApi {
    /// Services may manage roles; users and API keys need `organization#<permission>`.
    async fn require_on_org(&self, ctx: &RequestContext, permission: &str) -> Result<(), Error> {
        let Some(me) = end_user(ctx) else {
            super::service_name(ctx)?;
            return Ok(());
        };
        let org = ctx.org_id()?;
        if self.holds(org, &org_object(org), permission, &me).await? {
            return Ok(());
        }
        Err(Error::permission_denied("PERMISSION_DENIED", format!("This needs organization#{permission}")))
    }

    /// One check on a fresh snapshot.
    pub(super) async fn holds(
        &self,
        org: Uuid,
        object: &ObjectRef,
        permission: &str,
        subject: &SubjectRef,
    ) -> Result<bool, Error> {
        let schema = self.schema().await?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let has = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH)
            .check(object, permission, subject)
            .await
            .map_err(eval_error)?;
        Ok(has)
    }

    /// The wire form of custom roles, with their expansion under the current schema and their
    /// assignee counts.
    async fn custom_roles(&self, org: Uuid, schema: &Schema, rows: &[RoleRow]) -> Result<Vec<proto::Role>, Error> {
        let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let counts: BTreeMap<String, i64> =
            roles_store::subject_counts(&mut tx, org, ROLE_DEFINITION, &ids, "assignee")
                .await
                .map_err(Error::internal)?
                .into_iter()
                .collect();
        Ok(rows
            .iter()
            .map(|r| proto::Role {
                id: r.id.to_string(),
                name: r.name.clone(),
                description: r.description.clone(),
                permissions: r.permissions.clone(),
                expanded_permissions: roles::pair_names(&roles::expand_lenient(schema, &r.permissions)),
                assignee_count: counts.get(&r.id.to_string()).copied().unwrap_or(0) as i32,
                is_system: false,
                created_by: r.created_by.clone(),
                created_at: Some(timestamp(r.created_at)),
                updated_at: Some(timestamp(r.updated_at)),
            })
            .collect())
    }

    /// The built-in roles, described by the organization definition: each holds the
    /// organization permissions in which its relation occurs positively.
    async fn system_roles(&self, org: Uuid, schema: &Schema) -> Result<Vec<proto::Role>, Error> {
        let names: Vec<String> = roles::SYSTEM_ROLES.iter().map(|s| (*s).to_owned()).collect();
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for name in &names {
            let n = roles_store::subject_counts(&mut tx, org, ORG_DEFINITION, &[org.to_string()], name)
                .await
                .map_err(Error::internal)?;
            counts.insert(name.clone(), n.first().map(|x| x.1).unwrap_or(0));
        }
        let def = schema.definition(ORG_DEFINITION);
        Ok(names
            .iter()
            .map(|name| {
                let perms: Vec<String> = def
                    .map(|d| {
                        access::positive_permissions(d, name)
                            .into_iter()
                            .filter(|p| !d.generated.contains(p))
                            .map(|p| format!("{ORG_DEFINITION}:{p}"))
                            .collect()
                    })
                    .unwrap_or_default();
                proto::Role {
                    id: name.clone(),
                    name: name.clone(),
                    description: system_description(name).into(),
                    permissions: perms.clone(),
                    expanded_permissions: perms,
                    assignee_count: counts.get(name).copied().unwrap_or(0) as i32,
                    is_system: true,
                    ..Default::default()
                }
            })
            .collect())
    }

    async fn get_one(&self, org: Uuid, raw: &str) -> Result<proto::Role, Error> {
        let schema = self.schema().await?;
        match role_id(raw)? {
            RoleId::System(name) => {
                self.system_roles(org, &schema).await?.into_iter().find(|r| r.id == name).ok_or_else(|| not_found(raw))
            }
            RoleId::Custom(id) => {
                let mut tx = self.db.tenant_tx_for(org, None).await?;
                let row = roles_store::live_role(&mut tx, org, id)
                    .await
                    .map_err(Error::from)?
                    .ok_or_else(|| not_found(raw))?;
                tx.commit().await?;
                Ok(self.custom_roles(org, &schema, &[row]).await?.remove(0))
            }
        }
    }

    fn invalidate(&self, org: Uuid, revision: i64, updates: &[(Operation, Tuple)]) -> impl Future<Output = ()> + '_ {
        let keys = keys_of(updates);
        async move {
            if !keys.is_empty() {
                self.cache.written(Invalidation { org_id: org, revision, keys, schema: false }).await;
            }
        }
    }
}

/// Re-expands the grants of every live role of every org under `schema` (rule 17), in the
/// schema registration's transaction: pairs that became grantable through a `type:*` pattern
/// are added, and pairs that are no longer grantable are removed (rule 20). Returns how many
/// relationships changed.
pub async fn reexpand_all(tx: &mut sqlx::PgConnection, schema: &Schema, actor: &str) -> Result<usize, Error> {
    let mut changed = 0;
    for org in roles_store::orgs_with_roles(tx).await.map_err(Error::from)? {
        roles_store::enter_org(tx, org).await.map_err(Error::from)?;
        let mut touches = Vec::new();
        let mut stale: BTreeSet<String> = BTreeSet::new();
        for role in roles_store::live_roles(tx, org).await.map_err(Error::from)? {
            let id = role.id.to_string();
            let existing =
                store::relationships_of_object(tx, org, ROLE_DEFINITION, &id, false).await.map_err(Error::from)?;
            let wanted = roles::expand_lenient(schema, &role.permissions);
            let (add, remove) = roles::reconcile(&id, &current_grants(&existing), &wanted);
            touches.extend(add.into_iter().map(|t| (Operation::Touch, t)));
            stale.extend(remove.into_iter().map(|t| t.relation));
        }
        if !touches.is_empty() {
            let w = store::write(tx, org, schema, &touches, &[], actor).await.map_err(write_error)?;
            changed += if w.changed { touches.len() } else { 0 };
        }
        // A pair that stopped being grantable has lost its generated relation, so its tuples are
        // deleted by filter (the write path would refuse a relation the schema no longer has).
        for relation in stale {
            let filter =
                Filter { resource_type: ROLE_DEFINITION.into(), relation: Some(relation), ..Default::default() };
            let d = store::delete_by_filter(tx, org, &filter, &[], 1_000_000_000, true, actor)
                .await
                .map_err(write_error)?;
            changed += d.tuples.len();
        }
    }
    Ok(changed)
}

#[tonic::async_trait]
impl RoleService for PermissionsApi {
    async fn create_role(
        &self,
        request: Request<proto::CreateRoleRequest>,
    ) -> Result<Response<proto::CreateRoleResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        self.require_on_org(&ctx, "administer").await?;
        let req = request.into_inner();
        let schema = self.schema().await?;
        validate(&schema, Some(&req.name), Some(&req.description), Some(&req.permissions))?;
        let pairs = roles::expand(&schema, &req.permissions).map_err(pattern_error)?;
        let mut tx = self.db.tenant_tx(&ctx).await?;
        if roles_store::count_live_locked(&mut tx, org).await.map_err(Error::from)? >= roles::MAX_ROLES {
            return Err(Error::failed_precondition(
                "ROLE_LIMIT_REACHED",
                format!("An organization has at most {} custom roles", roles::MAX_ROLES),
            )
            .into());
        }
        let now = chrono::Utc::now();
        let draft = RoleRow {
            id: Uuid::now_v7(),
            name: req.name.clone(),
            description: req.description.clone(),
            permissions: req.permissions.clone(),
            created_by: actor(&ctx),
            created_at: now,
            updated_at: now,
        };
        let row = roles_store::insert_role(&mut tx, org, &draft).await.map_err(|e| {
            trellis_kit::db::on_constraint(e, roles_store::NAME_KEY, || {
                Error::already_exists("ROLE_NAME_TAKEN", format!("A role named `{}` already exists", req.name))
                    .with_field("name", "already taken")
            })
        })?;
        let id = row.id.to_string();
        let mut updates: Vec<(Operation, Tuple)> =
            roles::membership_tuples(&id, &org_object(org)).into_iter().map(|t| (Operation::Touch, t)).collect();
        updates.extend(pairs.iter().map(|p| (Operation::Touch, roles::grant_tuple(&id, p))));
        let written = store::write(&mut tx, org, &schema, &updates, &[], &actor(&ctx)).await.map_err(write_error)?;
        let event = proto::RoleChanged {
            role_id: id.clone(),
            name: row.name.clone(),
            permissions: row.permissions.clone(),
            previous_permissions: Vec::new(),
        };
        trellis_kit::events::stage(&mut tx, &ctx, ROLE_CREATED, &event).await?;
        tx.commit().await.map_err(Error::internal)?;
        self.invalidate(org, written.revision, &updates).await;
        tracing::info!(role_id = %id, "role created");
        let role = self.custom_roles(org, &schema, &[row]).await?.remove(0);
        Ok(Response::new(proto::CreateRoleResponse { role: Some(role) }))
    }

    async fn list_roles(
        &self,
        request: Request<proto::ListRolesRequest>,
    ) -> Result<Response<proto::ListRolesResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        self.require_on_org(&ctx, "view").await?;
        let req = request.into_inner();
        let size = paging::page_size(req.page_size)? as usize;
        let order = req.order_by.trim();
        if !order.is_empty() && order != "name" {
            return Err(Error::validation("order_by", "only `name` is supported").into());
        }
        let compact: String = req.filter.chars().filter(|c| !c.is_whitespace()).collect();
        let only_system = match compact.as_str() {
            "" => None,
            "is_system=true" => Some(true),
            "is_system=false" => Some(false),
            _ => return Err(Error::validation("filter", "supported: `is_system = true|false`").into()),
        };
        let query = PageTokens::query_hash(&[&org.to_string(), &compact, "name"]);
        let after: Option<(u8, String, String)> = self.pages.decode(&query, &req.page_token)?;
        let schema = self.schema().await?;
        let mut all: Vec<((u8, String, String), proto::Role)> = Vec::new();
        if only_system != Some(false) {
            for (i, r) in self.system_roles(org, &schema).await?.into_iter().enumerate() {
                all.push(((0, format!("{i:03}"), r.id.clone()), r));
            }
        }
        if only_system != Some(true) {
            let mut tx = self.db.tenant_tx_for(org, None).await?;
            let rows = roles_store::live_roles(&mut tx, org).await.map_err(Error::from)?;
            tx.commit().await.map_err(Error::internal)?;
            for r in self.custom_roles(org, &schema, &rows).await? {
                all.push(((1, r.name.to_lowercase(), r.id.clone()), r));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let total_size = all.len() as i32;
        let mut page: Vec<_> = all.into_iter().filter(|(k, _)| after.as_ref().is_none_or(|a| k > a)).collect();
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match page.last() {
            Some((k, _)) if more => self.pages.encode(&query, k),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListRolesResponse {
            roles: page.into_iter().map(|(_, r)| r).collect(),
            next_page_token,
            total_size,
        }))
    }

    async fn get_role(
        &self,
        request: Request<proto::GetRoleRequest>,
    ) -> Result<Response<proto::GetRoleResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        self.require_on_org(&ctx, "view").await?;
        let role = self.get_one(org, &request.into_inner().role_id).await?;
        Ok(Response::new(proto::GetRoleResponse { role: Some(role) }))
    }

    async fn update_role(
        &self,
        request: Request<proto::UpdateRoleRequest>,
    ) -> Result<Response<proto::UpdateRoleResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        self.require_on_org(&ctx, "administer").await?;
        let req = request.into_inner();
        let id = match role_id(&req.role_id)? {
            RoleId::System(name) => return Err(read_only(name).into()),
            RoleId::Custom(id) => id,
        };
        let mask: Vec<String> = match &req.update_mask {
            Some(m) if !m.paths.is_empty() => m.paths.clone(),
            _ => {
                let mut v = Vec::new();
                if !req.name.is_empty() {
                    v.push("name".to_owned());
                }
                if !req.description.is_empty() {
                    v.push("description".to_owned());
                }
                if !req.permissions.is_empty() {
                    v.push("permissions".to_owned());
                }
                v
            }
        };
        if let Some(other) = mask.iter().find(|p| !["name", "description", "permissions"].contains(&p.as_str())) {
            return Err(Error::validation("update_mask", format!("`{other}` cannot be updated")).into());
        }
        let has = |f: &str| mask.iter().any(|p| p == f);
        let schema = self.schema().await?;
        validate(
            &schema,
            has("name").then_some(req.name.as_str()),
            has("description").then_some(req.description.as_str()),
            has("permissions").then_some(req.permissions.as_slice()),
        )?;
        let mut tx = self.db.tenant_tx(&ctx).await?;
        let old = roles_store::lock_role(&mut tx, org, id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| not_found(&req.role_id))?;
        let mut new = old.clone();
        if has("name") {
            new.name = req.name.clone();
        }
        if has("description") {
            new.description = req.description.clone();
        }
        if has("permissions") {
            new.permissions = req.permissions.clone();
        }
        let row = roles_store::update_role(&mut tx, org, &new).await.map_err(|e| {
            trellis_kit::db::on_constraint(e, roles_store::NAME_KEY, || {
                Error::already_exists("ROLE_NAME_TAKEN", format!("A role named `{}` already exists", new.name))
                    .with_field("name", "already taken")
            })
        })?;
        let rid = id.to_string();
        let existing =
            store::relationships_of_object(&mut tx, org, ROLE_DEFINITION, &rid, false).await.map_err(Error::from)?;
        let wanted = roles::expand(&schema, &row.permissions).map_err(pattern_error)?;
        let (add, remove) = roles::reconcile(&rid, &current_grants(&existing), &wanted);
        let updates: Vec<(Operation, Tuple)> = remove
            .into_iter()
            .map(|t| (Operation::Delete, t))
            .chain(add.into_iter().map(|t| (Operation::Touch, t)))
            .collect();
        let revision = if updates.is_empty() {
            None
        } else {
            let w = store::write(&mut tx, org, &schema, &updates, &[], &actor(&ctx)).await.map_err(write_error)?;
            Some(w.revision)
        };
        let event = proto::RoleChanged {
            role_id: rid.clone(),
            name: row.name.clone(),
            permissions: row.permissions.clone(),
            previous_permissions: old.permissions.clone(),
        };
        trellis_kit::events::stage(&mut tx, &ctx, ROLE_UPDATED, &event).await?;
        tx.commit().await.map_err(Error::internal)?;
        if let Some(revision) = revision {
            self.invalidate(org, revision, &updates).await;
        }
        let role = self.custom_roles(org, &schema, &[row]).await?.remove(0);
        Ok(Response::new(proto::UpdateRoleResponse { role: Some(role) }))
    }

    async fn delete_role(&self, request: Request<proto::DeleteRoleRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        self.require_on_org(&ctx, "administer").await?;
        let raw = request.into_inner().role_id;
        let id = match role_id(&raw)? {
            RoleId::System(name) => return Err(read_only(name).into()),
            RoleId::Custom(id) => id,
        };
        let schema = self.schema().await?;
        let mut tx = self.db.tenant_tx(&ctx).await?;
        let row =
            roles_store::lock_role(&mut tx, org, id).await.map_err(Error::from)?.ok_or_else(|| not_found(&raw))?;
        let rid = id.to_string();
        // Every tuple of the role (grants, assignments, its org) and the org's link to it, in
        // one revision. Tuples of relations the schema no longer has are left to reexpand_all.
        let mut tuples =
            store::relationships_of_object(&mut tx, org, ROLE_DEFINITION, &rid, false).await.map_err(Error::from)?;
        tuples.retain(|t| schema.relation(ROLE_DEFINITION, &t.relation).is_some());
        tuples.extend(
            roles::membership_tuples(&rid, &org_object(org)).into_iter().filter(|t| t.resource.ty == ORG_DEFINITION),
        );
        let updates: Vec<(Operation, Tuple)> = tuples.into_iter().map(|t| (Operation::Delete, t)).collect();
        let written = store::write(&mut tx, org, &schema, &updates, &[], &actor(&ctx)).await.map_err(write_error)?;
        roles_store::soft_delete_role(&mut tx, org, id).await.map_err(Error::from)?;
        let event = proto::RoleChanged {
            role_id: rid.clone(),
            name: row.name.clone(),
            permissions: Vec::new(),
            previous_permissions: row.permissions.clone(),
        };
        trellis_kit::events::stage(&mut tx, &ctx, ROLE_DELETED, &event).await?;
        tx.commit().await.map_err(Error::internal)?;
        if written.changed {
            self.invalidate(org, written.revision, &updates).await;
        }
        tracing::info!(role_id = %rid, "role deleted");
        Ok(Response::new(()))
    }

    async fn assign_role(
        &self,
        request: Request<proto::AssignRoleRequest>,
    ) -> Result<Response<proto::AssignRoleResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        self.require_on_org(&ctx, "administer").await?;
        let req = request.into_inner();
        let s = req.subject.unwrap_or_default();
        let written_at = self.assignment(&ctx, &req.role_id, &s.r#type, &s.id, true).await?;
        Ok(Response::new(proto::AssignRoleResponse { written_at }))
    }

    async fn list_role_assignments(
        &self,
        request: Request<proto::ListRoleAssignmentsRequest>,
    ) -> Result<Response<proto::ListRoleAssignmentsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        self.require_on_org(&ctx, "view").await?;
        let req = request.into_inner();
        let size = paging::page_size(req.page_size)? as usize;
        let filter = match role_id(&req.role_id)? {
            RoleId::System(name) => Filter {
                resource_type: ORG_DEFINITION.into(),
                resource_id: Some(org.to_string()),
                relation: Some(name.into()),
                ..Default::default()
            },
            RoleId::Custom(id) => {
                let mut tx = self.db.tenant_tx_for(org, None).await?;
                roles_store::live_role(&mut tx, org, id)
                    .await
                    .map_err(Error::from)?
                    .ok_or_else(|| not_found(&req.role_id))?;
                tx.commit().await.map_err(Error::internal)?;
                Filter {
                    resource_type: ROLE_DEFINITION.into(),
                    resource_id: Some(id.to_string()),
                    relation: Some("assignee".into()),
                    ..Default::default()
                }
            }
        };
        let query = PageTokens::query_hash(&[&org.to_string(), &req.role_id]);
        let after: Option<Tuple> = self.pages.decode(&query, &req.page_token)?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let mut rows = store::read_page(&mut tx, org, &filter, after.as_ref(), size + 1).await.map_err(Error::from)?;
        let total = roles_store::subject_counts(
            &mut tx,
            org,
            &filter.resource_type,
            &[filter.resource_id.clone().unwrap_or_default()],
            filter.relation.as_deref().unwrap_or_default(),
        )
        .await
        .map_err(Error::from)?;
        tx.commit().await.map_err(Error::internal)?;
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match rows.last() {
            Some(last) if more => self.pages.encode(&query, last),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListRoleAssignmentsResponse {
            subjects: rows
                .iter()
                .map(|t| proto::RoleSubject { r#type: t.subject.ty.clone(), id: t.subject.id.clone() })
                .collect(),
            next_page_token,
            total_size: total.first().map(|x| x.1).unwrap_or(0) as i32,
        }))
    }

    async fn unassign_role(&self, request: Request<proto::UnassignRoleRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        self.require_on_org(&ctx, "administer").await?;
        let req = request.into_inner();
        self.assignment(&ctx, &req.role_id, &req.subject_type, &req.subject_id, false).await?;
        Ok(Response::new(()))
    }
}

impl PermissionsApi {
    /// Assigns (TOUCH) or unassigns (DELETE) a role, with its event when something changed.
    async fn assignment(
        &self,
        ctx: &RequestContext,
        raw_role: &str,
        subject_type: &str,
        subject_id: &str,
        assigning: bool,
    ) -> Result<Option<proto::ZedToken>, Error> {
        let org = ctx.org_id()?;
        let id = match role_id(raw_role)? {
            RoleId::System(name) => return Err(read_only(name)),
            RoleId::Custom(id) => id,
        };
        let (type_field, id_field) = if assigning {
            ("subject.type".to_owned(), "subject.id".to_owned())
        } else {
            ("subject_type".to_owned(), "subject_id".to_owned())
        };
        let mut v = trellis_kit::error::Violations::default();
        v.check(roles::ASSIGNABLE.contains(&subject_type), &type_field, "must be user, team or api_key");
        v.check(store::valid_object_id(subject_id), &id_field, "must match ^[A-Za-z0-9/_|\\-=+@.:]{1,128}$");
        v.finish()?;
        let schema = self.schema().await?;
        if assigning {
            // The subject must belong to the org: users and API keys hold organization#view, a
            // team is related to the org.
            let org_obj = org_object(org);
            let member = if subject_type == "team" {
                self.holds(
                    org,
                    &ObjectRef::new("team", subject_id),
                    "org",
                    &SubjectRef::new(ORG_DEFINITION, org.to_string()),
                )
                .await?
            } else {
                self.holds(org, &org_obj, "view", &SubjectRef::new(subject_type, subject_id)).await?
            };
            if !member {
                return Err(Error::failed_precondition(
                    "NOT_A_MEMBER",
                    format!("{subject_type}:{subject_id} does not belong to this organization"),
                ));
            }
        }
        let mut tx = self.db.tenant_tx(ctx).await?;
        let row =
            roles_store::live_role(&mut tx, org, id).await.map_err(Error::from)?.ok_or_else(|| not_found(raw_role))?;
        let rid = id.to_string();
        let op = if assigning { Operation::Touch } else { Operation::Delete };
        let updates = vec![(op, roles::assignment_tuple(&rid, subject_type, subject_id))];
        let written = store::write(&mut tx, org, &schema, &updates, &[], &actor(ctx)).await.map_err(write_error)?;
        if written.changed {
            let event = proto::RoleAssignmentChanged {
                role_id: rid.clone(),
                name: row.name.clone(),
                subject: Some(proto::RoleSubject { r#type: subject_type.into(), id: subject_id.into() }),
            };
            let key = if assigning { ROLE_ASSIGNED } else { ROLE_UNASSIGNED };
            trellis_kit::events::stage(&mut tx, ctx, key, &event).await?;
        }
        tx.commit().await.map_err(Error::internal)?;
        if written.changed {
            self.invalidate(org, written.revision, &updates).await;
        }
        Ok(token(org, written.revision))
    }
}
