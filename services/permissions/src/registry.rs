//! Schema registration (WriteSchema / ValidateSchema / ReadSchema storage, rule 20): a module's
//! text is validated together with every other registered module, compared with stored
//! relationships so that nothing is orphaned, and written with its history and the merged schema.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::schema::{AllowedSubject, Code, ModuleSource, Schema, SchemaError, compile};

/// The module every other module depends on (`user`, `organization`, `team`).
pub const BASE_MODULE: &str = "identity";

/// The SHA-256 of a module's normalized text (line endings and trailing whitespace ignored).
pub fn hash(source: &str) -> Vec<u8> {
    let normalized: Vec<&str> = source.lines().map(str::trim_end).collect();
    Sha256::digest(normalized.join("\n").trim().as_bytes()).to_vec()
}

/// What a registration changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub hash: Vec<u8>,
    pub changed: bool,
    /// `type`, `type#name` added and removed.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The merged schema after the change.
    pub schema: Schema,
}

/// Why a registration was refused; nothing changed.
#[derive(Debug)]
pub enum RegisterError {
    /// INVALID_ARGUMENT SCHEMA_INVALID.
    Invalid(Vec<SchemaError>),
    /// FAILED_PRECONDITION MISSING_DEPENDENCY: types of modules not registered yet.
    MissingDependency(Vec<String>),
    /// FAILED_PRECONDITION DEFINITION_CONFLICT.
    Conflict(SchemaError),
    /// FAILED_PRECONDITION RELATION_IN_USE / DEFINITION_IN_USE.
    InUse {
        code: &'static str,
        what: String,
        count: i64,
        sample: String,
    },
    Store(sqlx::Error),
}

impl From<sqlx::Error> for RegisterError {
    fn from(e: sqlx::Error) -> Self {
        RegisterError::Store(e)
    }
}

/// Every registered module's text.
pub async fn modules(conn: &mut PgConnection) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("select module, source from permissions.schema_modules").fetch_all(conn).await?;
    Ok(rows.into_iter().collect())
}

/// The merged schema of the registered modules (empty when none is registered).
pub async fn merged(conn: &mut PgConnection) -> Result<Schema, RegisterError> {
    let mods = modules(conn).await?;
    let sources: Vec<ModuleSource<'_>> = mods.iter().map(|(m, s)| ModuleSource { module: m, source: s }).collect();
    compile(&sources).map_err(RegisterError::Invalid)
}

fn members(schema: &Schema, module: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in schema.definitions.values().filter(|d| d.module == module) {
        out.insert(d.name.clone());
        for n in d.relations.keys().chain(d.permissions.keys()).filter(|n| !d.generated.contains(*n)) {
            out.insert(format!("{}#{n}", d.name));
        }
    }
    out
}

fn allows(allowed: &[AllowedSubject], ty: &str, relation: &str, wildcard: bool) -> bool {
    allowed.iter().any(|a| match a {
        AllowedSubject::Direct(t) => t == ty && relation.is_empty() && !wildcard,
        AllowedSubject::Wildcard(t) => t == ty && relation.is_empty() && wildcard,
        AllowedSubject::Set(t, r) => t == ty && r == relation && !wildcard,
    })
}

/// Validates `source` as `module` against the other registered modules and the stored
/// relationships, and (unless `dry_run`) stores it. Concurrent registrations serialize on a
/// transaction-scoped advisory lock; the caller commits.
pub async fn register(
    tx: &mut PgConnection,
    module: &str,
    source: &str,
    actor: &str,
    dry_run: bool,
) -> Result<Registered, RegisterError> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('trellis.permissions.schema'))").execute(&mut *tx).await?;
    let mut mods = modules(tx).await?;
    let h = hash(source);
    let old_schema = {
        let sources: Vec<ModuleSource<'_>> = mods.iter().map(|(m, s)| ModuleSource { module: m, source: s }).collect();
        compile(&sources).unwrap_or_default()
    };
    if mods.get(module).is_some_and(|s| hash(s) == h) {
        return Ok(Registered { hash: h, changed: false, added: Vec::new(), removed: Vec::new(), schema: old_schema });
    }
    let base_missing = module != BASE_MODULE && !mods.contains_key(BASE_MODULE);
    mods.insert(module.to_owned(), source.to_owned());
    let sources: Vec<ModuleSource<'_>> = mods.iter().map(|(m, s)| ModuleSource { module: m, source: s }).collect();
    let schema = match compile(&sources) {
        Ok(s) => s,
        Err(errors) => {
            if let Some(c) = errors.iter().find(|e| e.code == Code::DefinitionConflict && e.module == module) {
                return Err(RegisterError::Conflict(c.clone()));
            }
            // Before the base module is registered, unknown types are dependencies, not typos.
            if base_missing
                && errors.iter().all(|e| {
                    matches!(
                        e.code,
                        Code::UnknownType | Code::ArrowRightMissing | Code::UnknownSubjectRelation | Code::BadHook
                    )
                })
            {
                let types: BTreeSet<String> = errors
                    .iter()
                    .filter(|e| e.code == Code::UnknownType)
                    .filter_map(|e| e.message.split('`').nth(1).map(str::to_owned))
                    .collect();
                return Err(RegisterError::MissingDependency(types.into_iter().collect()));
            }
            return Err(RegisterError::Invalid(errors));
        }
    };
    let before = members(&old_schema, module);
    let after = members(&schema, module);
    let added: Vec<String> = after.difference(&before).cloned().collect();
    let removed: Vec<String> = before.difference(&after).cloned().collect();

    // Nothing stored may be orphaned: removed definitions and relations, narrowed subject types.
    for d in old_schema.definitions.values().filter(|d| d.module == module) {
        if !schema.definitions.contains_key(&d.name) {
            let (n, sample): (i64, Option<String>) =
                sqlx::query_as("select n, sample from permissions.definition_usage($1)")
                    .bind(&d.name)
                    .fetch_one(&mut *tx)
                    .await?;
            if n > 0 {
                return Err(RegisterError::InUse {
                    code: "DEFINITION_IN_USE",
                    what: d.name.clone(),
                    count: n,
                    sample: sample.unwrap_or_default(),
                });
            }
            continue;
        }
        for rel in d.relations.keys().filter(|r| !d.generated.contains(*r)) {
            let usage: Vec<(String, String, bool, i64, String)> = sqlx::query_as(
                "select subject_type, subject_relation, wildcard, n, sample from permissions.relation_usage($1, $2)",
            )
            .bind(&d.name)
            .bind(rel)
            .fetch_all(&mut *tx)
            .await?;
            let now = schema.relation(&d.name, rel);
            let (mut count, mut sample) = (0i64, String::new());
            for (st, sr, wild, n, s) in usage {
                if now.is_none_or(|allowed| !allows(allowed, &st, &sr, wild)) {
                    count += n;
                    if sample.is_empty() {
                        sample = s;
                    }
                }
            }
            if count > 0 {
                return Err(RegisterError::InUse {
                    code: "RELATION_IN_USE",
                    what: format!("{}#{rel}", d.name),
                    count,
                    sample,
                });
            }
        }
    }
    if dry_run {
        return Ok(Registered { hash: h, changed: true, added, removed, schema });
    }
    let compiled = serde_json::to_value(schema.definitions.values().filter(|d| d.module == module).collect::<Vec<_>>())
        .map_err(|e| RegisterError::Store(sqlx::Error::Decode(Box::new(e))))?;
    let diff = serde_json::json!({"added": added, "removed": removed});
    let version: i32 = sqlx::query_scalar(
        "insert into permissions.schema_modules (module, source, hash, compiled, version, updated_by)
         values ($1, $2, $3, $4, 1, $5)
         on conflict (module) do update set source = excluded.source, hash = excluded.hash, compiled = excluded.compiled,
             version = permissions.schema_modules.version + 1, updated_at = now(), updated_by = excluded.updated_by
         returning version",
    )
    .bind(module)
    .bind(source)
    .bind(&h)
    .bind(&compiled)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "insert into permissions.schema_history (module, source, hash, compiled, version, updated_at, updated_by, diff)
         values ($1, $2, $3, $4, $5, now(), $6, $7)",
    )
    .bind(module)
    .bind(source)
    .bind(&h)
    .bind(&compiled)
    .bind(version)
    .bind(actor)
    .bind(&diff)
    .execute(&mut *tx)
    .await?;
    let text = schema.to_text();
    let grantable: Vec<String> = schema.grantable.iter().map(|(t, p)| format!("{t}:{p}")).collect();
    sqlx::query(
        "insert into permissions.merged_schema (singleton, text, hash, grantable) values (true, $1, $2, $3)
         on conflict (singleton) do update set text = excluded.text, hash = excluded.hash, grantable = excluded.grantable, updated_at = now()",
    )
    .bind(&text)
    .bind(hash(&text))
    .bind(serde_json::json!(grantable))
    .execute(&mut *tx)
    .await?;
    Ok(Registered { hash: h, changed: true, added, removed, schema })
}
