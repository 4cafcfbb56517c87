//! gRPC handlers of `MfaService`: proto in, one [`crate::mfa`] call, proto out.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::mfa_service_server::MfaService;

use crate::Identity;
use crate::accounts::TokenPair;
use crate::api::{client, user_to_proto};
use crate::tokens::TOKEN_TYPE;

/// `trellis.identity.v1.MfaService`.
#[derive(Debug, Clone)]
pub struct MfaApi {
    identity: Arc<Identity>,
}

impl MfaApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl MfaService for MfaApi {
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let enrolment = self.identity.enroll_mfa(&ctx, request.into_inner().password).await?;
        Ok(Response::new(pb::EnrollResponse { secret: enrolment.secret, otpauth_url: enrolment.otpauth_url }))
    }

    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let backup_codes = self.identity.confirm_mfa(&ctx, &request.get_ref().code).await?;
        Ok(Response::new(pb::VerifyResponse { backup_codes }))
    }

    async fn challenge(
        &self,
        request: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        let passed = self.identity.mfa_challenge(&r.mfa_token, &r.code, &r.backup_code, &client).await?;
        let TokenPair { access_token, expires_in, refresh_token } = passed.sign_in.tokens;
        Ok(Response::new(pb::ChallengeResponse {
            user: Some(user_to_proto(&passed.sign_in.user)),
            access_token,
            refresh_token,
            expires_in,
            token_type: TOKEN_TYPE.into(),
            backup_codes_remaining: passed.backup_codes_remaining,
        }))
    }

    async fn regenerate_backup_codes(
        &self,
        request: Request<pb::RegenerateBackupCodesRequest>,
    ) -> Result<Response<pb::RegenerateBackupCodesResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let backup_codes = self.identity.regenerate_backup_codes(&ctx, &request.get_ref().code).await?;
        Ok(Response::new(pb::RegenerateBackupCodesResponse { backup_codes }))
    }

    async fn disable(&self, request: Request<pb::DisableRequest>) -> Result<Response<pb::DisableResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        self.identity.disable_mfa(&ctx, r.password, &r.code).await?;
        Ok(Response::new(pb::DisableResponse {}))
    }
}
