//! MFA (spec flow 7, rule 18): enrolment with a password step-up, confirmation with a TOTP code,
//! the second step of sign-in with its attempt limit and replay protection, backup codes, and
//! turning MFA off.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Code;
use trellis_identity::mfa;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::mfa_service_client::MfaServiceClient;

use crate::common::{Identity, PASSWORD, bearer, failure};

/// An authenticator app: the secret, and the last step it handed out (each code is good once).
pub struct Authenticator {
    secret: Vec<u8>,
    last_step: i64,
}

impl Authenticator {
    pub fn new(secret_base32: &str) -> Self {
        Self { secret: mfa::from_base32(secret_base32).expect("base32 secret"), last_step: i64::MIN }
    }

    /// A code of a step after every code used so far, waiting for the clock when the next such
    /// step is more than one step ahead (codes of the next step are accepted, rule 18).
    pub async fn fresh_code(&mut self) -> String {
        loop {
            let current = mfa::step_at(chrono::Utc::now());
            let step = (self.last_step.saturating_add(1)).max(current - 1);
            if step <= current + 1 {
                self.last_step = step;
                return mfa::format_code(mfa::totp(&self.secret, step));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The code handed out last (to replay it).
    pub fn last_code(&self) -> String {
        mfa::format_code(mfa::totp(&self.secret, self.last_step))
    }
}

/// The `amr` claim of an access token.
pub fn amr(access_token: &str) -> Vec<String> {
    let payload = access_token.split('.').nth(1).expect("a JWS");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json claims");
    claims["amr"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

async fn client(id: &Identity) -> MfaServiceClient<tonic::transport::Channel> {
    MfaServiceClient::new(id.cell.channel("identity").await)
}

/// Registers `email` and turns MFA on; returns the access token, the authenticator and the
/// backup codes.
async fn with_mfa(id: &Identity, email: &str) -> (String, Authenticator, Vec<String>) {
    let token = id.register(email, "Mfa").await.access_token;
    let mut mfa = client(id).await;
    let enrolled =
        mfa.enroll(bearer(pb::EnrollRequest { password: PASSWORD.into() }, &token)).await.expect("enroll").into_inner();
    let mut app = Authenticator::new(&enrolled.secret);
    let code = app.fresh_code().await;
    let verified = mfa.verify(bearer(pb::VerifyRequest { code }, &token)).await.expect("verify").into_inner();
    (token, app, verified.backup_codes)
}

async fn challenge(
    id: &Identity,
    mfa_token: &str,
    code: &str,
    backup: &str,
) -> Result<pb::ChallengeResponse, tonic::Status> {
    let request = pb::ChallengeRequest { mfa_token: mfa_token.into(), code: code.into(), backup_code: backup.into() };
    client(id).await.challenge(request).await.map(|r| r.into_inner())
}

async fn mfa_token(id: &Identity, email: &str) -> String {
    let answer = id.login(email, PASSWORD).await.expect("password accepted");
    assert!(answer.requires_mfa, "{answer:?}");
    assert!(answer.access_token.is_empty() && answer.refresh_token.is_empty(), "no tokens before the second factor");
    assert_eq!(answer.mfa_methods, ["totp", "backup_code"]);
    answer.mfa_token
}

#[tokio::test]
async fn enrolment_needs_the_password_and_a_code_and_yields_ten_backup_codes() {
    let id = Identity::start().await;
    let reg = id.register("enrol@example.com", "Enrol").await;
    let token = reg.access_token;
    let mut mfa = client(&id).await;

    let wrong = mfa.enroll(bearer(pb::EnrollRequest { password: "not-the-password-x".into() }, &token)).await;
    assert_eq!(failure(wrong), (Code::Unauthenticated, "INVALID_CREDENTIALS".into()));
    let unenrolled = mfa.verify(bearer(pb::VerifyRequest { code: "123456".into() }, &token)).await;
    assert_eq!(failure(unenrolled), (Code::FailedPrecondition, "MFA_NOT_ENROLLED".into()));

    let enrolled =
        mfa.enroll(bearer(pb::EnrollRequest { password: PASSWORD.into() }, &token)).await.expect("enroll").into_inner();
    assert_eq!(enrolled.secret.len(), 32, "20 bytes in base32");
    assert_eq!(
        enrolled.otpauth_url,
        format!(
            "otpauth://totp/Trellis:enrol@example.com?secret={}&issuer=Trellis&algorithm=SHA1&digits=6&period=30",
            enrolled.secret
        )
    );
    // The secret is sealed at rest, bound to the user, under a named key.
    let (sealed, key_id, confirmed): (Vec<u8>, String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select secret_ciphertext, key_id, confirmed_at from identity.mfa_totp")
            .fetch_one(&id.owner)
            .await
            .expect("one secret");
    let secret = mfa::from_base32(&enrolled.secret).expect("base32");
    assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_slice()), "the secret is not stored in clear");
    assert!(sealed.len() >= secret.len() + 12 + 16, "nonce, ciphertext and tag");
    assert!(!key_id.is_empty());
    assert_eq!(confirmed, None, "pending until verified");
    let user: (bool,) =
        sqlx::query_as("select mfa_enabled from identity.users").fetch_one(&id.owner).await.expect("user");
    assert!(!user.0, "not on before Verify");

    let mut app = Authenticator::new(&enrolled.secret);
    let wrong_code = mfa.verify(bearer(pb::VerifyRequest { code: "000000".into() }, &token)).await;
    let status = wrong_code.expect_err("a wrong code");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(crate::common::violated_fields(&status), ["code"]);
    let code = app.fresh_code().await;
    let verified = mfa.verify(bearer(pb::VerifyRequest { code }, &token)).await.expect("verify").into_inner();
    assert_eq!(verified.backup_codes.len(), 10);
    let distinct: std::collections::HashSet<_> = verified.backup_codes.iter().collect();
    assert_eq!(distinct.len(), 10);
    for code in &verified.backup_codes {
        assert!(mfa::normalize_backup_code(code).is_some() && code.len() == 9 && &code[4..5] == "-", "{code}");
    }
    // Stored as Argon2id hashes only.
    let hashes: Vec<String> = sqlx::query_scalar("select code_hash from identity.mfa_backup_codes")
        .fetch_all(&id.owner)
        .await
        .expect("codes");
    assert_eq!(hashes.len(), 10);
    assert!(hashes.iter().all(|h| h.starts_with("$argon2id$")));
    assert!(!hashes.iter().any(|h| verified.backup_codes.iter().any(|c| h.contains(&c.replace('-', "")))));

    let enabled: Vec<pb::MfaEnabled> = id.payloads("identity.user.mfa_enabled").await;
    assert_eq!(enabled.len(), 1);
    assert_eq!(enabled[0].user_id, reg.user.expect("user").id);
    let again = mfa.enroll(bearer(pb::EnrollRequest { password: PASSWORD.into() }, &token)).await;
    assert_eq!(failure(again), (Code::FailedPrecondition, "MFA_ALREADY_ENABLED".into()));
}

#[tokio::test]
async fn sign_in_with_mfa_needs_a_fresh_code_and_a_backup_code_works_once() {
    let id = Identity::start().await;
    let (_, mut app, backup_codes) = with_mfa(&id, "two@example.com").await;

    let token = mfa_token(&id, "two@example.com").await;
    let wrong = challenge(&id, &token, "000000", "").await;
    assert_eq!(failure(wrong), (Code::Unauthenticated, "MFA_CODE_INVALID".into()));
    let failed: Vec<pb::LoginFailed> = id.payloads("identity.user.login_failed").await;
    assert_eq!(failed.last().map(|f| f.reason()), Some(pb::LoginFailureReason::MfaFailed));

    let code = app.fresh_code().await;
    let passed = challenge(&id, &token, &code, "").await.expect("a valid code");
    assert!(!passed.access_token.is_empty() && !passed.refresh_token.is_empty());
    assert_eq!(amr(&passed.access_token), ["pwd", "otp"]);
    assert_eq!(passed.backup_codes_remaining, 10);
    let claims = id.verify(&passed.access_token).await;
    assert_eq!(claims.sub, passed.user.as_ref().expect("user").id);
    // A refreshed token keeps the session's methods.
    let refreshed = id.refresh(&passed.refresh_token).await.expect("refresh");
    assert_eq!(amr(&refreshed.access_token), ["pwd", "otp"]);
    // The token completed its sign-in; it does not start another.
    let reused = challenge(&id, &token, "000000", "").await;
    assert_eq!(failure(reused), (Code::Unauthenticated, "MFA_TOKEN_INVALID".into()));

    // Replaying a code that was accepted fails on a new sign-in.
    let token = mfa_token(&id, "two@example.com").await;
    let replay = challenge(&id, &token, &app.last_code(), "").await;
    assert_eq!(failure(replay), (Code::Unauthenticated, "MFA_CODE_INVALID".into()));

    // A backup code works once; case and the dash do not matter.
    let backup = backup_codes[3].to_uppercase().replace('-', "");
    let passed = challenge(&id, &token, "", &backup).await.expect("a backup code");
    assert_eq!(amr(&passed.access_token), ["pwd", "otp"]);
    assert_eq!(passed.backup_codes_remaining, 9);
    let token = mfa_token(&id, "two@example.com").await;
    let spent = challenge(&id, &token, "", &backup_codes[3]).await;
    assert_eq!(failure(spent), (Code::Unauthenticated, "MFA_CODE_INVALID".into()));
    let both = challenge(&id, &token, "123456", &backup_codes[4]).await;
    assert_eq!(failure(both).0, Code::InvalidArgument);
    challenge(&id, &token, "", &backup_codes[4]).await.expect("another unused code");

    // Sessions record the second factor.
    let amrs: Vec<Vec<String>> = sqlx::query_scalar("select amr from identity.sessions order by created_at")
        .fetch_all(&id.owner)
        .await
        .expect("amr");
    assert_eq!(amrs[0], ["pwd"], "the registration session");
    assert!(amrs[1..].iter().all(|a| a == &["pwd", "otp"]), "{amrs:?}");
}

#[tokio::test]
async fn an_mfa_token_allows_five_attempts() {
    // A high lockout threshold isolates the per-token limit.
    let id = Identity::start_with(|s| s.lockout_threshold = 100).await;
    let (_, mut app, _) = with_mfa(&id, "five@example.com").await;
    let token = mfa_token(&id, "five@example.com").await;
    for attempt in 1..=5 {
        let wrong = challenge(&id, &token, "000000", "").await;
        assert_eq!(failure(wrong), (Code::Unauthenticated, "MFA_CODE_INVALID".into()), "attempt {attempt}");
    }
    let sixth = challenge(&id, &token, &app.fresh_code().await, "").await;
    assert_eq!(failure(sixth), (Code::Unauthenticated, "MFA_TOKEN_INVALID".into()), "even with the right code");
    let garbage = challenge(&id, "not-a-token", "123456", "").await;
    assert_eq!(failure(garbage), (Code::Unauthenticated, "MFA_TOKEN_INVALID".into()));
    // A new sign-in gets a new token.
    let token = mfa_token(&id, "five@example.com").await;
    challenge(&id, &token, &app.fresh_code().await, "").await.expect("a new token works");
}

#[tokio::test]
async fn wrong_codes_count_toward_the_lockout() {
    let id = Identity::start_with(|s| s.lockout_duration = Duration::from_secs(600)).await;
    with_mfa(&id, "locked@example.com").await;
    let token = mfa_token(&id, "locked@example.com").await;
    for _ in 0..5 {
        let wrong = challenge(&id, &token, "000000", "").await;
        assert_eq!(failure(wrong).1, "MFA_CODE_INVALID");
    }
    let locked: Vec<pb::UserLocked> = id.payloads("identity.user.locked").await;
    assert_eq!(locked.len(), 1, "the 5th wrong code locks the account");
    let login = id.login("locked@example.com", PASSWORD).await;
    assert_eq!(failure(login), (Code::Unauthenticated, "INVALID_CREDENTIALS".into()));
}

#[tokio::test]
async fn disabling_needs_the_password_and_a_fresh_code_and_regenerating_replaces_the_codes() {
    let id = Identity::start().await;
    let (token, mut app, old_codes) = with_mfa(&id, "off@example.com").await;
    let mut mfa = client(&id).await;

    // Regenerate with a current code: the old codes stop working.
    let regenerated = mfa
        .regenerate_backup_codes(bearer(pb::RegenerateBackupCodesRequest { code: app.fresh_code().await }, &token))
        .await
        .expect("regenerate")
        .into_inner();
    assert_eq!(regenerated.backup_codes.len(), 10);
    assert_eq!(id.payloads::<pb::BackupCodesRegenerated>("identity.user.backup_codes_regenerated").await.len(), 1);
    let pending = mfa_token(&id, "off@example.com").await;
    let old = challenge(&id, &pending, "", &old_codes[0]).await;
    assert_eq!(failure(old).1, "MFA_CODE_INVALID");
    let replayed =
        mfa.regenerate_backup_codes(bearer(pb::RegenerateBackupCodesRequest { code: app.last_code() }, &token)).await;
    assert_eq!(failure(replayed), (Code::InvalidArgument, "MFA_CODE_INVALID".into()));

    let wrong_password = mfa
        .disable(bearer(pb::DisableRequest { password: "not-the-password-x".into(), code: app.last_code() }, &token))
        .await;
    assert_eq!(failure(wrong_password), (Code::Unauthenticated, "INVALID_CREDENTIALS".into()));
    let stale =
        mfa.disable(bearer(pb::DisableRequest { password: PASSWORD.into(), code: app.last_code() }, &token)).await;
    assert_eq!(failure(stale), (Code::InvalidArgument, "MFA_CODE_INVALID".into()), "a used code is not fresh");
    // A (new) backup code counts as a fresh code for someone who lost the device.
    let request = pb::DisableRequest { password: PASSWORD.into(), code: regenerated.backup_codes[0].clone() };
    mfa.disable(bearer(request, &token)).await.expect("disable");
    assert_eq!(id.payloads::<pb::MfaDisabled>("identity.user.mfa_disabled").await.len(), 1);
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from identity.mfa_totp) + (select count(*) from identity.mfa_backup_codes)",
    )
    .fetch_one(&id.owner)
    .await
    .expect("count");
    assert_eq!(left, 0, "the secret and the codes are deleted");

    // The password alone signs in again.
    let answer = id.login("off@example.com", PASSWORD).await.expect("login");
    assert!(!answer.requires_mfa && !answer.access_token.is_empty());
    assert_eq!(amr(&answer.access_token), ["pwd"]);
    let again =
        mfa.disable(bearer(pb::DisableRequest { password: PASSWORD.into(), code: "123456".into() }, &token)).await;
    assert_eq!(failure(again), (Code::FailedPrecondition, "MFA_NOT_ENABLED".into()));
}
