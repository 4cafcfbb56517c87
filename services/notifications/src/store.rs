//! Every query of the notifications service, each inside a tenant transaction (Row-Level
//! Security scopes it to one organization even where a query names no `org_id`).

use chrono::{DateTime, Utc};
use trellis_kit::Result;
use trellis_kit::db::Tx;
use uuid::Uuid;

/// A notification as the inbox returns it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    /// Id.
    pub id: Uuid,
    /// Event type.
    pub r#type: String,
    /// Reason.
    pub reason: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Link.
    pub url: String,
    /// Entity type.
    pub entity_type: Option<String>,
    /// Entity id.
    pub entity_id: Option<Uuid>,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: String,
    /// First seen.
    pub seen_at: Option<DateTime<Utc>>,
    /// Read.
    pub read_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// What storing a notification needs.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    /// Organization.
    pub org_id: Uuid,
    /// Recipient.
    pub user_id: Uuid,
    /// Source event.
    pub event_id: Uuid,
    /// Event type.
    pub r#type: &'a str,
    /// Reason.
    pub reason: &'a str,
    /// Actor kind.
    pub actor_kind: &'a str,
    /// Actor id.
    pub actor_id: &'a str,
    /// Entity type.
    pub entity_type: Option<&'a str>,
    /// Entity id.
    pub entity_id: Option<Uuid>,
    /// Title.
    pub title: &'a str,
    /// Body.
    pub body: &'a str,
    /// Link.
    pub url: &'a str,
    /// Extras.
    pub data: &'a serde_json::Value,
    /// Shown in the inbox.
    pub in_app: bool,
}

/// Stores a notification unless this event already produced one for this user; whether it was
/// stored.
pub async fn insert_notification(tx: &mut Tx, n: &NewNotification<'_>) -> Result<bool> {
    let done = sqlx::query(
        "insert into notifications.notifications (id, org_id, user_id, event_id, type, reason, actor_kind, actor_id, \
         entity_type, entity_id, title, body, url, data, in_app) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         on conflict (org_id, event_id, user_id) do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(n.org_id)
    .bind(n.user_id)
    .bind(n.event_id)
    .bind(n.r#type)
    .bind(n.reason)
    .bind(n.actor_kind)
    .bind(n.actor_id)
    .bind(n.entity_type)
    .bind(n.entity_id)
    .bind(n.title)
    .bind(n.body)
    .bind(n.url)
    .bind(n.data)
    .bind(n.in_app)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A user's in-app notifications, newest first, after `cursor` (created_at, id).
pub async fn inbox_page(
    tx: &mut Tx,
    user_id: Uuid,
    cursor: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<NotificationRow>> {
    let (after_created, after_id) = cursor.unzip();
    Ok(sqlx::query_as(
        "select id, type, reason, title, body, url, entity_type, entity_id, actor_kind, actor_id, seen_at, read_at, \
         created_at from notifications.notifications \
         where user_id = $1 and in_app and ($2::timestamptz is null or (created_at, id) < ($2, $3)) \
         order by created_at desc, id desc limit $4",
    )
    .bind(user_id)
    .bind(after_created)
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// How many in-app notifications a user has.
pub async fn inbox_size(tx: &mut Tx, user_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from notifications.notifications where user_id = $1 and in_app")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?)
}
