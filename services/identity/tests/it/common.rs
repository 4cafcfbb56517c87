//! Shared helpers: a cell running identity, clients, error inspection, and the outbox.

use prost::Message;
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use trellis_kit::auth::Claims;
use trellis_kit::testing::TestCell;
use trellis_proto::trellis::events::v1::Envelope;
use trellis_proto::trellis::identity::v1 as pb;
use trellis_proto::trellis::identity::v1::auth_service_client::AuthServiceClient;
use trellis_proto::trellis::identity::v1::invitation_service_client::InvitationServiceClient;
use trellis_proto::trellis::identity::v1::token_service_client::TokenServiceClient;

/// A password that satisfies the policy.
pub const PASSWORD: &str = "violet-harbor-lantern-42";

/// A cell running only identity, with clients for its services.
pub struct Identity {
    pub cell: TestCell,
    pub auth: AuthServiceClient<Channel>,
    pub invitations: InvitationServiceClient<Channel>,
    pub tokens: TokenServiceClient<Channel>,
    pub owner: PgPool,
}

impl Identity {
    pub async fn start() -> Identity {
        Self::start_with(|_| {}).await
    }

    /// With identity's settings adjusted by `tune` (shorter lockouts, other limits).
    pub async fn start_with(tune: impl FnOnce(&mut trellis_identity::IdentityConfig)) -> Identity {
        let mut settings = trellis_identity::IdentityConfig::from_env().expect("identity settings");
        tune(&mut settings);
        // Permissions answers identity's checks (invitations need organization#invite).
        let cell =
            TestCell::start(vec![trellis_identity::module_with(Some(settings)), trellis_permissions::module()]).await;
        crate::organizations::register_identity_schema(&cell).await;
        let channel = cell.channel("identity").await;
        let owner = cell.owner_pool().await;
        Identity {
            auth: AuthServiceClient::new(channel.clone()),
            invitations: InvitationServiceClient::new(channel.clone()),
            tokens: TokenServiceClient::new(channel),
            owner,
            cell,
        }
    }

    /// Registers `email` with a personal organization.
    pub async fn register(&self, email: &str, first_name: &str) -> pb::RegisterResponse {
        self.try_register(registration(email, first_name)).await.unwrap_or_else(|s| panic!("register {email}: {s:?}"))
    }

    pub async fn try_register(&self, request: pb::RegisterRequest) -> Result<pb::RegisterResponse, Status> {
        self.auth.clone().register(request).await.map(|r| r.into_inner())
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        let request = pb::LoginRequest { email: email.into(), password: password.into() };
        self.auth.clone().login(request).await.map(|r| r.into_inner())
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::RefreshResponse, Status> {
        let request = pb::RefreshRequest { refresh_token: refresh_token.into() };
        self.auth.clone().refresh(request).await.map(|r| r.into_inner())
    }

    /// Invites `email` as `role` with `access_token`'s credentials.
    pub async fn invite(
        &self,
        access_token: &str,
        email: &str,
        role: pb::OrgRole,
    ) -> Result<pb::CreateInvitationResponse, Status> {
        let request = pb::CreateInvitationRequest { email: email.into(), role: role.into(), ..Default::default() };
        self.invitations.clone().create_invitation(bearer(request, access_token)).await.map(|r| r.into_inner())
    }

    /// Verifies an access token with kit's verifier (the JWKS fetched from this identity).
    pub async fn verify(&self, access_token: &str) -> Claims {
        self.cell.auth.verify(access_token).await.unwrap_or_else(|e| panic!("token does not verify: {e}"))
    }

    /// The staged events of a type, oldest first.
    pub async fn outbox(&self, event_type: &str) -> Vec<Envelope> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("select envelope from identity.outbox where event_type = $1 order by created_at, id")
                .bind(event_type)
                .fetch_all(&self.owner)
                .await
                .expect("read outbox");
        rows.iter().map(|b| Envelope::decode(b.as_slice()).expect("an Envelope")).collect()
    }

    /// The payloads of the staged events of a type, oldest first.
    pub async fn payloads<M: prost::Name + Default>(&self, event_type: &str) -> Vec<M> {
        self.outbox(event_type)
            .await
            .iter()
            .map(|e| e.payload.as_ref().expect("a payload").to_msg::<M>().expect("payload of the expected type"))
            .collect()
    }
}

/// A valid registration request.
pub fn registration(email: &str, first_name: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        email: email.into(),
        password: PASSWORD.into(),
        first_name: first_name.into(),
        last_name: "Tester".into(),
        ..Default::default()
    }
}

/// A request carrying a bearer token.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

/// The code and ErrorInfo reason of a failure.
pub fn failure<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("the call should fail");
    let reason = status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default();
    (status.code(), reason)
}

/// The fields named by a failure's BadRequest details.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
