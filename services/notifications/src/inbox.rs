//! The in-app inbox: a user's notifications in one organization.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trellis_kit::db::Db;
use trellis_kit::paging::PageTokens;
use trellis_kit::{RequestContext, Result};
use uuid::Uuid;

use crate::store::{self, NotificationRow};

/// One page of the inbox.
#[derive(Debug, Clone)]
pub struct Page {
    /// Newest first.
    pub notifications: Vec<NotificationRow>,
    /// Token of the next page, empty on the last.
    pub next_page_token: String,
    /// How many in-app notifications the user has.
    pub total_size: i64,
}

/// Where the previous page ended: keyset on (created_at desc, id desc).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

/// The user's in-app notifications in the context's organization, newest first.
pub async fn list(
    db: &Db,
    ctx: &RequestContext,
    user_id: Uuid,
    tokens: &PageTokens,
    page_size: u32,
    page_token: &str,
) -> Result<Page> {
    let hash = PageTokens::query_hash(&["notifications.ListNotifications", &user_id.to_string()]);
    let cursor: Option<Cursor> = tokens.decode(&hash, page_token)?;
    let mut tx = db.tenant_tx(ctx).await?;
    let mut notifications =
        store::inbox_page(&mut tx, user_id, cursor.map(|c| (c.created_at, c.id)), i64::from(page_size) + 1).await?;
    let total_size = store::inbox_size(&mut tx, user_id).await?;
    tx.commit().await?;
    let next_page_token = if notifications.len() > page_size as usize {
        notifications.truncate(page_size as usize);
        notifications
            .last()
            .map(|n| tokens.encode(&hash, &Cursor { created_at: n.created_at, id: n.id }))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Page { notifications, next_page_token, total_size })
}
