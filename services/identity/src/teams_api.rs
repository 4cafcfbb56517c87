//! gRPC handlers of `TeamService`: proto in, one domain call ([`crate::teams`]), proto out.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_kit::paging::PageTokens;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::team_service_server::TeamService;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::events::timestamp;
use crate::team_store::{Team, TeamMember};
use crate::user;

/// The wire form of a team.
pub fn team_to_proto(t: &Team) -> pb::Team {
    let visibility = if t.visibility == "private" { pb::TeamVisibility::Private } else { pb::TeamVisibility::Public };
    pb::Team {
        id: t.id.to_string(),
        org_id: t.org_id.to_string(),
        name: t.name.clone(),
        description: t.description.clone(),
        visibility: visibility.into(),
        parent_team_id: t.parent_team_id.map(|p| p.to_string()).unwrap_or_default(),
        member_count: i32::try_from(t.member_count).unwrap_or(i32::MAX),
        created_by: t.created_by.to_string(),
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
    }
}

/// The wire form of a team member, `via` the descendant team for nested members.
pub fn team_member_to_proto(m: &TeamMember, via: Option<Uuid>) -> pb::TeamMember {
    let role = if m.role == "maintainer" { pb::TeamRole::Maintainer } else { pb::TeamRole::Member };
    pb::TeamMember {
        user_id: m.user_id.to_string(),
        name: user::display_name(&m.first_name, &m.last_name),
        email: m.email.clone(),
        role: role.into(),
        via_team_id: via.map(|v| v.to_string()).unwrap_or_default(),
        added_at: Some(timestamp(m.added_at)),
    }
}

/// `trellis.identity.v1.TeamService`.
#[derive(Debug, Clone)]
pub struct TeamApi {
    identity: Arc<Identity>,
    tokens: PageTokens,
}

impl TeamApi {
    /// Handlers over the shared state; page tokens signed with the cell secret.
    pub fn new(identity: Arc<Identity>, tokens: PageTokens) -> Self {
        Self { identity, tokens }
    }
}

#[tonic::async_trait]
impl TeamService for TeamApi {
    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let team = self.identity.create_team(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::CreateTeamResponse { team: Some(team_to_proto(&team)) }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let (teams, next_page_token, total) = self.identity.list_teams(ctx, &self.tokens, request.get_ref()).await?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: teams.iter().map(team_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn get_team(&self, request: Request<pb::GetTeamRequest>) -> Result<Response<pb::GetTeamResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let team = self.identity.get_team(ctx, &request.get_ref().team_id).await?;
        Ok(Response::new(pb::GetTeamResponse { team: Some(team_to_proto(&team)) }))
    }

    async fn update_team(
        &self,
        request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::UpdateTeamResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let team = self.identity.update_team(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::UpdateTeamResponse { team: Some(team_to_proto(&team)) }))
    }

    async fn delete_team(&self, request: Request<pb::DeleteTeamRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        self.identity.delete_team(ctx, &request.get_ref().team_id).await?;
        Ok(Response::new(()))
    }

    async fn add_team_members(
        &self,
        request: Request<pb::AddTeamMembersRequest>,
    ) -> Result<Response<pb::AddTeamMembersResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let members = self.identity.add_team_members(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::AddTeamMembersResponse {
            members: members.iter().map(|m| team_member_to_proto(m, None)).collect(),
        }))
    }

    async fn list_team_members(
        &self,
        request: Request<pb::ListTeamMembersRequest>,
    ) -> Result<Response<pb::ListTeamMembersResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let r = request.get_ref();
        let members = self.identity.list_team_members(ctx, &r.team_id, r.include_nested).await?;
        Ok(Response::new(pb::ListTeamMembersResponse {
            total_size: i32::try_from(members.len()).unwrap_or(i32::MAX),
            members: members.iter().map(|(m, via)| team_member_to_proto(m, *via)).collect(),
        }))
    }

    async fn update_team_member(
        &self,
        request: Request<pb::UpdateTeamMemberRequest>,
    ) -> Result<Response<pb::UpdateTeamMemberResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let member = self.identity.update_team_member(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::UpdateTeamMemberResponse { member: Some(team_member_to_proto(&member, None)) }))
    }

    async fn remove_team_member(&self, request: Request<pb::RemoveTeamMemberRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let r = request.get_ref();
        self.identity.remove_team_member(ctx, &r.team_id, &r.user_id).await?;
        Ok(Response::new(()))
    }
}
