//! gRPC handlers of `OrganizationService`: proto in, one domain call ([`crate::organizations`],
//! [`crate::members`]), proto out.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_kit::paging::PageTokens;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::organization_service_server::OrganizationService;

use crate::accounts::Identity;
use crate::events::timestamp;
use crate::org_store::{Member, Org};
use crate::organization::Role;
use crate::user;

/// The wire form of an organization.
pub fn org_to_proto(o: &Org) -> pb::Organization {
    pb::Organization {
        id: o.id.to_string(),
        name: o.name.clone(),
        slug: o.slug.clone(),
        plan: o.plan.clone(),
        personal: o.personal,
        default_timezone: o.default_timezone.clone(),
        default_locale: o.default_locale.clone(),
        billing_email: o.billing_email.clone().unwrap_or_default(),
        member_limit: o.member_limit.unwrap_or(0),
        created_at: Some(timestamp(o.created_at)),
        updated_at: Some(timestamp(o.updated_at)),
        deleted_at: o.deleted_at.map(timestamp),
        purge_after: o.purge_after.map(timestamp),
    }
}

fn role(name: &str) -> i32 {
    Role::parse(name).map_or(pb::OrgRole::Unspecified, Role::to_proto).into()
}

/// The wire form of a member.
pub fn member_to_proto(m: &Member) -> pb::Member {
    pb::Member {
        user_id: m.user_id.to_string(),
        name: user::display_name(&m.first_name, &m.last_name),
        email: m.email.clone(),
        avatar_url: String::new(),
        role: role(&m.role),
        status: m.status.clone(),
        joined_at: Some(timestamp(m.joined_at)),
    }
}

/// `trellis.identity.v1.OrganizationService`.
#[derive(Debug, Clone)]
pub struct OrganizationApi {
    identity: Arc<Identity>,
    tokens: PageTokens,
}

impl OrganizationApi {
    /// Handlers over the shared state; page tokens signed with the cell secret.
    pub fn new(identity: Arc<Identity>, tokens: PageTokens) -> Self {
        Self { identity, tokens }
    }
}

#[tonic::async_trait]
impl OrganizationService for OrganizationApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::CreateOrganizationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let org = self.identity.create_organization(&ctx, &r.name, &r.slug, &r.plan).await?;
        Ok(Response::new(pb::CreateOrganizationResponse { organization: Some(org_to_proto(&org)) }))
    }

    async fn list_my_organizations(
        &self,
        request: Request<pb::ListMyOrganizationsRequest>,
    ) -> Result<Response<pb::ListMyOrganizationsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let orgs = self.identity.my_organizations(ctx).await?;
        Ok(Response::new(pb::ListMyOrganizationsResponse {
            organizations: orgs
                .iter()
                .map(|(o, r)| pb::OrganizationMembership { organization: Some(org_to_proto(o)), role: role(r) })
                .collect(),
        }))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let (org, r) = self.identity.get_organization(ctx, &request.get_ref().org_id).await?;
        Ok(Response::new(pb::GetOrganizationResponse {
            organization: Some(org_to_proto(&org)),
            role: r.as_deref().map_or(0, role),
        }))
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::UpdateOrganizationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let r = request.get_ref();
        let org = self.identity.update_organization(ctx, &r.org_id, r).await?;
        Ok(Response::new(pb::UpdateOrganizationResponse { organization: Some(org_to_proto(&org)) }))
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        self.identity.delete_organization(&ctx, &r.org_id, &r.confirmation, r.password).await?;
        Ok(Response::new(()))
    }

    async fn restore_organization(
        &self,
        request: Request<pb::RestoreOrganizationRequest>,
    ) -> Result<Response<pb::RestoreOrganizationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let org = self.identity.restore_organization(ctx, &request.get_ref().org_id).await?;
        Ok(Response::new(pb::RestoreOrganizationResponse { organization: Some(org_to_proto(&org)) }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let page = self.identity.list_members(ctx, &self.tokens, request.get_ref()).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: page.members.iter().map(member_to_proto).collect(),
            next_page_token: page.next_page_token,
            total_size: i32::try_from(page.total_size).unwrap_or(i32::MAX),
        }))
    }

    async fn change_member_role(
        &self,
        request: Request<pb::ChangeMemberRoleRequest>,
    ) -> Result<Response<pb::ChangeMemberRoleResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let r = request.get_ref();
        let new_role = pb::OrgRole::try_from(r.role).ok().and_then(Role::from_proto);
        let member = self.identity.change_member_role(ctx, &r.org_id, &r.user_id, new_role).await?;
        Ok(Response::new(pb::ChangeMemberRoleResponse { member: Some(member_to_proto(&member)) }))
    }

    async fn remove_member(&self, request: Request<pb::RemoveMemberRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let r = request.get_ref();
        self.identity.remove_member(ctx, &r.org_id, &r.user_id, &r.reassign_to).await?;
        Ok(Response::new(()))
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let (old, new) = self.identity.transfer_ownership(&ctx, &r.org_id, &r.new_owner_id, r.password).await?;
        Ok(Response::new(pb::TransferOwnershipResponse {
            previous_owner: Some(member_to_proto(&old)),
            new_owner: Some(member_to_proto(&new)),
        }))
    }
}
