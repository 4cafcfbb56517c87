//! gRPC handlers: proto in, one domain call, proto out. No SQL and no business rules here.

use std::net::IpAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use trellis_kit::RequestContext;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::api_key_service_server::ApiKeyService;
use trellis_proto::trellis::identity::v1::auth_service_server::AuthService;
use trellis_proto::trellis::identity::v1::invitation_service_server::InvitationService;
use trellis_proto::trellis::identity::v1::session_service_server::SessionService;
use trellis_proto::trellis::identity::v1::token_service_server::TokenService;
use trellis_proto::trellis::identity::v1::user_directory_service_server::UserDirectoryService;

use crate::accounts::{Client, Identity, Registration, TokenPair};
use crate::events::timestamp;
use crate::invitation::InvitationRequest;
use crate::organization::Role;
use crate::tokens::TOKEN_TYPE;
use crate::{store, user};

/// Metadata the gateway sets to the client's resolved IP.
const CLIENT_IP: &str = "x-client-ip";
/// Metadata the gateway sets to the client's user agent.
const CLIENT_USER_AGENT: &str = "x-client-user-agent";

/// Where the call comes from: the gateway's forwarded client metadata, else the peer itself.
pub(crate) fn client<T>(request: &Request<T>) -> Client {
    let metadata = request.metadata();
    let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let ip =
        text(CLIENT_IP).and_then(|v| v.parse::<IpAddr>().ok()).or_else(|| request.remote_addr().map(|addr| addr.ip()));
    let user_agent = text(CLIENT_USER_AGENT).or_else(|| text("user-agent")).map(str::to_string);
    Client { ip, user_agent }
}

/// The wire form of a user.
pub(crate) fn user_to_proto(u: &store::User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.clone(),
        email_verified: u.email_verified_at.is_some(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        name: user::display_name(&u.first_name, &u.last_name),
        // Signed avatar URLs arrive with kit::blob.
        avatar_url: String::new(),
        timezone: u.timezone.clone(),
        locale: u.locale.clone(),
        mfa_enabled: u.mfa_enabled,
        created_at: Some(timestamp(u.created_at)),
    }
}

/// The wire form of an invitation; `expired` is computed.
fn invitation_to_proto(inv: &store::Invitation) -> pb::Invitation {
    let status = match inv.status.as_str() {
        "pending" if inv.expires_at <= chrono::Utc::now() => pb::InvitationStatus::Expired,
        "pending" => pb::InvitationStatus::Pending,
        "accepted" => pb::InvitationStatus::Accepted,
        "revoked" => pb::InvitationStatus::Revoked,
        _ => pb::InvitationStatus::Unspecified,
    };
    pb::Invitation {
        id: inv.id.to_string(),
        org_id: inv.org_id.to_string(),
        email: inv.email.clone(),
        role: Role::parse(&inv.role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
        team_ids: inv.team_ids.iter().map(ToString::to_string).collect(),
        message: inv.message.clone().unwrap_or_default(),
        status: status.into(),
        invited_by: inv.invited_by.to_string(),
        expires_at: Some(timestamp(inv.expires_at)),
        created_at: Some(timestamp(inv.created_at)),
        accepted_at: inv.accepted_at.map(timestamp),
        accepted_by: inv.accepted_by.map(|u| u.to_string()).unwrap_or_default(),
        revoked_at: inv.revoked_at.map(timestamp),
        send_count: inv.send_count,
        last_sent_at: Some(timestamp(inv.last_sent_at)),
    }
}

/// `trellis.identity.v1.AuthService`.
#[derive(Debug, Clone)]
pub struct AuthApi {
    identity: Arc<Identity>,
}

impl AuthApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let client = client(&request);
        let r = request.into_inner();
        let registration = Registration {
            email: r.email,
            password: r.password,
            first_name: r.first_name,
            last_name: r.last_name,
            invitation_token: r.invitation_token,
            organization_name: r.organization_name,
        };
        let signed_in = self.identity.register(&ctx, registration, &client).await?;
        let TokenPair { access_token, expires_in, refresh_token } = signed_in.tokens;
        Ok(Response::new(pb::RegisterResponse {
            requires_email_verification: signed_in.user.email_verified_at.is_none(),
            user: Some(user_to_proto(&signed_in.user)),
            access_token,
            refresh_token,
            expires_in,
            token_type: TOKEN_TYPE.into(),
        }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        let signed_in = match self.identity.login(&r.email, r.password, &client).await? {
            crate::accounts::LoginOutcome::SignedIn(signed_in) => *signed_in,
            crate::accounts::LoginOutcome::MfaRequired(pending) => {
                return Ok(Response::new(pb::LoginResponse {
                    requires_mfa: true,
                    mfa_token: pending.mfa_token,
                    mfa_methods: pending.methods,
                    ..Default::default()
                }));
            }
        };
        let TokenPair { access_token, expires_in, refresh_token } = signed_in.tokens;
        Ok(Response::new(pb::LoginResponse {
            user: Some(user_to_proto(&signed_in.user)),
            access_token,
            refresh_token,
            expires_in,
            token_type: TOKEN_TYPE.into(),
            ..Default::default()
        }))
    }

    async fn reactivate(
        &self,
        request: Request<pb::ReactivateRequest>,
    ) -> Result<Response<pb::ReactivateResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let client = client(&request);
        let r = request.into_inner();
        let signed_in = match self.identity.reactivate(&ctx, &r.email, r.password, &client).await? {
            crate::accounts::LoginOutcome::SignedIn(signed_in) => *signed_in,
            crate::accounts::LoginOutcome::MfaRequired(pending) => {
                return Ok(Response::new(pb::ReactivateResponse {
                    requires_mfa: true,
                    mfa_token: pending.mfa_token,
                    ..Default::default()
                }));
            }
        };
        let TokenPair { access_token, expires_in, refresh_token } = signed_in.tokens;
        Ok(Response::new(pb::ReactivateResponse {
            user: Some(user_to_proto(&signed_in.user)),
            access_token,
            refresh_token,
            expires_in,
            token_type: TOKEN_TYPE.into(),
            ..Default::default()
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let refreshed = self.identity.refresh(&ctx, &request.get_ref().refresh_token).await?;
        let TokenPair { access_token, expires_in, refresh_token } = refreshed.tokens;
        Ok(Response::new(pb::RefreshResponse {
            access_token,
            refresh_token,
            expires_in,
            token_type: TOKEN_TYPE.into(),
            org_changed: refreshed.org_changed,
        }))
    }

    async fn forgot_password(
        &self,
        request: Request<pb::ForgotPasswordRequest>,
    ) -> Result<Response<pb::ForgotPasswordResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let client = client(&request);
        let message = self.identity.forgot_password(&ctx, &request.get_ref().email, &client).await?;
        Ok(Response::new(pb::ForgotPasswordResponse { message: message.into() }))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        self.identity.reset_password(&ctx, &r.token, r.new_password).await?;
        Ok(Response::new(pb::ResetPasswordResponse { message: crate::recovery::RESET_MESSAGE.into() }))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let email = self.identity.verify_email(ctx, &request.get_ref().token).await?;
        Ok(Response::new(pb::VerifyEmailResponse { email }))
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let expires_at = self.identity.resend_verification(ctx).await?;
        Ok(Response::new(pb::ResendVerificationResponse { expires_at: Some(timestamp(expires_at)) }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let revoked_sessions = self.identity.change_password(&ctx, r.current_password, r.new_password).await?;
        Ok(Response::new(pb::ChangePasswordResponse { revoked_sessions }))
    }

    async fn change_email(
        &self,
        request: Request<pb::ChangeEmailRequest>,
    ) -> Result<Response<pb::ChangeEmailResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let (pending_email, expires_at) = self.identity.change_email(&ctx, &r.new_email, r.password).await?;
        Ok(Response::new(pb::ChangeEmailResponse {
            pending_email,
            expires_at: Some(crate::events::timestamp(expires_at)),
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        self.identity.logout(ctx).await?;
        Ok(Response::new(()))
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let revoked_count = self.identity.logout_all(ctx).await?;
        Ok(Response::new(pb::LogoutAllResponse { revoked_count }))
    }

    async fn switch_organization(
        &self,
        request: Request<pb::SwitchOrganizationRequest>,
    ) -> Result<Response<pb::SwitchOrganizationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let switched = self.identity.switch_organization(ctx, &request.get_ref().org_id).await?;
        Ok(Response::new(pb::SwitchOrganizationResponse {
            access_token: switched.tokens.access_token,
            expires_in: switched.tokens.expires_in,
            token_type: TOKEN_TYPE.into(),
            org_id: switched.org_id.to_string(),
            role: switched.role,
        }))
    }
}

/// `trellis.identity.v1.SessionService`.
#[derive(Debug, Clone)]
pub struct SessionApi {
    identity: Arc<Identity>,
}

impl SessionApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let (rows, current) = self.identity.list_sessions(ctx).await?;
        let sessions: Vec<pb::Session> = rows
            .into_iter()
            .map(|s| pb::Session {
                current: s.id == current,
                id: s.id.to_string(),
                created_at: Some(timestamp(s.created_at)),
                last_seen_at: Some(timestamp(s.last_seen_at)),
                ip: s.ip.unwrap_or_default(),
                user_agent: s.user_agent.unwrap_or_default(),
                amr: s.amr,
                active_org_id: s.active_org_id.map(|o| o.to_string()).unwrap_or_default(),
            })
            .collect();
        let total_size = i32::try_from(sessions.len()).unwrap_or(i32::MAX);
        Ok(Response::new(pb::ListSessionsResponse { sessions, total_size }))
    }

    async fn revoke_session(&self, request: Request<pb::RevokeSessionRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        self.identity.revoke_session(ctx, &request.get_ref().session_id).await?;
        Ok(Response::new(()))
    }

    async fn get_session_status(
        &self,
        request: Request<pb::GetSessionStatusRequest>,
    ) -> Result<Response<pb::GetSessionStatusResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let statuses = self.identity.session_status(ctx, &request.get_ref().sids).await?;
        Ok(Response::new(pb::GetSessionStatusResponse {
            statuses: statuses
                .into_iter()
                .map(|s| pb::SessionStatus { sid: s.sid, active: s.active, revoked_at: s.revoked_at.map(timestamp) })
                .collect(),
        }))
    }
}

/// `trellis.identity.v1.InvitationService`.
#[derive(Debug, Clone)]
pub struct InvitationApi {
    identity: Arc<Identity>,
    tokens: trellis_kit::paging::PageTokens,
}

impl InvitationApi {
    /// Handlers over the shared state; page tokens signed with the cell secret.
    pub fn new(identity: Arc<Identity>, tokens: trellis_kit::paging::PageTokens) -> Self {
        Self { identity, tokens }
    }
}

#[tonic::async_trait]
impl InvitationService for InvitationApi {
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let req = InvitationRequest {
            role: pb::OrgRole::try_from(r.role).map(Role::from_proto).map_err(|_| r.role),
            email: r.email,
            team_ids: r.team_ids,
            message: r.message,
        };
        let invitation = self.identity.create_invitation(&ctx, req).await?;
        Ok(Response::new(pb::CreateInvitationResponse { invitation: Some(invitation_to_proto(&invitation)) }))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let (rows, next_page_token, total) =
            self.identity.list_invitations(ctx, &self.tokens, request.get_ref()).await?;
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: rows.iter().map(invitation_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn preview_invitation(
        &self,
        request: Request<pb::PreviewInvitationRequest>,
    ) -> Result<Response<pb::PreviewInvitationResponse>, Status> {
        let p = self.identity.preview_invitation(&request.get_ref().token).await?;
        let status = invitation_to_proto(&p.invitation).status;
        Ok(Response::new(pb::PreviewInvitationResponse {
            organization: Some(pb::InvitedOrganization { name: p.org_name, slug: p.org_slug, logo_url: String::new() }),
            inviter_name: p.inviter_name,
            email: p.invitation.email.clone(),
            role: Role::parse(&p.invitation.role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
            teams: p.teams.into_iter().map(|(id, name)| pb::InvitedTeam { id: id.to_string(), name }).collect(),
            expires_at: Some(timestamp(p.invitation.expires_at)),
            status,
            account_exists: p.account_exists,
        }))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let accepted = self.identity.accept_invitation(ctx, &request.get_ref().token).await?;
        Ok(Response::new(pb::AcceptInvitationResponse {
            org_id: accepted.org_id.to_string(),
            role: accepted.role.to_proto().into(),
            team_ids: accepted.team_ids.iter().map(ToString::to_string).collect(),
            access_token: accepted.switched.tokens.access_token,
            expires_in: accepted.switched.tokens.expires_in,
            token_type: TOKEN_TYPE.into(),
        }))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::ResendInvitationResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let invitation = self.identity.resend_invitation(ctx, &request.get_ref().invitation_id).await?;
        Ok(Response::new(pb::ResendInvitationResponse { invitation: Some(invitation_to_proto(&invitation)) }))
    }

    async fn revoke_invitation(&self, request: Request<pb::RevokeInvitationRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        self.identity.revoke_invitation(ctx, &request.get_ref().invitation_id).await?;
        Ok(Response::new(()))
    }
}

/// `trellis.identity.v1.TokenService`.
#[derive(Debug, Clone)]
pub struct TokenApi {
    identity: Arc<Identity>,
}

impl TokenApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse { keys: self.identity.jwks().await? }))
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::IssueServiceTokenResponse>, Status> {
        let r = request.into_inner();
        let access_token = self.identity.issue_service_token(&r.client_name, &r.client_secret, &r.org_id).await?;
        Ok(Response::new(pb::IssueServiceTokenResponse {
            access_token,
            expires_in: crate::service_tokens::SERVICE_TOKEN_TTL.as_secs() as i32,
            token_type: TOKEN_TYPE.into(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let keys = self.identity.rotate_signing_key(ctx).await?;
        Ok(Response::new(rotation_to_proto(&keys)))
    }
}

/// The wire form of the key states after a rotation request.
pub fn rotation_to_proto(keys: &[crate::keys::KeyState]) -> pb::RotateSigningKeyResponse {
    use crate::keys::KeyStatus;
    let next = keys.iter().find(|k| k.status == KeyStatus::Next);
    pb::RotateSigningKeyResponse {
        next_kid: next.map(|k| k.kid.clone()).unwrap_or_default(),
        activates_at: next.map(|k| timestamp(k.activate_after)),
        keys: keys
            .iter()
            .map(|k| pb::SigningKey {
                kid: k.kid.clone(),
                status: match k.status {
                    KeyStatus::Next => pb::SigningKeyStatus::Next,
                    KeyStatus::Active => pb::SigningKeyStatus::Active,
                    KeyStatus::Retiring => pb::SigningKeyStatus::Retiring,
                    KeyStatus::Retired => pb::SigningKeyStatus::Retired,
                }
                .into(),
                created_at: Some(timestamp(k.created_at)),
                activate_after: (k.status == KeyStatus::Next).then(|| timestamp(k.activate_after)),
                activated_at: k.activated_at.map(timestamp),
                replaced_at: k.replaced_at.map(timestamp),
                retires_at: k.retires_at.map(timestamp),
            })
            .collect(),
    }
}

/// `trellis.identity.v1.UserDirectoryService`.
#[derive(Debug, Clone)]
pub struct UserDirectoryApi {
    identity: Arc<Identity>,
}

impl UserDirectoryApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl UserDirectoryService for UserDirectoryApi {
    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let users = self.identity.batch_get_users(ctx, &request.get_ref().user_ids).await?;
        Ok(Response::new(pb::BatchGetUsersResponse {
            users: users
                .into_iter()
                .map(|u| pb::UserSummary {
                    id: u.id.to_string(),
                    name: u.name,
                    email: u.email,
                    // Signed avatar URLs arrive with kit::blob.
                    avatar_url: String::new(),
                    status: u.status,
                })
                .collect(),
        }))
    }
}

/// The wire form of an API key (never the key itself).
fn api_key_to_proto(k: &store::api_keys::ApiKeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        name: k.name.clone(),
        prefix: k.key_prefix.clone(),
        scopes: k.scopes.clone(),
        role: Role::parse(&k.role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
        expires_at: Some(timestamp(k.expires_at)),
        last_used_at: k.last_used_at.map(timestamp),
        created_by: k.created_by.to_string(),
        created_at: Some(timestamp(k.created_at)),
        revoked_at: k.revoked_at.map(timestamp),
    }
}

/// `trellis.identity.v1.ApiKeyService`.
#[derive(Debug, Clone)]
pub struct ApiKeyApi {
    identity: Arc<Identity>,
}

impl ApiKeyApi {
    /// Handlers over the shared state.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeyApi {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let r = request.into_inner();
        let expires_at = r.expires_at.map(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32));
        let req = crate::api_keys::NewKeyRequest {
            name: r.name,
            scopes: r.scopes,
            role: match pb::OrgRole::try_from(r.role) {
                Ok(pb::OrgRole::Unspecified) => Ok(None),
                Ok(role) => Role::from_proto(role).map(Some).ok_or(r.role),
                Err(_) => Err(r.role),
            },
            // An out-of-range timestamp is as invalid as a past one.
            expires_at: expires_at.map(|t| t.unwrap_or(chrono::DateTime::UNIX_EPOCH)),
        };
        let (row, key) = self.identity.create_api_key(&ctx, req).await?;
        Ok(Response::new(pb::CreateApiKeyResponse { api_key: Some(api_key_to_proto(&row)), key }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let r = request.get_ref();
        let (rows, next_page_token, total) = self.identity.list_api_keys(ctx, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: rows.iter().map(api_key_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::GetApiKeyResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let row = self.identity.get_api_key(ctx, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetApiKeyResponse { api_key: Some(api_key_to_proto(&row)) }))
    }

    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Result<Response<()>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        self.identity.revoke_api_key(ctx, &request.get_ref().id).await?;
        Ok(Response::new(()))
    }

    async fn resolve_api_key(
        &self,
        request: Request<pb::ResolveApiKeyRequest>,
    ) -> Result<Response<pb::ResolveApiKeyResponse>, Status> {
        let ip = client(&request).ip.map(|ip| ip.to_string());
        let resolved = self.identity.resolve_api_key(&request.get_ref().key, ip.as_deref()).await?;
        Ok(Response::new(pb::ResolveApiKeyResponse {
            api_key: Some(pb::ResolvedApiKey {
                id: resolved.key.id.to_string(),
                org_id: resolved.key.org_id.to_string(),
                scopes: resolved.key.scopes.clone(),
                expires_at: Some(timestamp(resolved.key.expires_at)),
            }),
            access_token: resolved.access_token,
        }))
    }

    async fn register_scope_resources(
        &self,
        request: Request<pb::RegisterScopeResourcesRequest>,
    ) -> Result<Response<pb::RegisterScopeResourcesResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let resources: Vec<(String, String)> =
            request.get_ref().resources.iter().map(|r| (r.resource.clone(), r.description.clone())).collect();
        let changed = self.identity.register_scope_resources(ctx, &resources).await?;
        Ok(Response::new(pb::RegisterScopeResourcesResponse { changed: i32::try_from(changed).unwrap_or(i32::MAX) }))
    }
}
