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

/// An email to record in `email_log`.
#[derive(Debug, Clone)]
pub struct NewEmail<'a> {
    /// Its id (also in its Message-ID).
    pub id: Uuid,
    /// Organization (the platform org for account mail).
    pub org_id: Uuid,
    /// The recipient user, when known.
    pub user_id: Option<Uuid>,
    /// The address.
    pub to_address: &'a str,
    /// Template.
    pub template_slug: &'a str,
    /// Locale rendered.
    pub locale: &'a str,
    /// Subject (empty when rendering failed).
    pub subject: &'a str,
    /// `queued`, or `failed` when it could not be rendered.
    pub status: &'a str,
    /// `smtp` or `file`.
    pub provider: &'a str,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// The transactional source event.
    pub event_id: Option<Uuid>,
}

/// Records an email unless this (event, template, address) already has one; whether it was
/// recorded.
pub async fn insert_email_log(tx: &mut Tx, e: &NewEmail<'_>) -> Result<bool> {
    let done = sqlx::query(
        "insert into notifications.email_log (id, org_id, user_id, to_address, template_slug, locale, subject, \
         status, provider, error, event_id) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         on conflict (org_id, event_id, template_slug, to_address) do nothing",
    )
    .bind(e.id)
    .bind(e.org_id)
    .bind(e.user_id)
    .bind(e.to_address)
    .bind(e.template_slug)
    .bind(e.locale)
    .bind(e.subject)
    .bind(e.status)
    .bind(e.provider)
    .bind(e.error)
    .bind(e.event_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Queues a rendered message for sending now.
pub async fn enqueue_email(tx: &mut Tx, email_log_id: Uuid, org_id: Uuid, message: &[u8]) -> Result<()> {
    sqlx::query("insert into notifications.email_queue (email_log_id, org_id, message) values ($1, $2, $3)")
        .bind(email_log_id)
        .bind(org_id)
        .bind(message)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queued emails that are due, across tenants: (org_id, email_log_id), oldest due first.
pub async fn due_emails(pool: &sqlx::PgPool, limit: i32) -> Result<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as("select org_id, email_log_id from notifications.due_emails($1)")
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

/// A queued email, locked for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedEmail {
    /// The email log id.
    pub id: Uuid,
    /// Recipient user.
    pub user_id: Option<Uuid>,
    /// Address.
    pub to_address: String,
    /// Template.
    pub template_slug: String,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The formatted message.
    pub message: Vec<u8>,
}

/// Locks a due queued email for sending; `None` when it is not due, already final, or another
/// sender holds it.
pub async fn claim_email(tx: &mut Tx, email_log_id: Uuid) -> Result<Option<QueuedEmail>> {
    Ok(sqlx::query_as(
        "select l.id, l.user_id, l.to_address, l.template_slug, l.attempts, q.message \
         from notifications.email_queue q join notifications.email_log l on l.id = q.email_log_id \
         where q.email_log_id = $1 and q.next_attempt_at <= now() and l.status = 'queued' \
         for update of q, l skip locked",
    )
    .bind(email_log_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The email was accepted: `sent`, with its Message-ID; the queued message is deleted.
pub async fn mark_email_sent(tx: &mut Tx, email_log_id: Uuid, provider_message_id: &str) -> Result<()> {
    sqlx::query(
        "update notifications.email_log set status = 'sent', attempts = attempts + 1, provider_message_id = $2, \
         error = null, sent_at = now() where id = $1",
    )
    .bind(email_log_id)
    .bind(provider_message_id)
    .execute(&mut **tx)
    .await?;
    delete_queued(tx, email_log_id).await
}

/// A transient failure: the attempt is counted and the next one scheduled `delay` from now.
pub async fn reschedule_email(tx: &mut Tx, email_log_id: Uuid, error: &str, delay: std::time::Duration) -> Result<()> {
    sqlx::query("update notifications.email_log set attempts = attempts + 1, error = $2 where id = $1")
        .bind(email_log_id)
        .bind(error)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "update notifications.email_queue set next_attempt_at = now() + make_interval(secs => $2) \
         where email_log_id = $1",
    )
    .bind(email_log_id)
    .bind(delay.as_secs_f64())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The final failure: `failed` with the error; the queued message is deleted.
pub async fn mark_email_failed(tx: &mut Tx, email_log_id: Uuid, error: &str) -> Result<()> {
    sqlx::query(
        "update notifications.email_log set status = 'failed', attempts = attempts + 1, error = $2 where id = $1",
    )
    .bind(email_log_id)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    delete_queued(tx, email_log_id).await
}

async fn delete_queued(tx: &mut Tx, email_log_id: Uuid) -> Result<()> {
    sqlx::query("delete from notifications.email_queue where email_log_id = $1")
        .bind(email_log_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What this service knows of a user for addressing and rendering mail (the `recipients`
/// projection of identity's events).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecipientRow {
    /// The user.
    pub user_id: Uuid,
    /// Current address.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// BCP 47 locale.
    pub locale: String,
}

/// The projection row of `user_id`.
pub async fn recipient(tx: &mut Tx, user_id: Uuid) -> Result<Option<RecipientRow>> {
    Ok(sqlx::query_as(
        "select user_id, email, display_name, locale from notifications.recipients where user_id = $1 and active",
    )
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// A new user (`identity.user.registered`); an existing row keeps its newer data.
pub async fn insert_recipient(tx: &mut Tx, user_id: Uuid, email: &str, display_name: &str) -> Result<()> {
    sqlx::query(
        "insert into notifications.recipients (user_id, email, display_name) values ($1, $2, $3) \
         on conflict (user_id) do nothing",
    )
    .bind(user_id)
    .bind(email)
    .bind(display_name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The user's address, now verified (`identity.user.email_verified` / `email_changed`).
pub async fn set_recipient_email(tx: &mut Tx, user_id: Uuid, email: &str) -> Result<()> {
    sqlx::query(
        "insert into notifications.recipients (user_id, email, email_verified) values ($1, $2, true) \
         on conflict (user_id) do update set email = excluded.email, email_verified = true, updated_at = now()",
    )
    .bind(user_id)
    .bind(email)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
