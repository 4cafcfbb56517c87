//! Against the real identity module in a `TestCell` (Postgres, Redis and RabbitMQ from
//! `cargo xtask test`), with the gateway as `trellis serve` wires it: JWKS fetched from identity.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use trellis_kit::testing::TestCell;

const PASSWORD: &str = "vM7#qLp2-zRt9&wXk";

async fn start() -> (TestCell, String) {
    // Identity asks permissions whether a caller may invite; it registers its schema at start-up.
    let cell = TestCell::start(vec![trellis_identity::module(), trellis_permissions::module()]).await;
    let owner = cell.owner_pool().await;
    trellis_kit::testing::wait_until(std::time::Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>(
            "select exists(select 1 from permissions.schema_modules where module = 'identity')",
        )
        .fetch_one(&owner)
        .await
        .unwrap_or(false)
    })
    .await;
    let (addr, _handle) = trellis_gateway::spawn_for_tests(cell.config.clone(), cell.auth.clone()).await;
    (cell, format!("http://{addr}"))
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("a JWS header");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("json");
    header["kid"].as_str().expect("kid").to_string()
}

#[tokio::test]
async fn registering_through_rest_yields_a_token_the_gateway_accepts() {
    let (_cell, base) = start().await;
    let http = reqwest::Client::new();
    let email = format!("ada-{}@example.test", uuid::Uuid::now_v7().simple());

    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "first_name": "Ada"}))
        .send()
        .await
        .expect("register");
    let status = r.status();
    let registered: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{registered}");
    assert_eq!(registered["user"]["email"], email.as_str());
    assert_eq!(registered["user"]["first_name"], "Ada");
    assert_eq!(registered["token_type"], "Bearer");
    assert!(registered["expires_in"].as_i64().is_some_and(|s| s > 0), "{registered}");
    let token = registered["access_token"].as_str().expect("access token").to_string();

    // The key that signed it is published through the gateway.
    let jwks: Value =
        http.get(format!("{base}/.well-known/jwks.json")).send().await.expect("jwks").json().await.expect("json");
    let kid = kid_of(&token);
    assert!(jwks["keys"].as_array().expect("keys").iter().any(|k| k["kid"] == kid.as_str()), "{jwks}");

    // Registering twice is a conflict in the envelope.
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "first_name": "Ada"}))
        .send()
        .await
        .expect("register again");
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let r = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::OK);

    // A protected route: refused without a token, served with the one identity issued.
    let invite = json!({"email": format!("bob-{}@example.test", uuid::Uuid::now_v7().simple()), "role": "member"});
    let r = http.post(format!("{base}/api/v1/invitations")).json(&invite).send().await.expect("invite");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let envelope: Value = r.json().await.expect("json");
    assert_eq!(envelope["error"]["code"], "UNAUTHENTICATED");
    let r =
        http.post(format!("{base}/api/v1/invitations")).bearer_auth(&token).json(&invite).send().await.expect("invite");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

#[tokio::test]
async fn identity_validation_errors_arrive_in_the_envelope() {
    let (_cell, base) = start().await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "not-an-address", "password": PASSWORD, "first_name": "Ada"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let envelope: Value = r.json().await.expect("json");
    assert_eq!(envelope["error"]["code"], "VALIDATION_ERROR");
    assert!(
        envelope["error"]["details"].as_array().expect("details").iter().any(|d| d["field"] == "email"),
        "{envelope}"
    );
}
