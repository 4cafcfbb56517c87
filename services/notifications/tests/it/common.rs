//! Shared helpers: tokens, clients, and events built the way tasks publishes them.

use tonic::Request;
use tonic::transport::Channel;
use trellis_kit::RequestContext;
use trellis_kit::auth::Claims;
use trellis_kit::db::Db;
use trellis_kit::events::{Event, Handler, envelope};
use trellis_kit::testing::TestCell;
use trellis_notifications::events::Router;
use trellis_proto::trellis::notifications::v1::notification_service_client::NotificationServiceClient;
use trellis_proto::trellis::notifications::v1::{ListNotificationsRequest, Notification};
use trellis_proto::trellis::tasks::v1::TaskAssigned;
use uuid::Uuid;

/// An access token of `user` in `org`, signed by a key the cell trusts.
pub fn token_for(cell: &TestCell, user: Uuid, org: Uuid) -> String {
    cell.token(user, org)
}

/// An API-key token for `org`.
pub fn api_key_token(cell: &TestCell, org: Uuid) -> String {
    let now = chrono::Utc::now().timestamp();
    cell.keys.sign(&Claims {
        iss: cell.config.jwt_issuer.clone(),
        sub: format!("api_key:{}", Uuid::now_v7()),
        aud: cell.config.jwt_audience.clone(),
        exp: now + 900,
        nbf: None,
        iat: now,
        jti: Uuid::now_v7().to_string(),
        org: Some(org.to_string()),
        sid: Some(format!("key:{}", Uuid::now_v7())),
        roles: vec!["member".to_string()],
        scopes: vec!["notifications:read".to_string()],
        plan: None,
    })
}

/// A request carrying `token` as its bearer credential.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap_or_else(|e| panic!("token is not a header value: {e}"));
    request.metadata_mut().insert("authorization", value);
    request
}

/// Lists a user's inbox (one page).
pub async fn inbox(cell: &TestCell, user: Uuid, org: Uuid) -> Vec<Notification> {
    let mut client = NotificationServiceClient::new(cell.channel("notifications").await);
    client
        .list_notifications(authed(
            ListNotificationsRequest { page_size: 100, ..Default::default() },
            &token_for(cell, user, org),
        ))
        .await
        .unwrap_or_else(|s| panic!("listing notifications: {s:?}"))
        .into_inner()
        .notifications
}

/// A client of the notifications service.
pub async fn client(cell: &TestCell) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(cell.channel("notifications").await)
}

/// `tasks.task.assigned` as tasks publishes it: `actor` assigned `assignee` in `org`.
pub fn assigned_event(org: Uuid, actor: Uuid, assignee: Uuid, title: &str) -> Event {
    let payload = TaskAssigned {
        task_id: Uuid::now_v7().to_string(),
        board_id: Uuid::now_v7().to_string(),
        key: "TASK-1".to_string(),
        title: title.to_string(),
        assignee_id: assignee.to_string(),
        creator_id: actor.to_string(),
        watcher_ids: vec![actor.to_string(), assignee.to_string()],
        note: "Please look at it".to_string(),
        ..Default::default()
    };
    event(org, &RequestContext::user(actor, org), "tasks.task.assigned", &payload)
}

/// An event of `event_type` caused by `ctx`, as the consumer hands it to a handler.
pub fn event<M: prost::Name>(org: Uuid, ctx: &RequestContext, event_type: &str, payload: &M) -> Event {
    let envelope = envelope(ctx, org, event_type, payload);
    let id = envelope.id.parse().unwrap_or_else(|e| panic!("event id: {e}"));
    Event { id, org_id: org, ctx: RequestContext::system(org, envelope.correlation_id.clone()), envelope }
}

/// Runs the router on `event` in a tenant transaction of the event's org, as the consumer does.
pub async fn handle(db: &Db, event: &Event) -> trellis_kit::Result<()> {
    let mut tx = db.tenant_tx_for(event.org_id, None).await?;
    Router.handle(event, &mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The notifications module's own pool (its service role).
pub async fn service_db(cell: &TestCell) -> Db {
    Db::connect("notifications", &cell.config.db()).await.unwrap_or_else(|e| panic!("service pool: {e:#}"))
}
