//! gRPC handlers of `UserService`: proto in, one [`crate::users`] call, proto out.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::user_service_server::UserService;

use crate::events::timestamp;
use crate::organization::Role;
use crate::{Identity, store, user};

/// `trellis.identity.v1.UserService`.
#[derive(Debug, Clone)]
pub struct UserApi {
    identity: Arc<Identity>,
}

impl UserApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

fn name_of(u: &store::User) -> String {
    user::display_name(&u.first_name, &u.last_name)
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::GetMeResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let me = self.identity.get_me(&ctx).await?;
        let u = &me.user;
        Ok(Response::new(pb::GetMeResponse {
            id: u.id.to_string(),
            email: u.email.clone(),
            email_verified: u.email_verified_at.is_some(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            name: name_of(u),
            // Signed avatar URLs arrive with kit::blob.
            avatar_url: String::new(),
            timezone: u.timezone.clone(),
            locale: u.locale.clone(),
            mfa_enabled: u.mfa_enabled,
            created_at: Some(timestamp(u.created_at)),
            active_organization: me.active.map(|(org, role)| pb::ActiveOrganization {
                id: org.id.to_string(),
                name: org.name,
                slug: org.slug,
                role: Role::parse(&role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
            }),
        }))
    }

    async fn update_me(&self, request: Request<pb::UpdateMeRequest>) -> Result<Response<pb::UpdateMeResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let u = self.identity.update_me(&ctx, request.get_ref()).await?;
        Ok(Response::new(pb::UpdateMeResponse {
            id: u.id.to_string(),
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            name: name_of(&u),
            timezone: u.timezone.clone(),
            locale: u.locale.clone(),
        }))
    }

    async fn export_my_data(
        &self,
        request: Request<pb::ExportMyDataRequest>,
    ) -> Result<Response<pb::ExportMyDataResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        Ok(Response::new(self.identity.export_my_data(ctx).await?))
    }

    async fn deactivate(
        &self,
        request: Request<pb::DeactivateRequest>,
    ) -> Result<Response<pb::DeactivateResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let erase_after = self.identity.deactivate(&ctx, &r.confirmation, r.password).await?;
        Ok(Response::new(pb::DeactivateResponse { erase_after: Some(timestamp(erase_after)) }))
    }

    async fn delete_me(&self, request: Request<pb::DeleteMeRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        self.identity.delete_me(&ctx, request.into_inner().password).await?;
        Ok(Response::new(()))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let u = self.identity.get_user(&ctx, &request.get_ref().user_id).await?;
        Ok(Response::new(pb::GetUserResponse {
            id: u.id.to_string(),
            name: name_of(&u),
            email: u.email.clone(),
            avatar_url: String::new(),
            timezone: u.timezone.clone(),
        }))
    }
}
