//! Lockout after repeated failures, login rate limits per email and per IP, and failures that
//! look the same whether or not the account exists.

use std::time::{Duration, Instant};

use tonic::{Code, Request};
use tonic_types::StatusExt;
use trellis_proto::trellis::identity::v1 as pb;

use crate::common::{Identity, PASSWORD, failure};

const WRONG: &str = "not-the-password-at-all";

fn from_ip(email: &str, password: &str, ip: &str) -> Request<pb::LoginRequest> {
    let mut r = Request::new(pb::LoginRequest { email: email.into(), password: password.into() });
    r.metadata_mut().insert("x-client-ip", ip.parse().expect("ascii"));
    r
}

#[tokio::test]
async fn five_failures_lock_the_account_even_for_the_right_password_until_the_lock_expires() {
    let id = Identity::start_with(|s| {
        s.lockout_duration = Duration::from_secs(20);
        // More attempts than the per-email limit allows.
        s.login_rate_limit = 100;
    })
    .await;
    let user = id.register("lock@example.com", "Lock").await.user.expect("user");
    for attempt in 1..=5 {
        let (code, reason) = failure(id.login("lock@example.com", WRONG).await);
        assert_eq!((code, reason.as_str()), (Code::Unauthenticated, "INVALID_CREDENTIALS"), "attempt {attempt}");
        let locked: Vec<pb::UserLocked> = id.payloads("identity.user.locked").await;
        assert_eq!(locked.len(), usize::from(attempt == 5), "locked only at the 5th failure");
    }
    let locked: Vec<pb::UserLocked> = id.payloads("identity.user.locked").await;
    assert_eq!((locked[0].user_id.as_str(), locked[0].failed_count), (user.id.as_str(), 5));
    assert!(locked[0].locked_until.is_some());

    let (code, reason) = failure(id.login("lock@example.com", PASSWORD).await);
    assert_eq!((code, reason.as_str()), (Code::Unauthenticated, "INVALID_CREDENTIALS"), "locked");
    let failed: Vec<pb::LoginFailed> = id.payloads("identity.user.login_failed").await;
    assert_eq!(failed.last().map(|f| f.reason()), Some(pb::LoginFailureReason::Locked));
    assert_eq!(failed.iter().filter(|f| f.reason() == pb::LoginFailureReason::BadPassword).count(), 5);

    // Wait out the (shortened) lock.
    let until = locked[0].locked_until.as_ref().expect("locked_until").seconds;
    let left = until - chrono::Utc::now().timestamp() + 1;
    assert!(left <= 21, "locked for the configured 20 s");
    tokio::time::sleep(Duration::from_secs(left.max(0) as u64)).await;
    id.login("lock@example.com", PASSWORD).await.expect("the lock has expired");
    // A success resets the count: four more failures do not lock again.
    for _ in 0..4 {
        let _ = id.login("lock@example.com", WRONG).await;
    }
    id.login("lock@example.com", PASSWORD).await.expect("not locked after four failures");
    assert_eq!(id.payloads::<pb::UserLocked>("identity.user.locked").await.len(), 1);
}

#[tokio::test]
async fn the_eleventh_attempt_for_one_email_is_rate_limited_with_retry_info_even_for_unknown_emails() {
    let id = Identity::start().await;
    let mut auth = id.auth.clone();
    for attempt in 1..=10 {
        // A new IP each time: only the per-email limit applies.
        let ip = format!("198.51.100.{attempt}");
        let (code, _) = failure(auth.login(from_ip("nobody@example.com", WRONG, &ip)).await.map(drop));
        assert_eq!(code, Code::Unauthenticated, "attempt {attempt}");
    }
    let status = auth.login(from_ip("nobody@example.com", WRONG, "198.51.100.99")).await.expect_err("limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = status.get_error_details();
    assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("RATE_LIMITED"));
    let retry = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry > Duration::from_secs(800) && retry <= Duration::from_secs(900), "{retry:?}");
    // Other emails are unaffected; the email is compared case-insensitively.
    let (code, _) = failure(auth.login(from_ip("NOBODY@example.com ", WRONG, "198.51.100.98")).await.map(drop));
    assert_eq!(code, Code::ResourceExhausted);
    let (code, _) = failure(auth.login(from_ip("somebody@example.com", WRONG, "198.51.100.97")).await.map(drop));
    assert_eq!(code, Code::Unauthenticated);
}

#[tokio::test]
async fn the_eleventh_attempt_from_one_ip_is_rate_limited() {
    let id = Identity::start().await;
    id.register("ipuser@example.com", "Ip").await;
    let mut auth = id.auth.clone();
    for n in 1..=10 {
        let (code, _) =
            failure(auth.login(from_ip(&format!("u{n}@example.com"), WRONG, "203.0.113.7")).await.map(drop));
        assert_eq!(code, Code::Unauthenticated);
    }
    let (code, reason) = failure(auth.login(from_ip("ipuser@example.com", PASSWORD, "203.0.113.7")).await.map(drop));
    assert_eq!((code, reason.as_str()), (Code::ResourceExhausted, "RATE_LIMITED"));
    auth.login(from_ip("ipuser@example.com", PASSWORD, "203.0.113.8")).await.expect("another IP signs in");
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_fail_identically_and_in_comparable_time() {
    let id = Identity::start().await;
    id.register("known@example.com", "Known").await;
    let auth = id.auth.clone();
    let attempt = |email: &'static str, n: u8| {
        let request = from_ip(email, WRONG, &format!("192.0.2.{n}"));
        let mut auth = auth.clone();
        async move {
            let started = Instant::now();
            let status = auth.login(request).await.expect_err("fails");
            (status, started.elapsed())
        }
    };
    let mut known = Duration::ZERO;
    let mut unknown = Duration::ZERO;
    for n in 0..3 {
        let (a, ta) = attempt("known@example.com", 2 * n).await;
        let (b, tb) = attempt("unknown@example.com", 2 * n + 1).await;
        assert_eq!((a.code(), a.message()), (b.code(), b.message()));
        assert_eq!(a.message(), "Invalid email or password");
        let reason = |s: &tonic::Status| s.get_error_details().error_info().map(|i| i.reason.clone());
        assert_eq!(reason(&a), reason(&b));
        assert_eq!(a.details(), b.details(), "identical error details");
        known += ta;
        unknown += tb;
    }
    // Both run one Argon2id verification; the rest is noise. A missing dummy hash would make the
    // unknown email several times faster.
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!((0.4..2.5).contains(&ratio), "unknown {unknown:?} vs known {known:?}");
}
