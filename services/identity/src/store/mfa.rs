//! Queries of MFA: TOTP secrets, backup codes and sign-in challenges (global tables).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A user's TOTP secret, sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpRow {
    /// AES-256-GCM ciphertext of the 20 secret bytes.
    pub secret_ciphertext: Vec<u8>,
    /// The key that sealed it.
    pub key_id: String,
    /// When Verify confirmed it; `None` while enrolment is pending.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The step of the last accepted code.
    pub last_used_step: Option<i64>,
}

/// Creates, or replaces, the user's secret as a pending enrolment.
pub async fn upsert_pending_totp(
    conn: &mut PgConnection,
    user_id: Uuid,
    ciphertext: &[u8],
    key_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into identity.mfa_totp (user_id, secret_ciphertext, key_id) values ($1, $2, $3)
         on conflict (user_id) do update
         set secret_ciphertext = excluded.secret_ciphertext, key_id = excluded.key_id, confirmed_at = null,
             last_used_step = null, created_at = now()",
    )
    .bind(user_id)
    .bind(ciphertext)
    .bind(key_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The user's secret, locked for the rest of the transaction (codes of one user are judged one
/// at a time, so a code cannot be accepted twice by racing requests).
pub async fn totp_for_update(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<TotpRow>> {
    sqlx::query_as(
        "select secret_ciphertext, key_id, confirmed_at, last_used_step from identity.mfa_totp
         where user_id = $1 for update",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Records the step of an accepted code, unless that step (or a later one) was used already.
/// False means a replay.
pub async fn use_step(conn: &mut PgConnection, user_id: Uuid, step: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update identity.mfa_totp set last_used_step = $2
         where user_id = $1 and (last_used_step is null or last_used_step < $2)",
    )
    .bind(user_id)
    .bind(step)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Confirms the pending secret and turns MFA on.
pub async fn confirm_totp(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("update identity.mfa_totp set confirmed_at = now() where user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update identity.users set mfa_enabled = true, updated_at = now() where id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces the user's backup codes with a new generation (Argon2id PHC strings).
pub async fn replace_backup_codes(conn: &mut PgConnection, user_id: Uuid, hashes: &[String]) -> sqlx::Result<()> {
    sqlx::query("delete from identity.mfa_backup_codes where user_id = $1").bind(user_id).execute(&mut *conn).await?;
    let ids: Vec<Uuid> = hashes.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "insert into identity.mfa_backup_codes (id, user_id, code_hash)
         select id, $1, code_hash from unnest($2::uuid[], $3::text[]) as c(id, code_hash)",
    )
    .bind(user_id)
    .bind(&ids)
    .bind(hashes)
    .execute(conn)
    .await?;
    Ok(())
}

/// The user's unused backup codes: (id, hash).
pub async fn unused_backup_codes(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as("select id, code_hash from identity.mfa_backup_codes where user_id = $1 and used_at is null")
        .bind(user_id)
        .fetch_all(conn)
        .await
}

/// Spends a backup code; false when it was spent meanwhile.
pub async fn spend_backup_code(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("update identity.mfa_backup_codes set used_at = now() where id = $1 and used_at is null")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// How many unused backup codes the user has.
pub async fn count_unused_backup_codes(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar("select count(*) from identity.mfa_backup_codes where user_id = $1 and used_at is null")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// Deletes the secret and the backup codes and turns MFA off; true when MFA was on.
pub async fn delete_mfa(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query("delete from identity.mfa_totp where user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("delete from identity.mfa_backup_codes where user_id = $1").bind(user_id).execute(&mut *conn).await?;
    sqlx::query("delete from identity.login_challenges where user_id = $1 and kind = 'mfa'")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let done =
        sqlx::query("update identity.users set mfa_enabled = false, updated_at = now() where id = $1 and mfa_enabled")
            .bind(user_id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores a new MFA challenge (the token's hash) and drops the user's expired ones.
pub async fn insert_mfa_challenge(
    pool: &PgPool,
    user_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
    session_hint: serde_json::Value,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("delete from identity.login_challenges where user_id = $1 and expires_at < now()")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into identity.login_challenges (id, user_id, token_hash, kind, expires_at, session_hint)
         values ($1, $2, $3, 'mfa', $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(token_hash)
    .bind(expires_at)
    .bind(session_hint)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A live MFA challenge, with one attempt counted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChallengeAttempt {
    /// Its id.
    pub id: Uuid,
    /// The user signing in.
    pub user_id: Uuid,
    /// ip, user_agent of the sign-in.
    pub session_hint: serde_json::Value,
}

/// Counts one attempt on a live MFA challenge (unused, unexpired, fewer than `max_attempts`
/// so far) and returns it; `None` when the token is unknown or no longer usable. The count is
/// committed on its own, so a wrong code still uses up an attempt.
pub async fn attempt_mfa_challenge(
    pool: &PgPool,
    token_hash: &[u8],
    max_attempts: i32,
) -> sqlx::Result<Option<ChallengeAttempt>> {
    sqlx::query_as(
        "update identity.login_challenges set attempts = attempts + 1
         where token_hash = $1 and kind = 'mfa' and used_at is null and expires_at > now() and attempts < $2
         returning id, user_id, session_hint",
    )
    .bind(token_hash)
    .bind(max_attempts)
    .fetch_optional(pool)
    .await
}

/// Marks a challenge used; false when it was used meanwhile.
pub async fn spend_challenge(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("update identity.login_challenges set used_at = now() where id = $1 and used_at is null")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The password hash and lock of a user, by id.
pub async fn password_and_lock(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<(Option<String>, Option<DateTime<Utc>>)>> {
    sqlx::query_as("select password_hash, locked_until from identity.users where id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await
}
