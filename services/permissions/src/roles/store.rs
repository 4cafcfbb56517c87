//! The `roles` table (migration `0020_roles.sql`): every query runs in the caller's tenant
//! transaction, so RLS keeps each org to its own roles.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A stored custom role.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RoleRow {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The unique index on live role names (ALREADY_EXISTS ROLE_NAME_TAKEN).
pub const NAME_KEY: &str = "roles_org_name_key";

const COLUMNS: &str = "id, name::text, description::text, permissions, created_by, created_at, updated_at";

/// The org's live roles, by lower-cased name.
pub async fn live_roles(conn: &mut PgConnection, org: Uuid) -> Result<Vec<RoleRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from permissions.roles where org_id = $1 and deleted_at is null order by lower(name), id"
    ))
    .bind(org)
    .fetch_all(conn)
    .await
}

/// One live role.
pub async fn live_role(conn: &mut PgConnection, org: Uuid, id: Uuid) -> Result<Option<RoleRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from permissions.roles where org_id = $1 and id = $2 and deleted_at is null"
    ))
    .bind(org)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// One live role, locked for an update or delete in this transaction.
pub async fn lock_role(conn: &mut PgConnection, org: Uuid, id: Uuid) -> Result<Option<RoleRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from permissions.roles where org_id = $1 and id = $2 and deleted_at is null for update"
    ))
    .bind(org)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// How many live roles the org has (the 100-role limit). Serialized per org by an advisory lock
/// held to the end of the transaction, so two concurrent creations cannot both pass the limit.
pub async fn count_live_locked(conn: &mut PgConnection, org: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('trellis.permissions.roles:' || $1::text))")
        .bind(org)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("select count(*) from permissions.roles where org_id = $1 and deleted_at is null")
        .bind(org)
        .fetch_one(conn)
        .await
}

/// Inserts a role.
pub async fn insert_role(conn: &mut PgConnection, org: Uuid, role: &RoleRow) -> Result<RoleRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "insert into permissions.roles (id, org_id, name, description, permissions, created_by)
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(role.id)
    .bind(org)
    .bind(&role.name)
    .bind(&role.description)
    .bind(&role.permissions)
    .bind(&role.created_by)
    .fetch_one(conn)
    .await
}

/// Stores a role's new name, description and patterns.
pub async fn update_role(conn: &mut PgConnection, org: Uuid, role: &RoleRow) -> Result<RoleRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "update permissions.roles set name = $3, description = $4, permissions = $5, updated_at = now()
          where org_id = $1 and id = $2 and deleted_at is null returning {COLUMNS}"
    ))
    .bind(org)
    .bind(role.id)
    .bind(&role.name)
    .bind(&role.description)
    .bind(&role.permissions)
    .fetch_one(conn)
    .await
}

/// Soft-deletes a role.
pub async fn soft_delete_role(conn: &mut PgConnection, org: Uuid, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update permissions.roles set deleted_at = now(), updated_at = now() where org_id = $1 and id = $2")
        .bind(org)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The orgs that have live roles (every org; a SECURITY DEFINER function returning only ids).
pub async fn orgs_with_roles(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select * from permissions.orgs_with_roles()").fetch_all(conn).await
}

/// Switches the transaction to `org` (RLS scope of the following statements).
pub async fn enter_org(conn: &mut PgConnection, org: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("select set_config('app.org_id', $1, true)").bind(org.to_string()).execute(conn).await?;
    Ok(())
}

/// How many relationships `resource_type:id#relation` has in the org, per id of `ids`.
pub async fn subject_counts(
    conn: &mut PgConnection,
    org: Uuid,
    resource_type: &str,
    ids: &[String],
    relation: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select resource_id::text, count(*) from permissions.relationships
          where org_id = $1 and resource_type = $2 and resource_id = any($3) and relation = $4
          group by resource_id",
    )
    .bind(org)
    .bind(resource_type)
    .bind(ids)
    .bind(relation)
    .fetch_all(conn)
    .await
}
