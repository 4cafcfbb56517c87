//! Queries of the current user's profile and of other users' public profiles.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::User;

/// A user, locked for an update of their profile.
pub async fn user_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<User>> {
    sqlx::query_as(
        "select id, email, first_name, last_name, avatar_key, timezone, locale, status, email_verified_at, mfa_enabled,
                created_at
         from identity.users where id = $1 for update",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Writes a user's profile fields.
pub async fn update_profile(
    conn: &mut PgConnection,
    id: Uuid,
    first_name: &str,
    last_name: &str,
    timezone: &str,
    locale: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.users set first_name = $2, last_name = $3, timezone = $4, locale = $5, updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(first_name)
    .bind(last_name)
    .bind(timezone)
    .bind(locale)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether Postgres knows `name` as an IANA time zone.
pub async fn timezone_exists(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from pg_catalog.pg_timezone_names where name = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
}

/// A user who is an active member of the transaction's organization (tenant transaction), and
/// not erased.
pub async fn active_member(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<Option<User>> {
    sqlx::query_as(
        "select u.id, u.email, u.first_name, u.last_name, u.avatar_key, u.timezone, u.locale, u.status,
                u.email_verified_at, u.mfa_enabled, u.created_at
         from identity.org_members m join identity.users u on u.id = m.user_id
         where m.org_id = $1 and m.user_id = $2 and m.status = 'active' and u.status <> 'erased'",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Makes `org_id` the tenant of the rest of the transaction (the user's own memberships of other
/// organizations are reached one organization at a time, under its RLS policy).
pub async fn scope_to_org(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("select set_config('app.org_id', $1, true)").bind(org_id.to_string()).execute(conn).await?;
    Ok(())
}

/// How many active members other than `user_id` the organization has (tenant scope).
pub async fn other_active_members(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from identity.org_members where org_id = $1 and user_id <> $2 and status = 'active'",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_one(conn)
    .await
}

/// Suspends the user's active membership of the organization (tenant scope); the role is kept.
pub async fn suspend_membership(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update identity.org_members
            set status = 'suspended', version = nextval('identity.relationship_versions'), updated_at = now()
          where org_id = $1 and user_id = $2 and status = 'active'",
    )
    .bind(org_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The unrevoked API keys the user created in the organization (tenant scope).
pub async fn live_api_keys_created_by(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("select id from identity.api_keys where created_by = $1 and revoked_at is null")
        .bind(user_id)
        .fetch_all(conn)
        .await
}

/// Marks an active user deactivated until `erase_after`; false when they were not active.
pub async fn deactivate_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    erase_after: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update identity.users
            set status = 'deactivated', deactivated_at = now(), erase_after = $2, updated_at = now()
          where id = $1 and status = 'active'",
    )
    .bind(user_id)
    .bind(erase_after)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// When a deactivated account is erased; `None` unless the user is deactivated.
pub async fn erase_after(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let found: Option<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("select erase_after from identity.users where id = $1 and status = 'deactivated'")
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    Ok(found.flatten())
}

/// Makes a deactivated user active again if `erase_after` has not passed; false otherwise.
pub async fn reactivate_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update identity.users
            set status = 'active', deactivated_at = null, erase_after = null, failed_login_count = 0,
                locked_until = null, updated_at = now()
          where id = $1 and status = 'deactivated' and erase_after > now()",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The organizations where the user's membership is suspended (needs `app.user_id`).
pub async fn suspended_memberships(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("select org_id from identity.org_members where user_id = $1 and status = 'suspended'")
        .bind(user_id)
        .fetch_all(conn)
        .await
}

/// Restores a suspended membership (tenant scope).
pub async fn restore_membership(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update identity.org_members
            set status = 'active', version = nextval('identity.relationship_versions'), updated_at = now()
          where org_id = $1 and user_id = $2 and status = 'suspended'",
    )
    .bind(org_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Restores the personal organization that was trashed with the account (its `purge_after` is
/// the account's `erase_after`); returns (name, slug) when it did.
pub async fn restore_personal_org(
    conn: &mut PgConnection,
    org_id: Uuid,
    erase_after: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as(
        "update identity.organizations set deleted_at = null, purge_after = null, updated_at = now()
          where id = $1 and personal and deleted_at is not null and purge_after = $2
         returning name, slug",
    )
    .bind(org_id)
    .bind(erase_after)
    .fetch_optional(conn)
    .await
}
