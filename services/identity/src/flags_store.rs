//! Queries of `feature_flags` (a global table: no tenant transaction).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// A stored flag; `rules` as stored (see [`crate::flags::Rule`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FlagRow {
    pub key: String,
    pub description: String,
    pub enabled: bool,
    pub rules: Value,
    pub updated_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const FLAG: &str =
    "select key, description, enabled, rules, updated_by, created_at, updated_at from identity.feature_flags";

/// A page of flags by key, and the total.
pub async fn page(pool: &PgPool, offset: i64, limit: i64) -> sqlx::Result<(Vec<FlagRow>, i64)> {
    let rows = sqlx::query_as(&format!("{FLAG} order by key offset $1 limit $2"))
        .bind(offset)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let total = sqlx::query_scalar("select count(*) from identity.feature_flags").fetch_one(pool).await?;
    Ok((rows, total))
}

/// Every flag (the table holds tens of rows, not thousands).
pub async fn all(pool: &PgPool) -> sqlx::Result<Vec<FlagRow>> {
    sqlx::query_as(&format!("{FLAG} order by key")).fetch_all(pool).await
}

/// The flags among `keys`.
pub async fn by_keys(pool: &PgPool, keys: &[String]) -> sqlx::Result<Vec<FlagRow>> {
    sqlx::query_as(&format!("{FLAG} where key = any($1)")).bind(keys).fetch_all(pool).await
}

/// One flag, locked for update in `tx`.
pub async fn lock(tx: &mut sqlx::PgConnection, key: &str) -> sqlx::Result<Option<FlagRow>> {
    sqlx::query_as(&format!("{FLAG} where key = $1 for update")).bind(key).fetch_optional(tx).await
}

/// Inserts a flag; `None` when the key exists.
pub async fn insert(
    tx: &mut sqlx::PgConnection,
    key: &str,
    description: &str,
    enabled: bool,
    rules: &Value,
    by: &str,
) -> sqlx::Result<Option<FlagRow>> {
    sqlx::query_as(
        "insert into identity.feature_flags (key, description, enabled, rules, updated_by)
         values ($1, $2, $3, $4, $5) on conflict (key) do nothing
         returning key, description, enabled, rules, updated_by, created_at, updated_at",
    )
    .bind(key)
    .bind(description)
    .bind(enabled)
    .bind(rules)
    .bind(by)
    .fetch_optional(tx)
    .await
}

/// Replaces a flag's fields.
pub async fn update(
    tx: &mut sqlx::PgConnection,
    key: &str,
    description: &str,
    enabled: bool,
    rules: &Value,
    by: &str,
) -> sqlx::Result<FlagRow> {
    sqlx::query_as(
        "update identity.feature_flags set description = $2, enabled = $3, rules = $4, updated_by = $5,
             updated_at = now()
         where key = $1
         returning key, description, enabled, rules, updated_by, created_at, updated_at",
    )
    .bind(key)
    .bind(description)
    .bind(enabled)
    .bind(rules)
    .bind(by)
    .fetch_one(tx)
    .await
}

/// Deletes a flag; whether it existed.
pub async fn delete(tx: &mut sqlx::PgConnection, key: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from identity.feature_flags where key = $1").bind(key).execute(tx).await?;
    Ok(done.rows_affected() > 0)
}
