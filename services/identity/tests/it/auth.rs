//! Register, Login and Refresh over gRPC.

use tonic::Code;
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::common::{Identity, PASSWORD, failure, registration, violated_fields};

#[tokio::test]
async fn registering_creates_a_personal_org_owned_by_the_user_and_signs_in() {
    let id = Identity::start().await;
    let r = id.register("  Ada@Example.com ", "Ada").await;

    let user = r.user.expect("user");
    assert_eq!(user.email, "ada@example.com");
    assert_eq!((user.first_name.as_str(), user.name.as_str()), ("Ada", "Ada Tester"));
    assert!(!user.email_verified);
    assert!(r.requires_email_verification);
    assert_eq!(r.token_type, "Bearer");
    assert_eq!(r.expires_in, 900);
    assert!(!r.refresh_token.is_empty());

    let claims = id.verify(&r.access_token).await;
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.roles, vec!["owner".to_string()]);
    assert_eq!(claims.plan.as_deref(), Some("free"));
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(claims.sid.is_some());
    let org_id: Uuid = claims.org.as_deref().expect("org claim").parse().expect("uuid");

    let (name, slug, personal): (String, String, bool) =
        sqlx::query_as("select name, slug, personal from identity.organizations where id = $1")
            .bind(org_id)
            .fetch_one(&id.owner)
            .await
            .expect("the personal organization");
    assert_eq!((name.as_str(), slug.as_str(), personal), ("Ada's workspace", "ada-s-workspace", true));
    let role: String = sqlx::query_scalar("select role from identity.org_members where org_id = $1 and user_id = $2")
        .bind(org_id)
        .bind(user.id.parse::<Uuid>().expect("uuid"))
        .fetch_one(&id.owner)
        .await
        .expect("membership");
    assert_eq!(role, "owner");

    let registered: Vec<pb::UserRegistered> = id.payloads("identity.user.registered").await;
    assert_eq!(registered.len(), 1);
    assert_eq!((registered[0].user_id.as_str(), registered[0].email.as_str()), (user.id.as_str(), "ada@example.com"));
    assert_eq!(registered[0].via(), pb::RegistrationMethod::Password);
    let added: Vec<pb::MemberAdded> = id.payloads("identity.member.added").await;
    assert_eq!(added.len(), 1);
    assert_eq!(
        (added[0].role(), added[0].via(), added[0].version),
        (pb::OrgRole::Owner, pb::MembershipSource::Created, 1)
    );
    assert_eq!(added[0].org_id, org_id.to_string());
    let envelope = &id.outbox("identity.member.added").await[0];
    assert_eq!(envelope.org_id, org_id.to_string());
    assert_eq!(envelope.actor.as_ref().map(|a| (a.kind.as_str(), a.id.as_str())), Some(("user", user.id.as_str())));
    let created: Vec<pb::OrganizationCreated> = id.payloads("identity.organization.created").await;
    assert_eq!((created[0].slug.as_str(), created[0].owner_id.as_str()), ("ada-s-workspace", user.id.as_str()));

    // The stored credentials: an Argon2id PHC string, and only a hash of the refresh token.
    let hash: String = sqlx::query_scalar("select password_hash from identity.users where email = 'ada@example.com'")
        .fetch_one(&id.owner)
        .await
        .expect("user row");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    let stored_plain: bool = sqlx::query_scalar(
        "select exists(select 1 from identity.refresh_tokens where token_hash = convert_to($1, 'UTF8'))",
    )
    .bind(&r.refresh_token)
    .fetch_one(&id.owner)
    .await
    .expect("query");
    assert!(!stored_plain);
}

#[tokio::test]
async fn a_named_organization_and_colliding_slugs_get_distinct_slugs() {
    let id = Identity::start().await;
    let mut request = registration("one@example.com", "Sam");
    request.organization_name = "Acme Labs".into();
    id.try_register(request).await.expect("register");
    let mut request = registration("two@example.com", "Sam");
    request.organization_name = "ACME labs!".into();
    id.try_register(request).await.expect("register with a colliding slug");
    let slugs: Vec<String> = sqlx::query_scalar("select slug from identity.organizations order by created_at")
        .fetch_all(&id.owner)
        .await
        .expect("slugs");
    assert_eq!(slugs[0], "acme-labs");
    assert!(slugs[1].starts_with("acme-labs-") && slugs[1].len() == "acme-labs-".len() + 6, "{slugs:?}");
}

#[tokio::test]
async fn the_same_email_in_other_letter_case_is_taken() {
    let id = Identity::start().await;
    id.register("grace@example.com", "Grace").await;
    let again = id.try_register(registration("GRACE@Example.COM", "Grace")).await;
    assert_eq!(failure(again), (Code::AlreadyExists, "EMAIL_TAKEN".into()));
    let users: i64 =
        sqlx::query_scalar("select count(*) from identity.users").fetch_one(&id.owner).await.expect("count");
    let orgs: i64 =
        sqlx::query_scalar("select count(*) from identity.organizations").fetch_one(&id.owner).await.expect("count");
    assert_eq!((users, orgs), (1, 1), "nothing of the refused registration is kept");
}

#[tokio::test]
async fn weak_passwords_are_field_violations() {
    let id = Identity::start().await;
    for (password, reason) in [
        ("short-pass1", "PASSWORD_TOO_SHORT"),
        ("passwordpassword", "PASSWORD_TOO_COMMON"),
        ("PasswordPassword", "PASSWORD_TOO_COMMON"),
        ("hopper-rules-the-navy", "PASSWORD_CONTAINS_EMAIL"),
    ] {
        let mut request = registration("hopper@example.com", "Grace");
        request.password = password.into();
        let status = id.try_register(request).await.expect_err(password);
        assert_eq!(status.code(), Code::InvalidArgument, "{password}");
        assert_eq!(failure::<()>(Err(status.clone())).1, reason, "{password}");
        assert_eq!(violated_fields(&status), vec!["password".to_string()], "{password}");
    }
    let mut request = registration("hopper@example.com", "Grace");
    request.password = "x".repeat(129);
    assert_eq!(failure(id.try_register(request).await), (Code::InvalidArgument, "PASSWORD_TOO_LONG".into()));

    // Several bad fields: one VALIDATION_ERROR naming each.
    let request = pb::RegisterRequest { email: "not-an-email".into(), password: "short".into(), ..Default::default() };
    let status = id.try_register(request).await.expect_err("invalid");
    assert_eq!(failure::<()>(Err(status.clone())), (Code::InvalidArgument, "VALIDATION_ERROR".into()));
    assert_eq!(violated_fields(&status), vec!["email", "first_name", "password"]);
}

#[tokio::test]
async fn login_succeeds_with_the_right_password_and_fails_alike_otherwise() {
    let id = Identity::start().await;
    let registered = id.register("linus@example.com", "Linus").await;
    let registered_claims = id.verify(&registered.access_token).await;

    let login = id.login("LINUS@example.com", PASSWORD).await.expect("login");
    assert_eq!(login.user.as_ref().map(|u| u.email.as_str()), Some("linus@example.com"));
    let claims = id.verify(&login.access_token).await;
    assert_eq!(claims.org, registered_claims.org, "the personal organization");
    assert_ne!(claims.sid, registered_claims.sid, "a new session");
    assert_eq!(claims.roles, vec!["owner".to_string()]);

    let wrong_password = id.login("linus@example.com", "not-the-password-at-all").await.expect_err("wrong password");
    let unknown_email = id.login("nobody@example.com", PASSWORD).await.expect_err("unknown email");
    let malformed = id.login("not an email", PASSWORD).await.expect_err("malformed email");
    for status in [&wrong_password, &unknown_email, &malformed] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "Invalid email or password");
        assert_eq!(failure::<()>(Err(status.clone())).1, "INVALID_CREDENTIALS");
    }

    let (count, last_login): (i32, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select login_count, last_login_at from identity.users where email = 'linus@example.com'")
            .fetch_one(&id.owner)
            .await
            .expect("user row");
    assert_eq!(count, 1);
    assert!(last_login.is_some());
}

#[tokio::test]
async fn deactivated_accounts_cannot_sign_in() {
    let id = Identity::start().await;
    id.register("gone@example.com", "Gone").await;
    sqlx::query("update identity.users set status = 'deactivated' where email = 'gone@example.com'")
        .execute(&id.owner)
        .await
        .expect("deactivate");
    assert_eq!(
        failure(id.login("gone@example.com", PASSWORD).await),
        (Code::Unauthenticated, "INVALID_CREDENTIALS".into())
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_session() {
    let id = Identity::start().await;
    id.register("rot@example.com", "Rot").await;
    let login = id.login("rot@example.com", PASSWORD).await.expect("login");
    let sid = id.verify(&login.access_token).await.sid;
    let other_session = id.login("rot@example.com", PASSWORD).await.expect("second login");

    let r1 = login.refresh_token;
    let second = id.refresh(&r1).await.expect("refresh R1");
    let r2 = second.refresh_token.clone();
    assert_ne!(r1, r2);
    assert!(!second.org_changed);
    assert_eq!((second.token_type.as_str(), second.expires_in), ("Bearer", 900));
    let claims = id.verify(&second.access_token).await;
    assert_eq!(claims.sid, sid, "the same session");
    assert_eq!(claims.roles, vec!["owner".to_string()]);

    // R1 again: reuse. The session is revoked, so R2 stops working too.
    assert_eq!(failure(id.refresh(&r1).await), (Code::Unauthenticated, "REFRESH_TOKEN_REUSED".into()));
    assert_eq!(failure(id.refresh(&r2).await), (Code::Unauthenticated, "REFRESH_TOKEN_INVALID".into()));
    let reason: Option<String> = sqlx::query_scalar("select revoke_reason from identity.sessions where id = $1::uuid")
        .bind(sid.as_deref().expect("sid"))
        .fetch_one(&id.owner)
        .await
        .expect("session row");
    assert_eq!(reason.as_deref(), Some("reuse_detected"));
    let revoked: Vec<pb::SessionRevoked> = id.payloads("identity.session.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(Some(revoked[0].session_id.clone()), sid);
    assert_eq!(revoked[0].reason(), pb::SessionRevokeReason::ReuseDetected);

    // Other sessions of the user are untouched.
    id.refresh(&other_session.refresh_token).await.expect("another session still refreshes");
}

#[tokio::test]
async fn unknown_and_expired_refresh_tokens_are_invalid() {
    let id = Identity::start().await;
    let registered = id.register("exp@example.com", "Exp").await;
    for garbage in ["", "garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(failure(id.refresh(garbage).await), (Code::Unauthenticated, "REFRESH_TOKEN_INVALID".into()));
    }
    sqlx::query("update identity.refresh_tokens set expires_at = now() - interval '1 second'")
        .execute(&id.owner)
        .await
        .expect("expire");
    assert_eq!(
        failure(id.refresh(&registered.refresh_token).await),
        (Code::Unauthenticated, "REFRESH_TOKEN_INVALID".into())
    );
    assert!(id.payloads::<pb::SessionRevoked>("identity.session.revoked").await.is_empty(), "expiry is not reuse");
}
