//! gRPC handlers of `FeatureFlagService`: proto in, one domain call ([`crate::flags`]), proto out.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_kit::paging::PageTokens;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::feature_flag_service_server::FeatureFlagService;

use crate::accounts::Identity;
use crate::events::timestamp;
use crate::flags::{rules_of, rules_to_proto};
use crate::flags_store::FlagRow;

fn flag_to_proto(f: &FlagRow) -> pb::FeatureFlag {
    pb::FeatureFlag {
        key: f.key.clone(),
        description: f.description.clone(),
        enabled: f.enabled,
        rules: rules_to_proto(&rules_of(f)),
        updated_by: f.updated_by.clone().unwrap_or_default(),
        created_at: Some(timestamp(f.created_at)),
        updated_at: Some(timestamp(f.updated_at)),
    }
}

/// `trellis.identity.v1.FeatureFlagService`.
#[derive(Debug, Clone)]
pub struct FeatureFlagApi {
    identity: Arc<Identity>,
    tokens: PageTokens,
}

impl FeatureFlagApi {
    /// Handlers over the shared state; page tokens signed with the cell secret.
    pub fn new(identity: Arc<Identity>, tokens: PageTokens) -> Self {
        Self { identity, tokens }
    }
}

#[tonic::async_trait]
impl FeatureFlagService for FeatureFlagApi {
    async fn list_flags(
        &self,
        request: Request<pb::ListFlagsRequest>,
    ) -> Result<Response<pb::ListFlagsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let (flags, next_page_token, total) = self.identity.list_flags(ctx, &self.tokens, request.get_ref()).await?;
        Ok(Response::new(pb::ListFlagsResponse {
            flags: flags.iter().map(flag_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn create_flag(
        &self,
        request: Request<pb::CreateFlagRequest>,
    ) -> Result<Response<pb::CreateFlagResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let flag = self.identity.create_flag(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::CreateFlagResponse { flag: Some(flag_to_proto(&flag)) }))
    }

    async fn update_flag(
        &self,
        request: Request<pb::UpdateFlagRequest>,
    ) -> Result<Response<pb::UpdateFlagResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let flag = self.identity.update_flag(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::UpdateFlagResponse { flag: Some(flag_to_proto(&flag)) }))
    }

    async fn delete_flag(&self, request: Request<pb::DeleteFlagRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        self.identity.delete_flag(ctx, &request.get_ref().key).await?;
        Ok(Response::new(()))
    }

    async fn get_my_features(
        &self,
        request: Request<pb::GetMyFeaturesRequest>,
    ) -> Result<Response<pb::GetMyFeaturesResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let flags = self.identity.my_features(ctx).await?;
        Ok(Response::new(pb::GetMyFeaturesResponse { flags, modules: self.identity.settings.cell_modules() }))
    }

    async fn evaluate_flags(
        &self,
        request: Request<pb::EvaluateFlagsRequest>,
    ) -> Result<Response<pb::EvaluateFlagsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let flags = self.identity.evaluate_flags(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::EvaluateFlagsResponse { flags }))
    }
}
