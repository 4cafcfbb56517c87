//! Signing-key rotation (spec rule 14, flow 19) with a shortened schedule: next → active →
//! retiring → retired, tokens minted before a rotation keep verifying, new tokens use the new key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use trellis_kit::auth::{Authenticator, Claims, IdentityJwks, jwt};
use trellis_kit::testing::wait_until;
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::common::{Identity, bearer, failure};

/// Identity with a schedule measured in seconds.
async fn identity() -> Identity {
    Identity::start_with(|s| {
        s.access_token_ttl = Duration::from_secs(5);
        s.signing_key_publish_lead = Duration::from_secs(2);
        s.signing_key_retiring = Duration::from_secs(6);
        s.signing_key_check_interval = Duration::from_millis(200);
    })
    .await
}

/// A `service:<name>` token signed by the cell's test key.
fn service_token(id: &Identity, name: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    id.cell.keys.sign(&Claims {
        iss: id.cell.config.jwt_issuer.clone(),
        sub: format!("service:{name}"),
        aud: id.cell.config.jwt_audience.clone(),
        exp: now + 300,
        nbf: Some(now),
        iat: now,
        jti: Uuid::now_v7().to_string(),
        org: None,
        sid: None,
        roles: vec![],
        scopes: vec![],
        plan: None,
    })
}

async fn published(id: &Identity) -> HashSet<String> {
    let jwks = id.tokens.clone().get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner();
    jwks.keys.into_iter().map(|k| k.kid).collect()
}

fn kid(token: &str) -> String {
    jwt::parse(token).expect("a compact JWS").kid().to_string()
}

/// A verifier that has never seen identity's keys (a service started after the rotation).
fn fresh_verifier(id: &Identity) -> Arc<Authenticator> {
    let source = IdentityJwks::new(&id.cell.url("identity")).expect("identity url");
    Authenticator::with_source(&id.cell.config, Arc::new(source))
}

#[tokio::test]
async fn only_platform_admins_may_rotate() {
    let id = identity().await;
    let user = id.register("not-admin@example.com", "Nadia").await;
    let request = || pb::RotateSigningKeyRequest {};
    // A user needs platform:cell#administer from the permissions service (which runs in this
    // cell); an ordinary user does not have it.
    let refused = id.tokens.clone().rotate_signing_key(bearer(request(), &user.access_token)).await;
    assert_eq!(failure(refused), (Code::PermissionDenied, "PERMISSION_DENIED".into()));
    let other_service = id.tokens.clone().rotate_signing_key(bearer(request(), &service_token(&id, "tasks"))).await;
    assert_eq!(failure(other_service), (Code::PermissionDenied, "PERMISSION_DENIED".into()));
    let anonymous = id.tokens.clone().rotate_signing_key(request()).await;
    assert_eq!(failure(anonymous).0, Code::Unauthenticated);
    // Nothing was rotated.
    assert_eq!(published(&id).await.len(), 1);
}

#[tokio::test]
async fn a_rotation_publishes_activates_and_retires_keys_without_breaking_issued_tokens() {
    let id = identity().await;
    let registered = id.register("rotate@example.com", "Rory").await;
    let old_kid = kid(&registered.access_token);
    let admin = service_token(&id, "platform-admin");

    let rotated = id
        .tokens
        .clone()
        .rotate_signing_key(bearer(pb::RotateSigningKeyRequest {}, &admin))
        .await
        .expect("platform-admin may rotate")
        .into_inner();
    let new_kid = rotated.next_kid.clone();
    assert!(!new_kid.is_empty() && new_kid != old_kid);
    let statuses: Vec<(String, i32)> = rotated.keys.iter().map(|k| (k.kid.clone(), k.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (new_kid.clone(), pb::SigningKeyStatus::Next as i32),
            (old_kid.clone(), pb::SigningKeyStatus::Active as i32)
        ]
    );
    // The next key is published before it signs anything.
    assert_eq!(published(&id).await, HashSet::from([old_kid.clone(), new_kid.clone()]));
    // Asking again while the rotation is pending keeps the same next key.
    let again =
        id.tokens.clone().rotate_signing_key(bearer(pb::RotateSigningKeyRequest {}, &admin)).await.expect("again");
    assert_eq!(again.into_inner().next_kid, new_kid);

    // After the publish lead, new tokens are signed with the new key.
    let mut refresh_token = registered.refresh_token.clone();
    let mut new_token = String::new();
    for _ in 0..100 {
        let refreshed = id.refresh(&refresh_token).await.expect("refresh");
        refresh_token = refreshed.refresh_token;
        if kid(&refreshed.access_token) == new_kid {
            new_token = refreshed.access_token;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!new_token.is_empty(), "no token signed with the new key after the publish lead");
    assert_eq!(published(&id).await, HashSet::from([old_kid.clone(), new_kid.clone()]), "old key is retiring");

    // A verifier that has never seen the keys accepts both the old and the new token.
    let verifier = fresh_verifier(&id);
    verifier.verify(&registered.access_token).await.expect("a token minted before the rotation still verifies");
    verifier.verify(&new_token).await.expect("a token signed with the new key verifies");

    // After the retiring period, the old key leaves the JWKS and its private half is erased.
    wait_until(Duration::from_secs(20), || async { !published(&id).await.contains(&old_kid) }).await;
    assert_eq!(published(&id).await, HashSet::from([new_kid.clone()]));
    let (status, sealed): (String, Vec<u8>) =
        sqlx::query_as("select status, private_key_ciphertext from identity.signing_keys where kid = $1")
            .bind(&old_kid)
            .fetch_one(&id.owner)
            .await
            .expect("old key row");
    assert_eq!((status.as_str(), sealed.len()), ("retired", 0));
    let active: i64 = sqlx::query_scalar("select count(*) from identity.signing_keys where status = 'active'")
        .fetch_one(&id.owner)
        .await
        .expect("count");
    assert_eq!(active, 1);
    let rejected = fresh_verifier(&id).verify(&registered.access_token).await.expect_err("old key is gone");
    assert_eq!(rejected.reason(), "INVALID_TOKEN");
    fresh_verifier(&id).verify(&new_token).await.expect("the new key is still published");
}

#[tokio::test]
async fn the_schedule_rotates_on_its_own() {
    let id = Identity::start_with(|s| {
        s.access_token_ttl = Duration::from_secs(2);
        s.signing_key_rotation = Duration::from_secs(3);
        s.signing_key_publish_lead = Duration::from_secs(1);
        s.signing_key_retiring = Duration::from_secs(2);
        s.signing_key_check_interval = Duration::from_millis(200);
    })
    .await;
    let registered = id.register("schedule@example.com", "Sam").await;
    let first = kid(&registered.access_token);
    // Within a few periods the first key has been replaced and retired.
    wait_until(Duration::from_secs(20), || async { !published(&id).await.contains(&first) }).await;
    let refreshed = id.refresh(&registered.refresh_token).await.expect("refresh");
    assert_ne!(kid(&refreshed.access_token), first);
    assert!(published(&id).await.contains(&kid(&refreshed.access_token)));
}

#[tokio::test]
async fn the_cli_rotation_works_on_the_database_and_the_service_activates_it() {
    let id = identity().await;
    let registered = id.register("cli@example.com", "Cleo").await;
    let old_kid = kid(&registered.access_token);
    // What `trellis rotate-signing-key` runs, with the cell's settings.
    let mut settings = trellis_identity::IdentityConfig::from_env().expect("settings");
    settings.signing_key_publish_lead = Duration::from_secs(2);
    let keys = trellis_identity::keys::rotate_from_cli(&id.cell.config, &settings).await.expect("rotate");
    let next = keys.iter().find(|k| k.status == trellis_identity::keys::KeyStatus::Next).expect("a next key");
    assert_ne!(next.kid, old_kid);
    assert_eq!(published(&id).await, HashSet::from([old_kid.clone(), next.kid.clone()]));
    // The running service activates it on schedule.
    let new_kid = next.kid.clone();
    let mut refresh_token = registered.refresh_token;
    let mut activated = false;
    for _ in 0..100 {
        let refreshed = id.refresh(&refresh_token).await.expect("refresh");
        refresh_token = refreshed.refresh_token;
        if kid(&refreshed.access_token) == new_kid {
            activated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(activated, "the service did not activate the key the command published");
}
