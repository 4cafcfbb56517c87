//! gRPC handlers of `trellis.permissions.v1`: SchemaService (WriteSchema, ReadSchema,
//! ValidateSchema; the administrators' side in `schema_admin`),
//! RelationshipService (WriteRelationships, DeleteRelationships, ReadRelationships), CheckService
//! (Check, CheckBulk, Expand, LookupResources, LookupSubjects, Watch) and AccessService (Grant,
//! Revoke). Check and CheckBulk also serve end users through REST (they check themselves). Every evaluation runs on a fresh REPEATABLE READ snapshot of the caller's
//! org. Check answers from the [`CheckCache`] when an entry satisfies the requested consistency
//! and fills it otherwise; writes void the entries that read what they changed.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{RwLock, Semaphore};
use tonic::{Request, Response, Status};
use trellis_kit::db::Db;
use trellis_kit::error::{Error, Violations};
use trellis_kit::paging::PageTokens;
use trellis_kit::ratelimit::RateLimiter;
use trellis_kit::{RequestContext, Subject};
use trellis_proto::trellis::permissions::v1 as proto;
use trellis_proto::trellis::permissions::v1::access_service_server::AccessService;
use trellis_proto::trellis::permissions::v1::check_service_server::CheckService;
use trellis_proto::trellis::permissions::v1::relationship_service_server::RelationshipService;
use trellis_proto::trellis::permissions::v1::schema_service_server::SchemaService;
use uuid::Uuid;

mod access_views;
mod roles;
mod schema_admin;
mod trace;

pub use roles::reexpand_all;

use crate::access::{self, Refusal};
use crate::cache::{CheckCache, Freshness, Invalidation};
use crate::eval::{DEFAULT_MAX_DEPTH, EvalError, Evaluator, ExpandNode, ObjectRef, SubjectRef, Tuple};
use crate::registry::{self, RegisterError};
use crate::schema::Schema;
use crate::store::{self, ChangesError, Filter, Operation, PgReader, Precondition, TokenError, WriteError, Zookie};

/// Items per CheckBulk from users and API keys (REST).
pub const MAX_BULK_REST: usize = 100;
/// Most updates per WriteRelationships, items per CheckBulk, ids per LookupResources call.
pub const MAX_UPDATES: usize = 1000;
pub const MAX_PRECONDITIONS: usize = 100;
pub const MAX_BULK: usize = 1000;
pub const MAX_LOOKUP: usize = 10_000;
/// Most rows one DeleteRelationships removes, and its default limit.
pub const MAX_DELETE: usize = 10_000;
/// ReadRelationships page sizes.
pub const DEFAULT_READ_PAGE: usize = 100;
pub const MAX_READ_PAGE: usize = 1000;
/// Background cache refreshes at once per replica (see `refreshes`).
const MAX_REFRESHES: usize = 2;
/// Concurrent Watch streams per replica.
pub const MAX_WATCHES: usize = 100;
/// How often an idle Watch looks for new changes.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// How long a replica trusts its copy of the merged schema before comparing hashes again. A
/// schema change made through this replica, or announced on the invalidation channel, is picked
/// up at once.
const SCHEMA_RECHECK: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct LoadedSchema {
    hash: Vec<u8>,
    schema: Arc<Schema>,
    checked_at: Option<Instant>,
}

/// The handlers, sharing the compiled merged schema (reloaded when its hash changes) and the
/// result cache.
#[derive(Debug, Clone)]
pub struct PermissionsApi {
    db: Db,
    schema: Arc<RwLock<LoadedSchema>>,
    cache: Arc<CheckCache>,
    pages: PageTokens,
    watches: Arc<Semaphore>,
    /// Limits traced checks per user (none in tests that build the API by hand).
    trace_limiter: Option<Arc<RateLimiter>>,
    /// Background cache refreshes running at once: entries warmed together age together, and
    /// their refreshes must not crowd out the requests.
    refreshes: Arc<Semaphore>,
}

impl PermissionsApi {
    pub fn new(db: Db, cache: Arc<CheckCache>, pages: PageTokens) -> Self {
        let schema = LoadedSchema { hash: Vec::new(), schema: Arc::new(Schema::default()), checked_at: None };
        Self {
            db,
            schema: Arc::new(RwLock::new(schema)),
            cache,
            pages,
            watches: Arc::new(Semaphore::new(MAX_WATCHES)),
            trace_limiter: None,
            refreshes: Arc::new(Semaphore::new(MAX_REFRESHES)),
        }
    }

    /// Limits traced checks (Check `with_trace`) of users and API keys with `limiter`.
    pub fn with_trace_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.trace_limiter = Some(limiter);
        self
    }

    /// The result cache.
    pub fn cache(&self) -> &Arc<CheckCache> {
        &self.cache
    }

    /// The subject of a check: services name it; users and API keys check themselves by default,
    /// and naming anyone else needs `organization#administer`.
    async fn checked_subject(
        &self,
        ctx: &RequestContext,
        s: Option<&proto::SubjectReference>,
        field: &str,
    ) -> Result<SubjectRef, Error> {
        let Some(me) = end_user(ctx) else {
            service_name(ctx)?;
            return subject(s, field);
        };
        let Some(s) = s.filter(|s| s.object.is_some()) else { return Ok(me) };
        let named = subject(Some(s), field)?;
        if named == me {
            return Ok(me);
        }
        let org = ctx.org_id()?;
        let schema = self.schema().await?;
        let mut tx = store::check_snapshot(&self.db, org).await.map_err(Error::internal)?;
        let admin = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH)
            .check(&ObjectRef::new("organization", org.to_string()), "administer", &me)
            .await
            .map_err(eval_error)?;
        if !admin {
            return Err(Error::permission_denied(
                "PERMISSION_DENIED",
                "Checking another subject's access needs organization#administer",
            ));
        }
        Ok(named)
    }

    /// Re-evaluates a cached Check off the request path and stores the fresh answer (see
    /// [`CheckCache::claim_refresh`]).
    fn refresh_in_background(
        &self,
        org: Uuid,
        schema: Arc<Schema>,
        resource: ObjectRef,
        permission: String,
        subject: SubjectRef,
    ) {
        let Ok(permit) = self.refreshes.clone().try_acquire_owned() else {
            self.cache.release_refresh(org, &resource, &permission, &subject);
            return;
        };
        let (db, cache) = (self.db.clone(), self.cache.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let snapshot_at = Instant::now();
            let Ok(mut tx) = store::check_snapshot(&db, org).await else { return };
            let Ok(revision) = store::revision(&mut tx, org).await else { return };
            let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH);
            let Ok(has) = ev.check(&resource, &permission, &subject).await else { return };
            let reads = ev.read_keys();
            drop(ev);
            if tx.commit().await.is_ok() {
                cache.put(org, &resource, &permission, &subject, (has, revision), snapshot_at, reads);
            }
        });
    }

    pub(crate) async fn schema(&self) -> Result<Arc<Schema>, Error> {
        {
            let loaded = self.schema.read().await;
            if !self.cache.schema_dirty() && loaded.checked_at.is_some_and(|t| t.elapsed() < SCHEMA_RECHECK) {
                return Ok(loaded.schema.clone());
            }
        }
        self.cache.take_schema_dirty();
        let hash: Option<Vec<u8>> = sqlx::query_scalar("select hash from permissions.merged_schema")
            .fetch_optional(self.db.pool())
            .await
            .map_err(Error::internal)?;
        let hash = hash.unwrap_or_default();
        {
            let mut loaded = self.schema.write().await;
            if loaded.hash == hash {
                loaded.checked_at = Some(Instant::now());
                return Ok(loaded.schema.clone());
            }
        }
        let mut conn = self.db.pool().acquire().await.map_err(Error::internal)?;
        let schema = match registry::merged(&mut conn).await {
            Ok(s) => Arc::new(s),
            Err(RegisterError::Store(e)) => return Err(Error::internal(e)),
            Err(e) => return Err(Error::internal(anyhow::anyhow!("stored schema does not compile: {e:?}"))),
        };
        // A schema change changes the meaning of every cached answer.
        self.cache.clear();
        *self.schema.write().await = LoadedSchema { hash, schema: schema.clone(), checked_at: Some(Instant::now()) };
        Ok(schema)
    }
}

/// The prologue of a service-only read: the caller must be a service principal; answers its
/// organization and the request, whose consistency requirement is checked against that org.
fn service_read<T>(
    request: Request<T>,
    consistency_of: impl Fn(&T) -> Option<&proto::Consistency>,
) -> Result<(Uuid, T), Status> {
    let ctx = RequestContext::from_request(&request)?.clone();
    service_name(&ctx)?;
    let org = ctx.org_id()?;
    let req = request.into_inner();
    consistency(consistency_of(&req), org)?;
    Ok((org, req))
}

fn service_name(ctx: &RequestContext) -> Result<&str, Error> {
    match &ctx.subject {
        Subject::Service(name) => Ok(name),
        _ => {
            Err(Error::permission_denied("SERVICE_PRINCIPAL_REQUIRED", "Only service principals may call this method"))
        }
    }
}

fn object(o: Option<&proto::ObjectReference>, field: &str) -> Result<ObjectRef, Error> {
    let o = o.ok_or_else(|| Error::validation(field, "is required"))?;
    if o.object_type.is_empty() {
        return Err(Error::validation(format!("{field}.object_type"), "is required"));
    }
    if !store::valid_object_id(&o.object_id) {
        return Err(Error::validation(format!("{field}.object_id"), "must match ^[A-Za-z0-9/_|\\-=+@.:]{1,128}$"));
    }
    Ok(ObjectRef::new(&o.object_type, &o.object_id))
}

fn subject(s: Option<&proto::SubjectReference>, field: &str) -> Result<SubjectRef, Error> {
    let s = s.ok_or_else(|| Error::validation(field, "is required"))?;
    let o = s.object.as_ref().ok_or_else(|| Error::validation(format!("{field}.object"), "is required"))?;
    if o.object_type.is_empty() {
        return Err(Error::validation(format!("{field}.object.object_type"), "is required"));
    }
    if o.object_id != "*" && !store::valid_object_id(&o.object_id) {
        return Err(Error::validation(
            format!("{field}.object.object_id"),
            "must match ^[A-Za-z0-9/_|\\-=+@.:]{1,128}$",
        ));
    }
    Ok(SubjectRef::set(&o.object_type, &o.object_id, &s.optional_relation))
}

fn token_error(e: TokenError) -> Error {
    match e {
        TokenError::Malformed => Error::invalid_argument("INVALID_TOKEN", "The consistency token is malformed"),
        TokenError::OrgMismatch => {
            Error::invalid_argument("TOKEN_ORG_MISMATCH", "The consistency token belongs to another organization")
        }
    }
}

/// Validates the consistency requirement. Every evaluation runs on a fresh snapshot, which
/// reflects every committed write; the freshness decides which cached answers qualify.
fn consistency(c: Option<&proto::Consistency>, org: Uuid) -> Result<Freshness, Error> {
    Ok(match c.and_then(|c| c.requirement.as_ref()) {
        Some(proto::consistency::Requirement::AtLeastAsFresh(t)) => {
            Freshness::AtLeast(Zookie::decode(&t.token, org).map_err(token_error)?.revision)
        }
        Some(proto::consistency::Requirement::FullyConsistent(true)) => Freshness::Full,
        _ => Freshness::MinimizeLatency,
    })
}

fn eval_error(e: EvalError) -> Error {
    match e {
        EvalError::UnknownPermission { ty, name } => {
            Error::invalid_argument("UNKNOWN_PERMISSION", format!("`{ty}` has no relation or permission `{name}`"))
        }
        EvalError::MaxDepth { depth } => Error::new(
            tonic::Code::ResourceExhausted,
            "MAX_DEPTH_EXCEEDED",
            format!("The evaluation exceeded the maximum depth {depth}"),
        )
        .with_metadata("depth", depth.to_string()),
        EvalError::Store(e) => Error::unavailable("UNAVAILABLE", format!("The relationship store failed: {e}")),
    }
}

fn filter(f: Option<&proto::RelationshipFilter>, field: &str) -> Result<Filter, Error> {
    let f = f.ok_or_else(|| Error::validation(field, "is required"))?;
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(Filter {
        resource_type: f.resource_type.clone(),
        resource_id: opt(&f.optional_resource_id),
        relation: opt(&f.optional_relation),
        subject_type: opt(&f.optional_subject_type),
        subject_id: opt(&f.optional_subject_id),
        subject_relation: opt(&f.optional_subject_relation),
    })
}

fn preconditions(list: &[proto::Precondition]) -> Result<Vec<Precondition>, Error> {
    if list.len() > MAX_PRECONDITIONS {
        return Err(Error::validation("preconditions", format!("at most {MAX_PRECONDITIONS}")));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let f = filter(p.filter.as_ref(), &format!("preconditions[{i}].filter"))?;
        if f.resource_type.is_empty() {
            return Err(Error::validation(format!("preconditions[{i}].filter.resource_type"), "is required"));
        }
        out.push(match proto::precondition::PreconditionOperation::try_from(p.operation) {
            Ok(proto::precondition::PreconditionOperation::MustMatch) => Precondition::MustMatch(f),
            Ok(proto::precondition::PreconditionOperation::MustNotMatch) => Precondition::MustNotMatch(f),
            _ => {
                return Err(Error::validation(
                    format!("preconditions[{i}].operation"),
                    "must be MUST_MATCH or MUST_NOT_MATCH",
                ));
            }
        });
    }
    Ok(out)
}

fn write_error(e: WriteError) -> Error {
    match e {
        WriteError::Invalid(v) => {
            let reason =
                if v.iter().any(|x| x.reason == "DUPLICATE_UPDATE") { "DUPLICATE_UPDATE" } else { "VALIDATION_ERROR" };
            let mut err = Error::invalid_argument(reason, "Invalid relationship updates");
            for x in v {
                err = err.with_field(x.field, x.message);
            }
            err
        }
        WriteError::AlreadyExists { index } => {
            Error::already_exists("ALREADY_EXISTS", format!("updates[{index}] already exists"))
                .with_metadata("index", index.to_string())
        }
        WriteError::PreconditionFailed { index } => {
            Error::failed_precondition("PRECONDITION_FAILED", format!("preconditions[{index}] failed"))
                .with_metadata("index", index.to_string())
        }
        WriteError::TooManyMatches { limit } => Error::failed_precondition(
            "TOO_MANY_MATCHES",
            format!("More than {limit} relationships match; nothing was deleted (set allow_partial to delete {limit})"),
        )
        .with_metadata("limit", limit.to_string()),
        WriteError::Store(e) => Error::internal(anyhow::anyhow!(e)),
    }
}

/// PERMISSION_DENIED FOREIGN_TYPE unless `ty` belongs to `service`'s module.
fn own_type(schema: &Schema, service: &str, ty: &str) -> Result<(), Error> {
    match schema.definition(ty) {
        Some(def) if def.module != service => Err(Error::permission_denied(
            "FOREIGN_TYPE",
            format!(
                "`{}` belongs to module `{}`; service:{service} may write only its own types",
                def.name, def.module
            ),
        )),
        _ => Ok(()),
    }
}

fn object_ref(o: &ObjectRef) -> proto::ObjectReference {
    proto::ObjectReference { object_type: o.ty.clone(), object_id: o.id.clone() }
}

fn subject_ref(s: &SubjectRef) -> proto::SubjectReference {
    proto::SubjectReference {
        object: Some(proto::ObjectReference { object_type: s.ty.clone(), object_id: s.id.clone() }),
        optional_relation: s.relation.clone(),
    }
}

/// A stored relationship on the wire.
pub fn relationship(t: &Tuple) -> proto::Relationship {
    proto::Relationship {
        resource: Some(object_ref(&t.resource)),
        relation: t.relation.clone(),
        subject: Some(subject_ref(&t.subject)),
    }
}

fn expand_node(n: &ExpandNode) -> proto::ExpandNode {
    use proto::expand_node::Kind;
    let mut out = proto::ExpandNode::default();
    match n {
        ExpandNode::Permission { resource, permission, child } => {
            out.set_kind(Kind::Permission);
            out.resource = Some(object_ref(resource));
            out.name = permission.clone();
            out.children = vec![expand_node(child)];
        }
        ExpandNode::Relation { resource, relation, subjects } => {
            out.set_kind(Kind::Relation);
            out.resource = Some(object_ref(resource));
            out.name = relation.clone();
            out.subjects = subjects.iter().map(subject_ref).collect();
        }
        ExpandNode::Arrow { relation, name, subjects } => {
            out.set_kind(Kind::Arrow);
            out.arrow_relation = relation.clone();
            out.name = name.clone();
            out.subjects = subjects.iter().map(subject_ref).collect();
        }
        ExpandNode::Union(v) | ExpandNode::Intersection(v) => {
            out.set_kind(if matches!(n, ExpandNode::Union(_)) { Kind::Union } else { Kind::Intersection });
            out.children = v.iter().map(expand_node).collect();
        }
        ExpandNode::Exclusion(l, r) => {
            out.set_kind(Kind::Exclusion);
            out.children = vec![expand_node(l), expand_node(r)];
        }
        ExpandNode::Nil => out.set_kind(Kind::Nil),
    }
    out
}

fn token(org: Uuid, revision: i64) -> Option<proto::ZedToken> {
    Some(proto::ZedToken { token: Zookie { org, revision }.encode() })
}

fn permissionship(has: bool) -> i32 {
    if has { proto::Permissionship::HasPermission as i32 } else { proto::Permissionship::NoPermission as i32 }
}

#[tonic::async_trait]
impl SchemaService for PermissionsApi {
    async fn write_schema(
        &self,
        request: Request<proto::WriteSchemaRequest>,
    ) -> Result<Response<proto::WriteSchemaResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let req = request.into_inner();
        if service_name(&ctx)? != req.module {
            return Err(Error::permission_denied(
                "NOT_MODULE_OWNER",
                format!("Only service:{} may write the schema of module `{}`", req.module, req.module),
            )
            .into());
        }
        let mut tx = self.db.tx().await?;
        let r = registry::register(&mut tx, &req.module, &req.schema, &format!("service:{}", req.module), req.dry_run)
            .await;
        let reg = match r {
            Ok(reg) => reg,
            Err(RegisterError::Invalid(errors)) => {
                let mut err =
                    Error::invalid_argument("SCHEMA_INVALID", format!("The schema of `{}` is invalid", req.module));
                if let Some(first) = errors.first() {
                    err = err
                        .with_metadata("module", first.module.clone())
                        .with_metadata("line", first.line.to_string())
                        .with_metadata("column", first.column.to_string())
                        .with_metadata("code", first.code.as_str());
                }
                for e in &errors {
                    err = err.with_field(e.field(), format!("{}: {}", e.code, e.message));
                }
                return Err(err.into());
            }
            Err(RegisterError::MissingDependency(types)) => {
                return Err(Error::failed_precondition(
                    "MISSING_DEPENDENCY",
                    format!("Types of modules that are not registered yet: {}", types.join(", ")),
                )
                .with_metadata("types", types.join(","))
                .into());
            }
            Err(RegisterError::Conflict(e)) => {
                return Err(Error::failed_precondition("DEFINITION_CONFLICT", e.message.clone())
                    .with_field(e.field(), e.message)
                    .into());
            }
            Err(RegisterError::InUse { code, what, count, sample }) => {
                return Err(Error::failed_precondition(
                    code,
                    format!("`{what}` still has {count} stored relationships; migrate them first"),
                )
                .with_metadata("count", count.to_string())
                .with_metadata("sample", sample)
                .into());
            }
            Err(RegisterError::Store(e)) => return Err(Error::internal(e).into()),
        };
        if reg.changed && !req.dry_run {
            // Custom roles follow the schema: `type:*` gains new grantable pairs, and pairs that
            // stopped being grantable lose their tuples, in this same transaction (rules 17, 20).
            let n = reexpand_all(&mut tx, &reg.schema, &format!("service:{}", req.module)).await?;
            if n > 0 {
                tracing::info!(changed = n, "custom role grants re-expanded for the new schema");
            }
            // The schema is the cell's, so its event belongs to the platform scope.
            let payload = proto::SchemaUpdated {
                module: req.module.clone(),
                hash: schema_admin::hex(&reg.hash),
                added: reg.added.clone(),
                removed: reg.removed.clone(),
            };
            let envelope =
                trellis_kit::events::envelope(&ctx, store::PLATFORM_ORG, schema_admin::SCHEMA_UPDATED, &payload);
            trellis_kit::events::stage_envelope(&mut tx, envelope).await?;
        }
        tx.commit().await.map_err(Error::internal)?;
        if reg.changed && !req.dry_run {
            self.cache.schema_changed().await;
        }
        Ok(Response::new(proto::WriteSchemaResponse {
            hash: schema_admin::hex(&reg.hash),
            changed: reg.changed,
            diff: Some(proto::SchemaDiff { added: reg.added, removed: reg.removed }),
            warnings: Vec::new(),
        }))
    }

    async fn read_schema(
        &self,
        request: Request<proto::ReadSchemaRequest>,
    ) -> Result<Response<proto::ReadSchemaResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        self.require_platform_admin(&ctx).await?;
        let module = request.into_inner().module;
        let row: Option<(String, Vec<u8>)> = if module.is_empty() {
            sqlx::query_as("select text, hash from permissions.merged_schema").fetch_optional(self.db.pool()).await
        } else {
            sqlx::query_as("select source, hash from permissions.schema_modules where module = $1")
                .bind(&module)
                .fetch_optional(self.db.pool())
                .await
        }
        .map_err(Error::internal)?;
        let (schema, hash) =
            row.ok_or_else(|| Error::not_found("NOT_FOUND", format!("No schema for module `{module}`")))?;
        Ok(Response::new(proto::ReadSchemaResponse { schema, hash: schema_admin::hex(&hash) }))
    }

    async fn validate_schema(
        &self,
        request: Request<proto::ValidateSchemaRequest>,
    ) -> Result<Response<proto::ValidateSchemaResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        Ok(Response::new(self.validate_schema_text(&ctx, request.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl RelationshipService for PermissionsApi {
    async fn write_relationships(
        &self,
        request: Request<proto::WriteRelationshipsRequest>,
    ) -> Result<Response<proto::WriteRelationshipsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let service = service_name(&ctx)?.to_owned();
        let org = ctx.org_id()?;
        let req = request.into_inner();
        if req.updates.is_empty() || req.updates.len() > MAX_UPDATES {
            return Err(Error::validation("updates", format!("1..{MAX_UPDATES} updates")).into());
        }
        let schema = self.schema().await?;
        let mut updates = Vec::with_capacity(req.updates.len());
        for (i, u) in req.updates.iter().enumerate() {
            let op = match proto::Operation::try_from(u.operation) {
                Ok(proto::Operation::Touch) => Operation::Touch,
                Ok(proto::Operation::Create) => Operation::Create,
                Ok(proto::Operation::Delete) => Operation::Delete,
                _ => {
                    return Err(Error::validation(
                        format!("updates[{i}].operation"),
                        "must be TOUCH, CREATE or DELETE",
                    )
                    .into());
                }
            };
            let f = format!("updates[{i}].relationship");
            let r = u.relationship.as_ref().ok_or_else(|| Error::validation(&f, "is required"))?;
            let t = Tuple {
                resource: object(r.resource.as_ref(), &format!("{f}.resource"))?,
                relation: r.relation.clone(),
                subject: subject(r.subject.as_ref(), &format!("{f}.subject"))?,
            };
            own_type(&schema, &service, &t.resource.ty).map_err(|e| e.with_metadata("index", i.to_string()))?;
            updates.push((op, t));
        }
        let preconditions = preconditions(&req.preconditions)?;
        let source = req.source_version.as_ref().filter(|s| !s.key.is_empty());
        if let Some(s) = source
            && s.key.chars().count() > 200
        {
            return Err(Error::validation("source_version.key", "at most 200 characters").into());
        }
        let mut tx = self.db.tenant_tx_for(org, None).await?;
        // The source-version guard (rule 13): an older (or the same) version of the source entity
        // than the one already applied is skipped, reporting the current revision.
        if let Some(s) = source
            && !store::claim_source_version(&mut tx, org, &s.key, s.version, false).await.map_err(Error::internal)?
        {
            let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
            tx.commit().await.map_err(Error::internal)?;
            return Ok(Response::new(proto::WriteRelationshipsResponse {
                written_at: token(org, revision),
                skipped: true,
            }));
        }
        let written = store::write(&mut tx, org, &schema, &updates, &preconditions, &format!("service:{service}"))
            .await
            .map_err(write_error)?;
        tx.commit().await.map_err(Error::internal)?;
        if written.changed {
            let keys = updates
                .iter()
                .map(|(_, t)| (t.resource.ty.clone(), t.resource.id.clone(), t.relation.clone()))
                .collect();
            self.cache.written(Invalidation { org_id: org, revision: written.revision, keys, schema: false }).await;
        }
        Ok(Response::new(proto::WriteRelationshipsResponse {
            written_at: token(org, written.revision),
            skipped: false,
        }))
    }

    async fn delete_relationships(
        &self,
        request: Request<proto::DeleteRelationshipsRequest>,
    ) -> Result<Response<proto::DeleteRelationshipsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let service = service_name(&ctx)?.to_owned();
        let org = ctx.org_id()?;
        let req = request.into_inner();
        let f = filter(req.filter.as_ref(), "filter")?;
        let schema = self.schema().await?;
        if f.resource_type.is_empty() {
            // Only identity deletes by subject alone (member removal, key revocation, erasure).
            if service != "identity" {
                return Err(Error::validation("filter.resource_type", "is required").into());
            }
            if f.subject_type.is_none() {
                return Err(Error::validation(
                    "filter.optional_subject_type",
                    "is required when filter.resource_type is empty",
                )
                .into());
            }
        } else {
            if schema.definition(&f.resource_type).is_none() {
                return Err(
                    Error::validation("filter.resource_type", format!("unknown type `{}`", f.resource_type)).into()
                );
            }
            own_type(&schema, &service, &f.resource_type)?;
        }
        let preconditions = preconditions(&req.preconditions)?;
        let limit = match req.limit as usize {
            0 => MAX_DELETE,
            n if n > MAX_DELETE => return Err(Error::validation("limit", format!("at most {MAX_DELETE}")).into()),
            n => n,
        };
        let mut tx = self.db.tenant_tx_for(org, None).await?;
        let deleted = store::delete_by_filter(
            &mut tx,
            org,
            &f,
            &preconditions,
            limit,
            req.allow_partial,
            &format!("service:{service}"),
        )
        .await
        .map_err(write_error)?;
        tx.commit().await.map_err(Error::internal)?;
        if !deleted.tuples.is_empty() {
            let keys = deleted
                .tuples
                .iter()
                .map(|t| (t.resource.ty.clone(), t.resource.id.clone(), t.relation.clone()))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            self.cache.written(Invalidation { org_id: org, revision: deleted.revision, keys, schema: false }).await;
        }
        Ok(Response::new(proto::DeleteRelationshipsResponse {
            deleted_count: deleted.tuples.len() as u64,
            partial: deleted.partial,
            written_at: token(org, deleted.revision),
        }))
    }

    async fn read_relationships(
        &self,
        request: Request<proto::ReadRelationshipsRequest>,
    ) -> Result<Response<proto::ReadRelationshipsResponse>, Status> {
        let (org, req) = service_read(request, |r| r.consistency.as_ref())?;
        let f = filter(req.filter.as_ref(), "filter")?;
        if f.resource_type.is_empty() {
            return Err(Error::validation("filter.resource_type", "is required").into());
        }
        let size = match req.page_size {
            n if n < 0 => return Err(Error::validation("page_size", "must not be negative").into()),
            0 => DEFAULT_READ_PAGE,
            n => (n as usize).min(MAX_READ_PAGE),
        };
        let none = String::new();
        let query = PageTokens::query_hash(&[
            &org.to_string(),
            &f.resource_type,
            f.resource_id.as_ref().unwrap_or(&none),
            f.relation.as_ref().unwrap_or(&none),
            f.subject_type.as_ref().unwrap_or(&none),
            f.subject_id.as_ref().unwrap_or(&none),
            f.subject_relation.as_ref().unwrap_or(&none),
        ]);
        let after: Option<Tuple> = self.pages.decode(&query, &req.page_token)?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let mut rows = store::read_page(&mut tx, org, &f, after.as_ref(), size + 1).await.map_err(Error::internal)?;
        tx.commit().await.map_err(Error::internal)?;
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match rows.last() {
            Some(last) if more => self.pages.encode(&query, last),
            _ => String::new(),
        };
        Ok(Response::new(proto::ReadRelationshipsResponse {
            relationships: rows.iter().map(relationship).collect(),
            next_page_token,
            read_at: token(org, revision),
        }))
    }
}

type LookupStream = Pin<Box<dyn Stream<Item = Result<proto::LookupResourcesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CheckService for PermissionsApi {
    async fn check(&self, request: Request<proto::CheckRequest>) -> Result<Response<proto::CheckResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        let req = request.into_inner();
        let freshness = consistency(req.consistency.as_ref(), org)?;
        let resource = object(req.resource.as_ref(), "resource")?;
        let subject = self.checked_subject(&ctx, req.subject.as_ref(), "subject").await?;
        let depth = if req.max_depth == 0 { DEFAULT_MAX_DEPTH } else { req.max_depth.min(DEFAULT_MAX_DEPTH) };
        if req.with_trace {
            return Ok(Response::new(self.traced_check(&ctx, &resource, &req.permission, &subject, depth).await?));
        }
        let schema = self.schema().await?;
        // Answers computed with a lowered depth limit are neither served from nor put in the
        // cache: the limit can change the answer.
        let cacheable = depth == DEFAULT_MAX_DEPTH;
        if cacheable && let Some((has, revision)) = self.cache.get(org, &resource, &req.permission, &subject, freshness)
        {
            if freshness == Freshness::MinimizeLatency
                && self.cache.claim_refresh(org, &resource, &req.permission, &subject)
            {
                self.refresh_in_background(
                    org,
                    schema.clone(),
                    resource.clone(),
                    req.permission.clone(),
                    subject.clone(),
                );
            }
            return Ok(Response::new(proto::CheckResponse {
                permissionship: permissionship(has),
                checked_at: token(org, revision),
                trace: None,
            }));
        }
        let snapshot_at = Instant::now();
        let mut tx = store::check_snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), depth);
        let has = ev.check(&resource, &req.permission, &subject).await.map_err(eval_error)?;
        if cacheable {
            let reads = ev.read_keys();
            self.cache.put(org, &resource, &req.permission, &subject, (has, revision), snapshot_at, reads);
        }
        drop(ev);
        tx.commit().await.map_err(Error::internal)?;
        Ok(Response::new(proto::CheckResponse {
            permissionship: permissionship(has),
            checked_at: token(org, revision),
            trace: None,
        }))
    }

    async fn check_bulk(
        &self,
        request: Request<proto::CheckBulkRequest>,
    ) -> Result<Response<proto::CheckBulkResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let org = ctx.org_id()?;
        let req = request.into_inner();
        consistency(req.consistency.as_ref(), org)?;
        let max = if end_user(&ctx).is_some() { MAX_BULK_REST } else { MAX_BULK };
        if req.items.is_empty() || req.items.len() > max {
            return Err(Error::validation("items", format!("1..{max} items")).into());
        }
        let mut subjects = Vec::with_capacity(req.items.len());
        for (i, item) in req.items.iter().enumerate() {
            subjects.push(self.checked_subject(&ctx, item.subject.as_ref(), &format!("items[{i}].subject")).await);
        }
        let schema = self.schema().await?;
        let mut tx = store::check_snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH);
        let mut results = Vec::with_capacity(req.items.len());
        for ((i, item), subject) in req.items.iter().enumerate().zip(subjects) {
            let parsed =
                object(item.resource.as_ref(), &format!("items[{i}].resource")).and_then(|r| Ok((r, subject?)));
            let outcome = match parsed {
                Ok((r, s)) => ev.check(&r, &item.permission, &s).await.map_err(eval_error),
                Err(e) => Err(e),
            };
            results.push(match outcome {
                Ok(has) => proto::CheckBulkResult { permissionship: permissionship(has), ..Default::default() },
                Err(e) if e.code() == tonic::Code::Unavailable => return Err(e.into()),
                Err(e) if e.code() == tonic::Code::PermissionDenied => return Err(e.into()),
                Err(e) => proto::CheckBulkResult {
                    permissionship: proto::Permissionship::Unspecified as i32,
                    error_reason: e.reason().to_owned(),
                    error_message: e.message().to_owned(),
                },
            });
        }
        Ok(Response::new(proto::CheckBulkResponse { results, checked_at: token(org, revision) }))
    }

    type LookupResourcesStream = LookupStream;

    async fn lookup_resources(
        &self,
        request: Request<proto::LookupResourcesRequest>,
    ) -> Result<Response<Self::LookupResourcesStream>, Status> {
        let (org, req) = service_read(request, |r| r.consistency.as_ref())?;
        let subject = subject(req.subject.as_ref(), "subject")?;
        let limit = match req.limit as usize {
            0 => MAX_LOOKUP,
            n if n > MAX_LOOKUP => return Err(Error::validation("limit", format!("at most {MAX_LOOKUP}")).into()),
            n => n,
        };
        let cursor = (!req.cursor.is_empty()).then_some(req.cursor.clone());
        let schema = self.schema().await?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let at = token(org, revision);
        let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH);
        // The org's object is `organization:<org id>` (identity's convention).
        if req.allow_org_wide
            && ev
                .org_wide(
                    &req.resource_type,
                    &req.permission,
                    &subject,
                    &ObjectRef::new("organization", org.to_string()),
                )
                .await
                .map_err(eval_error)?
        {
            let one = proto::LookupResourcesResponse { org_wide: true, looked_up_at: at, ..Default::default() };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(one)]))));
        }
        let (ids, _more) = ev
            .lookup_resources(&req.resource_type, &req.permission, &subject, cursor.as_deref(), limit)
            .await
            .map_err(eval_error)?;
        drop(ev);
        tx.commit().await.map_err(Error::internal)?;
        let items: Vec<Result<proto::LookupResourcesResponse, Status>> = ids
            .into_iter()
            .map(|id| {
                Ok(proto::LookupResourcesResponse {
                    after_cursor: id.clone(),
                    resource_id: id,
                    looked_up_at: at.clone(),
                    org_wide: false,
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn expand(&self, request: Request<proto::ExpandRequest>) -> Result<Response<proto::ExpandResponse>, Status> {
        let (org, req) = service_read(request, |r| r.consistency.as_ref())?;
        let resource = object(req.resource.as_ref(), "resource")?;
        let schema = self.schema().await?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let tree = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH)
            .expand(&resource, &req.permission)
            .await
            .map_err(eval_error)?;
        tx.commit().await.map_err(Error::internal)?;
        Ok(Response::new(proto::ExpandResponse { tree: Some(expand_node(&tree)), expanded_at: token(org, revision) }))
    }

    type LookupSubjectsStream = SubjectStream;

    async fn lookup_subjects(
        &self,
        request: Request<proto::LookupSubjectsRequest>,
    ) -> Result<Response<Self::LookupSubjectsStream>, Status> {
        let (org, req) = service_read(request, |r| r.consistency.as_ref())?;
        let resource = object(req.resource.as_ref(), "resource")?;
        if req.subject_type.is_empty() {
            return Err(Error::validation("subject_type", "is required").into());
        }
        let limit = match req.limit as usize {
            0 => MAX_LOOKUP,
            n if n > MAX_LOOKUP => return Err(Error::validation("limit", format!("at most {MAX_LOOKUP}")).into()),
            n => n,
        };
        let schema = self.schema().await?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let found = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH)
            .lookup_subjects(&resource, &req.permission, &req.subject_type, &req.subject_relation)
            .await
            .map_err(eval_error)?;
        tx.commit().await.map_err(Error::internal)?;
        let at = token(org, revision);
        // `*` sorts before every id, so the wildcard comes first and the cursor is the last id.
        let items: Vec<Result<proto::LookupSubjectsResponse, Status>> = found
            .into_iter()
            .filter(|f| req.cursor.is_empty() || f.id > req.cursor)
            .take(limit)
            .map(|f| {
                Ok(proto::LookupSubjectsResponse {
                    after_cursor: f.id.clone(),
                    subject_id: f.id,
                    excluded_subject_ids: f.excluded,
                    looked_up_at: at.clone(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<proto::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        service_name(&ctx)?;
        let org = ctx.org_id()?;
        let req = request.into_inner();
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            Error::new(
                tonic::Code::ResourceExhausted,
                "TOO_MANY_WATCHES",
                format!("This replica already serves {MAX_WATCHES} Watch streams; retry on another"),
            )
            .with_retry_after(Duration::from_secs(1))
        })?;
        let mut after = match &req.start_cursor {
            Some(t) => Zookie::decode(&t.token, org).map_err(token_error)?.revision,
            None => {
                let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
                store::revision(&mut tx, org).await.map_err(Error::internal)?
            }
        };
        let types = req.object_types;
        let db = self.db.clone();
        // The first read happens before the stream is returned, so an expired cursor fails the call.
        let first = watch_read(&db, org, after, &types).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<proto::WatchResponse, Status>>(16);
        tokio::spawn(async move {
            let _permit = permit;
            let mut batch = Some(first);
            loop {
                let changes = match batch.take() {
                    Some(c) => c,
                    None => match watch_read(&db, org, after, &types).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    },
                };
                let idle = changes.is_empty();
                for (revision, updates) in changes {
                    after = revision;
                    let message = proto::WatchResponse { updates, changes_through: token(org, revision) };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                if idle {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(WATCH_POLL) => {}
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

type SubjectStream = Pin<Box<dyn Stream<Item = Result<proto::LookupSubjectsResponse, Status>> + Send>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchResponse, Status>> + Send>>;

/// The changes after `after`, grouped by revision (revisions whose changes are all filtered out by
/// `types` still advance the cursor, as a message without updates).
async fn watch_read(
    db: &Db,
    org: Uuid,
    after: i64,
    types: &[String],
) -> Result<Vec<(i64, Vec<proto::WatchUpdate>)>, Error> {
    let mut tx = store::snapshot(db, org).await.map_err(Error::internal)?;
    let all: Vec<String> = Vec::new();
    let changes = match store::changes_after(&mut tx, org, after, &all, 1000).await {
        Ok(c) => c,
        Err(ChangesError::Expired) => {
            return Err(Error::failed_precondition(
                "REVISION_EXPIRED",
                "The changes after this cursor are no longer retained; start without a cursor",
            ));
        }
        Err(ChangesError::Store(e)) => return Err(Error::unavailable("UNAVAILABLE", format!("changelog: {e}"))),
    };
    tx.commit().await.map_err(Error::internal)?;
    let mut out: Vec<(i64, Vec<proto::WatchUpdate>)> = Vec::new();
    for c in changes {
        if out.last().is_none_or(|(r, _)| *r != c.revision) {
            out.push((c.revision, Vec::new()));
        }
        if types.is_empty() || types.contains(&c.tuple.resource.ty) {
            let op = match c.operation {
                Operation::Touch => proto::Operation::Touch,
                Operation::Create => proto::Operation::Create,
                Operation::Delete => proto::Operation::Delete,
            };
            if let Some((_, v)) = out.last_mut() {
                v.push(proto::WatchUpdate { operation: op as i32, relationship: Some(relationship(&c.tuple)) });
            }
        }
    }
    // Revisions whose changes were all filtered out are not sent, except to move the cursor in
    // the last message.
    let last = out.last().map(|(r, _)| *r);
    out.retain(|(r, v)| !v.is_empty() || Some(*r) == last);
    Ok(out)
}

/// The caller as a subject, for end-user routes: `user:<id>` or `api_key:<id>`.
pub(crate) fn end_user(ctx: &RequestContext) -> Option<SubjectRef> {
    match &ctx.subject {
        Subject::User(u) => Some(SubjectRef::new("user", u.to_string())),
        Subject::ApiKey(k) => Some(SubjectRef::new("api_key", k.to_string())),
        _ => None,
    }
}

fn refusal(r: Refusal, t: &Tuple) -> Error {
    match r {
        Refusal::UnknownType => Error::invalid_argument("UNKNOWN_TYPE", format!("Unknown type `{}`", t.resource.ty))
            .with_field("namespace", "unknown type"),
        Refusal::UnknownRelation => {
            Error::invalid_argument("UNKNOWN_RELATION", format!("`{}` has no relation `{}`", t.resource.ty, t.relation))
                .with_field("relation", "not a relation of this type")
        }
        Refusal::NotShareable => Error::failed_precondition(
            "NOT_SHAREABLE",
            format!("`{}` has no `share` permission, so its objects cannot be shared", t.resource.ty),
        ),
        Refusal::NotGrantableRelation => Error::invalid_argument(
            "NOT_GRANTABLE_RELATION",
            format!("`{}` is a structural relation and cannot be granted", t.relation),
        )
        .with_field("relation", "structural relations cannot be granted"),
        Refusal::NotSharer => Error::permission_denied(
            "PERMISSION_DENIED",
            format!("You need `share` on {} to change who has access", t.resource),
        ),
        Refusal::Escalation(p) => Error::permission_denied(
            "ESCALATION",
            format!("`{}` confers `{p}`, which you do not hold on {}", t.relation, t.resource),
        )
        .with_metadata("permission", p),
        Refusal::WildcardNeedsAdmin => {
            Error::permission_denied("PERMISSION_DENIED", "Granting to everyone (`*`) needs organization#administer")
        }
        Refusal::NotAMember => {
            Error::failed_precondition("NOT_A_MEMBER", format!("{} is not a member of this organization", t.subject))
        }
    }
}

impl PermissionsApi {
    /// Grant (TOUCH) or revoke (DELETE) one relationship for an end user, with its event.
    async fn share(
        &self,
        ctx: &RequestContext,
        (namespace, object_id, relation, s): (String, String, String, Option<proto::AccessSubject>),
        granting: bool,
    ) -> Result<Option<proto::ZedToken>, Error> {
        let caller = end_user(ctx)
            .ok_or_else(|| Error::permission_denied("USER_TOKEN_REQUIRED", "Only users and API keys share objects"))?;
        let org = ctx.org_id()?;
        let mut v = Violations::default();
        v.check(!namespace.is_empty(), "namespace", "is required");
        v.check(store::valid_object_id(&object_id), "object_id", "must match ^[A-Za-z0-9/_|\\-=+@.:]{1,128}$");
        v.check(!relation.is_empty(), "relation", "is required");
        let s = s.unwrap_or_default();
        v.check(!s.r#type.is_empty(), "subject.type", "is required");
        v.check(s.id == "*" || store::valid_object_id(&s.id), "subject.id", "must be an object id or `*`");
        v.finish()?;
        let t = Tuple {
            resource: ObjectRef::new(&namespace, &object_id),
            relation: relation.clone(),
            subject: SubjectRef::set(&s.r#type, &s.id, &s.relation),
        };
        let schema = self.schema().await?;
        let def = schema.definition(&namespace).ok_or_else(|| refusal(Refusal::UnknownType, &t))?;
        let org_object = ObjectRef::new("organization", org.to_string());
        {
            let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
            let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH);
            access::authorize(&mut ev, def, &t, &caller, &org_object, granting)
                .await
                .map_err(eval_error)?
                .map_err(|r| refusal(r, &t))?;
        }
        let op = if granting { Operation::Touch } else { Operation::Delete };
        let violations = store::validate_updates(&schema, &[(op, t.clone())]);
        if let Some(x) = violations.first() {
            let field = x
                .field
                .replace("updates[0].relationship.subject.object.object_type", "subject.type")
                .replace("updates[0].relationship.subject.optional_relation", "subject.relation")
                .replace("updates[0].relationship.subject.object.object_id", "subject.id");
            return Err(
                Error::invalid_argument("VALIDATION_ERROR", x.message.clone()).with_field(field, x.message.clone())
            );
        }
        let mut tx = self.db.tenant_tx(ctx).await?;
        let (kind, id) = ctx.actor();
        let written = store::write(&mut tx, org, &schema, &[(op, t.clone())], &[], &format!("{kind}:{id}"))
            .await
            .map_err(write_error)?;
        let payload = proto::AccessChanged {
            resource: Some(object_ref(&t.resource)),
            relation: t.relation.clone(),
            subject: Some(subject_ref(&t.subject)),
            written_at: token(org, written.revision),
        };
        if written.changed {
            let event = if granting { ACCESS_GRANTED } else { ACCESS_REVOKED };
            trellis_kit::events::stage(&mut tx, ctx, event, &payload).await?;
        }
        tx.commit().await.map_err(Error::internal)?;
        if written.changed {
            let keys = vec![(t.resource.ty.clone(), t.resource.id.clone(), t.relation.clone())];
            self.cache.written(Invalidation { org_id: org, revision: written.revision, keys, schema: false }).await;
        }
        Ok(token(org, written.revision))
    }
}

/// Routing keys of the events this service publishes.
pub const ACCESS_GRANTED: &str = "permissions.access.granted";
pub const ACCESS_REVOKED: &str = "permissions.access.revoked";

#[tonic::async_trait]
impl AccessService for PermissionsApi {
    async fn grant(&self, request: Request<proto::GrantRequest>) -> Result<Response<proto::GrantResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let written_at = self.share(&ctx, (r.namespace, r.object_id, r.relation, r.subject), true).await?;
        Ok(Response::new(proto::GrantResponse { written_at }))
    }

    async fn revoke(&self, request: Request<proto::RevokeRequest>) -> Result<Response<proto::RevokeResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let written_at = self.share(&ctx, (r.namespace, r.object_id, r.relation, r.subject), false).await?;
        Ok(Response::new(proto::RevokeResponse { written_at }))
    }

    async fn my_access(
        &self,
        request: Request<proto::MyAccessRequest>,
    ) -> Result<Response<proto::MyAccessResponse>, Status> {
        access_views::my_access(self, request).await
    }

    async fn access_audit(
        &self,
        request: Request<proto::AccessAuditRequest>,
    ) -> Result<Response<proto::AccessAuditResponse>, Status> {
        access_views::access_audit(self, request).await
    }
}
