//! Identity: the only issuer of credentials in a cell. It owns users and their passwords,
//! sessions with rotating refresh tokens, the Ed25519 keys that sign every access token (and
//! their JWKS), organizations (the tenant), memberships and invitations.
//!
//! # Layout
//! - [`api`]: gRPC handlers (`AuthService`, `InvitationService`, `TokenService`); translate proto
//!   <-> domain and call one domain function. No SQL here.
//! - [`api_keys`]: API keys (create, list, revoke, the gateway's ResolveApiKey) and the registry
//!   of scope resources their scopes must name.
//! - [`accounts`]: the sign-up and sign-in flows: Register, Login, Refresh. Holds [`Identity`], the
//!   state every handler shares.
//! - [`invitation`]: creating invitations, and the rules for accepting one; [`invitations`]
//!   (queries in [`invitation_store`]): listing, preview, accept, resend, revoke.
//! - [`user`], [`organization`]: rules for emails and names, roles, slugs.
//! - [`organizations`], [`members`] (queries in [`org_store`], handlers in
//!   [`organizations_api`]): the OrganizationService, authorized by permissions Checks.
//! - [`teams`] (queries in [`team_store`], handlers in [`teams_api`]): the TeamService; nesting,
//!   visibility through `team#view`, nested members.
//! - [`settings`] (queries in [`settings_store`], handlers in [`settings_api`], value schemas in
//!   [`json_schema`]): org and user settings, resolved user → org → registered default.
//! - [`flags`] (queries in [`flags_store`], handlers in [`flags_api`]): feature flags and their
//!   deterministic evaluation.
//! - [`onboarding`] (handlers in [`onboarding_api`]): onboarding steps, progress, dismissal, and
//!   the consumer that completes steps from events.
//! - [`purge`]: the replica-safe purge of deleted organizations past their window.
//! - [`erasure`]: the replica-safe erasure of deactivated accounts past their window.
//! - [`relationships`]: identity's schema, the `service:identity` tokens it signs itself, and the
//!   relationship writes right after its commits (the permissions consumer applies the same).
//! - [`password`]: the password policy and Argon2id hashing (off the async runtime).
//! - [`tokens`]: opaque refresh tokens, refresh verdicts (rotation, reuse), which organization a
//!   session acts in, access-token claims.
//! - [`sessions`]: Logout, LogoutAll, the session list, SwitchOrganization, GetSessionStatus.
//! - [`revocation`]: announces revoked sessions on Redis (`trellis.revocations`) with a heartbeat.
//! - [`mfa`] (queries in `store::mfa`, handlers in [`mfa_api`]): TOTP enrolment, the second step
//!   of a sign-in (`requires_mfa` → Challenge), backup codes, Disable.
//! - [`users`] (queries in `store::users`, handlers in [`users_api`]): the current user's profile
//!   (GetMe, UpdateMe) and GetUser; [`account_lifecycle`]: Deactivate, DeleteMe, Reactivate.
//! - [`export`]: ExportMyData, the caller's own data as one document (no secret in it).
//! - [`recovery`]: email verification, forgot/reset password, ChangePassword (email tokens).
//! - [`keys`]: signing keys (created on first start, encrypted at rest with AES-256-GCM), their
//!   rotation schedule (next → active → retiring → retired) and the JWKS.
//! - [`platform`]: who is a platform admin, and RotateSigningKey.
//! - [`service_tokens`]: IssueServiceToken (secrets derived from the cell secret) and the
//!   service-only BatchGetUsers.
//! - [`store`]: every query. Tenant tables (organizations, org_members, invitations) are only
//!   touched inside a tenant transaction; global tables (users, sessions, refresh_tokens,
//!   signing_keys) need none.
//! - [`events`]: what identity publishes, staged in the outbox of the same transaction.
//! - [`error`]: the domain errors and their reason → gRPC code table.
//! - [`config`]: [`IdentityConfig`], identity's own settings.
//!
//! A Register request flows: `api::AuthApi::register` → [`accounts::Identity::register`]
//! (validation, [`password`] policy and hash) → one tenant transaction for the new organization
//! (or the inviting one): [`store`] inserts the user, organization, membership, session and
//! refresh token, [`events`] stages `identity.user.registered` and friends → commit → an access
//! token signed by [`keys`].

pub mod account_lifecycle;
pub mod accounts;
pub mod api;
pub mod api_keys;
pub mod config;
pub mod erasure;
pub mod error;
pub mod events;
pub mod export;
pub mod flags;
pub mod flags_api;
pub mod flags_store;
pub mod invitation;
pub mod invitation_store;
pub mod invitations;
pub mod json_schema;
pub mod keys;
pub mod members;
pub mod mfa;
pub mod mfa_api;
pub mod onboarding;
pub mod onboarding_api;
pub mod org_store;
pub mod organization;
pub mod organizations;
pub mod organizations_api;
pub mod password;
pub mod platform;
pub mod purge;
pub mod recovery;
pub mod relationships;
pub mod revocation;
pub mod service_tokens;
pub mod sessions;
pub mod settings;
pub mod settings_api;
pub mod settings_store;
pub mod store;
pub mod team_store;
pub mod teams;
pub mod teams_api;
pub mod tokens;
pub mod user;
pub mod users;
pub mod users_api;

use std::sync::Arc;
use std::time::Duration;

use trellis_kit::{Module, Service};
use trellis_proto::trellis::identity::v1::api_key_service_server::ApiKeyServiceServer;
use trellis_proto::trellis::identity::v1::auth_service_server::AuthServiceServer;
use trellis_proto::trellis::identity::v1::feature_flag_service_server::FeatureFlagServiceServer;
use trellis_proto::trellis::identity::v1::invitation_service_server::InvitationServiceServer;
use trellis_proto::trellis::identity::v1::mfa_service_server::MfaServiceServer;
use trellis_proto::trellis::identity::v1::onboarding_service_server::OnboardingServiceServer;
use trellis_proto::trellis::identity::v1::organization_service_server::OrganizationServiceServer;
use trellis_proto::trellis::identity::v1::session_service_server::SessionServiceServer;
use trellis_proto::trellis::identity::v1::settings_service_server::SettingsServiceServer;
use trellis_proto::trellis::identity::v1::team_service_server::TeamServiceServer;
use trellis_proto::trellis::identity::v1::token_service_server::TokenServiceServer;
use trellis_proto::trellis::identity::v1::user_directory_service_server::UserDirectoryServiceServer;
use trellis_proto::trellis::identity::v1::user_service_server::UserServiceServer;

pub use accounts::Identity;
pub use config::IdentityConfig;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The identity module, with its settings ([`IdentityConfig`]) read from the environment.
pub fn module() -> Module {
    module_with(None)
}

/// The identity module with settings parsed by the caller (`trellis serve` flattens
/// [`IdentityConfig`] into its command line, so `--help` documents them).
pub fn module_with(settings: Option<IdentityConfig>) -> Module {
    Module::new("identity", &MIGRATOR, |runtime| {
        Box::pin(async move {
            let mut settings = match settings {
                Some(settings) => settings,
                None => IdentityConfig::from_env()?,
            };
            settings.public_base_url = runtime.config.public_base_url.clone();
            settings.validate()?;
            let identity = Identity::start(runtime.db.clone(), &runtime.config, settings).await?;
            identity.register_own_scope_resources().await?;
            identity.register_own_setting_definitions().await?;
            identity.register_own_onboarding_steps().await?;
            let onboarding_events = onboarding::completing_events(runtime.db.pool()).await?;
            let identity = Arc::new(identity);
            let heartbeat = identity.announcer.clone().heartbeat(runtime.shutdown.clone());
            let rotation = identity
                .keys
                .clone()
                .run_scheduler(identity.settings.signing_key_check_interval, runtime.shutdown.clone());
            let schema = register_schema(identity.clone(), runtime.shutdown.clone());
            let purge = identity.clone().run_purge(identity.settings.org_purge_interval, runtime.shutdown.clone());
            let erasure = identity.clone().run_erasure(identity.settings.org_purge_interval, runtime.shutdown.clone());
            let pages = trellis_kit::paging::PageTokens::new(runtime.config.cell_secret.as_bytes());
            Ok(Service::new()
                .worker("revocation-heartbeat", heartbeat)
                .worker("signing-key-rotation", rotation)
                .worker("permissions-schema", schema)
                .worker("organization-purge", purge)
                .worker("account-erasure", erasure)
                .consumer(onboarding::OnboardingEvents::consumer(runtime.db.pool().clone(), &onboarding_events))
                .grpc(AuthServiceServer::new(api::AuthApi::new(identity.clone())))
                .grpc(SessionServiceServer::new(api::SessionApi::new(identity.clone())))
                .grpc(MfaServiceServer::new(mfa_api::MfaApi::new(identity.clone())))
                .grpc(UserServiceServer::new(users_api::UserApi::new(identity.clone())))
                .grpc(InvitationServiceServer::new(api::InvitationApi::new(identity.clone(), pages.clone())))
                .grpc(OrganizationServiceServer::new(organizations_api::OrganizationApi::new(
                    identity.clone(),
                    pages.clone(),
                )))
                .grpc(TeamServiceServer::new(teams_api::TeamApi::new(identity.clone(), pages.clone())))
                .grpc(ApiKeyServiceServer::new(api::ApiKeyApi::new(identity.clone())))
                .grpc(SettingsServiceServer::new(settings_api::SettingsApi::new(identity.clone())))
                .grpc(OnboardingServiceServer::new(onboarding_api::OnboardingApi::new(identity.clone())))
                .grpc(FeatureFlagServiceServer::new(flags_api::FeatureFlagApi::new(identity.clone(), pages.clone())))
                .grpc(UserDirectoryServiceServer::new(api::UserDirectoryApi::new(identity.clone())))
                .grpc(TokenServiceServer::new(api::TokenApi::new(identity))))
        })
    })
    .with_schema(relationships::SCHEMA)
}

/// Registers identity's schema with the permissions service, retrying while it is unavailable,
/// so that the relationships identity writes are accepted.
async fn register_schema(identity: Arc<Identity>, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    let register =
        identity.authz.register_schema(relationships::SERVICE_NAME, relationships::SCHEMA, Duration::from_secs(10));
    tokio::select! {
        result = register => match result {
            Ok(changed) => {
                tracing::info!(changed, "identity schema registered with permissions");
                identity.schema_registered.send_replace(true);
            }
            Err(e) => tracing::error!(code = ?e.code(), message = e.message(), "identity schema rejected by permissions"),
        },
        () = shutdown.cancelled() => {}
    }
    Ok(())
}
