//! gRPC handlers of `OnboardingService`: proto in, one domain call ([`crate::onboarding`]), proto
//! out.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::onboarding_service_server::OnboardingService;

use crate::accounts::Identity;
use crate::events::timestamp;
use crate::onboarding::{self, StepStatus};

fn step_to_proto(s: &StepStatus) -> pb::OnboardingStep {
    let scope = if s.step.scope == "org" { pb::OnboardingScope::Org } else { pb::OnboardingScope::User };
    pb::OnboardingStep {
        id: format!("{}.{}", s.step.module, s.step.step),
        module: s.step.module.clone(),
        title: s.step.title.clone(),
        required: s.step.required,
        scope: scope.into(),
        completed: s.completed_at.is_some(),
        completed_at: s.completed_at.map(timestamp),
    }
}

fn status_to_proto(s: &onboarding::Status) -> pb::GetOnboardingStatusResponse {
    pb::GetOnboardingStatusResponse {
        steps: s.steps.iter().map(step_to_proto).collect(),
        all_required_completed: s.all_required_completed,
        dismissed: s.dismissed,
    }
}

/// `trellis.identity.v1.OnboardingService`.
#[derive(Debug, Clone)]
pub struct OnboardingApi {
    identity: Arc<Identity>,
}

impl OnboardingApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl OnboardingService for OnboardingApi {
    async fn get_onboarding_status(
        &self,
        request: Request<pb::GetOnboardingStatusRequest>,
    ) -> Result<Response<pb::GetOnboardingStatusResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let status = self.identity.onboarding_status(ctx).await?;
        Ok(Response::new(status_to_proto(&status)))
    }

    async fn complete_onboarding_step(
        &self,
        request: Request<pb::CompleteOnboardingStepRequest>,
    ) -> Result<Response<pb::CompleteOnboardingStepResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let step = self.identity.complete_onboarding_step(ctx, &request.get_ref().step).await?;
        Ok(Response::new(pb::CompleteOnboardingStepResponse { step: Some(step_to_proto(&step)) }))
    }

    async fn dismiss_onboarding(
        &self,
        request: Request<pb::DismissOnboardingRequest>,
    ) -> Result<Response<pb::DismissOnboardingResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let status = self.identity.dismiss_onboarding(ctx).await?;
        Ok(Response::new(pb::DismissOnboardingResponse { status: Some(status_to_proto(&status)) }))
    }

    async fn register_onboarding_steps(
        &self,
        request: Request<pb::RegisterOnboardingStepsRequest>,
    ) -> Result<Response<pb::RegisterOnboardingStepsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let registered = self.identity.register_onboarding_steps(ctx, request.get_ref()).await?;
        Ok(Response::new(pb::RegisterOnboardingStepsResponse {
            registered: i32::try_from(registered).unwrap_or(i32::MAX),
        }))
    }
}
