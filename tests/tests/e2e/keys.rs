//! Identity acceptance flow 19 through the gateway: `/.well-known/jwks.json` publishes the keys
//! of issued tokens, and a rotation keeps earlier tokens working in other services while new
//! tokens use the new key, until the old key leaves the JWKS after its retiring period.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;
use trellis_kit::auth::{Claims, jwt};
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::token_service_client::TokenServiceClient;

use crate::common::{Platform, User};

fn kid(token: &str) -> String {
    jwt::parse(token).expect("a compact JWS").kid().to_string()
}

async fn jwks_kids(p: &Platform) -> HashSet<String> {
    let answer = p.call(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k: &Value| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

/// `RotateSigningKey` as platform tooling calls it (a `service:platform-admin` token).
async fn rotate(p: &Platform) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let token = p.cell.keys.sign(&Claims {
        iss: p.cell.config.jwt_issuer.clone(),
        sub: "service:platform-admin".into(),
        aud: p.cell.config.jwt_audience.clone(),
        exp: now + 300,
        nbf: Some(now),
        iat: now,
        jti: uuid::Uuid::now_v7().to_string(),
        org: None,
        sid: None,
        roles: vec![],
        scopes: vec![],
        plan: None,
    });
    let mut request = tonic::Request::new(pb::RotateSigningKeyRequest {});
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let mut client = TokenServiceClient::new(p.cell.channel("identity").await);
    client.rotate_signing_key(request).await.expect("rotate").into_inner().next_kid
}

#[tokio::test]
async fn rotating_the_signing_key_never_signs_anyone_out() {
    let mut settings = trellis_identity::IdentityConfig::from_env().expect("identity settings");
    settings.access_token_ttl = Duration::from_secs(10);
    settings.signing_key_publish_lead = Duration::from_secs(2);
    settings.signing_key_retiring = Duration::from_secs(10);
    settings.signing_key_check_interval = Duration::from_millis(200);
    let p = Platform::start_with_identity(Some(settings)).await;

    let before: User = p.register("Jonas", "jonas@example.com", None).await;
    let old_kid = kid(&before.token);
    assert_eq!(jwks_kids(&p).await, HashSet::from([old_kid.clone()]));
    let cache = p.http_head("/.well-known/jwks.json", "cache-control").await;
    assert_eq!(cache.as_deref(), Some("public, max-age=300"));

    let new_kid = rotate(&p).await;
    assert_ne!(new_kid, old_kid);
    assert_eq!(jwks_kids(&p).await, HashSet::from([old_kid.clone(), new_kid.clone()]), "next key published");

    // Once the publish lead has passed, sign-ins get tokens under the new key.
    let mut after = p.login("jonas@example.com").await;
    for _ in 0..50 {
        if kid(&after.token) == new_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = p.login("jonas@example.com").await;
    }
    assert_eq!(kid(&after.token), new_kid);

    // Another service accepts both the token minted before the rotation and the new one.
    assert_eq!(p.get("/api/v1/tasks", &before.token).await.status, StatusCode::OK);
    assert_eq!(p.get("/api/v1/tasks", &after.token).await.status, StatusCode::OK);

    // After the retiring period the old key leaves the JWKS.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while jwks_kids(&p).await.contains(&old_kid) {
        assert!(std::time::Instant::now() < deadline, "the old key is still published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(jwks_kids(&p).await, HashSet::from([new_kid]));
    assert_eq!(p.get("/api/v1/tasks", &after.token).await.status, StatusCode::OK);
}
