//! gRPC handlers of `trellis.permissions.v1`: SchemaService (WriteSchema, ReadSchema),
//! RelationshipService (WriteRelationships) and CheckService (Check, CheckBulk,
//! LookupResources). Every evaluation runs on a fresh REPEATABLE READ snapshot of the caller's
//! org, so each consistency mode is satisfied (there is no result cache yet).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::RwLock;
use tonic::{Request, Response, Status};
use trellis_kit::db::Db;
use trellis_kit::error::Error;
use trellis_kit::{RequestContext, Subject};
use trellis_proto::trellis::permissions::v1 as proto;
use trellis_proto::trellis::permissions::v1::check_service_server::CheckService;
use trellis_proto::trellis::permissions::v1::relationship_service_server::RelationshipService;
use trellis_proto::trellis::permissions::v1::schema_service_server::SchemaService;
use uuid::Uuid;

use crate::eval::{DEFAULT_MAX_DEPTH, EvalError, Evaluator, ObjectRef, SubjectRef, Tuple};
use crate::registry::{self, RegisterError};
use crate::schema::Schema;
use crate::store::{self, Filter, Operation, PgReader, Precondition, TokenError, WriteError, Zookie};

/// Most updates per WriteRelationships, items per CheckBulk, ids per LookupResources call.
pub const MAX_UPDATES: usize = 1000;
pub const MAX_PRECONDITIONS: usize = 100;
pub const MAX_BULK: usize = 1000;
pub const MAX_LOOKUP: usize = 10_000;

/// The handlers, sharing the compiled merged schema (reloaded when its hash changes).
#[derive(Debug, Clone)]
pub struct PermissionsApi {
    db: Db,
    schema: Arc<RwLock<(Vec<u8>, Arc<Schema>)>>,
}

impl PermissionsApi {
    pub fn new(db: Db) -> Self {
        Self { db, schema: Arc::new(RwLock::new((Vec::new(), Arc::new(Schema::default())))) }
    }

    pub(crate) async fn schema(&self) -> Result<Arc<Schema>, Error> {
        let hash: Option<Vec<u8>> = sqlx::query_scalar("select hash from permissions.merged_schema")
            .fetch_optional(self.db.pool())
            .await
            .map_err(Error::internal)?;
        let hash = hash.unwrap_or_default();
        if self.schema.read().await.0 == hash {
            return Ok(self.schema.read().await.1.clone());
        }
        let mut conn = self.db.pool().acquire().await.map_err(Error::internal)?;
        let schema = match registry::merged(&mut conn).await {
            Ok(s) => Arc::new(s),
            Err(RegisterError::Store(e)) => return Err(Error::internal(e)),
            Err(e) => return Err(Error::internal(anyhow::anyhow!("stored schema does not compile: {e:?}"))),
        };
        *self.schema.write().await = (hash, schema.clone());
        Ok(schema)
    }
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
/// reflects every committed write, so each mode is met once the token is known to be valid.
fn consistency(c: Option<&proto::Consistency>, org: Uuid) -> Result<(), Error> {
    if let Some(proto::consistency::Requirement::AtLeastAsFresh(t)) = c.and_then(|c| c.requirement.as_ref()) {
        Zookie::decode(&t.token, org).map_err(token_error)?;
    }
    Ok(())
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
        tx.commit().await.map_err(Error::internal)?;
        Ok(Response::new(proto::WriteSchemaResponse {
            hash: reg.hash.iter().map(|b| format!("{b:02x}")).collect(),
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
        service_name(&ctx)?;
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
        Ok(Response::new(proto::ReadSchemaResponse { schema, hash: hash.iter().map(|b| format!("{b:02x}")).collect() }))
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
        if req.preconditions.len() > MAX_PRECONDITIONS {
            return Err(Error::validation("preconditions", format!("at most {MAX_PRECONDITIONS}")).into());
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
            if let Some(def) = schema.definition(&t.resource.ty)
                && def.module != service
            {
                return Err(Error::permission_denied(
                    "FOREIGN_TYPE",
                    format!(
                        "`{}` belongs to module `{}`; service:{service} may write only its own types",
                        def.name, def.module
                    ),
                )
                .with_metadata("index", i.to_string())
                .into());
            }
            updates.push((op, t));
        }
        let mut preconditions = Vec::with_capacity(req.preconditions.len());
        for (i, p) in req.preconditions.iter().enumerate() {
            let f = p
                .filter
                .as_ref()
                .ok_or_else(|| Error::validation(format!("preconditions[{i}].filter"), "is required"))?;
            if f.resource_type.is_empty() {
                return Err(Error::validation(format!("preconditions[{i}].filter.resource_type"), "is required").into());
            }
            let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
            let filter = Filter {
                resource_type: f.resource_type.clone(),
                resource_id: opt(&f.optional_resource_id),
                relation: opt(&f.optional_relation),
                subject_type: opt(&f.optional_subject_type),
                subject_id: opt(&f.optional_subject_id),
                subject_relation: opt(&f.optional_subject_relation),
            };
            preconditions.push(match proto::precondition::PreconditionOperation::try_from(p.operation) {
                Ok(proto::precondition::PreconditionOperation::MustMatch) => Precondition::MustMatch(filter),
                Ok(proto::precondition::PreconditionOperation::MustNotMatch) => Precondition::MustNotMatch(filter),
                _ => {
                    return Err(Error::validation(
                        format!("preconditions[{i}].operation"),
                        "must be MUST_MATCH or MUST_NOT_MATCH",
                    )
                    .into());
                }
            });
        }
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
        let written =
            match store::write(&mut tx, org, &schema, &updates, &preconditions, &format!("service:{service}")).await {
                Ok(w) => w,
                Err(WriteError::Invalid(v)) => {
                    let reason = if v.iter().any(|x| x.reason == "DUPLICATE_UPDATE") {
                        "DUPLICATE_UPDATE"
                    } else {
                        "VALIDATION_ERROR"
                    };
                    let mut err = Error::invalid_argument(reason, "Invalid relationship updates");
                    for x in v {
                        err = err.with_field(x.field, x.message);
                    }
                    return Err(err.into());
                }
                Err(WriteError::AlreadyExists { index }) => {
                    return Err(Error::already_exists("ALREADY_EXISTS", format!("updates[{index}] already exists"))
                        .with_metadata("index", index.to_string())
                        .into());
                }
                Err(WriteError::PreconditionFailed { index }) => {
                    return Err(Error::failed_precondition(
                        "PRECONDITION_FAILED",
                        format!("preconditions[{index}] failed"),
                    )
                    .with_metadata("index", index.to_string())
                    .into());
                }
                Err(WriteError::Store(e)) => return Err(Error::internal(anyhow::anyhow!(e)).into()),
            };
        tx.commit().await.map_err(Error::internal)?;
        Ok(Response::new(proto::WriteRelationshipsResponse {
            written_at: token(org, written.revision),
            skipped: false,
        }))
    }
}

type LookupStream = Pin<Box<dyn Stream<Item = Result<proto::LookupResourcesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CheckService for PermissionsApi {
    async fn check(&self, request: Request<proto::CheckRequest>) -> Result<Response<proto::CheckResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        service_name(&ctx)?;
        let org = ctx.org_id()?;
        let req = request.into_inner();
        consistency(req.consistency.as_ref(), org)?;
        let resource = object(req.resource.as_ref(), "resource")?;
        let subject = subject(req.subject.as_ref(), "subject")?;
        let depth = if req.max_depth == 0 { DEFAULT_MAX_DEPTH } else { req.max_depth.min(DEFAULT_MAX_DEPTH) };
        let schema = self.schema().await?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let has = Evaluator::new(&schema, PgReader::new(&mut tx, org), depth)
            .check(&resource, &req.permission, &subject)
            .await
            .map_err(eval_error)?;
        Ok(Response::new(proto::CheckResponse {
            permissionship: permissionship(has),
            checked_at: token(org, revision),
        }))
    }

    async fn check_bulk(
        &self,
        request: Request<proto::CheckBulkRequest>,
    ) -> Result<Response<proto::CheckBulkResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        service_name(&ctx)?;
        let org = ctx.org_id()?;
        let req = request.into_inner();
        consistency(req.consistency.as_ref(), org)?;
        if req.items.is_empty() || req.items.len() > MAX_BULK {
            return Err(Error::validation("items", format!("1..{MAX_BULK} items")).into());
        }
        let schema = self.schema().await?;
        let mut tx = store::snapshot(&self.db, org).await.map_err(Error::internal)?;
        let revision = store::revision(&mut tx, org).await.map_err(Error::internal)?;
        let mut ev = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH);
        let mut results = Vec::with_capacity(req.items.len());
        for (i, item) in req.items.iter().enumerate() {
            let parsed = object(item.resource.as_ref(), &format!("items[{i}].resource"))
                .and_then(|r| Ok((r, subject(item.subject.as_ref(), &format!("items[{i}].subject"))?)));
            let outcome = match parsed {
                Ok((r, s)) => ev.check(&r, &item.permission, &s).await.map_err(eval_error),
                Err(e) => Err(e),
            };
            results.push(match outcome {
                Ok(has) => proto::CheckBulkResult { permissionship: permissionship(has), ..Default::default() },
                Err(e) if e.code() == tonic::Code::Unavailable => return Err(e.into()),
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
        let ctx = RequestContext::from_request(&request)?.clone();
        service_name(&ctx)?;
        let org = ctx.org_id()?;
        let req = request.into_inner();
        consistency(req.consistency.as_ref(), org)?;
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
        let (ids, _more) = Evaluator::new(&schema, PgReader::new(&mut tx, org), DEFAULT_MAX_DEPTH)
            .lookup_resources(&req.resource_type, &req.permission, &subject, cursor.as_deref(), limit)
            .await
            .map_err(eval_error)?;
        let at = token(org, revision);
        let items: Vec<Result<proto::LookupResourcesResponse, Status>> = ids
            .into_iter()
            .map(|id| {
                Ok(proto::LookupResourcesResponse {
                    after_cursor: id.clone(),
                    resource_id: id,
                    looked_up_at: at.clone(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }
}
