//! Access-token verification (EdDSA JWTs against identity's JWKS) and the request context.
//!
//! Skeleton: the full verifier (JWKS cache, unknown-`kid` refresh, claim checks) lands with the
//! auth work; this file fixes the interface the gRPC layer and the gateway call.

use std::sync::Arc;

use crate::config::Config;
use crate::context::{CORRELATION_ID, RequestContext};
use crate::error::{Error, Result};

/// The claims of a Trellis access token (ARCHITECTURE §4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Issuer (`JWT_ISSUER`).
    pub iss: String,
    /// `<user uuid>`, `api_key:<uuid>` or `service:<name>`.
    pub sub: String,
    /// Audience (`trellis`).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Active organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Session id (`key:<id>` for API keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Org roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// API-key scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The active org's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// Verifies credentials and builds [`RequestContext`]s.
#[derive(Debug)]
pub struct Authenticator {
    _config: Arc<Config>,
}

impl Authenticator {
    /// An authenticator that fetches JWKS from identity at `config.urls.identity`.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        Arc::new(Self { _config: config })
    }

    /// Builds the context of a gRPC call from its headers. `public` methods accept no credential.
    pub async fn authenticate(&self, headers: &http::HeaderMap, public: bool) -> Result<RequestContext> {
        let correlation_id = headers
            .get(CORRELATION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if headers.get(http::header::AUTHORIZATION).is_none() && public {
            return Ok(RequestContext::anonymous(correlation_id));
        }
        Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required"))
    }
}
