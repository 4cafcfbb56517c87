//! The queries of invitations beyond creating one (listing, resending, revoking), inside the
//! organization's tenant transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::store::Invitation;

const COLUMNS: &str = "id, org_id, email, role, team_ids, message, status, invited_by, expires_at, accepted_at, \
                       accepted_by, revoked_at, send_count, last_sent_at, created_at";

/// The status filter of ListInvitations; `expired` is pending past its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

fn filter_where(b: &mut QueryBuilder<'_, Postgres>, status: StatusFilter, email: Option<&str>) {
    b.push(match status {
        StatusFilter::Pending => " where status = 'pending' and expires_at > now()",
        StatusFilter::Expired => " where status = 'pending' and expires_at <= now()",
        StatusFilter::Accepted => " where status = 'accepted'",
        StatusFilter::Revoked => " where status = 'revoked'",
    });
    if let Some(email) = email {
        b.push(" and email = ").push_bind(email.to_string());
    }
}

/// A page of the org's invitations, newest first, and how many match.
pub async fn invitations_page(
    conn: &mut PgConnection,
    status: StatusFilter,
    email: Option<&str>,
    offset: i64,
    limit: i64,
) -> sqlx::Result<(Vec<Invitation>, i64)> {
    let mut count = QueryBuilder::<Postgres>::new("select count(*) from identity.invitations");
    filter_where(&mut count, status, email);
    let total: i64 = count.build_query_scalar().fetch_one(&mut *conn).await?;
    let mut page = QueryBuilder::<Postgres>::new(format!("select {COLUMNS} from identity.invitations"));
    filter_where(&mut page, status, email);
    page.push(" order by created_at desc, id desc limit ").push_bind(limit).push(" offset ").push_bind(offset);
    Ok((page.build_query_as().fetch_all(&mut *conn).await?, total))
}

/// One invitation of the org, locked for the change.
pub async fn invitation_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Invitation>> {
    sqlx::query_as(&format!("select {COLUMNS} from identity.invitations where id = $1 for update"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Replaces the token of a pending invitation (the old one stops working), with a new expiry.
pub async fn replace_token(
    conn: &mut PgConnection,
    id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> sqlx::Result<Invitation> {
    sqlx::query_as(&format!(
        "update identity.invitations
            set token_hash = $2, expires_at = $3, send_count = send_count + 1, last_sent_at = now()
          where id = $1
         returning {COLUMNS}"
    ))
    .bind(id)
    .bind(token_hash)
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

/// Revokes an invitation.
pub async fn revoke(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("update identity.invitations set status = 'revoked', revoked_at = now() where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks an invitation accepted by a user (also from a state where it was already a member).
pub async fn mark_accepted(conn: &mut PgConnection, id: Uuid, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.invitations set status = 'accepted', accepted_at = now(), accepted_by = $2 where id = $1",
    )
    .bind(id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Verifies a user's email if it is not yet (accepting an invitation sent to it proves it).
pub async fn verify_email(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.users set email_verified_at = now(), updated_at = now()
          where id = $1 and email_verified_at is null",
    )
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether an account has this (normalised) email.
pub async fn account_exists(conn: &mut PgConnection, email: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists(select 1 from identity.users where email = $1)").bind(email).fetch_one(conn).await
}

/// The names of the live teams among `ids`, in the order given.
pub async fn team_names(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, String)>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select id, name from identity.teams where id = any($1) and deleted_at is null")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(ids.iter().filter_map(|id| rows.iter().find(|(t, _)| t == id).cloned()).collect())
}
