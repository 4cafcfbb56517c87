//! Identity acceptance flow 5 through the gateway: forgot/reset password, with the link read
//! from identity's outbox as notifications receives it.

use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::identity::v1::PasswordResetRequested;

use crate::common::{PASSWORD, Platform};

async fn reset_links(p: &Platform) -> Vec<PasswordResetRequested> {
    let pool = p.cell.owner_pool().await;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "select envelope from identity.outbox where event_type = 'identity.user.password_reset_requested' \
         order by created_at, id",
    )
    .fetch_all(&pool)
    .await
    .expect("outbox");
    rows.iter()
        .filter_map(|b| Envelope::decode(b.as_slice()).ok())
        .filter_map(|e| e.payload.and_then(|p| p.to_msg::<PasswordResetRequested>().ok()))
        .collect()
}

#[tokio::test]
async fn password_reset_answers_alike_and_the_link_resets_once_and_signs_out_everywhere() {
    let p = Platform::start().await;
    let bob = p.register("Bob", "bob@example.com", None).await;
    assert_eq!(p.get("/api/v1/tasks", &bob.token).await.status, StatusCode::OK);

    let unknown = p.post("/api/v1/auth/forgot-password", None, json!({"email": "ghost@example.com"})).await;
    let known = p.post("/api/v1/auth/forgot-password", None, json!({"email": "bob@example.com"})).await;
    assert_eq!((unknown.status, known.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(unknown.body, known.body, "identical bodies");
    let links = reset_links(&p).await;
    assert_eq!(links.len(), 1, "only the known email publishes");
    let token = links[0].link_url.split_once("token=").map(|(_, t)| t.to_string()).expect("token");

    let new_password = "brand-new-garden-path-31";
    let reset =
        p.post("/api/v1/auth/reset-password", None, json!({"token": token, "new_password": new_password})).await;
    assert_eq!(reset.status, StatusCode::OK, "{reset:?}");
    let old_session = p
        .poll("/api/v1/tasks", &bob.token, std::time::Duration::from_secs(1), |a| a.status == StatusCode::UNAUTHORIZED);
    assert_eq!(old_session.await.status, StatusCode::UNAUTHORIZED);
    let old = p.post("/api/v1/auth/login", None, json!({"email": "bob@example.com", "password": PASSWORD})).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = p.post("/api/v1/auth/login", None, json!({"email": "bob@example.com", "password": new_password})).await;
    assert_eq!(new.status, StatusCode::OK, "{new:?}");
    let again = p
        .post("/api/v1/auth/reset-password", None, json!({"token": token, "new_password": "yet-another-one-99"}))
        .await;
    assert_eq!((again.status, again.error_code()), (StatusCode::BAD_REQUEST, "TOKEN_INVALID"));
}
