//! Sessions and revocation: Logout, LogoutAll, the session list, RevokeSession,
//! SwitchOrganization, GetSessionStatus, and kit's revoked-session check with and without the
//! Redis feed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;
use trellis_kit::auth::revocation::{IdentitySessionStatus, Revocations};
use trellis_kit::auth::{Authenticator, IdentityJwks};
use trellis_kit::testing::FaultProxy;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::session_service_client::SessionServiceClient;

use crate::common::{Identity, PASSWORD, bearer, failure};

fn headers(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
    h
}

/// How the kit authenticator of any service judges `token` on a protected method.
async fn judged(auth: &Authenticator, token: &str) -> Result<(), (Code, String)> {
    auth.authenticate(&headers(token), false).await.map(drop).map_err(|e| (e.code(), e.reason().to_string()))
}

/// Polls until `auth` rejects `token` as revoked; returns how long that took.
async fn rejected_within(auth: &Authenticator, token: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match judged(auth, token).await {
            Err((Code::Unauthenticated, reason)) => {
                assert_eq!(reason, "SESSION_REVOKED");
                return started.elapsed();
            }
            other => assert!(started.elapsed() < limit, "still {other:?} after {limit:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A verifier as another service runs it, with its own revocation feed from `redis_url` and
/// identity's status as the fallback.
fn another_service(id: &Identity, redis_url: &str, identity_url: &str) -> Arc<Authenticator> {
    let jwks = Arc::new(IdentityJwks::new(&id.cell.url("identity")).expect("jwks source"));
    let auth = Authenticator::with_source(&id.cell.config, jwks);
    let revocations = Revocations::new(Arc::new(IdentitySessionStatus::new(identity_url).expect("status source")));
    revocations.spawn_feed(redis::Client::open(redis_url).expect("redis url"));
    auth.attach_revocations(revocations);
    auth
}

async fn wait_for_feed(auth: &Authenticator, healthy: bool) {
    let revocations = auth.revocations().expect("attached");
    trellis_kit::testing::wait_until(Duration::from_secs(10), || async { revocations.feed_healthy() == healthy }).await;
}

async fn login(id: &Identity, email: &str) -> pb::LoginResponse {
    id.login(email, PASSWORD).await.unwrap_or_else(|s| panic!("login {email}: {s:?}"))
}

#[tokio::test]
async fn sessions_are_listed_with_the_current_one_and_revoking_one_ends_it_everywhere_within_a_second() {
    let id = Identity::start().await;
    id.register("sam@example.com", "Sam").await;
    let first = login(&id, "sam@example.com").await;
    let second = login(&id, "sam@example.com").await;
    let other = another_service(&id, &id.cell.config.redis_url, &id.cell.url("identity"));
    wait_for_feed(&other, true).await;
    judged(&other, &first.access_token).await.expect("a live session is accepted");

    let mut sessions = SessionServiceClient::new(id.cell.channel("identity").await);
    let listed = sessions
        .list_sessions(bearer(pb::ListSessionsRequest {}, &second.access_token))
        .await
        .expect("list")
        .into_inner();
    // Registration signed in too: three sessions, the caller's marked current.
    assert_eq!(listed.sessions.len(), 3);
    let second_sid = id.verify(&second.access_token).await.sid.expect("sid");
    let first_sid = id.verify(&first.access_token).await.sid.expect("sid");
    let current: Vec<_> = listed.sessions.iter().filter(|s| s.current).map(|s| s.id.clone()).collect();
    assert_eq!(current, vec![second_sid.clone()]);
    assert!(listed.sessions.iter().all(|s| s.amr == vec!["pwd".to_string()]));

    // Someone else cannot see or end Sam's sessions.
    let eve = id.register("eve@example.com", "Eve").await;
    let (code, reason) = failure(
        sessions
            .revoke_session(bearer(pb::RevokeSessionRequest { session_id: first_sid.clone() }, &eve.access_token))
            .await,
    );
    assert_eq!((code, reason.as_str()), (Code::NotFound, "SESSION_NOT_FOUND"));
    judged(&other, &first.access_token).await.expect("still live");

    sessions
        .revoke_session(bearer(pb::RevokeSessionRequest { session_id: first_sid.clone() }, &second.access_token))
        .await
        .expect("revoke");
    let took = rejected_within(&other, &first.access_token, Duration::from_secs(1)).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The identity service itself (same kit check) refuses it too, and its refresh token is dead.
    let (code, _) = failure(sessions.list_sessions(bearer(pb::ListSessionsRequest {}, &first.access_token)).await);
    assert_eq!(code, Code::Unauthenticated);
    let (code, reason) = failure(id.refresh(&first.refresh_token).await);
    assert_eq!((code, reason.as_str()), (Code::Unauthenticated, "REFRESH_TOKEN_INVALID"));
    judged(&other, &second.access_token).await.expect("the other session lives on");

    let revoked: Vec<pb::SessionRevoked> = id.payloads("identity.session.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        (revoked[0].session_id.as_str(), revoked[0].reason()),
        (first_sid.as_str(), pb::SessionRevokeReason::User)
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_is_idempotent_and_logout_all_ends_every_session() {
    let id = Identity::start().await;
    let registered = id.register("lou@example.com", "Lou").await;
    let a = login(&id, "lou@example.com").await;
    let b = login(&id, "lou@example.com").await;
    let other = another_service(&id, &id.cell.config.redis_url, &id.cell.url("identity"));
    wait_for_feed(&other, true).await;

    let mut auth = id.auth.clone();
    auth.logout(bearer(pb::LogoutRequest {}, &a.access_token)).await.expect("logout");
    rejected_within(&other, &a.access_token, Duration::from_secs(1)).await;
    let (code, reason) = failure(id.refresh(&a.refresh_token).await);
    assert_eq!((code, reason.as_str()), (Code::Unauthenticated, "REFRESH_TOKEN_INVALID"));
    // Logging out again with the (now revoked) token is refused by the revocation check, and
    // the session stays revoked once: one event.
    let _ = auth.logout(bearer(pb::LogoutRequest {}, &a.access_token)).await;
    let revoked: Vec<pb::SessionRevoked> = id.payloads("identity.session.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].reason(), pb::SessionRevokeReason::Logout);
    judged(&other, &b.access_token).await.expect("the other session lives on");

    let all = auth.logout_all(bearer(pb::LogoutAllRequest {}, &b.access_token)).await.expect("logout-all").into_inner();
    assert_eq!(all.revoked_count, 2, "b and the registration's session");
    rejected_within(&other, &b.access_token, Duration::from_secs(1)).await;
    rejected_within(&other, &registered.access_token, Duration::from_secs(1)).await;
    let (code, _) = failure(id.refresh(&registered.refresh_token).await);
    assert_eq!(code, Code::Unauthenticated);
    let reasons: Vec<_> =
        id.payloads::<pb::SessionRevoked>("identity.session.revoked").await.iter().map(|r| r.reason()).collect();
    assert_eq!(reasons.iter().filter(|r| **r == pb::SessionRevokeReason::LogoutAll).count(), 2);
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_access_token_everywhere_within_a_second() {
    let id = Identity::start().await;
    id.register("rae@example.com", "Rae").await;
    let signed_in = login(&id, "rae@example.com").await;
    let other = another_service(&id, &id.cell.config.redis_url, &id.cell.url("identity"));
    wait_for_feed(&other, true).await;
    let r2 = id.refresh(&signed_in.refresh_token).await.expect("rotate");
    assert_ne!(r2.refresh_token, signed_in.refresh_token);
    let (_, reason) = failure(id.refresh(&signed_in.refresh_token).await);
    assert_eq!(reason, "REFRESH_TOKEN_REUSED");
    rejected_within(&other, &signed_in.access_token, Duration::from_secs(1)).await;
    rejected_within(&other, &r2.access_token, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn without_the_feed_identity_is_asked_and_revocation_still_takes_effect_within_a_second() {
    let id = Identity::start().await;
    id.register("fay@example.com", "Fay").await;
    let a = login(&id, "fay@example.com").await;
    let b = login(&id, "fay@example.com").await;
    let proxy = FaultProxy::in_front_of(&id.cell.config.redis_url).await;
    let other = another_service(&id, &proxy.url(), &id.cell.url("identity"));
    wait_for_feed(&other, true).await;

    proxy.cut();
    wait_for_feed(&other, false).await;
    judged(&other, &a.access_token).await.expect("identity says the session is live");
    id.auth.clone().logout(bearer(pb::LogoutRequest {}, &a.access_token)).await.expect("logout");
    // A cached "active" answer lives at most 1 s, so once that has passed the next check asks
    // identity again and sees the logout (no wall-clock bound on how long the check itself takes).
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(judged(&other, &a.access_token).await.expect_err("revoked").1, "SESSION_REVOKED");
    judged(&other, &b.access_token).await.expect("other sessions are unaffected");

    // The feed comes back; the denylist is refilled from Redis and it takes over again.
    proxy.restore();
    wait_for_feed(&other, true).await;
    assert_eq!(judged(&other, &a.access_token).await.expect_err("still revoked").1, "SESSION_REVOKED");
}

#[tokio::test]
async fn with_neither_the_feed_nor_identity_the_check_fails_closed_as_unavailable() {
    let id = Identity::start().await;
    id.register("nia@example.com", "Nia").await;
    let a = login(&id, "nia@example.com").await;
    let redis = FaultProxy::in_front_of(&id.cell.config.redis_url).await;
    let identity = FaultProxy::in_front_of(&id.cell.url("identity")).await;
    let other = another_service(&id, &redis.url(), &identity.url());
    // Keys are fetched while identity is reachable.
    judged(&other, &a.access_token).await.expect("accepted");
    redis.cut();
    identity.cut();
    wait_for_feed(&other, false).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, reason) = judged(&other, &a.access_token).await.expect_err("fails closed");
    assert_eq!((code, reason.as_str()), (Code::Unavailable, "REVOCATION_CHECK_UNAVAILABLE"));
    identity.restore();
    trellis_kit::testing::wait_until(Duration::from_secs(5), || async {
        judged(&other, &a.access_token).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn session_status_answers_services_and_a_token_about_its_own_session_only() {
    let id = Identity::start().await;
    id.register("sol@example.com", "Sol").await;
    let a = login(&id, "sol@example.com").await;
    let b = login(&id, "sol@example.com").await;
    let sid_a = id.verify(&a.access_token).await.sid.expect("sid");
    let sid_b = id.verify(&b.access_token).await.sid.expect("sid");
    let mut tokens = SessionServiceClient::new(id.cell.channel("identity").await);
    let ask = |sids: Vec<String>, token: &str| bearer(pb::GetSessionStatusRequest { sids }, token);

    let own = tokens.get_session_status(ask(vec![sid_a.clone()], &a.access_token)).await.expect("own").into_inner();
    assert_eq!(own.statuses.len(), 1);
    assert!(own.statuses[0].active);
    let (code, _) = failure(tokens.get_session_status(ask(vec![sid_b.clone()], &a.access_token)).await);
    assert_eq!(code, Code::PermissionDenied);
    let (code, _) = failure(tokens.get_session_status(pb::GetSessionStatusRequest { sids: vec![sid_a.clone()] }).await);
    assert_eq!(code, Code::PermissionDenied);
    let (code, _) = failure(tokens.get_session_status(ask(vec![], &a.access_token)).await);
    assert_eq!(code, Code::InvalidArgument);

    id.auth.clone().logout(bearer(pb::LogoutRequest {}, &a.access_token)).await.expect("logout");
    let own = tokens.get_session_status(ask(vec![sid_a.clone()], &a.access_token)).await.expect("own").into_inner();
    assert!(!own.statuses[0].active);
    assert!(own.statuses[0].revoked_at.is_some());
}

#[tokio::test]
async fn switching_organization_needs_membership_and_names_the_new_org() {
    let id = Identity::start().await;
    let owner = id.register("oli@example.com", "Oli").await;
    let other = id.register("pat@example.com", "Pat").await;
    let pat_org = id.verify(&other.access_token).await.org.expect("org");
    let oli_org = id.verify(&owner.access_token).await.org.expect("org");
    let mut auth = id.auth.clone();
    let request = |org_id: &str| pb::SwitchOrganizationRequest { org_id: org_id.to_string() };

    let (code, reason) = failure(auth.switch_organization(bearer(request(&pat_org), &owner.access_token)).await);
    assert_eq!((code, reason.as_str()), (Code::PermissionDenied, "NOT_A_MEMBER"));
    let (code, _) = failure(auth.switch_organization(bearer(request("not-a-uuid"), &owner.access_token)).await);
    assert_eq!(code, Code::InvalidArgument);
    let switched =
        auth.switch_organization(bearer(request(&oli_org), &owner.access_token)).await.expect("own org").into_inner();
    let claims = id.verify(&switched.access_token).await;
    assert_eq!(claims.org.as_deref(), Some(oli_org.as_str()));
    assert_eq!(switched.role, "owner");
    assert_eq!(claims.sid, id.verify(&owner.access_token).await.sid, "same session");
}
