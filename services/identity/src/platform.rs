//! Platform administration: who may act on the whole cell, and the operations they may run
//! (RotateSigningKey). See ADR 0012.
//!
//! A platform admin is either
//! - the `service:platform-admin` principal: a service token issued to the client
//!   `platform-admin`, whose secret platform engineers derive from the cell secret (this is what
//!   tooling uses), or
//! - a user holding `platform:cell#administer` in the permissions service (spec, Permissions).

use trellis_kit::authz::Ref;
use trellis_kit::{Error, RequestContext, Result, Subject};

use crate::Identity;
use crate::keys::KeyState;

/// The service client name of platform tooling.
pub const PLATFORM_ADMIN_CLIENT: &str = "platform-admin";

impl Identity {
    /// PERMISSION_DENIED unless the caller is a platform admin.
    pub(crate) async fn authorize_platform_admin(&self, ctx: &RequestContext) -> Result<()> {
        match &ctx.subject {
            Subject::Service(name) if name == PLATFORM_ADMIN_CLIENT => Ok(()),
            Subject::User(user_id) => {
                if self.is_platform_admin_user(ctx, *user_id).await? {
                    Ok(())
                } else {
                    Err(Error::permission_denied("PERMISSION_DENIED", "Only platform admins may do this"))
                }
            }
            Subject::Anonymous => Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required")),
            _ => Err(Error::permission_denied("PERMISSION_DENIED", "Only platform admins may do this")),
        }
    }

    /// Whether the permissions service grants `user_id` `platform:cell#administer` (the platform
    /// scope is visible from any org, so the check runs in the caller's active org).
    async fn is_platform_admin_user(&self, ctx: &RequestContext, user_id: uuid::Uuid) -> Result<bool> {
        let authz = &self.authz;
        let org = ctx.org_id.unwrap_or(uuid::Uuid::nil());
        let platform = Ref::new("platform", "cell");
        let subject = Ref::new("user", user_id.to_string());
        authz.check(org, &platform, "administer", &subject, None).await.map_err(|status| {
            tracing::warn!(code = ?status.code(), "platform-admin check failed");
            Error::unavailable("PERMISSIONS_UNAVAILABLE", "The permission check is unavailable; retry later")
        })
    }

    /// RotateSigningKey: starts a rotation now. Returns every key, newest first.
    pub async fn rotate_signing_key(&self, ctx: &RequestContext) -> Result<Vec<KeyState>> {
        self.authorize_platform_admin(ctx).await?;
        let (actor_kind, actor) = ctx.actor();
        let keys = self.keys.rotate_now().await.map_err(Error::internal)?;
        tracing::info!(actor_kind, actor = %actor, "signing-key rotation requested over gRPC");
        Ok(keys)
    }
}
