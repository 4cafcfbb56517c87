//! Queries of ExportMyData: everything identity holds about one user. The account and its
//! sessions are global rows; the rest is read one organization at a time under that
//! organization's tenant policy (see [`super::users::scope_to_org`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The account row, without its credentials.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub first_name: String,
    pub last_name: String,
    pub timezone: String,
    pub locale: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub login_count: i32,
    pub has_password: bool,
    pub password_changed_at: Option<DateTime<Utc>>,
    pub has_avatar: bool,
    pub deactivated_at: Option<DateTime<Utc>>,
    pub erase_after: Option<DateTime<Utc>>,
    pub mfa_enabled: bool,
    pub mfa_confirmed_at: Option<DateTime<Utc>>,
    pub backup_codes_remaining: i64,
}

/// The account with its MFA status; `None` for an unknown id.
pub async fn account(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<Account>> {
    sqlx::query_as(
        "select u.id, u.email, u.email_verified_at, u.first_name, u.last_name, u.timezone, u.locale, u.status,
                u.created_at, u.last_login_at, u.login_count, u.password_hash is not null as has_password,
                u.password_changed_at, u.avatar_key is not null as has_avatar, u.deactivated_at, u.erase_after,
                u.mfa_enabled, t.confirmed_at as mfa_confirmed_at,
                (select count(*) from identity.mfa_backup_codes b where b.user_id = u.id and b.used_at is null)
                    as backup_codes_remaining
           from identity.users u left join identity.mfa_totp t on t.user_id = u.id
          where u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// A session with its revocation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    #[sqlx(flatten)]
    pub session: super::SessionRow,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
}

/// Every session the user still has, live or not, newest first.
pub async fn sessions(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<SessionRecord>> {
    sqlx::query_as(
        "select id, created_at, last_seen_at, host(ip) as ip, user_agent, amr, active_org_id,
                expires_at, revoked_at, revoke_reason
           from identity.sessions where user_id = $1 order by created_at desc, id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// A membership of any status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRecord {
    pub org_id: Uuid,
    pub role: String,
    pub status: String,
    pub joined_at: DateTime<Utc>,
}

/// Every membership of the user, oldest first. Needs `app.user_id` = `user_id`.
pub async fn memberships(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<MembershipRecord>> {
    sqlx::query_as(
        "select org_id, role, status, joined_at from identity.org_members where user_id = $1
          order by joined_at, org_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The organization of a membership, as the export names it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgRecord {
    pub name: String,
    pub slug: String,
    pub personal: bool,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The organization scoped by the transaction, with whether it is `user_id`'s personal one.
pub async fn organization(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<Option<OrgRecord>> {
    sqlx::query_as(
        "select name, slug, (personal and created_by = $2) as personal, deleted_at
           from identity.organizations where id = $1",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// A team membership.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamRecord {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub added_at: DateTime<Utc>,
}

/// The user's teams in the scoped organization (live teams), by name.
pub async fn teams(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<TeamRecord>> {
    sqlx::query_as(
        "select t.id, t.name, m.role, m.added_at
           from identity.team_members m join identity.teams t on t.id = m.team_id
          where m.user_id = $1 and t.deleted_at is null order by t.name, t.id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// A stored user-scope setting.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettingRecord {
    pub namespace: String,
    pub key: String,
    pub value: Value,
    pub updated_at: DateTime<Utc>,
}

/// The user's stored user-scope settings in the scoped organization.
pub async fn settings(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<SettingRecord>> {
    sqlx::query_as(
        "select namespace, key, value, updated_at from identity.settings
          where scope = 'user' and scope_id = $1 order by namespace, key",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// A completed onboarding step.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRecord {
    pub module: String,
    pub step: String,
    pub completed_at: DateTime<Utc>,
}

/// The onboarding steps the user completed in the scoped organization, and when the user
/// dismissed the checklist there.
pub async fn onboarding(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<(Vec<StepRecord>, Option<DateTime<Utc>>)> {
    let steps = sqlx::query_as(
        "select module, step, completed_at from identity.onboarding_progress
          where subject_id = $1 order by completed_at, module, step",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let dismissed = sqlx::query_scalar("select dismissed_at from identity.onboarding_dismissals where user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok((steps, dismissed))
}

/// An invitation the user sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRecord {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The invitations the user sent in the scoped organization, newest first; `expired` is
/// computed as everywhere else.
pub async fn invitations_sent(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<InvitationRecord>> {
    sqlx::query_as(
        "select id, email, role,
                case when status = 'pending' and expires_at < now() then 'expired' else status end as status,
                created_at, expires_at
           from identity.invitations where invited_by = $1 order by created_at desc, id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// An API key's metadata.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The API keys the user created in the scoped organization, newest first.
pub async fn api_keys_created(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<ApiKeyRecord>> {
    sqlx::query_as(
        "select id, name, scopes, role, created_at, expires_at, last_used_at, revoked_at
           from identity.api_keys where created_by = $1 order by created_at desc, id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}
