//! ExportMyData (flow 15): the caller's data in every organization, nobody else's, no secret, and
//! five exports per user per day.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::api_key_service_client::ApiKeyServiceClient;
use trellis_proto::trellis::identity::v1::user_service_client::UserServiceClient;
use uuid::Uuid;

use crate::api_keys::{create, register_tasks_scopes, verified};
use crate::common::{Identity, PASSWORD, bearer, failure};

async fn users(id: &Identity) -> UserServiceClient<tonic::transport::Channel> {
    UserServiceClient::new(id.cell.channel("identity").await)
}

async fn export(id: &Identity, token: &str) -> Result<pb::ExportMyDataResponse, tonic::Status> {
    users(id).await.export_my_data(bearer(pb::ExportMyDataRequest {}, token)).await.map(|r| r.into_inner())
}

async fn exec(id: &Identity, sql: &str, binds: &[Uuid]) {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(&id.owner).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn the_export_holds_the_callers_data_in_every_organization_and_no_secret() {
    let id = Identity::start().await;
    let (ada, ada_token, ada_org) = verified(&id, "ada@example.com").await;
    let (bob, bob_token, bob_org) = verified(&id, "bob@example.com").await;
    let (ada, ada_org, bob, bob_org): (Uuid, Uuid, Uuid, Uuid) =
        (ada.parse().unwrap(), ada_org.parse().unwrap(), bob.parse().unwrap(), bob_org.parse().unwrap());

    // Ada's own organization: an invitation she sent, a team, a user setting, an onboarding step
    // and an API key she created.
    let invited = id.invite(&ada_token, "carol@example.com", pb::OrgRole::Member).await.expect("invite carol");
    let team = Uuid::now_v7();
    exec(
        &id,
        "insert into identity.teams (id, org_id, name, created_by) values ($1, $2, 'Platform', $3)",
        &[team, ada_org, ada],
    )
    .await;
    exec(
        &id,
        "insert into identity.team_members (team_id, user_id, org_id, role) values ($1, $2, $3, 'maintainer')",
        &[team, ada, ada_org],
    )
    .await;
    exec(
        &id,
        "insert into identity.settings (id, org_id, scope, scope_id, namespace, key, value)
         values ($1, $2, 'user', $3, 'tasks', 'week_start', '\"monday\"')",
        &[Uuid::now_v7(), ada_org, ada],
    )
    .await;
    exec(
        &id,
        "insert into identity.onboarding_progress (org_id, subject_id, module, step) values ($1, $2, 'tasks', 'first_board')",
        &[ada_org, ada],
    )
    .await;
    register_tasks_scopes(&id).await;
    let mut keys = ApiKeyServiceClient::new(id.cell.channel("identity").await);
    let key = keys.create_api_key(bearer(create(&["tasks:read"], pb::OrgRole::Member), &ada_token)).await;
    let key = key.expect("api key").into_inner();

    // Bob's organization, where Ada is a member: Bob's invitation and Bob's setting are his.
    exec(&id, "insert into identity.org_members (org_id, user_id, role) values ($1, $2, 'member')", &[bob_org, ada])
        .await;
    id.invite(&bob_token, "dave@example.com", pb::OrgRole::Viewer).await.expect("invite dave");
    exec(
        &id,
        "insert into identity.settings (id, org_id, scope, scope_id, namespace, key, value)
         values ($1, $2, 'user', $3, 'tasks', 'week_start', '\"sunday\"')",
        &[Uuid::now_v7(), bob_org, bob],
    )
    .await;

    // A second sign-in that ends with a logout.
    let second = id.login("ada@example.com", PASSWORD).await.expect("login");
    id.auth.clone().logout(bearer(pb::LogoutRequest {}, &second.access_token)).await.expect("logout");

    let doc = export(&id, &ada_token).await.expect("export");
    let profile = doc.profile.clone().expect("profile");
    assert_eq!((profile.id.as_str(), profile.email.as_str()), (ada.to_string().as_str(), "ada@example.com"));
    assert_eq!((profile.first_name.as_str(), profile.status.as_str()), ("Kim", "active"));
    assert!(profile.has_password && profile.email_verified_at.is_some() && !profile.has_avatar);
    assert_eq!(profile.login_count, 1, "the registration is not a sign-in; the login is");

    let orgs: Vec<(&str, pb::OrgRole, bool)> =
        doc.memberships.iter().map(|m| (m.organization_id.as_str(), m.role(), m.personal)).collect();
    assert_eq!(
        orgs,
        vec![
            (ada_org.to_string().as_str(), pb::OrgRole::Owner, true),
            (bob_org.to_string().as_str(), pb::OrgRole::Member, false)
        ]
    );
    let own = &doc.memberships[0];
    assert_eq!(own.status, "active");
    let teams: Vec<(&str, pb::TeamRole)> = own.teams.iter().map(|t| (t.name.as_str(), t.role())).collect();
    assert_eq!(teams, vec![("Platform", pb::TeamRole::Maintainer)]);
    let settings: Vec<(&str, &str, serde_json::Value)> = own
        .settings
        .iter()
        .map(|s| (s.namespace.as_str(), s.key.as_str(), trellis_kit::json::from_proto(s.value.as_ref().unwrap())))
        .collect();
    assert_eq!(settings, vec![("tasks", "week_start", serde_json::json!("monday"))]);
    let steps: Vec<(&str, &str)> =
        own.onboarding_completed.iter().map(|s| (s.module.as_str(), s.step.as_str())).collect();
    assert_eq!(steps, vec![("tasks", "first_board")]);
    let sent: Vec<(&str, &str, &str)> =
        own.invitations_sent.iter().map(|i| (i.id.as_str(), i.email.as_str(), i.status.as_str())).collect();
    let carol = invited.invitation.expect("invitation").id;
    assert_eq!(sent, vec![(carol.as_str(), "carol@example.com", "pending")]);
    let api_key = key.api_key.expect("key metadata");
    let exported_keys: Vec<(&str, &[String])> =
        own.api_keys.iter().map(|k| (k.id.as_str(), k.scopes.as_slice())).collect();
    assert_eq!(exported_keys, vec![(api_key.id.as_str(), &["tasks:read".to_string()][..])]);

    let other = &doc.memberships[1];
    assert!(other.invitations_sent.is_empty(), "Bob's invitation is not Ada's: {:?}", other.invitations_sent);
    assert!(other.settings.is_empty() && other.teams.is_empty() && other.api_keys.is_empty());
    assert_eq!(other.organization_name, "Kim's workspace");

    assert_eq!(doc.sessions.len(), 2);
    let revoked: Vec<&str> =
        doc.sessions.iter().filter(|s| s.revoked_at.is_some()).map(|s| s.revoke_reason.as_str()).collect();
    assert_eq!(revoked, vec!["logout"]);
    assert!(doc.sessions.iter().all(|s| s.session.as_ref().is_some_and(|s| !s.amr.is_empty())));
    let mfa = doc.mfa.expect("mfa");
    assert!(!mfa.enabled && mfa.confirmed_at.is_none() && mfa.backup_codes_remaining == 0);

    // No secret, hash or token anywhere in the document.
    let text = format!("{doc:?}");
    for secret in [
        PASSWORD,
        ada_token.as_str(),
        second.access_token.as_str(),
        second.refresh_token.as_str(),
        key.key.as_str(),
        &key.key[..12],
        "$argon2",
    ] {
        assert!(!text.contains(secret), "the export holds {secret}");
    }
}

#[tokio::test]
async fn five_exports_a_day_then_rate_limited_and_only_for_a_user_token() {
    let id = Identity::start().await;
    let token = id.register("five@example.com", "Ada").await.access_token;
    for n in 1..=5 {
        export(&id, &token).await.unwrap_or_else(|e| panic!("export {n}: {e:?}"));
    }
    let status = export(&id, &token).await.expect_err("the sixth is refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = status.get_error_details();
    assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("RATE_LIMITED"));
    let retry = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry > Duration::from_secs(86_000) && retry <= Duration::from_secs(86_400), "{retry:?}");

    // Another user is not affected; no credential is UNAUTHENTICATED.
    let other = id.register("other@example.com", "Bo").await.access_token;
    export(&id, &other).await.expect("another user's export");
    let anonymous = users(&id).await.export_my_data(pb::ExportMyDataRequest {}).await;
    assert_eq!(failure(anonymous).0, Code::Unauthenticated);
}
