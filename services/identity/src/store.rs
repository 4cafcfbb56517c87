//! Every query identity runs. Functions are named for what they return or change, and take the
//! transaction they run in: tenant tables (organizations, org_members, invitations) only inside a
//! tenant transaction (`Db::tenant_tx*`, or [`scope_to_user`] for a user's own memberships), the
//! global tables (users, sessions, refresh tokens, signing keys) in any.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A user row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Object-store key of the avatar.
    pub avatar_key: Option<String>,
    /// IANA zone.
    pub timezone: String,
    /// BCP 47 tag.
    pub locale: String,
    /// active | deactivated | erased.
    pub status: String,
    /// When the email was verified.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// Whether MFA is on.
    pub mfa_enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = "id, email, first_name, last_name, avatar_key, timezone, locale, status, email_verified_at, mfa_enabled, created_at";

/// What a new user is created with.
#[derive(Debug)]
pub struct NewUser<'a> {
    /// Id.
    pub id: Uuid,
    /// Normalised email.
    pub email: &'a str,
    /// Given name.
    pub first_name: &'a str,
    /// Family name.
    pub last_name: &'a str,
    /// PHC string.
    pub password_hash: &'a str,
    /// Verified at creation (registration through an invitation to this address).
    pub email_verified: bool,
}

/// Inserts a user. Fails on `users_email_key` when the email is taken.
pub async fn insert_user(conn: &mut PgConnection, user: &NewUser<'_>) -> sqlx::Result<User> {
    sqlx::query_as(&format!(
        "insert into identity.users (id, email, first_name, last_name, password_hash, password_changed_at,
                                     email_verified_at)
         values ($1, $2, $3, $4, $5, now(), case when $6 then now() end)
         returning {USER_COLUMNS}"
    ))
    .bind(user.id)
    .bind(user.email)
    .bind(user.first_name)
    .bind(user.last_name)
    .bind(user.password_hash)
    .bind(user.email_verified)
    .fetch_one(conn)
    .await
}

/// A user by id.
pub async fn user_by_id(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<User>> {
    sqlx::query_as(&format!("select {USER_COLUMNS} from identity.users where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// What sign-in needs to know about an account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    /// The user.
    #[sqlx(flatten)]
    pub user: User,
    /// PHC string; `None` for OIDC-only accounts.
    pub password_hash: Option<String>,
    /// Locked until (lockout).
    pub locked_until: Option<DateTime<Utc>>,
}

/// The credentials of the account with this (normalised) email.
pub async fn credentials_by_email(pool: &PgPool, email: &str) -> sqlx::Result<Option<Credentials>> {
    sqlx::query_as(&format!("select {USER_COLUMNS}, password_hash, locked_until from identity.users where email = $1"))
        .bind(email)
        .fetch_optional(pool)
        .await
}

/// Replaces a password hash that used outdated parameters (same password).
pub async fn update_password_hash(pool: &PgPool, user_id: Uuid, old: &str, new: &str) -> sqlx::Result<()> {
    // Only if it is still the hash that was verified: a concurrent password change wins.
    sqlx::query(
        "update identity.users set password_hash = $3, updated_at = now() where id = $1 and password_hash = $2",
    )
    .bind(user_id)
    .bind(old)
    .bind(new)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a successful sign-in.
pub async fn record_login(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.users
         set last_login_at = now(), login_count = login_count + 1, failed_login_count = 0, locked_until = null
         where id = $1",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes the user's own memberships (and their organizations) visible in a transaction that has
/// no tenant yet: RLS lets `app.user_id` see its own rows.
pub async fn scope_to_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("select set_config('app.user_id', $1, true)").bind(user_id.to_string()).execute(conn).await?;
    Ok(())
}

/// An organization row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Organization {
    /// Id (the org_id).
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Slug.
    pub slug: String,
    /// free | pro | enterprise.
    pub plan: String,
    /// Personal organization.
    pub personal: bool,
    /// Member limit.
    pub member_limit: Option<i32>,
}

/// Inserts an organization unless its slug is taken; `None` when it is (try another slug).
/// Runs in the new organization's tenant transaction.
pub async fn insert_organization_unless_slug_taken(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    slug: &str,
    personal: bool,
    created_by: Uuid,
) -> sqlx::Result<Option<Organization>> {
    sqlx::query_as(
        "insert into identity.organizations (id, name, slug, personal, created_by)
         values ($1, $2, $3, $4, $5)
         on conflict (slug) do nothing
         returning id, name, slug, plan, personal, member_limit",
    )
    .bind(id)
    .bind(name)
    .bind(slug)
    .bind(personal)
    .bind(created_by)
    .fetch_optional(conn)
    .await
}

/// An organization visible in the transaction.
pub async fn organization(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Organization>> {
    sqlx::query_as(
        "select id, name, slug, plan, personal, member_limit from identity.organizations
         where id = $1 and deleted_at is null",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Inserts a membership at version 1 and returns that version.
pub async fn insert_member(
    conn: &mut PgConnection,
    org_id: Uuid,
    user_id: Uuid,
    role: &str,
    invited_by: Option<Uuid>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into identity.org_members (org_id, user_id, role, invited_by) values ($1, $2, $3, $4) returning version",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role)
    .bind(invited_by)
    .fetch_one(conn)
    .await
}

/// One of a user's active memberships, with what a token needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Membership {
    /// The organization.
    pub org_id: Uuid,
    /// owner | admin | member | viewer.
    pub role: String,
    /// The organization's plan.
    pub plan: String,
    /// Whether it is the user's personal organization.
    pub personal: bool,
    /// When the user joined.
    pub joined_at: DateTime<Utc>,
    /// When a session of the user last acted in it.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The user's active memberships in live organizations. Needs [`scope_to_user`] (or a tenant
/// transaction naming the user).
pub async fn memberships_of_user(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<Membership>> {
    sqlx::query_as(
        "select m.org_id, m.role, o.plan, (o.personal and o.created_by = m.user_id) as personal, m.joined_at,
                (select max(s.last_seen_at) from identity.sessions s
                 where s.user_id = m.user_id and s.active_org_id = m.org_id) as last_used_at
         from identity.org_members m
         join identity.organizations o on o.id = m.org_id
         where m.user_id = $1 and m.status = 'active' and o.deleted_at is null
         order by m.joined_at, m.org_id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Whether an active member of the organization has this email.
pub async fn is_member_email(conn: &mut PgConnection, org_id: Uuid, email: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists(select 1 from identity.org_members m join identity.users u on u.id = m.user_id
                       where m.org_id = $1 and u.email = $2 and m.status = 'active')",
    )
    .bind(org_id)
    .bind(email)
    .fetch_one(conn)
    .await
}

/// Active members plus pending, unexpired invitations: what counts against `member_limit`.
pub async fn seats_taken(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select (select count(*) from identity.org_members where org_id = $1 and status = 'active')
              + (select count(*) from identity.invitations
                 where org_id = $1 and status = 'pending' and expires_at > now())",
    )
    .bind(org_id)
    .fetch_one(conn)
    .await
}

/// What a new session starts with.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// Id (the `sid` claim).
    pub id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// The organization its tokens name.
    pub active_org_id: Option<Uuid>,
    /// Authentication methods (`pwd`, `otp`, `oidc`).
    pub amr: &'a [&'a str],
    /// Client IP, when known.
    pub ip: Option<String>,
    /// Client user agent, at most 512 characters.
    pub user_agent: Option<&'a str>,
    /// Absolute expiry.
    pub expires_at: DateTime<Utc>,
}

/// Starts a session.
pub async fn insert_session(conn: &mut PgConnection, session: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "insert into identity.sessions (id, user_id, active_org_id, amr, ip, user_agent, expires_at)
         values ($1, $2, $3, $4, $5::inet, $6, $7)",
    )
    .bind(session.id)
    .bind(session.user_id)
    .bind(session.active_org_id)
    .bind(session.amr)
    .bind(session.ip.as_deref())
    .bind(session.user_agent)
    .bind(session.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a refresh token's hash.
pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    id: Uuid,
    session_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("insert into identity.refresh_tokens (id, session_id, token_hash, expires_at) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(session_id)
        .bind(token_hash)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// A presented refresh token with its session and user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PresentedRefreshToken {
    /// The token row.
    pub id: Uuid,
    /// Its session.
    pub session_id: Uuid,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
    /// When it was exchanged, if it was.
    pub rotated_at: Option<DateTime<Utc>>,
    /// The session's user.
    pub user_id: Uuid,
    /// The user's status.
    pub user_status: String,
    /// The session's organization.
    pub active_org_id: Option<Uuid>,
    /// When the session was revoked.
    pub session_revoked_at: Option<DateTime<Utc>>,
    /// The session's absolute expiry.
    pub session_expires_at: DateTime<Utc>,
    /// The session's authentication methods.
    pub session_amr: Vec<String>,
}

/// The refresh token with this hash, locking it and its session: concurrent refreshes of one
/// token are serialised, so exactly one rotates it and the other sees a reuse. The same statement
/// scopes the rest of the transaction to the session's user (as [`scope_to_user`] does), so the
/// user's memberships can be read next without another round trip.
pub async fn refresh_token_for_update(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> sqlx::Result<Option<PresentedRefreshToken>> {
    sqlx::query_as(
        "select t.id, t.session_id, t.expires_at, t.rotated_at, s.user_id, u.status as user_status, s.active_org_id,
                s.revoked_at as session_revoked_at, s.expires_at as session_expires_at, s.amr as session_amr,
                set_config('app.user_id', s.user_id::text, true) as scoped_to
         from identity.refresh_tokens t
         join identity.sessions s on s.id = t.session_id
         join identity.users u on u.id = s.user_id
         where t.token_hash = $1
         for update of t, s",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

/// The successor of a rotated refresh token.
#[derive(Debug)]
pub struct Rotation<'a> {
    /// The token presented, now exchanged.
    pub presented_id: Uuid,
    /// The successor's id.
    pub next_id: Uuid,
    /// The successor's hash.
    pub next_hash: &'a [u8],
    /// The successor's expiry.
    pub next_expires_at: DateTime<Utc>,
    /// The session of both.
    pub session_id: Uuid,
    /// The organization the session now acts in.
    pub active_org_id: Option<Uuid>,
}

/// Rotates a refresh token in one statement: stores the successor's hash, marks the presented
/// token exchanged for it, and records the session's activity and organization.
pub async fn rotate_refresh_token(conn: &mut PgConnection, r: &Rotation<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "with next as (
             insert into identity.refresh_tokens (id, session_id, token_hash, expires_at) values ($1, $2, $3, $4)
         ), rotated as (
             update identity.refresh_tokens set rotated_at = now(), replaced_by = $1 where id = $5
         )
         update identity.sessions set last_seen_at = now(), active_org_id = $6 where id = $2",
    )
    .bind(r.next_id)
    .bind(r.session_id)
    .bind(r.next_hash)
    .bind(r.next_expires_at)
    .bind(r.presented_id)
    .bind(r.active_org_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes a session (every refresh token of it stops working). False when it already was.
pub async fn revoke_session(conn: &mut PgConnection, id: Uuid, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update identity.sessions set revoked_at = now(), revoke_reason = $2 where id = $1 and revoked_at is null",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An invitation row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invitation {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub org_id: Uuid,
    /// Invitee.
    pub email: String,
    /// admin | member | viewer.
    pub role: String,
    /// Teams to join.
    pub team_ids: Vec<Uuid>,
    /// Note.
    pub message: Option<String>,
    /// pending | accepted | revoked.
    pub status: String,
    /// Inviter.
    pub invited_by: Uuid,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Accepted at.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Accepted by.
    pub accepted_by: Option<Uuid>,
    /// Revoked at.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Sends.
    pub send_count: i32,
    /// Last send.
    pub last_sent_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

const INVITATION_COLUMNS: &str = "id, org_id, email, role, team_ids, message, status, invited_by, expires_at, \
                                  accepted_at, accepted_by, revoked_at, send_count, last_sent_at, created_at";

/// What a new invitation is created with.
#[derive(Debug)]
pub struct NewInvitation<'a> {
    /// Id.
    pub id: Uuid,
    /// Organization.
    pub org_id: Uuid,
    /// Invitee.
    pub email: &'a str,
    /// Role.
    pub role: &'a str,
    /// Teams.
    pub team_ids: &'a [Uuid],
    /// Note.
    pub message: Option<&'a str>,
    /// Token hash.
    pub token_hash: &'a [u8],
    /// Inviter.
    pub invited_by: Uuid,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// Inserts an invitation. Fails on `invitations_pending_email` when one is pending for the email.
pub async fn insert_invitation(conn: &mut PgConnection, inv: &NewInvitation<'_>) -> sqlx::Result<Invitation> {
    sqlx::query_as(&format!(
        "insert into identity.invitations (id, org_id, email, role, team_ids, message, token_hash, invited_by, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning {INVITATION_COLUMNS}"
    ))
    .bind(inv.id)
    .bind(inv.org_id)
    .bind(inv.email)
    .bind(inv.role)
    .bind(inv.team_ids)
    .bind(inv.message)
    .bind(inv.token_hash)
    .bind(inv.invited_by)
    .bind(inv.expires_at)
    .fetch_one(conn)
    .await
}

/// The (id, org) of the invitation with this token hash, before the tenant is known: through the
/// `SECURITY DEFINER` function, which returns nothing else.
pub async fn find_invitation(pool: &PgPool, token_hash: &[u8]) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    sqlx::query_as("select id, org_id from identity.find_invitation($1)").bind(token_hash).fetch_optional(pool).await
}

/// An invitation of the transaction's tenant, locked for acceptance.
pub async fn invitation_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Invitation>> {
    sqlx::query_as(&format!("select {INVITATION_COLUMNS} from identity.invitations where id = $1 for update"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Marks an invitation accepted by a user.
pub async fn mark_invitation_accepted(conn: &mut PgConnection, id: Uuid, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.invitations set status = 'accepted', accepted_at = now(), accepted_by = $2
         where id = $1 and status = 'pending'",
    )
    .bind(id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub mod api_keys;
pub mod directory;
pub mod export;
pub mod mfa;
pub mod signing_keys;
pub mod users;

/// A signing key row with its sealed private key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    /// Key id.
    pub kid: String,
    /// Raw Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Sealed private key.
    pub private_key_ciphertext: Vec<u8>,
    /// Encryption key that sealed it.
    pub key_id: String,
}

/// A published public key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PublicKeyRow {
    /// Key id.
    pub kid: String,
    /// Raw Ed25519 public key.
    pub public_key: Vec<u8>,
}

/// Inserts an active signing key unless one is active already; true when this one was inserted.
pub async fn insert_active_signing_key_if_none(
    pool: &PgPool,
    kid: &str,
    public_key: &[u8],
    private_key_ciphertext: &[u8],
    key_id: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into identity.signing_keys (kid, public_key, private_key_ciphertext, key_id, status, activated_at)
         values ($1, $2, $3, $4, 'active', now())
         on conflict (status) where status = 'active' do nothing",
    )
    .bind(kid)
    .bind(public_key)
    .bind(private_key_ciphertext)
    .bind(key_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The active signing key.
pub async fn active_signing_key(pool: &PgPool) -> sqlx::Result<Option<SigningKeyRow>> {
    sqlx::query_as(
        "select kid, public_key, private_key_ciphertext, key_id from identity.signing_keys where status = 'active'",
    )
    .fetch_optional(pool)
    .await
}

/// The keys verifiers must know: next, active and retiring, newest first.
pub async fn published_signing_keys(pool: &PgPool) -> sqlx::Result<Vec<PublicKeyRow>> {
    sqlx::query_as(
        "select kid, public_key from identity.signing_keys
         where status in ('next', 'active', 'retiring') order by created_at desc",
    )
    .fetch_all(pool)
    .await
}

/// A session as its user sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    /// Id (the `sid` claim).
    pub id: Uuid,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it was last refreshed.
    pub last_seen_at: DateTime<Utc>,
    /// Client IP at sign-in.
    pub ip: Option<String>,
    /// Client user agent at sign-in.
    pub user_agent: Option<String>,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// The organization its tokens name.
    pub active_org_id: Option<Uuid>,
}

/// The user's live sessions (unrevoked, unexpired), most recently seen first.
pub async fn live_sessions(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<SessionRow>> {
    sqlx::query_as(
        "select id, created_at, last_seen_at, host(ip) as ip, user_agent, amr, active_org_id
         from identity.sessions
         where user_id = $1 and revoked_at is null and expires_at > now()
         order by last_seen_at desc, id desc",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Revokes every live session of a user except `keep`; returns the revoked ids.
pub async fn revoke_user_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    reason: &str,
    keep: Option<Uuid>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "update identity.sessions set revoked_at = now(), revoke_reason = $2
         where user_id = $1 and revoked_at is null and ($3::uuid is null or id <> $3)
         returning id",
    )
    .bind(user_id)
    .bind(reason)
    .bind(keep)
    .fetch_all(conn)
    .await
}

/// The owner of a session, if it exists.
pub async fn session_owner(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("select user_id from identity.sessions where id = $1").bind(id).fetch_optional(conn).await
}

/// Whether each session is live (unrevoked and unexpired); unknown ids are absent.
pub async fn live_session_ids(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, Option<DateTime<Utc>>, bool)>> {
    sqlx::query_as(
        "select id, revoked_at, (revoked_at is null and expires_at > now()) as live
         from identity.sessions where id = any($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Makes `org_id` the organization a live session of `user_id` acts in; returns the session's
/// authentication methods. `None` when the session is not the user's or has ended.
pub async fn switch_session_org(
    conn: &mut PgConnection,
    session_id: Uuid,
    user_id: Uuid,
    org_id: Uuid,
) -> sqlx::Result<Option<Vec<String>>> {
    sqlx::query_scalar(
        "update identity.sessions set active_org_id = $3, last_seen_at = now()
         where id = $1 and user_id = $2 and revoked_at is null and expires_at > now()
         returning amr",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(org_id)
    .fetch_optional(conn)
    .await
}

/// Counts one more consecutive failed sign-in of an unlocked account. At `threshold` the account
/// is locked until `lock_until` and the counter starts again; returns the count that locked it.
pub async fn count_failed_login(
    conn: &mut PgConnection,
    user_id: Uuid,
    threshold: i32,
    lock_until: DateTime<Utc>,
) -> sqlx::Result<Option<i32>> {
    let count: Option<i32> = sqlx::query_scalar(
        "update identity.users set failed_login_count = failed_login_count + 1, updated_at = now()
         where id = $1 and (locked_until is null or locked_until <= now())
         returning failed_login_count",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    match count {
        Some(n) if n >= threshold => {
            sqlx::query("update identity.users set failed_login_count = 0, locked_until = $2 where id = $1")
                .bind(user_id)
                .bind(lock_until)
                .execute(conn)
                .await?;
            Ok(Some(n))
        }
        _ => Ok(None),
    }
}

/// Issues an email token, spending any live token of the same (user, purpose) first.
pub async fn replace_email_token(
    conn: &mut PgConnection,
    user_id: Uuid,
    purpose: &str,
    token_hash: &[u8],
    new_email: Option<&str>,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.email_tokens set used_at = now() where user_id = $1 and purpose = $2 and used_at is null",
    )
    .bind(user_id)
    .bind(purpose)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into identity.email_tokens (id, user_id, purpose, token_hash, new_email, expires_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(purpose)
    .bind(token_hash)
    .bind(new_email)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A live (unused, unexpired) email token of one of `purposes`, locked; `None` otherwise.
pub async fn live_email_token_for_update(
    conn: &mut PgConnection,
    token_hash: &[u8],
    purposes: &[&str],
) -> sqlx::Result<Option<(Uuid, Uuid, String, Option<String>)>> {
    sqlx::query_as(
        "select id, user_id, purpose, new_email from identity.email_tokens
         where token_hash = $1 and purpose = any($2) and used_at is null and expires_at > now()
         for update",
    )
    .bind(token_hash)
    .bind(purposes)
    .fetch_optional(conn)
    .await
}

/// Spends an email token.
pub async fn spend_email_token(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("update identity.email_tokens set used_at = now() where id = $1").bind(id).execute(conn).await?;
    Ok(())
}

/// Replaces a user's address with a verified one; returns the previous address. A taken address
/// violates `users_email_key`.
pub async fn change_email(conn: &mut PgConnection, user_id: Uuid, email: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "update identity.users u set email = $2, email_verified_at = now(), updated_at = now()
         from (select id, email from identity.users where id = $1 for update) previous
         where u.id = previous.id returning previous.email",
    )
    .bind(user_id)
    .bind(email)
    .fetch_optional(conn)
    .await
}

/// Sets a new password hash, clears the lockout.
pub async fn set_password(conn: &mut PgConnection, user_id: Uuid, hash: &str) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.users set password_hash = $2, password_changed_at = now(), failed_login_count = 0,
                locked_until = null, updated_at = now()
         where id = $1",
    )
    .bind(user_id)
    .bind(hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the email verified (keeps the first time).
pub async fn mark_email_verified(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "update identity.users set email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
         where id = $1 returning email",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await
}
