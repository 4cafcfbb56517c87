//! gRPC handlers: validate and convert, call the inbox, convert back. No SQL here.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_kit::db::Db;
use trellis_kit::paging::{PageTokens, page_size};
use trellis_proto::trellis::common::v1::EntityRef;
use trellis_proto::trellis::notifications::v1 as proto;
use trellis_proto::trellis::notifications::v1::notification_service_server::NotificationService;

use crate::inbox;
use crate::store::NotificationRow;

/// The `trellis.notifications.v1.NotificationService` implementation.
#[derive(Debug, Clone)]
pub struct NotificationApi {
    db: Db,
    tokens: Arc<PageTokens>,
}

impl NotificationApi {
    /// Handlers over `db`, signing page tokens with `tokens`.
    pub fn new(db: Db, tokens: PageTokens) -> Self {
        Self { db, tokens: Arc::new(tokens) }
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::from(t))
}

/// The wire form of a notification.
pub fn notification_to_proto(n: &NotificationRow) -> proto::Notification {
    proto::Notification {
        id: n.id.to_string(),
        r#type: n.r#type.clone(),
        reason: n.reason.clone(),
        title: n.title.clone(),
        body: n.body.clone(),
        url: n.url.clone(),
        entity: match (&n.entity_type, n.entity_id) {
            (Some(t), Some(id)) => Some(EntityRef { r#type: t.clone(), id: id.to_string() }),
            _ => None,
        },
        actor: Some(proto::Actor { kind: n.actor_kind.clone(), id: n.actor_id.clone() }),
        seen_at: n.seen_at.map(timestamp),
        read_at: n.read_at.map(timestamp),
        created_at: Some(timestamp(n.created_at)),
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn list_notifications(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<Response<proto::ListNotificationsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let user_id = ctx.user_id()?;
        let size = page_size(r.page_size)?;
        let page = inbox::list(&self.db, &ctx, user_id, &self.tokens, size, &r.page_token).await?;
        Ok(Response::new(proto::ListNotificationsResponse {
            notifications: page.notifications.iter().map(notification_to_proto).collect(),
            next_page_token: page.next_page_token,
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
        }))
    }
}
