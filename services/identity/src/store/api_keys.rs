//! Queries of API keys (tenant table `api_keys`, always in a tenant transaction, except the two
//! definer lookups) and of the scope-resource registry (global table `scope_resources`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// An API key row (without its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub key_prefix: String,
    pub scopes: Vec<String>,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, org_id, name, key_prefix, scopes, role, expires_at, last_used_at, created_by, created_at, revoked_at";

/// What a new key is stored with.
#[derive(Debug)]
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: &'a str,
    pub key_prefix: &'a str,
    pub key_hash: &'a [u8],
    pub scopes: &'a [String],
    pub role: &'a str,
    pub expires_at: DateTime<Utc>,
    pub created_by: Uuid,
}

/// Inserts a key.
pub async fn insert_api_key(conn: &mut PgConnection, k: &NewApiKey<'_>) -> sqlx::Result<ApiKeyRow> {
    sqlx::query_as(&format!(
        "insert into identity.api_keys (id, org_id, name, key_prefix, key_hash, scopes, role, expires_at, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    ))
    .bind(k.id)
    .bind(k.org_id)
    .bind(k.name)
    .bind(k.key_prefix)
    .bind(k.key_hash)
    .bind(k.scopes)
    .bind(k.role)
    .bind(k.expires_at)
    .bind(k.created_by)
    .fetch_one(conn)
    .await
}

/// Active (unrevoked, unexpired) keys of the transaction's org.
pub async fn count_active_api_keys(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from identity.api_keys where revoked_at is null and expires_at > now()")
        .fetch_one(conn)
        .await
}

/// One key of the transaction's org.
pub async fn api_key(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ApiKeyRow>> {
    sqlx::query_as(&format!("select {COLUMNS} from identity.api_keys where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A page of the org's keys, newest first, after the key `after` (ids are UUIDv7).
pub async fn api_keys_page(conn: &mut PgConnection, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<ApiKeyRow>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from identity.api_keys where ($1::uuid is null or id < $1) order by id desc limit $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// How many keys the org has.
pub async fn count_api_keys(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from identity.api_keys").fetch_one(conn).await
}

/// Revokes a key; false when it was already revoked (or is not the org's).
pub async fn revoke_api_key(conn: &mut PgConnection, id: Uuid, by: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update identity.api_keys set revoked_at = now(), revoked_by = $2 where id = $1 and revoked_at is null",
    )
    .bind(id)
    .bind(by)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `(id, org_id)` of the key with this hash, before the tenant is known.
pub async fn find_api_key(pool: &PgPool, key_hash: &[u8]) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    sqlx::query_as("select id, org_id from identity.find_api_key($1)").bind(key_hash).fetch_optional(pool).await
}

/// `(id, revoked_at, active)` of these keys, before the tenant is known (GetSessionStatus).
pub async fn api_key_status(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, Option<DateTime<Utc>>, bool)>> {
    sqlx::query_as("select id, revoked_at, active from identity.api_key_status($1)").bind(ids).fetch_all(pool).await
}

/// Records a use, unless one was recorded in the last minute.
pub async fn touch_api_key(conn: &mut PgConnection, id: Uuid, ip: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.api_keys set last_used_at = now(), last_used_ip = coalesce($2::inet, last_used_ip)
         where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .bind(ip)
    .execute(conn)
    .await?;
    Ok(())
}

/// The plan of the transaction's org.
pub async fn org_plan(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select plan from identity.organizations where id = $1 and deleted_at is null")
        .bind(org_id)
        .fetch_optional(conn)
        .await
}

/// The caller's active role in the transaction's org.
pub async fn member_role(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select role from identity.org_members where org_id = $1 and user_id = $2 and status = 'active'")
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// Which of these resources are registered.
pub async fn registered_scope_resources(pool: &PgPool, resources: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select resource from identity.scope_resources where resource = any($1)")
        .bind(resources)
        .fetch_all(pool)
        .await
}

/// Upserts a module's scope resources; returns how many were new or changed.
pub async fn upsert_scope_resources(pool: &PgPool, module: &str, resources: &[(String, String)]) -> sqlx::Result<i64> {
    let (names, descriptions): (Vec<String>, Vec<String>) = resources.iter().cloned().unzip();
    let done = sqlx::query(
        "insert into identity.scope_resources (resource, module, description)
         select * from unnest($1::text[], array_fill($2::text, array[cardinality($1::text[])]), $3::text[])
         on conflict (resource) do update set module = excluded.module, description = excluded.description,
             registered_at = now()
         where scope_resources.module is distinct from excluded.module
            or scope_resources.description is distinct from excluded.description",
    )
    .bind(&names)
    .bind(module)
    .bind(&descriptions)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() as i64)
}
