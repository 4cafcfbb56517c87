//! Queries of the signing-key rotation (`identity.signing_keys`, a global table).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A key as the rotation sees it (no private material).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyStateRow {
    /// Key id.
    pub kid: String,
    /// `next`, `active`, `retiring` or `retired`.
    pub status: String,
    /// When it was generated (and, for a `next` key, first published).
    pub created_at: DateTime<Utc>,
    /// Earliest moment it may become active.
    pub activate_after: DateTime<Utc>,
    /// When it became active.
    pub activated_at: Option<DateTime<Utc>>,
    /// When another key replaced it.
    pub replaced_at: Option<DateTime<Utc>>,
    /// When it left the JWKS.
    pub retired_at: Option<DateTime<Utc>>,
}

/// Serialises rotations across replicas for the rest of the transaction.
pub async fn lock_rotation(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('identity.signing_keys.rotation', 0))")
        .execute(conn)
        .await?;
    Ok(())
}

/// Every key that has not been retired, oldest first.
pub async fn unretired_keys(conn: &mut PgConnection) -> sqlx::Result<Vec<KeyStateRow>> {
    sqlx::query_as(
        "select kid, status, created_at, activate_after, activated_at, replaced_at, retired_at
         from identity.signing_keys where status <> 'retired' order by created_at, kid",
    )
    .fetch_all(conn)
    .await
}

/// Every key, newest first (for operators).
pub async fn all_keys(conn: &mut PgConnection) -> sqlx::Result<Vec<KeyStateRow>> {
    sqlx::query_as(
        "select kid, status, created_at, activate_after, activated_at, replaced_at, retired_at
         from identity.signing_keys order by created_at desc, kid",
    )
    .fetch_all(conn)
    .await
}

/// Inserts a `next` key, published from now on and activated no earlier than `activate_after`.
/// False when another `next` key exists (a concurrent rotation won).
pub async fn insert_next_key(
    conn: &mut PgConnection,
    kid: &str,
    public_key: &[u8],
    private_key_ciphertext: &[u8],
    key_id: &str,
    now: DateTime<Utc>,
    activate_after: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into identity.signing_keys
             (kid, public_key, private_key_ciphertext, key_id, status, created_at, activate_after)
         values ($1, $2, $3, $4, 'next', $5, $6)
         on conflict (status) where status = 'next' do nothing",
    )
    .bind(kid)
    .bind(public_key)
    .bind(private_key_ciphertext)
    .bind(key_id)
    .bind(now)
    .bind(activate_after)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a `next` key's activation earlier (a rotation requested now).
pub async fn expedite_next_key(conn: &mut PgConnection, kid: &str, activate_after: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.signing_keys set activate_after = least(activate_after, $2)
         where kid = $1 and status = 'next'",
    )
    .bind(kid)
    .bind(activate_after)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the active key `replaced` with the next key `next` (in this order, so that exactly
/// one key is active at every statement).
pub async fn promote_next_key(
    conn: &mut PgConnection,
    next: &str,
    replaced: Option<&str>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    if let Some(replaced) = replaced {
        sqlx::query(
            "update identity.signing_keys set status = 'retiring', replaced_at = $2
             where kid = $1 and status = 'active'",
        )
        .bind(replaced)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "update identity.signing_keys set status = 'active', activated_at = $2 where kid = $1 and status = 'next'",
    )
    .bind(next)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Retires a `retiring` key: it leaves the JWKS, and its sealed private key is erased (a retired
/// key never signs again, so there is nothing left to protect or to leak).
pub async fn retire_key(conn: &mut PgConnection, kid: &str, now: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.signing_keys set status = 'retired', retired_at = $2, private_key_ciphertext = ''::bytea
         where kid = $1 and status = 'retiring'",
    )
    .bind(kid)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
