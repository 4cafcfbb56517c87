//! Identity's relationships in the permissions service: the schema it registers, the service
//! tokens it signs for itself, and the writes right after its own commits.
//!
//! Identity is the issuer of every token, so it does not ask anyone for a service token: it signs
//! `service:identity` tokens with its own active key ([`SelfSigned`]). After a change to
//! memberships or teams commits, [`Identity::apply_relationships`] writes the implied
//! relationships ([`trellis_kit::org_relationships`]) with their source-version guard, so the
//! caller can act at once. A failure there is logged and not returned: the event staged with the
//! change reaches the permissions service's consumer, which applies the same change.

use std::time::Duration;

use chrono::Utc;
use trellis_kit::authz::{Credentials, TokenFuture};
use trellis_kit::org_relationships::Change;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::keys::Keys;
use crate::tokens;

/// Identity's permission definitions (spec "Permissions"), registered at start-up.
pub const SCHEMA: &str = include_str!("../schema.zed");
/// The principal identity acts as.
pub const SERVICE_NAME: &str = "identity";
/// Lifetime of the tokens identity signs for itself.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(300);
/// How long a direct write may take before the request goes on without it (the event repairs).
const DIRECT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// `service:identity` tokens signed with identity's own active key.
#[derive(Debug)]
pub struct SelfSigned {
    keys: std::sync::Arc<Keys>,
    issuer: String,
    audience: String,
}

impl SelfSigned {
    /// Signs with `keys` as `issuer` for `audience`.
    pub fn new(keys: std::sync::Arc<Keys>, issuer: String, audience: String) -> Self {
        Self { keys, issuer, audience }
    }
}

impl Credentials for SelfSigned {
    fn token(&self, org: Option<Uuid>) -> TokenFuture<'_> {
        Box::pin(async move {
            let key = self.keys.active().await.map_err(|e| anyhow::anyhow!("signing key: {}", e.message()))?;
            let claims =
                tokens::service_claims(&self.issuer, &self.audience, SERVICE_NAME, org, Utc::now(), SERVICE_TOKEN_TTL);
            Ok(key.sign(&claims))
        })
    }
}

impl Identity {
    /// Writes the relationships of committed changes in `org`, in order. Returns the newest
    /// consistency token written (empty when nothing was), for callers that check right after.
    pub(crate) async fn apply_relationships(&self, org: Uuid, changes: &[Change]) -> String {
        let mut written = String::new();
        // Right after start-up the schema may not be registered yet; a write before that would be
        // refused (the event applies it later, but the caller could not act at once).
        let mut registered = self.schema_registered.subscribe();
        let _ = tokio::time::timeout(DIRECT_WRITE_TIMEOUT, registered.wait_for(|done| *done)).await;
        for change in changes {
            match tokio::time::timeout(DIRECT_WRITE_TIMEOUT, self.authz.write_change(org, change)).await {
                Ok(Ok((token, skipped))) => {
                    tracing::debug!(org_id = %org, source = ?change.source, skipped, "relationships written");
                    if !token.is_empty() {
                        written = token;
                    }
                }
                Ok(Err(status)) => {
                    tracing::warn!(org_id = %org, source = ?change.source, code = ?status.code(),
                        message = status.message(), "direct relationship write failed; the event will apply it");
                }
                Err(_) => {
                    tracing::warn!(org_id = %org, source = ?change.source,
                        "direct relationship write timed out; the event will apply it");
                }
            }
        }
        written
    }
}
