//! OrganizationService against identity and the permissions service in one cell: creation and
//! slugs, the org list, the active-org rule, tenant isolation, roles, removal and transfer, and
//! the relationships that make those changes effective at once (or, with permissions
//! unreachable from identity, through the events).

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use trellis_kit::auth::Claims;
use trellis_kit::authz::{Authz, Credentials, Ref, TokenFuture};
use trellis_kit::testing::{TestCell, TestKeys, wait_until};
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::auth_service_client::AuthServiceClient;
use trellis_proto::trellis::identity::v1::invitation_service_client::InvitationServiceClient;
use trellis_proto::trellis::identity::v1::organization_service_client::OrganizationServiceClient;
use uuid::Uuid;

use crate::common::{PASSWORD, bearer, failure, registration, violated_fields};

/// `service:tests` tokens signed with the cell's test key (trusted next to identity's JWKS).
#[derive(Debug)]
struct TestService {
    keys: TestKeys,
    issuer: String,
    audience: String,
    name: &'static str,
}

impl Credentials for TestService {
    fn token(&self, org: Option<Uuid>) -> TokenFuture<'_> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
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
        };
        let token = self.keys.sign(&claims);
        Box::pin(async move { Ok(token) })
    }
}

fn authz(cell: &TestCell, permissions_url: &str, name: &'static str) -> Authz {
    let credentials = TestService {
        keys: cell.keys.clone(),
        issuer: cell.config.jwt_issuer.clone(),
        audience: cell.config.jwt_audience.clone(),
        name,
    };
    Authz::new(permissions_url, Arc::new(credentials)).expect("authz client")
}

/// Identity registers its schema in the background; tests make sure it is there before acting.
pub async fn register_identity_schema(cell: &TestCell) {
    authz(cell, &cell.url("permissions"), "identity")
        .register_schema("identity", trellis_identity::relationships::SCHEMA, Duration::from_millis(200))
        .await
        .expect("identity schema");
}

/// A cell running identity and permissions.
pub struct Orgs {
    pub cell: TestCell,
    pub auth: AuthServiceClient<Channel>,
    pub orgs: OrganizationServiceClient<Channel>,
    pub invitations: InvitationServiceClient<Channel>,
    /// A permissions client acting as `service:tests`.
    pub checks: Authz,
}

/// A registered user: ids and a token for their current active org.
#[derive(Debug, Clone)]
pub struct Signed {
    pub user: Uuid,
    pub org: Uuid,
    pub token: String,
}

impl Orgs {
    pub async fn start() -> Orgs {
        Self::start_with(|_| {}).await
    }

    /// With identity's settings adjusted by `tune` (shorter schedules).
    pub async fn start_with(tune: impl FnOnce(&mut trellis_identity::IdentityConfig)) -> Orgs {
        let mut settings = trellis_identity::IdentityConfig::from_env().expect("identity settings");
        tune(&mut settings);
        let cell =
            TestCell::start(vec![trellis_identity::module_with(Some(settings)), trellis_permissions::module()]).await;
        let url = cell.url("permissions");
        register_identity_schema(&cell).await;
        let channel = cell.channel("identity").await;
        Orgs {
            checks: authz(&cell, &url, "tests"),
            auth: AuthServiceClient::new(channel.clone()),
            orgs: OrganizationServiceClient::new(channel.clone()),
            invitations: InvitationServiceClient::new(channel),
            cell,
        }
    }

    pub async fn register(&self, email: &str, name: &str) -> Signed {
        let r = self.auth.clone().register(registration(email, name)).await.expect("register").into_inner();
        self.signed(&r.access_token).await
    }

    pub async fn signed(&self, token: &str) -> Signed {
        let claims = self.cell.auth.verify(token).await.expect("verifies");
        Signed {
            user: claims.sub.parse().expect("user id"),
            org: claims.org.expect("org").parse().expect("org id"),
            token: token.to_string(),
        }
    }

    /// Invites `email` into `by`'s active org as `role` and registers them through the link.
    pub async fn join(&self, by: &Signed, email: &str, name: &str, role: pb::OrgRole) -> Signed {
        let invite = pb::CreateInvitationRequest { email: email.into(), role: role.into(), ..Default::default() };
        self.invitations.clone().create_invitation(bearer(invite, &by.token)).await.expect("invite");
        let token = self.last_invitation_token().await;
        let request = pb::RegisterRequest { invitation_token: token, ..registration(email, name) };
        let r = self.auth.clone().register(request).await.expect("register invited").into_inner();
        self.signed(&r.access_token).await
    }

    async fn last_invitation_token(&self) -> String {
        let owner = self.cell.owner_pool().await;
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "select envelope from identity.outbox where event_type = 'identity.invitation.sent' order by created_at desc, id desc limit 1",
        )
        .fetch_all(&owner)
        .await
        .expect("outbox");
        let envelope = <trellis_proto::trellis::events::v1::Envelope as prost::Message>::decode(rows[0].as_slice())
            .expect("envelope");
        let sent: pb::InvitationSent = envelope.payload.expect("payload").to_msg().expect("invitation.sent");
        sent.link_url.split_once("token=").expect("token").1.to_string()
    }

    /// Whether `user` holds `permission` on `organization:{org}`.
    pub async fn can(&self, org: Uuid, permission: &str, user: Uuid) -> bool {
        self.checks
            .check(
                org,
                &Ref::new("organization", org.to_string()),
                permission,
                &Ref::new("user", user.to_string()),
                None,
            )
            .await
            .expect("check")
    }

    pub async fn create(&self, who: &Signed, name: &str, slug: &str) -> Result<pb::Organization, tonic::Status> {
        let request = pb::CreateOrganizationRequest { name: name.into(), slug: slug.into(), plan: String::new() };
        self.orgs
            .clone()
            .create_organization(bearer(request, &who.token))
            .await
            .map(|r| r.into_inner().organization.expect("organization"))
    }

    /// A token of `who` for `org` (SwitchOrganization).
    pub async fn switch(&self, who: &Signed, org: &str) -> Signed {
        let request = pb::SwitchOrganizationRequest { org_id: org.into() };
        let r = self.auth.clone().switch_organization(bearer(request, &who.token)).await.expect("switch").into_inner();
        self.signed(&r.access_token).await
    }

    pub async fn members(&self, who: &Signed, org: Uuid, filter: &str, order_by: &str) -> pb::ListMembersResponse {
        let request = pb::ListMembersRequest {
            org_id: org.to_string(),
            filter: filter.into(),
            order_by: order_by.into(),
            ..Default::default()
        };
        self.orgs.clone().list_members(bearer(request, &who.token)).await.expect("list members").into_inner()
    }

    pub async fn set_role(
        &self,
        who: &Signed,
        org: Uuid,
        user: Uuid,
        role: pb::OrgRole,
    ) -> Result<pb::Member, tonic::Status> {
        let request =
            pb::ChangeMemberRoleRequest { org_id: org.to_string(), user_id: user.to_string(), role: role.into() };
        self.orgs
            .clone()
            .change_member_role(bearer(request, &who.token))
            .await
            .map(|r| r.into_inner().member.expect("member"))
    }

    pub async fn remove(&self, who: &Signed, org: Uuid, user: Uuid, reassign_to: &str) -> Result<(), tonic::Status> {
        let request = pb::RemoveMemberRequest {
            org_id: org.to_string(),
            user_id: user.to_string(),
            reassign_to: reassign_to.into(),
        };
        self.orgs.clone().remove_member(bearer(request, &who.token)).await.map(drop)
    }

    pub async fn payloads<M: prost::Name + Default>(&self, event_type: &str) -> Vec<M> {
        let owner = self.cell.owner_pool().await;
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("select envelope from identity.outbox where event_type = $1 order by created_at, id")
                .bind(event_type)
                .fetch_all(&owner)
                .await
                .expect("outbox");
        rows.iter()
            .map(|b| {
                let e =
                    <trellis_proto::trellis::events::v1::Envelope as prost::Message>::decode(b.as_slice()).expect("e");
                e.payload.expect("payload").to_msg::<M>().expect("payload type")
            })
            .collect()
    }
}

#[tokio::test]
async fn organizations_are_created_listed_and_switched_to() {
    let t = Orgs::start().await;
    let ada = t.register("ada@example.com", "Ada").await;
    assert!(t.can(ada.org, "delete", ada.user).await, "owner of the personal org at once");

    let b = t.create(&ada, "Blue Team Inc", "blue-team").await.expect("create");
    assert_eq!((b.slug.as_str(), b.plan.as_str(), b.personal), ("blue-team", "free", false));
    let b_id: Uuid = b.id.parse().expect("id");
    assert!(t.can(b_id, "transfer", ada.user).await, "the creator owns it at once");

    let taken = t.create(&ada, "Another", "blue-team").await;
    assert_eq!(failure(taken), (Code::AlreadyExists, "SLUG_TAKEN".into()));
    let reserved = t.create(&ada, "Admin", "admin").await.expect_err("reserved");
    assert_eq!((reserved.code(), violated_fields(&reserved)), (Code::InvalidArgument, vec!["slug".to_string()]));

    let mine = t.orgs.clone().list_my_organizations(bearer(pb::ListMyOrganizationsRequest {}, &ada.token)).await;
    let mine = mine.expect("list").into_inner().organizations;
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|m| m.role() == pb::OrgRole::Owner));

    // Writes need the org to be the active one; reads do not.
    let in_b = t.switch(&ada, &b.id).await;
    assert_eq!(in_b.org, b_id);
    let rename =
        pb::UpdateOrganizationRequest { org_id: ada.org.to_string(), name: "Renamed".into(), ..Default::default() };
    let not_active = t.orgs.clone().update_organization(bearer(rename.clone(), &in_b.token)).await;
    assert_eq!(failure(not_active), (Code::FailedPrecondition, "ORG_NOT_ACTIVE".into()));
    let read = t
        .orgs
        .clone()
        .get_organization(bearer(pb::GetOrganizationRequest { org_id: ada.org.to_string() }, &in_b.token))
        .await;
    assert_eq!(read.expect("read").into_inner().role(), pb::OrgRole::Owner);
    let renamed = t.orgs.clone().update_organization(bearer(rename, &ada.token)).await.expect("update").into_inner();
    assert_eq!(renamed.organization.expect("org").name, "Renamed");
    let updated: Vec<pb::OrganizationUpdated> = t.payloads("identity.organization.updated").await;
    assert_eq!(updated.last().expect("event").changed_fields, vec!["name".to_string()]);

    // Another tenant's org is not found, never forbidden.
    let bob = t.register("bob@example.com", "Bob").await;
    let foreign =
        t.orgs.clone().get_organization(bearer(pb::GetOrganizationRequest { org_id: b.id.clone() }, &bob.token)).await;
    assert_eq!(failure(foreign), (Code::NotFound, "ORGANIZATION_NOT_FOUND".into()));
    let members = pb::ListMembersRequest { org_id: b.id.clone(), ..Default::default() };
    assert_eq!(failure(t.orgs.clone().list_members(bearer(members, &bob.token)).await).0, Code::NotFound);
}

#[tokio::test]
async fn deleting_needs_the_slug_and_password_and_restoring_brings_it_back() {
    let t = Orgs::start().await;
    let ada = t.register("ada@example.com", "Ada").await;
    let only = pb::DeleteOrganizationRequest {
        org_id: ada.org.to_string(),
        confirmation: String::new(),
        password: PASSWORD.into(),
    };
    let personal_slug = t
        .orgs
        .clone()
        .get_organization(bearer(pb::GetOrganizationRequest { org_id: ada.org.to_string() }, &ada.token))
        .await
        .expect("get")
        .into_inner()
        .organization
        .expect("org")
        .slug;
    let mismatch = t.orgs.clone().delete_organization(bearer(only.clone(), &ada.token)).await;
    assert_eq!(failure(mismatch), (Code::FailedPrecondition, "CONFIRMATION_MISMATCH".into()));
    let last = pb::DeleteOrganizationRequest { confirmation: personal_slug, ..only };
    let last = t.orgs.clone().delete_organization(bearer(last, &ada.token)).await;
    assert_eq!(failure(last), (Code::FailedPrecondition, "LAST_ORGANIZATION".into()));

    let b = t.create(&ada, "Doomed", "doomed-org").await.expect("create");
    let in_b = t.switch(&ada, &b.id).await;
    let wrong = pb::DeleteOrganizationRequest {
        org_id: b.id.clone(),
        confirmation: "doomed-org".into(),
        password: "not-the-password-at-all".into(),
    };
    assert_eq!(
        failure(t.orgs.clone().delete_organization(bearer(wrong.clone(), &in_b.token)).await).0,
        Code::Unauthenticated
    );
    let ok = pb::DeleteOrganizationRequest { password: PASSWORD.into(), ..wrong };
    t.orgs.clone().delete_organization(bearer(ok, &in_b.token)).await.expect("delete");
    let deleted: Vec<pb::OrganizationDeleted> = t.payloads("identity.organization.deleted").await;
    assert!(
        deleted[0].purge_after.as_ref().expect("purge_after").seconds > chrono::Utc::now().timestamp() + 29 * 86_400
    );
    let gone =
        t.orgs.clone().get_organization(bearer(pb::GetOrganizationRequest { org_id: b.id.clone() }, &ada.token)).await;
    assert_eq!(failure(gone).0, Code::NotFound);
    let mine = t.orgs.clone().list_my_organizations(bearer(pb::ListMyOrganizationsRequest {}, &ada.token)).await;
    assert_eq!(mine.expect("list").into_inner().organizations.len(), 1);

    let restored = t
        .orgs
        .clone()
        .restore_organization(bearer(pb::RestoreOrganizationRequest { org_id: b.id.clone() }, &ada.token))
        .await
        .expect("restore")
        .into_inner()
        .organization
        .expect("org");
    assert!(restored.deleted_at.is_none() && restored.purge_after.is_none());
}

#[tokio::test]
async fn roles_removal_and_transfer_take_effect_in_permissions_at_once() {
    let t = Orgs::start().await;
    let owner = t.register("owner@example.com", "Olive").await;
    let org = owner.org;
    let mia = t.join(&owner, "mia@example.com", "Mia", pb::OrgRole::Member).await;
    assert_eq!(mia.org, org);
    // Immediately after joining: no waiting for the event.
    assert!(t.can(org, "contribute", mia.user).await, "a joined member can act at once");
    assert!(!t.can(org, "administer", mia.user).await);
    let viv = t.join(&owner, "viv@example.com", "Viv", pb::OrgRole::Viewer).await;

    // A member may not manage members; the owner's role never changes here.
    let denied = t.set_role(&mia, org, viv.user, pb::OrgRole::Member).await;
    assert_eq!(failure(denied).0, Code::PermissionDenied);
    let owner_role = t.set_role(&owner, org, owner.user, pb::OrgRole::Admin).await;
    assert_eq!(failure(owner_role), (Code::FailedPrecondition, "OWNER_IMMUTABLE".into()));
    let to_owner = t.set_role(&owner, org, mia.user, pb::OrgRole::Owner).await;
    assert_eq!(failure(to_owner), (Code::FailedPrecondition, "OWNER_IMMUTABLE".into()));

    let promoted = t.set_role(&owner, org, mia.user, pb::OrgRole::Admin).await.expect("promote");
    assert_eq!(promoted.role(), pb::OrgRole::Admin);
    assert!(t.can(org, "administer", mia.user).await, "promotion is effective at once");
    let changed: Vec<pb::MemberRoleChanged> = t.payloads("identity.member.role_changed").await;
    assert_eq!((changed[0].old_role(), changed[0].new_role()), (pb::OrgRole::Member, pb::OrgRole::Admin));
    let added: Vec<pb::MemberAdded> = t.payloads("identity.member.added").await;
    let joined = added.iter().find(|a| a.user_id == mia.user.to_string()).expect("mia added");
    assert!(changed[0].version > joined.version, "versions grow");

    // Listing: filter, search, order.
    let admins = t.members(&owner, org, "role = admin", "").await;
    assert_eq!(admins.members.iter().map(|m| m.email.as_str()).collect::<Vec<_>>(), ["mia@example.com"]);
    let all = t.members(&mia, org, "", "joined_at desc").await;
    assert_eq!(all.total_size, 3);
    assert_eq!(all.members[0].email, "viv@example.com");
    let first =
        pb::ListMembersRequest { org_id: org.to_string(), page_size: 2, order_by: "name".into(), ..Default::default() };
    let page = t.orgs.clone().list_members(bearer(first.clone(), &owner.token)).await.expect("page").into_inner();
    assert_eq!((page.members.len(), page.total_size), (2, 3));
    let second = pb::ListMembersRequest { page_token: page.next_page_token.clone(), ..first.clone() };
    let rest = t.orgs.clone().list_members(bearer(second, &owner.token)).await.expect("page 2").into_inner();
    assert_eq!((rest.members.len(), rest.next_page_token.as_str()), (1, ""));
    let tampered = pb::ListMembersRequest { page_token: page.next_page_token, filter: "role = viewer".into(), ..first };
    assert_eq!(failure(t.orgs.clone().list_members(bearer(tampered, &owner.token)).await).0, Code::InvalidArgument);
    let bad = pb::ListMembersRequest { org_id: org.to_string(), filter: "email = x".into(), ..Default::default() };
    let bad = t.orgs.clone().list_members(bearer(bad, &owner.token)).await.expect_err("bad filter");
    assert_eq!(violated_fields(&bad), vec!["filter".to_string()]);

    // Removal with reassign_to: the event names the heir, access ends.
    let not_member = t.remove(&owner, org, viv.user, &Uuid::now_v7().to_string()).await.expect_err("heir");
    assert_eq!(violated_fields(&not_member), vec!["reassign_to".to_string()]);
    t.remove(&owner, org, viv.user, &mia.user.to_string()).await.expect("remove");
    let removed: Vec<pb::MemberRemoved> = t.payloads("identity.member.removed").await;
    assert_eq!(
        (removed[0].user_id.clone(), removed[0].reassign_to.clone()),
        (viv.user.to_string(), mia.user.to_string())
    );
    assert_eq!((removed[0].role(), removed[0].reason()), (pb::OrgRole::Viewer, pb::MemberRemovalReason::Removed));
    wait_until(Duration::from_secs(2), || async { !t.can(org, "view", viv.user).await }).await;
    assert_eq!(
        failure(t.remove(&owner, org, owner.user, "").await),
        (Code::FailedPrecondition, "OWNER_IMMUTABLE".into())
    );

    // Transfer: password step-up, then exactly one owner.
    let transfer = |password: &str| pb::TransferOwnershipRequest {
        org_id: org.to_string(),
        new_owner_id: mia.user.to_string(),
        password: password.into(),
    };
    let wrong = t.orgs.clone().transfer_ownership(bearer(transfer("wrong-password-here"), &owner.token)).await;
    assert_eq!(failure(wrong), (Code::Unauthenticated, "INVALID_CREDENTIALS".into()));
    let done = t.orgs.clone().transfer_ownership(bearer(transfer(PASSWORD), &owner.token)).await.expect("transfer");
    let done = done.into_inner();
    assert_eq!(done.previous_owner.expect("old").role(), pb::OrgRole::Admin);
    assert_eq!(done.new_owner.expect("new").role(), pb::OrgRole::Owner);
    let owners = t.members(&owner, org, "role = owner", "").await;
    assert_eq!(owners.members.iter().map(|m| m.email.as_str()).collect::<Vec<_>>(), ["mia@example.com"]);
    assert!(t.can(org, "transfer", mia.user).await);
    assert!(!t.can(org, "transfer", owner.user).await);
    assert!(t.can(org, "administer", owner.user).await, "the old owner is admin");

    // Leaving is allowed.
    t.remove(&owner, org, owner.user, "").await.expect("leave");
    let left: Vec<pb::MemberRemoved> = t.payloads("identity.member.removed").await;
    assert_eq!(left.last().expect("left").reason(), pb::MemberRemovalReason::Left);
}

#[tokio::test]
async fn with_permissions_unreachable_from_identity_the_events_apply_the_relationships() {
    // Identity alone, its permissions URL pointing nowhere: every direct write fails.
    let mut config = trellis_kit::testing::test_config(&trellis_kit::testing::TestEnv::get()).await;
    config.urls.permissions = "http://127.0.0.1:9".into();
    let cell_identity = TestCell::start_with(config.clone(), vec![trellis_identity::module()]).await;
    // Permissions in the same database and exchange, verifying identity's tokens.
    config.urls.identity = cell_identity.url("identity");
    let cell_permissions = TestCell::start_with(config, vec![trellis_permissions::module()]).await;
    let url = cell_permissions.url("permissions");
    authz(&cell_permissions, &url, "identity")
        .register_schema("identity", trellis_identity::relationships::SCHEMA, Duration::from_millis(200))
        .await
        .expect("identity schema");
    let checks = authz(&cell_permissions, &url, "tests");
    let can = |org: Uuid, permission: &'static str, user: Uuid| {
        let checks = checks.clone();
        async move {
            checks
                .check(
                    org,
                    &Ref::new("organization", org.to_string()),
                    permission,
                    &Ref::new("user", user.to_string()),
                    None,
                )
                .await
                .unwrap_or(false)
        }
    };

    let channel = cell_identity.channel("identity").await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut orgs = OrganizationServiceClient::new(channel);
    let r = auth.register(registration("ada@example.com", "Ada")).await.expect("register").into_inner();
    let claims = cell_identity.auth.verify(&r.access_token).await.expect("verify");
    let (user, org): (Uuid, Uuid) = (claims.sub.parse().expect("user"), claims.org.expect("org").parse().expect("org"));
    wait_until(Duration::from_secs(10), || can(org, "delete", user)).await;

    // A second org and a removal later: the events keep permissions in step.
    let request =
        pb::CreateOrganizationRequest { name: "Second".into(), slug: "second-org".into(), plan: String::new() };
    let created = orgs.create_organization(bearer(request, &r.access_token)).await;
    // Creating needs no Check; its owner tuple arrives through identity.member.added.
    let second: Uuid = created.expect("create").into_inner().organization.expect("org").id.parse().expect("id");
    wait_until(Duration::from_secs(10), || can(second, "transfer", user)).await;
    let version: i64 =
        sqlx::query_scalar("select version from permissions.source_versions where org_id = $1 and source_key = $2")
            .bind(second)
            .bind(format!("member:{user}"))
            .fetch_one(&cell_permissions.owner_pool().await)
            .await
            .expect("guard row");
    assert!(version > 0);
}
