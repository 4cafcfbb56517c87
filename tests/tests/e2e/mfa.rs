//! Identity acceptance flow 7 (MFA) through the gateway: enrol with the password, confirm with a
//! TOTP code, sign in in two steps, replay and backup-code reuse refused, the attempt limit of an
//! mfa_token, and the security mail the user receives.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use trellis_identity::mfa;

use crate::common::{PASSWORD, Platform};

/// The TOTP code of `secret` for the step after `last` (or the current step's predecessor,
/// whichever is later), waiting while that step is more than one step ahead of the clock.
async fn code_after(secret: &[u8], last: &mut i64) -> String {
    loop {
        let current = mfa::step_at(chrono::Utc::now());
        let step = (*last + 1).max(current - 1);
        if step <= current + 1 {
            *last = step;
            return mfa::format_code(mfa::totp(secret, step));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn amr(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).expect("a JWS");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json");
    claims["amr"].clone()
}

#[tokio::test]
async fn mfa_sign_in_takes_a_fresh_code_or_an_unused_backup_code() {
    // A high lockout threshold, so that the attempt limit of one mfa_token shows on its own.
    let mut settings = trellis_identity::IdentityConfig::from_env().expect("identity settings");
    settings.lockout_threshold = 100;
    let p = Platform::start_with_identity(Some(settings)).await;
    let ada = p.register("Ada", "ada@example.com", None).await;

    let enrolled = p.post("/api/v1/auth/mfa/enroll", Some(&ada.token), json!({"password": PASSWORD})).await;
    assert_eq!(enrolled.status, StatusCode::OK, "{enrolled:?}");
    let secret = mfa::from_base32(enrolled.body["secret"].as_str().expect("secret")).expect("base32");
    assert!(enrolled.body["otpauth_url"].as_str().expect("url").starts_with("otpauth://totp/Trellis:ada@example.com?"));
    let mut last = i64::MIN;
    let code = code_after(&secret, &mut last).await;
    let verified = p.post("/api/v1/auth/mfa/verify", Some(&ada.token), json!({"code": code})).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    let backup: Vec<String> = verified.body["backup_codes"]
        .as_array()
        .expect("backup codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(backup.len(), 10);
    let alert = p.mail_to("ada@example.com", "Two-factor authentication was turned on").await;
    assert!(alert.body().contains("ada@example.com"), "{}", alert.body());

    let login = || p.post("/api/v1/auth/login", None, json!({"email": "ada@example.com", "password": PASSWORD}));
    let first = login().await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.body["requires_mfa"], true);
    assert_eq!(first.body["mfa_methods"], json!(["totp", "backup_code"]));
    assert!(first.body.get("access_token").is_none_or(|t| t == ""), "no tokens yet: {}", first.body);
    let mfa_token = first.body["mfa_token"].as_str().expect("mfa_token").to_string();

    let challenge = |body: Value| p.post("/api/v1/auth/mfa/challenge", None, body);
    let wrong = challenge(json!({"mfa_token": mfa_token, "code": "000000"})).await;
    assert_eq!((wrong.status, wrong.error_code()), (StatusCode::UNAUTHORIZED, "MFA_CODE_INVALID"));
    let code = code_after(&secret, &mut last).await;
    let passed = challenge(json!({"mfa_token": mfa_token, "code": code})).await;
    assert_eq!(passed.status, StatusCode::OK, "{passed:?}");
    let token = passed.body["access_token"].as_str().expect("access token").to_string();
    assert_eq!(amr(&token), json!(["pwd", "otp"]));
    assert_eq!(p.get("/api/v1/users/me/sessions", &token).await.status, StatusCode::OK, "the token works");

    // Replaying the accepted code on a new sign-in.
    let second = login().await.body["mfa_token"].as_str().expect("mfa_token").to_string();
    let replay = challenge(json!({"mfa_token": second, "code": code})).await;
    assert_eq!((replay.status, replay.error_code()), (StatusCode::UNAUTHORIZED, "MFA_CODE_INVALID"));
    // A backup code works once.
    let with_backup = challenge(json!({"mfa_token": second, "backup_code": backup[0]})).await;
    assert_eq!(with_backup.status, StatusCode::OK, "{with_backup:?}");
    assert_eq!(with_backup.body["backup_codes_remaining"], 9);
    let third = login().await.body["mfa_token"].as_str().expect("mfa_token").to_string();
    let spent = challenge(json!({"mfa_token": third, "backup_code": backup[0]})).await;
    assert_eq!((spent.status, spent.error_code()), (StatusCode::UNAUTHORIZED, "MFA_CODE_INVALID"));

    // The 6th attempt on one mfa_token is refused, even with a valid code.
    let fourth = login().await.body["mfa_token"].as_str().expect("mfa_token").to_string();
    for attempt in 1..=5 {
        let wrong = challenge(json!({"mfa_token": fourth, "code": "000000"})).await;
        assert_eq!(wrong.error_code(), "MFA_CODE_INVALID", "attempt {attempt}");
    }
    let sixth = challenge(json!({"mfa_token": fourth, "backup_code": backup[1]})).await;
    assert_eq!((sixth.status, sixth.error_code()), (StatusCode::UNAUTHORIZED, "MFA_TOKEN_INVALID"));
}
