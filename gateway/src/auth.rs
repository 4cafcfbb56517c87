//! Authentication at the edge (spec Rules 16–20), with the verifier every service shares
//! (`trellis_kit::auth::Authenticator`: EdDSA, JWKS cache, `iss`/`aud`/`exp`/`nbf`).
//!
//! - Protected method, no credential → 401 UNAUTHENTICATED before any backend is called.
//! - Protected method, bad credential → 401 TOKEN_EXPIRED / INVALID_TOKEN (kit's reason), or 503
//!   when no key can be fetched at all.
//! - Public method: a valid credential is forwarded; an invalid one is dropped, not rejected.
//!
//! The verified `authorization` header is forwarded unchanged: services verify it again.

use http::HeaderValue;
use http::header::AUTHORIZATION;
use trellis_kit::auth::Authenticator;

use crate::errors::ApiError;
use crate::http::Gateway;
use crate::routes::MethodInfo;

/// Prefix of API keys (`Authorization: Bearer tk_live_…`).
pub const API_KEY_PREFIX: &str = "tk_live_";

async fn verify(auth: &Authenticator, value: &HeaderValue) -> Result<(), ApiError> {
    let text = value.to_str().map_err(|_| ApiError::invalid_token())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(ApiError::invalid_token)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::invalid_token());
    }
    if token.starts_with(API_KEY_PREFIX) {
        // Keys are exchanged through identity's ResolveApiKey; until that exchange exists at the
        // edge, no key is valid here.
        return Err(ApiError::invalid_api_key());
    }
    // `authenticate` (not just `verify`): it is where kit applies session revocation too.
    let mut headers = http::HeaderMap::with_capacity(1);
    headers.insert(AUTHORIZATION, value.clone());
    auth.authenticate(&headers, false).await.map_err(ApiError::from_kit)?;
    Ok(())
}

/// The credential to forward for a call of `method`: `Some` when one was verified, `None` for an
/// anonymous call of a public method.
pub async fn authenticate(
    gateway: &Gateway,
    headers: &http::HeaderMap,
    method: &MethodInfo,
) -> Result<Option<HeaderValue>, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        if method.public {
            return Ok(None);
        }
        gateway.metrics.auth_failure("UNAUTHENTICATED");
        return Err(ApiError::unauthenticated());
    };
    match verify(&gateway.auth, value).await {
        Ok(()) => Ok(Some(value.clone())),
        Err(_) if method.public => Ok(None),
        Err(e) => {
            gateway.metrics.auth_failure(&e.code);
            tracing::info!(security = true, reason = %e.code, method = %method.path, "credential rejected");
            Err(e)
        }
    }
}
