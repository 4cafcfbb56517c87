//! Queries of settings: the global `setting_definitions` (no tenant) and the tenant table
//! `settings` (always inside a tenant transaction).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use trellis_kit::db::Tx;
use uuid::Uuid;

/// A registered key.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Definition {
    pub namespace: String,
    pub key: String,
    pub module: String,
    /// `org`, `user`.
    pub scopes: Vec<String>,
    pub default_value: Option<Value>,
    pub json_schema: Option<Value>,
    /// `admin` or `self`.
    pub writable_by: String,
}

/// A stored value.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub scope: String,
    pub scope_id: Uuid,
    pub namespace: String,
    pub key: String,
    pub value: Value,
    pub updated_by: Option<Uuid>,
    pub updated_at: DateTime<Utc>,
}

const DEFINITION: &str = "select namespace, key, module, scopes, default_value, json_schema, writable_by
                          from identity.setting_definitions";

/// The definitions of a namespace, or all of them.
pub async fn definitions(pool: &PgPool, namespace: Option<&str>) -> sqlx::Result<Vec<Definition>> {
    sqlx::query_as(&format!("{DEFINITION} where $1::text is null or namespace = $1 order by namespace, key"))
        .bind(namespace)
        .fetch_all(pool)
        .await
}

/// One definition.
pub async fn definition(pool: &PgPool, namespace: &str, key: &str) -> sqlx::Result<Option<Definition>> {
    sqlx::query_as(&format!("{DEFINITION} where namespace = $1 and key = $2"))
        .bind(namespace)
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// The module owning each of `namespaces` that has definitions.
pub async fn namespace_owners(pool: &PgPool, namespaces: &[String]) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "select distinct namespace, module from identity.setting_definitions where namespace = any($1) order by 1",
    )
    .bind(namespaces)
    .fetch_all(pool)
    .await
}

/// Upserts definitions of `module`; returns how many were new or changed.
pub async fn upsert_definitions(pool: &PgPool, module: &str, definitions: &[Definition]) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    let mut changed = 0;
    for d in definitions {
        let done = sqlx::query(
            "insert into identity.setting_definitions
                 (namespace, key, module, scopes, default_value, json_schema, writable_by)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (namespace, key) do update set scopes = excluded.scopes,
                 default_value = excluded.default_value, json_schema = excluded.json_schema,
                 writable_by = excluded.writable_by, registered_at = now()
             where setting_definitions.module = excluded.module
               and (setting_definitions.scopes, setting_definitions.default_value,
                    setting_definitions.json_schema, setting_definitions.writable_by)
                   is distinct from (excluded.scopes, excluded.default_value, excluded.json_schema,
                    excluded.writable_by)",
        )
        .bind(&d.namespace)
        .bind(&d.key)
        .bind(module)
        .bind(&d.scopes)
        .bind(&d.default_value)
        .bind(&d.json_schema)
        .bind(&d.writable_by)
        .execute(&mut *tx)
        .await?;
        changed += done.rows_affected() as i64;
    }
    tx.commit().await?;
    Ok(changed)
}

const STORED: &str = "select scope, scope_id, namespace, key, value, updated_by, updated_at from identity.settings";

/// The values stored in one scope of the transaction's org, by namespace and key.
pub async fn stored(tx: &mut Tx, scope: &str, scope_id: Uuid, namespace: Option<&str>) -> sqlx::Result<Vec<Stored>> {
    sqlx::query_as(&format!(
        "{STORED} where scope = $1 and scope_id = $2 and ($3::text is null or namespace = $3) order by namespace, key"
    ))
    .bind(scope)
    .bind(scope_id)
    .bind(namespace)
    .fetch_all(&mut **tx)
    .await
}

/// Whether the scope already holds this key, and how many keys it holds.
pub async fn key_count(
    tx: &mut Tx,
    scope: &str,
    scope_id: Uuid,
    namespace: &str,
    key: &str,
) -> sqlx::Result<(bool, i64)> {
    sqlx::query_as(
        "select coalesce(bool_or(namespace = $3 and key = $4), false), count(*)
         from identity.settings where scope = $1 and scope_id = $2",
    )
    .bind(scope)
    .bind(scope_id)
    .bind(namespace)
    .bind(key)
    .fetch_one(&mut **tx)
    .await
}

/// Stores a value in the transaction's org.
#[allow(clippy::too_many_arguments)]
pub async fn upsert(
    tx: &mut Tx,
    org_id: Uuid,
    scope: &str,
    scope_id: Uuid,
    namespace: &str,
    key: &str,
    value: &Value,
    by: Option<Uuid>,
) -> sqlx::Result<Stored> {
    sqlx::query_as(
        "insert into identity.settings (id, org_id, scope, scope_id, namespace, key, value, updated_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict on constraint settings_scope_key do update
             set value = excluded.value, updated_by = excluded.updated_by, updated_at = now()
         returning scope, scope_id, namespace, key, value, updated_by, updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(org_id)
    .bind(scope)
    .bind(scope_id)
    .bind(namespace)
    .bind(key)
    .bind(value)
    .bind(by)
    .fetch_one(&mut **tx)
    .await
}

/// Removes a value; whether there was one.
pub async fn delete(tx: &mut Tx, scope: &str, scope_id: Uuid, namespace: &str, key: &str) -> sqlx::Result<bool> {
    let done =
        sqlx::query("delete from identity.settings where scope = $1 and scope_id = $2 and namespace = $3 and key = $4")
            .bind(scope)
            .bind(scope_id)
            .bind(namespace)
            .bind(key)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() > 0)
}
