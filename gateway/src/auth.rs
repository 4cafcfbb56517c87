//! Admission at the edge: credentials (spec Rules 16–20), rate limits (Rules 30–33) and API-key
//! scopes (Rule 19), in that order, for every surface.
//!
//! Credentials are verified with the verifier every service shares
//! (`trellis_kit::auth::Authenticator`: EdDSA, JWKS cache, `iss`/`aud`/`exp`/`nbf`).
//! - Protected method, no credential → 401 UNAUTHENTICATED before any backend is called.
//! - Protected method, bad credential → 401 TOKEN_EXPIRED / INVALID_TOKEN (kit's reason), or 503
//!   when no key can be fetched at all. Failed authentications count toward the anonymous
//!   limiter of the client IP (Rule 25), so guessing is slow.
//! - Public method: a valid credential is forwarded; an invalid one is dropped, not rejected.
//! - API keys (`sub: api_key:<id>`) need the method's `(trellis.common.v1.scope)`
//!   (`x:write` implies `x:read`) → else 403 SCOPE_MISSING; methods with
//!   `(trellis.common.v1.api_key) = DENY` refuse them with 403 USER_TOKEN_REQUIRED.
//!
//! A verified JWT is forwarded unchanged (services verify it again); an API key is replaced by
//! the access token identity exchanged it for ([`crate::apikeys`]).

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use trellis_kit::context::{RequestContext, Subject};

use crate::errors::ApiError;
use crate::http::{Call, Gateway};
use crate::ratelimit::{Caller, Outcome};
use crate::routes::MethodInfo;

/// Prefix of API keys (`Authorization: Bearer tk_live_…`).
pub const API_KEY_PREFIX: &str = "tk_live_";

/// A verified credential: the header to forward and who it names.
#[derive(Debug, Clone)]
pub struct Credential {
    /// `authorization` as the backend receives it.
    pub header: HeaderValue,
    /// The caller.
    pub context: RequestContext,
}

async fn verify(
    gateway: &Gateway,
    value: &HeaderValue,
    correlation_id: &str,
) -> Result<(HeaderValue, RequestContext), ApiError> {
    let text = value.to_str().map_err(|_| ApiError::invalid_token())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(ApiError::invalid_token)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::invalid_token());
    }
    if token.starts_with(API_KEY_PREFIX) {
        // Exchanged through identity's ResolveApiKey; the backend receives the access token.
        return gateway.api_keys.resolve(token, &gateway.upstreams, &gateway.auth, correlation_id).await;
    }
    // `authenticate` (not just `verify`): it is where kit applies session revocation too.
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(AUTHORIZATION, value.clone());
    let context = gateway.auth.authenticate(&headers, false).await.map_err(ApiError::from_kit)?;
    Ok((value.clone(), context))
}

/// The credential of a call of `method`: `Some` when one was verified, `None` for an anonymous
/// call of a public method.
pub async fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
    method: &MethodInfo,
    correlation_id: &str,
) -> Result<Option<Credential>, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        if method.public {
            return Ok(None);
        }
        gateway.metrics.auth_failure("UNAUTHENTICATED");
        return Err(ApiError::unauthenticated());
    };
    match verify(gateway, value, correlation_id).await {
        Ok((header, context)) => Ok(Some(Credential { header, context })),
        // A public route works whatever the credential: a bad or unverifiable one is dropped.
        Err(_) if method.public => Ok(None),
        Err(e) => {
            gateway.metrics.auth_failure(&e.code);
            tracing::info!(security = true, reason = %e.code, method = %method.path, "credential rejected");
            Err(e)
        }
    }
}

/// [`authenticate`], with a refused credential counted toward the anonymous limiter of the
/// client IP (Rule 25): once that is exhausted the answer is 429, not 401.
pub async fn authenticate_counted(
    gateway: &Gateway,
    headers: &HeaderMap,
    method: &MethodInfo,
    call: &Call,
    rate: &mut Option<Outcome>,
) -> Result<Option<Credential>, ApiError> {
    match authenticate(gateway, headers, method, &call.correlation_id).await {
        Err(e) if e.status.as_u16() == 401 => {
            let check = gateway.limiter.limits().anonymous(call.client_ip);
            if let Some(decision) = gateway.limiter.check(std::slice::from_ref(&check)).await {
                *rate = Some(decision.headline.clone());
                if !decision.allowed {
                    gateway.metrics.rate_limited(decision.headline.limiter.name());
                    return Err(ApiError::rate_limited(&decision.headline));
                }
            }
            Err(e)
        }
        other => other,
    }
}

/// Rate limits (every applicable limiter, one round trip) and then the API-key scope.
pub async fn limit_and_scope(
    gateway: &Gateway,
    method: &MethodInfo,
    call: &Call,
    credential: Option<&Credential>,
    email: Option<&str>,
    rate: &mut Option<Outcome>,
) -> Result<(), ApiError> {
    let caller = Caller { ip: call.client_ip, context: credential.map(|c| &c.context), email };
    let checks = gateway.limiter.limits().checks(method, caller);
    if let Some(decision) = gateway.limiter.check(&checks).await {
        *rate = Some(decision.headline.clone());
        if !decision.allowed {
            gateway.metrics.rate_limited(decision.headline.limiter.name());
            tracing::info!(
                security = true,
                limiter = decision.headline.limiter.name(),
                method = %method.path,
                "rate limit exceeded"
            );
            return Err(ApiError::rate_limited(&decision.headline));
        }
    }
    if let Some(credential) = credential {
        check_scope(method, &credential.context)?;
    }
    Ok(())
}

/// Whether `granted` satisfies `required` (`x:write` implies `x:read`).
pub fn scope_satisfied(granted: &[String], required: &str) -> bool {
    granted.iter().any(|g| {
        g == required
            || required.strip_suffix(":read").is_some_and(|resource| g.strip_suffix(":write") == Some(resource))
    })
}

/// The API-key rules of the Permissions section; user and service tokens, and public methods, pass.
pub fn check_scope(method: &MethodInfo, context: &RequestContext) -> Result<(), ApiError> {
    // Public methods need no scope: anyone may call them (Permissions, rule 1).
    if method.public || !matches!(context.subject, Subject::ApiKey(_)) {
        return Ok(());
    }
    if method.api_key_denied {
        return Err(ApiError::user_token_required());
    }
    // The fan-out applies the read scope of each module's entity types itself and skips the
    // modules a key may not read, so any key may call it.
    if method.module == crate::fanout::MODULE {
        return Ok(());
    }
    match method.scope.as_deref() {
        Some(scope) if scope_satisfied(&context.scopes, scope) => Ok(()),
        scope => Err(ApiError::scope_missing(scope.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_implies_read_and_nothing_else() {
        let granted = vec!["tasks:write".to_string(), "contacts:read".to_string()];
        assert!(scope_satisfied(&granted, "tasks:read"));
        assert!(scope_satisfied(&granted, "tasks:write"));
        assert!(scope_satisfied(&granted, "contacts:read"));
        assert!(!scope_satisfied(&granted, "contacts:write"));
        assert!(!scope_satisfied(&granted, "task:read"));
        assert!(!scope_satisfied(&granted, ""));
    }
}
