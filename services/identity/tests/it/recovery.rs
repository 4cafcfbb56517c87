//! Email verification, forgot/reset password and ChangePassword over gRPC. The links are read
//! from the events identity publishes (as notifications receives them) and followed.

use tonic::Code;
use trellis_proto::trellis::identity::v1 as pb;

use crate::common::{Identity, PASSWORD, bearer, failure, violated_fields};

const NEW_PASSWORD: &str = "quiet-meadow-compass-77";

fn token_of(link: &str) -> String {
    link.split_once("token=").map(|(_, t)| t.to_string()).expect("a token in the link")
}

async fn forgot(id: &Identity, email: &str) -> pb::ForgotPasswordResponse {
    id.auth
        .clone()
        .forgot_password(pb::ForgotPasswordRequest { email: email.into() })
        .await
        .expect("forgot")
        .into_inner()
}

async fn reset(id: &Identity, token: &str, password: &str) -> Result<pb::ResetPasswordResponse, tonic::Status> {
    let request = pb::ResetPasswordRequest { token: token.into(), new_password: password.into() };
    id.auth.clone().reset_password(request).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn forgot_password_answers_the_same_and_the_reset_link_works_once_and_ends_every_session() {
    let id = Identity::start().await;
    let registered = id.register("rey@example.com", "Rey").await;
    let signed_in = id.login("rey@example.com", PASSWORD).await.expect("login");

    let unknown = forgot(&id, "nobody@example.com").await;
    assert!(id.payloads::<pb::PasswordResetRequested>("identity.user.password_reset_requested").await.is_empty());
    let known = forgot(&id, "REY@example.com").await;
    assert_eq!(unknown, known, "identical answers");
    let sent: Vec<pb::PasswordResetRequested> = id.payloads("identity.user.password_reset_requested").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].email, "rey@example.com");
    assert!(sent[0].link_url.starts_with("http") && sent[0].link_url.contains("/reset-password?token="));
    let token = token_of(&sent[0].link_url);

    // Stored only as its SHA-256.
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("select token_hash from identity.email_tokens where purpose = 'reset_password'")
            .fetch_all(&id.owner)
            .await
            .expect("tokens");
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token.as_bytes());
    assert_eq!(stored[0].len(), 32);

    // A weak new password is a field violation and spends nothing.
    let weak = reset(&id, &token, "short").await.expect_err("weak");
    assert_eq!(violated_fields(&weak), vec!["new_password".to_string()]);
    reset(&id, &token, NEW_PASSWORD).await.expect("reset");

    let (code, reason) = failure(reset(&id, &token, "another-fine-password-9").await);
    assert_eq!((code, reason.as_str()), (Code::InvalidArgument, "TOKEN_INVALID"), "single use");
    for refresh in [&registered.refresh_token, &signed_in.refresh_token] {
        let (code, _) = failure(id.refresh(refresh).await);
        assert_eq!(code, Code::Unauthenticated, "every session ended");
    }
    let (code, reason) = failure(id.login("rey@example.com", PASSWORD).await);
    assert_eq!((code, reason.as_str()), (Code::Unauthenticated, "INVALID_CREDENTIALS"));
    id.login("rey@example.com", NEW_PASSWORD).await.expect("the new password works");
    let changed: Vec<pb::PasswordChanged> = id.payloads("identity.user.password_changed").await;
    assert_eq!(changed.iter().map(|c| c.via()).collect::<Vec<_>>(), vec![pb::PasswordChangeMethod::Reset]);
    let reasons: Vec<_> =
        id.payloads::<pb::SessionRevoked>("identity.session.revoked").await.iter().map(|r| r.reason()).collect();
    assert_eq!(reasons, vec![pb::SessionRevokeReason::PasswordReset; 2]);

    // A token past its hour is refused; a newer request spends the older token.
    forgot(&id, "rey@example.com").await;
    forgot(&id, "rey@example.com").await;
    let sent: Vec<pb::PasswordResetRequested> = id.payloads("identity.user.password_reset_requested").await;
    assert_eq!(sent.len(), 3);
    let (older, newest) = (token_of(&sent[1].link_url), token_of(&sent[2].link_url));
    let (_, reason) = failure(reset(&id, &older, "older-token-password-1").await);
    assert_eq!(reason, "TOKEN_INVALID", "superseded");
    sqlx::query("update identity.email_tokens set expires_at = now() - interval '1 second' where used_at is null")
        .execute(&id.owner)
        .await
        .expect("age the token");
    let (_, reason) = failure(reset(&id, &newest, "expired-token-password-1").await);
    assert_eq!(reason, "TOKEN_INVALID", "expired");
    // Past three requests an hour nothing more is sent, with the same answer.
    assert_eq!(forgot(&id, "rey@example.com").await, unknown);
    assert_eq!(id.payloads::<pb::PasswordResetRequested>("identity.user.password_reset_requested").await.len(), 3);
}

#[tokio::test]
async fn registration_sends_a_verification_link_that_verifies_the_email_once() {
    let id = Identity::start().await;
    let registered = id.register("val@example.com", "Val").await;
    assert!(registered.requires_email_verification);
    let requested: Vec<pb::EmailVerificationRequested> =
        id.payloads("identity.user.email_verification_requested").await;
    assert_eq!(requested.len(), 1);
    assert_eq!(
        (requested[0].email.as_str(), requested[0].purpose()),
        ("val@example.com", pb::EmailTokenPurpose::VerifyEmail)
    );
    let token = token_of(&requested[0].link_url);

    // A resend replaces the token.
    let mut auth = id.auth.clone();
    auth.resend_verification(bearer(pb::ResendVerificationRequest {}, &registered.access_token)).await.expect("resend");
    let requested: Vec<pb::EmailVerificationRequested> =
        id.payloads("identity.user.email_verification_requested").await;
    assert_eq!(requested.len(), 2);
    let (_, reason) = failure(auth.verify_email(pb::VerifyEmailRequest { token }).await);
    assert_eq!(reason, "TOKEN_INVALID", "the first link was replaced");

    let token = token_of(&requested[1].link_url);
    let verified =
        auth.verify_email(pb::VerifyEmailRequest { token: token.clone() }).await.expect("verify").into_inner();
    assert_eq!(verified.email, "val@example.com");
    let (code, reason) = failure(auth.verify_email(pb::VerifyEmailRequest { token }).await);
    assert_eq!((code, reason.as_str()), (Code::InvalidArgument, "TOKEN_INVALID"));
    let user = id.login("val@example.com", PASSWORD).await.expect("login").user.expect("user");
    assert!(user.email_verified);
    assert_eq!(id.payloads::<pb::EmailVerified>("identity.user.email_verified").await.len(), 1);
    let (code, reason) =
        failure(auth.resend_verification(bearer(pb::ResendVerificationRequest {}, &registered.access_token)).await);
    assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "ALREADY_VERIFIED"));
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_the_other_sessions_only() {
    let id = Identity::start().await;
    let registered = id.register("cam@example.com", "Cam").await;
    let current = id.login("cam@example.com", PASSWORD).await.expect("login");
    let mut auth = id.auth.clone();
    let change = |current_password: &str, new_password: &str| {
        bearer(
            pb::ChangePasswordRequest { current_password: current_password.into(), new_password: new_password.into() },
            &current.access_token,
        )
    };
    let (code, reason) = failure(auth.change_password(change("wrong-password-entirely", NEW_PASSWORD)).await);
    assert_eq!((code, reason.as_str()), (Code::Unauthenticated, "INVALID_CREDENTIALS"));
    let (code, reason) = failure(auth.change_password(change(PASSWORD, PASSWORD)).await);
    assert_eq!((code, reason.as_str()), (Code::InvalidArgument, "PASSWORD_UNCHANGED"));

    let done = auth.change_password(change(PASSWORD, NEW_PASSWORD)).await.expect("change").into_inner();
    assert_eq!(done.revoked_sessions, 1, "the registration's session");
    let (code, _) = failure(id.refresh(&registered.refresh_token).await);
    assert_eq!(code, Code::Unauthenticated);
    id.refresh(&current.refresh_token).await.expect("the current session is kept");
    id.login("cam@example.com", NEW_PASSWORD).await.expect("new password");
    let changed: Vec<pb::PasswordChanged> = id.payloads("identity.user.password_changed").await;
    assert_eq!(changed.iter().map(|c| c.via()).collect::<Vec<_>>(), vec![pb::PasswordChangeMethod::Change]);
}

async fn change_email(
    id: &Identity,
    access_token: &str,
    new_email: &str,
    password: &str,
) -> Result<pb::ChangeEmailResponse, tonic::Status> {
    let request = pb::ChangeEmailRequest { new_email: new_email.into(), password: password.into() };
    id.auth.clone().change_email(bearer(request, access_token)).await.map(|r| r.into_inner())
}

async fn change_requests(id: &Identity) -> Vec<pb::EmailVerificationRequested> {
    id.payloads::<pb::EmailVerificationRequested>("identity.user.email_verification_requested")
        .await
        .into_iter()
        .filter(|e| e.purpose == i32::from(pb::EmailTokenPurpose::ChangeEmail))
        .collect()
}

#[tokio::test]
async fn changing_the_email_sends_a_link_to_the_new_address_and_swaps_it_only_when_used() {
    let id = Identity::start().await;
    let sam = id.register("sam@example.com", "Sam").await;
    id.register("taken@example.com", "Tay").await;
    let mut auth = id.auth.clone();

    // A wrong password, a bad or unchanged address, or a taken one: refused, nothing sent.
    let (code, reason) = failure(change_email(&id, &sam.access_token, "new@example.com", "wrong-password-1").await);
    assert_eq!((code, reason.as_str()), (Code::Unauthenticated, "INVALID_CREDENTIALS"));
    let bad = change_email(&id, &sam.access_token, "not-an-address", PASSWORD).await.expect_err("bad");
    assert_eq!((bad.code(), violated_fields(&bad)), (Code::InvalidArgument, vec!["new_email".to_string()]));
    let same = change_email(&id, &sam.access_token, "SAM@example.com", PASSWORD).await.expect_err("same");
    assert_eq!(violated_fields(&same), vec!["new_email".to_string()]);
    let (code, reason) = failure(change_email(&id, &sam.access_token, "Taken@example.com", PASSWORD).await);
    assert_eq!((code, reason.as_str()), (Code::AlreadyExists, "EMAIL_TAKEN"));
    let unauthenticated = auth.change_email(pb::ChangeEmailRequest::default()).await.expect_err("no token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    assert!(change_requests(&id).await.is_empty());

    let pending = change_email(&id, &sam.access_token, " New@Example.com ", PASSWORD).await.expect("change");
    assert_eq!(pending.pending_email, "new@example.com");
    let sent = change_requests(&id).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].email, "new@example.com", "the link goes to the new address");
    assert!(sent[0].link_url.contains("/verify-email?token="));
    // Until the link is used, the current address is the account's.
    assert!(id.login("sam@example.com", PASSWORD).await.is_ok());
    assert_eq!(failure(id.login("new@example.com", PASSWORD).await).0, Code::Unauthenticated);

    let verified = auth
        .verify_email(pb::VerifyEmailRequest { token: token_of(&sent[0].link_url) })
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(verified.email, "new@example.com");
    assert!(id.login("new@example.com", PASSWORD).await.is_ok());
    assert_eq!(failure(id.login("sam@example.com", PASSWORD).await).0, Code::Unauthenticated);
    let changed: Vec<pb::EmailChanged> = id.payloads("identity.user.email_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!((changed[0].email.as_str(), changed[0].previous_email.as_str()), ("new@example.com", "sam@example.com"));
    let (_, reason) = failure(auth.verify_email(pb::VerifyEmailRequest { token: token_of(&sent[0].link_url) }).await);
    assert_eq!(reason, "TOKEN_INVALID");
}

#[tokio::test]
async fn an_address_taken_before_the_link_is_used_is_not_swapped_in() {
    let id = Identity::start().await;
    let uma = id.register("uma@example.com", "Uma").await;
    change_email(&id, &uma.access_token, "wanted@example.com", PASSWORD).await.expect("change");
    let sent: Vec<pb::EmailVerificationRequested> = id.payloads("identity.user.email_verification_requested").await;
    let link = sent.iter().find(|e| e.email == "wanted@example.com").map(|e| e.link_url.clone()).expect("link");
    // Someone registers the address first.
    id.register("wanted@example.com", "Vic").await;
    let mut auth = id.auth.clone();
    let (code, reason) = failure(auth.verify_email(pb::VerifyEmailRequest { token: token_of(&link) }).await);
    assert_eq!((code, reason.as_str()), (Code::AlreadyExists, "EMAIL_TAKEN"));
    assert!(id.login("uma@example.com", PASSWORD).await.is_ok(), "Uma keeps her address");
    assert!(id.payloads::<pb::EmailChanged>("identity.user.email_changed").await.is_empty());
}
