//! Identity acceptance flows 8, 9, 11 and 12 (and the org/team parts of 21) through the gateway:
//! organizations and switching, an invitation into a team, roles, removal and transfer, nested
//! and private teams.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trellis_kit::auth::Claims;
use trellis_kit::authz::{Authz, Credentials, Ref, TokenFuture};
use uuid::Uuid;

use crate::common::{PASSWORD, Platform, User};

/// `service:<name>` tokens signed with the cell's test key.
#[derive(Debug)]
struct TestService {
    platform_keys: trellis_kit::testing::TestKeys,
    issuer: String,
    audience: String,
    name: &'static str,
}

impl Credentials for TestService {
    fn token(&self, org: Option<Uuid>) -> TokenFuture<'_> {
        let now = chrono::Utc::now().timestamp();
        let token = self.platform_keys.sign(&Claims {
            iss: self.issuer.clone(),
            sub: format!("service:{}", self.name),
            aud: self.audience.clone(),
            exp: now + 300,
            nbf: None,
            iat: now,
            jti: Uuid::now_v7().to_string(),
            org: org.map(|o| o.to_string()),
            sid: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            plan: None,
        });
        Box::pin(async move { Ok(token) })
    }
}

fn authz(p: &Platform, name: &'static str) -> Authz {
    let credentials = TestService {
        platform_keys: p.cell.keys.clone(),
        issuer: p.cell.config.jwt_issuer.clone(),
        audience: p.cell.config.jwt_audience.clone(),
        name,
    };
    Authz::new(&p.cell.url("permissions"), Arc::new(credentials)).expect("authz")
}

/// The platform with identity's schema registered (identity registers it in the background).
pub(crate) async fn platform() -> (Platform, Authz) {
    let p = Platform::start().await;
    authz(&p, "identity")
        .register_schema("identity", trellis_identity::relationships::SCHEMA, Duration::from_millis(200))
        .await
        .expect("identity schema");
    let checks = authz(&p, "tests");
    (p, checks)
}

pub(crate) fn org_of(p: &Platform, token: &str) -> String {
    let _ = p;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64_url(payload);
    let claims: Value = serde_json::from_slice(&bytes).expect("claims");
    claims["org"].as_str().expect("org").to_string()
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

async fn can(checks: &Authz, org: &str, resource: Ref, permission: &str, user: &str) -> bool {
    let org: Uuid = org.parse().expect("org id");
    checks.check(org, &resource, permission, &Ref::new("user", user), None).await.unwrap_or(false)
}

pub(crate) async fn invite_and_join(p: &Platform, by: &User, email: &str, name: &str, body: Value) -> User {
    let mut body = body;
    body["email"] = json!(email);
    let invited = p.post("/api/v1/invitations", Some(&by.token), body).await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    let token = p.invitation_token(email).await;
    p.register(name, email, Some(&token)).await
}

#[tokio::test]
async fn organizations_switching_roles_removal_and_transfer() {
    let (p, checks) = platform().await;
    let ada = p.register("Ada", "ada@example.com", None).await;
    let a = org_of(&p, &ada.token);

    // Flow 8.
    let created = p.post("/api/v1/organizations", Some(&ada.token), json!({"name": "Org B", "slug": "org-b"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert!(created.location.is_some(), "Location header");
    let b = created.body["organization"]["id"].as_str().expect("id").to_string();
    let taken = p.post("/api/v1/organizations", Some(&ada.token), json!({"name": "Again", "slug": "org-b"})).await;
    assert_eq!((taken.status, taken.error_code()), (StatusCode::CONFLICT, "SLUG_TAKEN"));
    let mine = p.get("/api/v1/organizations", &ada.token).await;
    let orgs = mine.body["organizations"].as_array().expect("list");
    assert_eq!(orgs.len(), 2);
    assert!(orgs.iter().all(|o| o["role"] == json!("owner")), "{mine:?}");
    let switched = p.post("/api/v1/auth/switch-organization", Some(&ada.token), json!({"org_id": b})).await;
    assert_eq!(switched.status, StatusCode::OK, "{switched:?}");
    let in_b = switched.body["access_token"].as_str().expect("token").to_string();
    assert_eq!(org_of(&p, &in_b), b);
    let patch =
        p.call(Method::PATCH, &format!("/api/v1/organizations/{a}"), Some(&in_b), Some(json!({"name": "X"}))).await;
    assert_eq!((patch.status, patch.error_code()), (StatusCode::CONFLICT, "ORG_NOT_ACTIVE"));
    let bob = p.register("Bob", "bob@example.com", None).await;
    assert_eq!(p.get(&format!("/api/v1/organizations/{b}"), &bob.token).await.status, StatusCode::NOT_FOUND);

    // Flow 11, in Ada's first org.
    let mia = invite_and_join(&p, &ada, "mia@example.com", "Mia", json!({"role": "member"})).await;
    let viv = invite_and_join(&p, &ada, "viv@example.com", "Viv", json!({"role": "member"})).await;
    let owner_role = p
        .call(
            Method::PATCH,
            &format!("/api/v1/organizations/{a}/members/{}", ada.id),
            Some(&ada.token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!((owner_role.status, owner_role.error_code()), (StatusCode::CONFLICT, "OWNER_IMMUTABLE"));
    let promote = p
        .call(
            Method::PATCH,
            &format!("/api/v1/organizations/{a}/members/{}", mia.id),
            Some(&ada.token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(promote.status, StatusCode::OK, "{promote:?}");
    assert_eq!(promote.body["member"]["role"], json!("admin"));
    let removed = p
        .call(
            Method::DELETE,
            &format!("/api/v1/organizations/{a}/members/{}?reassign_to={}", viv.id, mia.id),
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{removed:?}");
    let org_ref = || Ref::new("organization", a.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while can(&checks, &a, org_ref(), "view", &viv.id).await {
        assert!(tokio::time::Instant::now() < deadline, "the removed member can still view the org");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let transfer = |password: &str| json!({"new_owner_id": mia.id, "password": password});
    let wrong =
        p.post(&format!("/api/v1/organizations/{a}/transfer"), Some(&ada.token), transfer("wrong password!")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let done = p.post(&format!("/api/v1/organizations/{a}/transfer"), Some(&ada.token), transfer(PASSWORD)).await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    let owners = p.get(&format!("/api/v1/organizations/{a}/members?filter=role%20%3D%20owner"), &ada.token).await;
    let owners = owners.body["members"].as_array().expect("members").clone();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0]["user_id"], json!(mia.id));
    assert!(can(&checks, &a, org_ref(), "administer", &ada.id).await, "the old owner is admin");
}

#[tokio::test]
async fn invitations_into_nested_and_private_teams() {
    let (p, checks) = platform().await;
    let ada = p.register("Ada", "ada@example.com", None).await;
    let a = org_of(&p, &ada.token);

    // Flow 12 (teams) and flow 9 (an invitation into team Platform).
    let eng = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "Eng"})).await;
    assert_eq!(eng.status, StatusCode::CREATED, "{eng:?}");
    let eng = eng.body["team"]["id"].as_str().expect("id").to_string();
    let platform_team =
        p.post("/api/v1/teams", Some(&ada.token), json!({"name": "Platform", "parent_team_id": eng})).await;
    let platform_id = platform_team.body["team"]["id"].as_str().expect("id").to_string();

    let invited = p
        .post(
            "/api/v1/invitations",
            Some(&ada.token),
            json!({"email": "x@example.com", "role": "member", "team_ids": [platform_id]}),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{invited:?}");
    let link = p.invitation_token("x@example.com").await;
    let preview = p.call(Method::GET, &format!("/api/v1/invitations/accept?token={link}"), None, None).await;
    assert_eq!(preview.status, StatusCode::OK, "{preview:?}");
    assert_eq!((preview.body["role"].clone(), preview.body["account_exists"].clone()), (json!("member"), json!(false)));
    let x = p.register("Xavier", "x@example.com", Some(&link)).await;
    assert_eq!(org_of(&p, &x.token), a, "no personal org");
    assert!(can(&checks, &a, Ref::new("team", platform_id.clone()), "view", &x.id).await);
    let reused = p
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "x2@example.com", "password": PASSWORD, "first_name": "X", "invitation_token": link}),
        )
        .await;
    assert_eq!((reused.status, reused.error_code()), (StatusCode::CONFLICT, "INVITATION_ALREADY_USED"));

    let nested = p.get(&format!("/api/v1/teams/{eng}/members?include_nested=true"), &ada.token).await;
    assert_eq!(nested.status, StatusCode::OK, "{nested:?}");
    let x_row =
        nested.body["members"].as_array().expect("members").iter().find(|m| m["user_id"] == json!(x.id)).cloned();
    assert_eq!(x_row.expect("x listed")["via_team_id"], json!(platform_id));
    let cycle = p
        .call(
            Method::PATCH,
            &format!("/api/v1/teams/{eng}"),
            Some(&ada.token),
            Some(json!({"parent_team_id": platform_id})),
        )
        .await;
    assert_eq!((cycle.status, cycle.error_code()), (StatusCode::CONFLICT, "TEAM_CYCLE"));
    let by_member =
        p.call(Method::PATCH, &format!("/api/v1/teams/{eng}"), Some(&x.token), Some(json!({"name": "Mine"}))).await;
    assert_eq!(by_member.status, StatusCode::FORBIDDEN);

    let private = p.post("/api/v1/teams", Some(&ada.token), json!({"name": "P", "visibility": "private"})).await;
    let private = private.body["team"]["id"].as_str().expect("id").to_string();
    let listed = p.get("/api/v1/teams", &x.token).await;
    let names: Vec<&str> =
        listed.body["teams"].as_array().expect("teams").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(!names.contains(&"P") && names.contains(&"Eng"), "{names:?}");
    assert_eq!(p.get(&format!("/api/v1/teams/{private}"), &x.token).await.status, StatusCode::NOT_FOUND);

    // Flow 21: another tenant's team and invitation ids are not found.
    let bob = p.register("Bob", "bob@example.com", None).await;
    assert_eq!(p.get(&format!("/api/v1/teams/{eng}"), &bob.token).await.status, StatusCode::NOT_FOUND);
    let invitation_id = invited.body["invitation"]["id"].as_str().expect("id");
    let foreign = p.post(&format!("/api/v1/invitations/{invitation_id}/resend"), Some(&bob.token), json!({})).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{foreign:?}");
}
