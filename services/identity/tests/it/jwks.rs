//! Signing keys: JWKS, verification with kit's verifier, persistence and first-start races.

use std::collections::HashSet;

use trellis_identity::keys::{EncryptionKey, Keys};
use trellis_kit::auth::jwt;
use trellis_kit::db::{Db, migrate};
use trellis_kit::testing::{TestCell, TestEnv, test_config};
use trellis_proto::trellis::identity::v1 as pb;

use crate::common::Identity;

#[tokio::test]
async fn issued_tokens_name_a_published_key_and_verify_with_kit() {
    let id = Identity::start().await;
    let registered = id.register("keys@example.com", "Keys").await;

    let parsed = jwt::parse(&registered.access_token).expect("a compact JWS");
    let kid = parsed.kid().to_string();
    let jwks = id.tokens.clone().get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let key = &jwks.keys[0];
    assert_eq!(key.kid, kid);
    assert_eq!(
        (key.kty.as_str(), key.crv.as_str(), key.r#use.as_str(), key.alg.as_str()),
        ("OKP", "Ed25519", "sig", "EdDSA")
    );
    let public = jwt::key_from_x(&key.x).expect("an Ed25519 key");
    let claims = parsed.verify(&public).expect("signed by the published key");
    assert_eq!(claims.sub, registered.user.expect("user").id);

    // kit's verifier (iss, aud, exp, signature against identity's JWKS) accepts it.
    assert_eq!(id.verify(&registered.access_token).await, claims);

    // The private key is stored sealed, never in the clear.
    let (public_key, sealed, key_id): (Vec<u8>, Vec<u8>, String) =
        sqlx::query_as("select public_key, private_key_ciphertext, key_id from identity.signing_keys where kid = $1")
            .bind(&kid)
            .fetch_one(&id.owner)
            .await
            .expect("key row");
    assert_eq!(public_key, public.as_bytes());
    assert_eq!(sealed.len(), 12 + 32 + 16, "nonce, sealed seed, tag");
    assert_eq!(key_id.len(), 16);
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let first = Identity::start().await;
    let before = first.register("restart@example.com", "Re").await;
    let kid = jwt::parse(&before.access_token).expect("jws").kid().to_string();

    // Another replica on the same database uses the same key.
    let second = TestCell::start_with((*first.cell.config).clone(), vec![trellis_identity::module()]).await;
    let channel = second.channel("identity").await;
    let mut auth = pb::auth_service_client::AuthServiceClient::new(channel);
    let login = auth
        .login(pb::LoginRequest { email: "restart@example.com".into(), password: crate::common::PASSWORD.into() })
        .await
        .expect("login on the second replica")
        .into_inner();
    assert_eq!(jwt::parse(&login.access_token).expect("jws").kid(), kid);
    first.verify(&login.access_token).await;
}

#[tokio::test]
async fn replicas_starting_together_agree_on_one_active_key() {
    let env = TestEnv::get();
    let config = test_config(&env).await;
    migrate(&config.database_url, "identity", &config.service_db_password, Some(trellis_identity::module().migrator))
        .await
        .expect("migrate");
    let db = Db::connect("identity", &config.db()).await.expect("connect as identity_svc");
    let key = || EncryptionKey::from_base64(trellis_identity::config::DEV_ENCRYPTION_KEY).expect("key");
    let replicas = futures::future::join_all((0..4).map(|_| Keys::start(db.clone(), key()))).await;
    let mut kids = HashSet::new();
    for keys in replicas {
        let keys = keys.expect("start");
        kids.insert(keys.active().await.expect("active key").kid.clone());
    }
    assert_eq!(kids.len(), 1, "every replica signs with the same key");
    let rows: i64 =
        sqlx::query_scalar("select count(*) from identity.signing_keys").fetch_one(db.pool()).await.expect("count");
    assert_eq!(rows, 1);

    // A replica holding another encryption key refuses to start rather than sign with garbage.
    let wrong = EncryptionKey::new(&[9; 32]);
    let error = Keys::start(db.clone(), wrong).await.expect_err("wrong key");
    assert!(format!("{error:#}").contains("IDENTITY_ENCRYPTION_KEY"), "{error:#}");
}
