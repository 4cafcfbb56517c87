//! Identity acceptance flows 5 and 6 and email verification through the gateway, reading the
//! links from the mail the cell sends (captured by a local SMTP server), as a user would.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{PASSWORD, Platform};

#[tokio::test]
async fn password_reset_answers_alike_and_the_mailed_link_resets_once_and_signs_out_everywhere() {
    let p = Platform::start().await;
    let bob = p.register("Bob", "bob@example.com", None).await;
    assert_eq!(p.get("/api/v1/tasks", &bob.token).await.status, StatusCode::OK);

    let unknown = p.post("/api/v1/auth/forgot-password", None, json!({"email": "ghost@example.com"})).await;
    let known = p.post("/api/v1/auth/forgot-password", None, json!({"email": "bob@example.com"})).await;
    assert_eq!((unknown.status, known.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(unknown.body, known.body, "identical bodies");
    let reset = p.mail_to("bob@example.com", "Reset your password").await;
    assert!(p.mail.messages_to("ghost@example.com").is_empty(), "nothing is sent to an unknown address");
    let token = Platform::token_in(&reset, "/reset-password");

    let new_password = "brand-new-garden-path-31";
    let answer =
        p.post("/api/v1/auth/reset-password", None, json!({"token": token, "new_password": new_password})).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let old_session =
        p.poll("/api/v1/tasks", &bob.token, Duration::from_secs(1), |a| a.status == StatusCode::UNAUTHORIZED);
    assert_eq!(old_session.await.status, StatusCode::UNAUTHORIZED);
    let old = p.post("/api/v1/auth/login", None, json!({"email": "bob@example.com", "password": PASSWORD})).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = p.post("/api/v1/auth/login", None, json!({"email": "bob@example.com", "password": new_password})).await;
    assert_eq!(new.status, StatusCode::OK, "{new:?}");
    let again = p
        .post("/api/v1/auth/reset-password", None, json!({"token": token, "new_password": "yet-another-one-99"}))
        .await;
    assert_eq!((again.status, again.error_code()), (StatusCode::BAD_REQUEST, "TOKEN_INVALID"));

    // The reset is confirmed by a security alert, and the reset mail was sent once.
    let alert = p.mail_to("bob@example.com", "Your password was changed").await;
    assert!(alert.body().contains("reset with a link"), "{}", alert.body());
    let resets = p.mail.messages_to("bob@example.com").into_iter().filter(|m| m.subject() == "Reset your password");
    assert_eq!(resets.count(), 1);
}

#[tokio::test]
async fn a_new_account_is_verified_by_following_the_link_in_its_verification_mail() {
    let p = Platform::start().await;
    let ada = p.register("Ada", "ada@example.com", None).await;
    let mail = p.mail_to("ada@example.com", "Verify your email address").await;
    assert_eq!(mail.header("to").as_deref(), Some("ada@example.com"));
    let welcome = p.mail_to("ada@example.com", "Welcome to Trellis, Ada").await;
    assert!(welcome.body().contains("Hi Ada,"), "{}", welcome.body());
    let token = Platform::token_in(&mail, "/verify-email");

    let verified = p.post("/api/v1/auth/verify-email", None, json!({"token": token})).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    assert_eq!(verified.body["email"], "ada@example.com");
    let resend = p.post("/api/v1/auth/verify-email/resend", Some(&ada.token), json!({})).await;
    assert_eq!((resend.status, resend.error_code()), (StatusCode::CONFLICT, "ALREADY_VERIFIED"));
    let reused = p.post("/api/v1/auth/verify-email", None, json!({"token": token})).await;
    assert_eq!((reused.status, reused.error_code()), (StatusCode::BAD_REQUEST, "TOKEN_INVALID"));
}

#[tokio::test]
async fn changing_password_and_email_flow_6_with_the_links_read_from_mail() {
    let p = Platform::start().await;
    let kim = p.register("Kim", "kim@example.com", None).await;
    let other_device = p.login("kim@example.com").await;

    // Change password: a wrong current password → 401; success keeps this session only.
    let wrong = p
        .post(
            "/api/v1/users/me/change-password",
            Some(&kim.token),
            json!({"current_password": "not-my-password-0", "new_password": "fresh-river-stone-58"}),
        )
        .await;
    assert_eq!((wrong.status, wrong.error_code()), (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"));
    let changed = p
        .post(
            "/api/v1/users/me/change-password",
            Some(&kim.token),
            json!({"current_password": PASSWORD, "new_password": "fresh-river-stone-58"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{changed:?}");
    let other =
        p.poll("/api/v1/tasks", &other_device.token, Duration::from_secs(1), |a| a.status == StatusCode::UNAUTHORIZED);
    assert_eq!(other.await.status, StatusCode::UNAUTHORIZED, "other sessions end");
    assert_eq!(p.get("/api/v1/tasks", &kim.token).await.status, StatusCode::OK, "the current one is kept");
    p.mail_to("kim@example.com", "Your password was changed").await;

    // Change email: refused with the wrong password or a taken address.
    p.register("Lou", "lou@example.com", None).await;
    let path = "/api/v1/users/me/email";
    let wrong = p.post(path, Some(&kim.token), json!({"new_email": "kim@new.example", "password": PASSWORD})).await;
    assert_eq!((wrong.status, wrong.error_code()), (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"));
    let taken = p
        .post(path, Some(&kim.token), json!({"new_email": "lou@example.com", "password": "fresh-river-stone-58"}))
        .await;
    assert_eq!((taken.status, taken.error_code()), (StatusCode::CONFLICT, "EMAIL_TAKEN"));
    let bad = p.post(path, Some(&kim.token), json!({"new_email": "kim", "password": "fresh-river-stone-58"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["details"][0]["field"], "new_email", "{bad:?}");

    let pending = p
        .post(path, Some(&kim.token), json!({"new_email": "Kim@New.example", "password": "fresh-river-stone-58"}))
        .await;
    assert_eq!(pending.status, StatusCode::OK, "{pending:?}");
    assert_eq!(pending.body["pending_email"], "kim@new.example");

    // The link goes to the new address; until it is used the old address signs in.
    let confirm = p.mail_to("kim@new.example", "Confirm your new email address").await;
    let signin = |email: &str| json!({"email": email, "password": "fresh-river-stone-58"});
    assert_eq!(p.post("/api/v1/auth/login", None, signin("kim@example.com")).await.status, StatusCode::OK);
    assert_eq!(p.post("/api/v1/auth/login", None, signin("kim@new.example")).await.status, StatusCode::UNAUTHORIZED);
    let token = Platform::token_in(&confirm, "/verify-email");
    let verified = p.post("/api/v1/auth/verify-email", None, json!({"token": token})).await;
    assert_eq!((verified.status, verified.body["email"].as_str()), (StatusCode::OK, Some("kim@new.example")));

    assert_eq!(p.post("/api/v1/auth/login", None, signin("kim@new.example")).await.status, StatusCode::OK);
    assert_eq!(p.post("/api/v1/auth/login", None, signin("kim@example.com")).await.status, StatusCode::UNAUTHORIZED);
    // The old address is told, and security mail now goes to the new one.
    let notice = p.mail_to("kim@example.com", "Your email address was changed").await;
    assert!(notice.body().contains("kim@new.example"), "{}", notice.body());
    let reset = p.post("/api/v1/auth/forgot-password", None, json!({"email": "kim@new.example"})).await;
    assert_eq!(reset.status, StatusCode::OK);
    p.mail_to("kim@new.example", "Reset your password").await;
}
