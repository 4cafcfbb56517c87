//! The erasure of deactivated accounts (spec rule 26, flow 14 end, ADR 0019), with a shortened
//! schedule and a test clock (erase_after moved into the past): the profile is anonymized, the
//! credentials, sessions, settings and memberships go with `member.removed {reason: erased}` and
//! one `identity.user.erased`; permissions deletes the user's relationships in every org; a
//! locked account is skipped, and a second pass changes nothing.

use std::time::Duration;

use trellis_kit::json::to_proto;
use trellis_kit::testing::wait_until;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::settings_service_client::SettingsServiceClient;
use trellis_proto::trellis::identity::v1::user_service_client::UserServiceClient;
use uuid::Uuid;

use crate::common::{PASSWORD, bearer};
use crate::organizations::Orgs;

async fn count(t: &Orgs, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(&t.cell.owner_pool().await).await.expect("count")
}

async fn status(t: &Orgs, user: Uuid) -> String {
    sqlx::query_scalar("select status from identity.users where id = $1")
        .bind(user)
        .fetch_one(&t.cell.owner_pool().await)
        .await
        .expect("status")
}

#[tokio::test]
async fn a_deactivated_account_past_its_window_is_erased_once() {
    let t = Orgs::start_with(|s| s.org_purge_interval = Duration::from_millis(200)).await;
    let ada = t.register("ada@example.com", "Ada").await;
    let mia = t.join(&ada, "mia@example.com", "Mia", pb::OrgRole::Member).await;
    let owner = t.cell.owner_pool().await;

    // Mia has a user setting in Ada's org, and a relationship in an org she is no member of.
    let settings = SettingsServiceClient::new(t.cell.channel("identity").await);
    let theme = pb::SetSettingRequest {
        scope: pb::SettingScope::User.into(),
        namespace: "general".into(),
        key: "week_start".into(),
        value: Some(to_proto(&serde_json::json!("saturday"))),
    };
    settings.clone().set_setting(bearer(theme, &mia.token)).await.expect("setting");
    let elsewhere = Uuid::now_v7();
    sqlx::query(
        "insert into permissions.relationships
             (org_id, resource_type, resource_id, relation, subject_type, subject_id, created_revision)
         values ($1, 'organization', $1::text, 'viewer', 'user', $2::text, 1)",
    )
    .bind(elsewhere)
    .bind(mia.user)
    .execute(&owner)
    .await
    .expect("stray relationship");

    let users = UserServiceClient::new(t.cell.channel("identity").await);
    let deactivate = pb::DeactivateRequest { confirmation: "DEACTIVATE".into(), password: PASSWORD.into() };
    users.clone().deactivate(bearer(deactivate, &mia.token)).await.expect("deactivate");

    // Within the window nothing is erased.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&t, mia.user).await, "deactivated");

    // Past the window, while another eraser holds the row, this one skips it.
    sqlx::query("update identity.users set erase_after = now() - interval '1 minute' where id = $1")
        .bind(mia.user)
        .execute(&owner)
        .await
        .expect("test clock");
    let mut other = owner.begin().await.expect("tx");
    sqlx::query("select id from identity.users where id = $1 for update")
        .bind(mia.user)
        .execute(&mut *other)
        .await
        .expect("lock");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(status(&t, mia.user).await, "deactivated", "a locked account is skipped");
    other.rollback().await.expect("release");

    wait_until(Duration::from_secs(10), || async { status(&t, mia.user).await == "erased" }).await;
    let (email, first, last, avatar, hash, mfa): (String, String, String, Option<String>, Option<String>, bool) =
        sqlx::query_as(
            "select email, first_name, last_name, avatar_key, password_hash, mfa_enabled
               from identity.users where id = $1",
        )
        .bind(mia.user)
        .fetch_one(&owner)
        .await
        .expect("user");
    assert_eq!(email, format!("erased+{}@invalid", mia.user));
    assert_eq!((first.as_str(), last.as_str()), ("Deleted user", ""));
    assert_eq!((avatar, hash, mfa), (None, None, false));
    for sql in [
        "select count(*) from identity.sessions where user_id = $1",
        "select count(*) from identity.org_members where user_id = $1",
        "select count(*) from identity.settings where scope = 'user' and scope_id = $1",
        "select count(*) from identity.email_tokens where user_id = $1",
    ] {
        assert_eq!(count(&t, sql, mia.user).await, 0, "{sql}");
    }
    // Ada keeps everything.
    assert_eq!(count(&t, "select count(*) from identity.org_members where user_id = $1", ada.user).await, 1);
    assert_eq!(status(&t, ada.user).await, "active");

    let removed: Vec<pb::MemberRemoved> = t.payloads("identity.member.removed").await;
    assert_eq!(removed.len(), 1);
    let r = &removed[0];
    assert_eq!((r.org_id.as_str(), r.user_id.as_str()), (ada.org.to_string().as_str(), mia.user.to_string().as_str()));
    assert_eq!((r.reason(), r.role()), (pb::MemberRemovalReason::Erased, pb::OrgRole::Member));
    assert_eq!(r.reassign_to, ada.user.to_string(), "the owner inherits the member's work");
    assert!(r.version > 0);
    let erased: Vec<pb::UserErased> = t.payloads("identity.user.erased").await;
    assert_eq!(erased.iter().map(|e| e.user_id.clone()).collect::<Vec<_>>(), [mia.user.to_string()]);

    // Permissions: no role in Ada's org, and the relationship elsewhere is gone too.
    assert!(!t.can(ada.org, "view", mia.user).await);
    wait_until(Duration::from_secs(10), || async {
        count(&t, "select count(*) from permissions.relationships where subject_id = $1::text", mia.user).await == 0
    })
    .await;

    // Idempotent: later passes publish nothing more.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(t.payloads::<pb::UserErased>("identity.user.erased").await.len(), 1);
    assert_eq!(t.payloads::<pb::MemberRemoved>("identity.member.removed").await.len(), 1);
}
