//! The administrators' side of SchemaService (spec "Schema"): ReadSchema and ValidateSchema for
//! platform administrators over REST, and the `permissions.schema.updated` event of WriteSchema.

use trellis_kit::RequestContext;
use trellis_kit::error::Error;
use trellis_proto::trellis::permissions::v1 as proto;

use super::{PermissionsApi, end_user, service_name};
use crate::eval::ObjectRef;
use crate::registry::{self, RegisterError, Registered};
use crate::schema::valid_module_name;
use crate::store::PLATFORM_ORG;

/// Routing key of the schema event.
pub const SCHEMA_UPDATED: &str = "permissions.schema.updated";

/// The hexadecimal form of a schema hash.
pub(super) fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl PermissionsApi {
    /// Services pass; users and API keys need `platform:cell#administer`.
    pub(super) async fn require_platform_admin(&self, ctx: &RequestContext) -> Result<(), Error> {
        let Some(me) = end_user(ctx) else {
            service_name(ctx)?;
            return Ok(());
        };
        let org = ctx.org_id().unwrap_or(PLATFORM_ORG);
        if self.holds(org, &ObjectRef::new("platform", "cell"), "administer", &me).await? {
            return Ok(());
        }
        Err(Error::permission_denied("PERMISSION_DENIED", "The cell's schema is for platform administrators"))
    }

    /// ValidateSchema: WriteSchema's checks in a transaction that is rolled back.
    pub(super) async fn validate_schema_text(
        &self,
        ctx: &RequestContext,
        req: proto::ValidateSchemaRequest,
    ) -> Result<proto::ValidateSchemaResponse, Error> {
        if end_user(ctx).is_some() {
            self.require_platform_admin(ctx).await?;
        } else if service_name(ctx)? != req.module {
            return Err(Error::permission_denied(
                "NOT_MODULE_OWNER",
                format!("Only service:{} may validate the schema of module `{}`", req.module, req.module),
            ));
        }
        if !valid_module_name(&req.module) {
            return Err(Error::validation("module", "must match ^[a-z][a-z0-9_]{1,31}$"));
        }
        let mut tx = self.db.tx().await?;
        let outcome = registry::register(&mut tx, &req.module, &req.schema, "validate", true).await;
        tx.rollback().await.map_err(Error::internal)?;
        let error = |line: u32, column: u32, code: &str, message: String| proto::SchemaValidationError {
            line,
            column,
            code: code.to_owned(),
            message,
        };
        let errors = match outcome {
            Ok(Registered { added, removed, .. }) => {
                return Ok(proto::ValidateSchemaResponse {
                    valid: true,
                    errors: Vec::new(),
                    warnings: Vec::new(),
                    diff: Some(proto::SchemaDiff { added, removed }),
                });
            }
            // Errors the text causes in other modules (a type they use removed) name that module.
            Err(RegisterError::Invalid(errors)) => errors
                .into_iter()
                .map(|e| {
                    let message = if e.module == req.module || e.module.is_empty() {
                        e.message
                    } else {
                        format!("in module `{}`: {}", e.module, e.message)
                    };
                    error(e.line, e.column, e.code.as_str(), message)
                })
                .collect(),
            Err(RegisterError::Conflict(e)) => vec![error(e.line, e.column, e.code.as_str(), e.message)],
            Err(RegisterError::MissingDependency(types)) => vec![error(
                0,
                0,
                "MISSING_DEPENDENCY",
                format!("Types of modules that are not registered yet: {}", types.join(", ")),
            )],
            Err(RegisterError::InUse { code, what, count, sample }) => vec![error(
                0,
                0,
                code,
                format!("`{what}` still has {count} stored relationships (for example {sample}); migrate them first"),
            )],
            Err(RegisterError::Store(e)) => return Err(Error::internal(e)),
        };
        Ok(proto::ValidateSchemaResponse { valid: false, errors, warnings: Vec::new(), diff: None })
    }
}
