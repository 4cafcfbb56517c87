//! Access-token verification: EdDSA JWTs against identity's JWKS, and the request context.
//!
//! - [`jwt`]: compact JWS signing (identity) and parsing (everyone); only `EdDSA`/`at+jwt`.
//! - [`Authenticator`]: caches the JWKS (refreshed every 5 minutes, and at most once per 30 s
//!   when a token names an unknown `kid`), checks `iss`, `aud`, `exp`/`nbf` (30 s leeway), and
//!   turns the claims into a [`RequestContext`]. Tokens it has verified are remembered (at most
//!   [`VERIFIED_TOKENS`]), so a service called repeatedly with the same token checks its signature
//!   once; `exp`/`nbf` are checked on every call and the key must still be the current one.
//! - [`JwksSource`]: where the keys come from: identity's `TokenService.GetJwks` over gRPC in a
//!   cell, fixed keys in tests.
//!
//! - [`revocation`]: revoked sessions (the `trellis.revocations` feed, with identity's
//!   `GetSessionStatus` as the fallback), applied by [`Authenticator::authenticate`] once
//!   attached with [`Authenticator::attach_revocations`] ([`Authenticator::for_cell`] does).

pub mod jwt;
pub mod revocation;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use futures::future::BoxFuture;
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use crate::config::Config;
use crate::context::{CORRELATION_ID, RequestContext, Subject};
use crate::error::{Error, Result};
use jwt::JwtError;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: i64 = 30;
/// How long fetched keys are trusted before a background refresh.
pub const JWKS_TTL: Duration = Duration::from_secs(300);
/// Minimum interval between refreshes triggered by unknown key ids.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Most verified tokens remembered per authenticator (the set is emptied when full).
pub const VERIFIED_TOKENS: usize = 10_000;

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

/// One verification key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// Key id.
    pub kid: String,
    /// The Ed25519 public key.
    pub key: VerifyingKey,
}

/// Where verification keys come from.
pub trait JwksSource: Send + Sync + std::fmt::Debug + 'static {
    /// Fetches the current key set.
    fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<PublicKey>>>;
}

/// identity's `TokenService.GetJwks` over gRPC.
#[derive(Debug)]
pub struct IdentityJwks {
    channel: tonic::transport::Channel,
}

impl IdentityJwks {
    /// A source that connects lazily to `url`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self { channel })
    }
}

impl JwksSource for IdentityJwks {
    fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<PublicKey>>> {
        Box::pin(async move {
            use trellis_proto::trellis::identity::v1::{GetJwksRequest, token_service_client::TokenServiceClient};
            let response = TokenServiceClient::new(self.channel.clone()).get_jwks(GetJwksRequest {}).await?;
            Ok(response
                .into_inner()
                .keys
                .into_iter()
                .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && (k.alg.is_empty() || k.alg == jwt::ALG))
                .filter_map(|k| jwt::key_from_x(&k.x).map(|key| PublicKey { kid: k.kid, key }))
                .collect())
        })
    }
}

/// Fixed keys (tests, and a cell's static trust list).
#[derive(Debug, Default)]
pub struct StaticJwks(pub Vec<PublicKey>);

impl JwksSource for StaticJwks {
    fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<PublicKey>>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// The union of several sources; a failing source is skipped when another answers.
#[derive(Debug)]
pub struct ChainJwks(pub Vec<Arc<dyn JwksSource>>);

impl JwksSource for ChainJwks {
    fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<PublicKey>>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut last_error = None;
            let mut any_ok = false;
            for source in &self.0 {
                match source.fetch().await {
                    Ok(k) => {
                        any_ok = true;
                        keys.extend(k);
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            match (any_ok, last_error) {
                (false, Some(e)) => Err(e),
                _ => Ok(keys),
            }
        })
    }
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: HashMap<String, VerifyingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies credentials and builds [`RequestContext`]s.
#[derive(Debug)]
pub struct Authenticator {
    issuer: String,
    audience: String,
    source: Arc<dyn JwksSource>,
    cache: RwLock<KeyCache>,
    /// Serialises refreshes and remembers the last unknown-kid refresh.
    refresh: Mutex<Option<Instant>>,
    /// The revoked-session check, when attached.
    revocations: std::sync::OnceLock<Arc<revocation::Revocations>>,
    /// Tokens whose signature, issuer and audience were verified: their claims and the key
    /// (`kid`, key) that verified them.
    verified: std::sync::Mutex<HashMap<String, VerifiedToken>>,
}

#[derive(Debug, Clone)]
struct VerifiedToken {
    claims: Claims,
    kid: String,
    key: VerifyingKey,
}

impl Authenticator {
    /// An authenticator that fetches JWKS from identity at `config.urls.identity`.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        let source: Arc<dyn JwksSource> = match IdentityJwks::new(&config.urls.identity) {
            Ok(source) => Arc::new(source),
            Err(e) => {
                tracing::error!(error = %e, url = %config.urls.identity, "invalid identity URL; no token will verify");
                Arc::new(StaticJwks::default())
            }
        };
        Self::with_source(&config, source)
    }

    /// An authenticator over any key source.
    pub fn with_source(config: &Config, source: Arc<dyn JwksSource>) -> Arc<Self> {
        Arc::new(Self {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            source,
            cache: RwLock::new(KeyCache::default()),
            refresh: Mutex::new(None),
            revocations: std::sync::OnceLock::new(),
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The authenticator of a running cell: JWKS from identity, and revoked sessions from the
    /// Redis feed at `config.redis_url` with identity as the fallback.
    pub fn for_cell(config: Arc<Config>) -> anyhow::Result<Arc<Self>> {
        let auth = Self::new(config.clone());
        auth.attach_revocations(revocation::Revocations::connect(&config.redis_url, &config.urls.identity)?);
        Ok(auth)
    }

    /// Applies `revocations` to every later [`Authenticator::authenticate`]; a second call is
    /// ignored.
    pub fn attach_revocations(&self, revocations: Arc<revocation::Revocations>) {
        let _ = self.revocations.set(revocations);
    }

    /// The attached revoked-session check, if any.
    pub fn revocations(&self) -> Option<&Arc<revocation::Revocations>> {
        self.revocations.get()
    }

    /// Fetches the keys now and replaces the cached set; returns how many keys there are. The
    /// gateway calls it at start and every [`JWKS_TTL`], so tokens signed by a newly published
    /// key verify without a first failed request.
    pub async fn refresh_keys(&self) -> anyhow::Result<usize> {
        let _serialised = self.refresh.lock().await;
        let keys = self.source.fetch().await?;
        let mut cache = self.cache.write().await;
        cache.keys = keys.into_iter().map(|k| (k.kid, k.key)).collect();
        cache.fetched_at = Some(Instant::now());
        Ok(cache.keys.len())
    }

    /// How many keys are cached, or `None` before the first successful fetch.
    pub async fn cached_keys(&self) -> Option<usize> {
        let cache = self.cache.read().await;
        cache.fetched_at.map(|_| cache.keys.len())
    }

    async fn key(&self, kid: &str) -> Result<Option<VerifyingKey>> {
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < JWKS_TTL);
            if let Some(key) = cache.keys.get(kid)
                && fresh
            {
                return Ok(Some(*key));
            }
        }
        let mut last_unknown = self.refresh.lock().await;
        // Another caller may have refreshed while we waited.
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < JWKS_TTL);
            match cache.keys.get(kid) {
                Some(key) if fresh => return Ok(Some(*key)),
                None if fresh && last_unknown.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL) => {
                    return Ok(None);
                }
                _ => {}
            }
        }
        let stale = self.cache.read().await.keys.get(kid).copied();
        match self.source.fetch().await {
            Ok(keys) => {
                let mut cache = self.cache.write().await;
                cache.keys = keys.into_iter().map(|k| (k.kid, k.key)).collect();
                cache.fetched_at = Some(Instant::now());
                let found = cache.keys.get(kid).copied();
                if found.is_none() {
                    *last_unknown = Some(Instant::now());
                }
                Ok(found)
            }
            // A known key keeps working through an identity outage; an unknown one cannot.
            Err(e) if stale.is_some() => {
                tracing::warn!(error = format!("{e:#}"), "JWKS refresh failed; using cached keys");
                Ok(stale)
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "JWKS fetch failed");
                Err(Error::unavailable("JWKS_UNAVAILABLE", "Token keys are unavailable; retry later")
                    .with_retry_after(Duration::from_secs(1)))
            }
        }
    }

    /// Verifies an access token: signature, `iss`, `aud`, `exp`, `nbf`.
    ///
    /// UNAUTHENTICATED `TOKEN_EXPIRED` for an expired token, `INVALID_TOKEN` for anything else;
    /// UNAVAILABLE when no key can be fetched at all.
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        let invalid = |why: &str| {
            tracing::debug!(reason = why, "token rejected");
            Error::unauthenticated("INVALID_TOKEN", "The access token is invalid")
        };
        // The same token text verified before by a key that is still current: only the times can
        // have changed.
        let seen = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned();
        if let Some(seen) = seen
            && self.key(&seen.kid).await?.is_some_and(|k| k == seen.key)
        {
            return check_times(seen.claims).map_err(|e| e.unwrap_or_else(|| invalid("not yet valid")));
        }
        let parsed = jwt::parse(token).map_err(|e| invalid(&e.to_string()))?;
        let kid = parsed.kid().to_owned();
        let key = self.key(&kid).await?.ok_or_else(|| invalid(&JwtError::UnknownKey.to_string()))?;
        let claims = parsed.verify(&key).map_err(|e| invalid(&e.to_string()))?;
        if claims.iss != self.issuer {
            return Err(invalid("issuer"));
        }
        if claims.aud != self.audience {
            return Err(invalid("audience"));
        }
        let claims = check_times(claims).map_err(|e| e.unwrap_or_else(|| invalid("not yet valid")))?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(token.to_owned(), VerifiedToken { claims: claims.clone(), kid, key });
        Ok(claims)
    }

    /// Builds the context of a call from its headers. On `public` methods a missing or invalid
    /// credential yields an anonymous context (a stale token never blocks a public route).
    pub async fn authenticate(&self, headers: &http::HeaderMap, public: bool) -> Result<RequestContext> {
        let correlation_id = headers
            .get(CORRELATION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_string)
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        let token = match bearer(headers) {
            Some(token) => token,
            None if public => return Ok(RequestContext::anonymous(correlation_id)),
            None => return Err(Error::unauthenticated("UNAUTHENTICATED", "Authentication required")),
        };
        match self.verify(token).await {
            // Public methods skip the revocation check: they need no session, and identity's
            // GetSessionStatus (public) must not depend on the check it implements.
            Ok(claims) if !public => {
                if let (Some(revocations), Some(sid)) = (self.revocations.get(), claims.sid.as_deref()) {
                    revocations.check(sid, token).await?;
                }
                context_from_claims(claims, token, correlation_id)
            }
            Ok(claims) => context_from_claims(claims, token, correlation_id),
            Err(e) if public && e.code() == tonic::Code::Unauthenticated => {
                Ok(RequestContext::anonymous(correlation_id))
            }
            Err(e) => Err(e),
        }
    }
}

/// What a service client's secret is derived under (see [`service_client_secret`]).
pub const SERVICE_CLIENT_CONTEXT: &str = "trellis.service-client:";

/// The client secret of service `name` in this cell: base64url(HMAC-SHA256(cell secret,
/// `"trellis.service-client:" + name`)). Every service derives its own from `CELL_SECRET` and
/// identity derives the same to check it, so no per-service secret has to be configured.
pub fn service_client_secret(cell_secret: &str, name: &str) -> String {
    use base64::Engine;
    let key = derived_key(cell_secret, &format!("{SERVICE_CLIENT_CONTEXT}{name}"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// A 32-byte key for one purpose, derived from the cell secret: HMAC-SHA256(cell secret,
/// `purpose`). Purposes are distinct strings (`"trellis.service-client:tasks"`,
/// `"trellis.identity.totp-secrets"`), so one configured secret yields independent keys and no
/// purpose's key reveals another's.
pub fn derived_key(cell_secret: &str, purpose: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(cell_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The bearer token of an `authorization` header, if any.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The context a verified token describes.
pub fn context_from_claims(claims: Claims, token: &str, correlation_id: String) -> Result<RequestContext> {
    let invalid = || Error::unauthenticated("INVALID_TOKEN", "The access token is invalid");
    let subject = if let Some(id) = claims.sub.strip_prefix("api_key:") {
        Subject::ApiKey(id.parse().map_err(|_| invalid())?)
    } else if let Some(name) = claims.sub.strip_prefix("service:") {
        Subject::Service(name.to_string())
    } else {
        Subject::User(claims.sub.parse().map_err(|_| invalid())?)
    };
    let org_id = claims.org.as_deref().map(str::parse).transpose().map_err(|_| invalid())?;
    Ok(RequestContext {
        subject,
        org_id,
        session_id: claims.sid,
        roles: claims.roles,
        scopes: claims.scopes,
        plan: claims.plan,
        correlation_id,
        token: Some(token.to_string()),
    })
}

/// `nbf` and `exp` against the clock (with [`LEEWAY_SECONDS`]): `Err(None)` when not yet valid,
/// `Err(Some(TOKEN_EXPIRED))` when expired.
fn check_times(claims: Claims) -> std::result::Result<Claims, Option<Error>> {
    let now = chrono::Utc::now().timestamp();
    if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECONDS) {
        return Err(None);
    }
    if claims.exp + LEEWAY_SECONDS < now {
        return Err(Some(Error::unauthenticated("TOKEN_EXPIRED", "The access token has expired")));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::SigningKey;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    const KID: &str = "k1";

    fn config() -> Config {
        let mut c = Config::from_env();
        c.jwt_issuer = "https://id.test".into();
        c.jwt_audience = "trellis".into();
        c
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims() -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: "https://id.test".into(),
            sub: Uuid::now_v7().to_string(),
            aud: "trellis".into(),
            exp: now + 900,
            nbf: None,
            iat: now,
            jti: Uuid::now_v7().to_string(),
            org: Some(Uuid::now_v7().to_string()),
            sid: Some(Uuid::now_v7().to_string()),
            roles: vec!["owner".into()],
            scopes: vec![],
            plan: Some("free".into()),
        }
    }

    fn authenticator() -> Arc<Authenticator> {
        let keys = vec![PublicKey { kid: KID.into(), key: key(1).verifying_key() }];
        Authenticator::with_source(&config(), Arc::new(StaticJwks(keys)))
    }

    async fn reason(auth: &Authenticator, token: &str) -> String {
        auth.verify(token).await.expect_err("token must be rejected").reason().to_string()
    }

    fn encode_json(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }

    #[tokio::test]
    async fn a_valid_token_verifies_and_builds_the_context() {
        let c = claims();
        let token = jwt::sign(&c, KID, &key(1));
        let auth = authenticator();
        assert_eq!(auth.verify(&token).await.expect("valid"), c);
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
        let ctx = auth.authenticate(&headers, false).await.expect("context");
        assert_eq!(ctx.subject, Subject::User(c.sub.parse().expect("uuid")));
        assert_eq!(ctx.org_id.map(|o| o.to_string()), c.org);
        assert_eq!(ctx.roles, vec!["owner".to_string()]);
    }

    #[tokio::test]
    async fn a_remembered_token_is_still_checked_for_expiry_and_its_key() {
        let source = Arc::new(Rotating {
            keys: std::sync::Mutex::new(vec![PublicKey { kid: KID.into(), key: key(1).verifying_key() }]),
            fetches: Default::default(),
        });
        let auth = Authenticator::with_source(&config(), source.clone());
        // Expires just past the leeway in two seconds.
        let mut c = claims();
        c.exp = chrono::Utc::now().timestamp() - LEEWAY_SECONDS + 2;
        let token = jwt::sign(&c, KID, &key(1));
        assert_eq!(auth.verify(&token).await.expect("valid"), c);
        assert_eq!(auth.verify(&token).await.expect("remembered"), c);
        assert_eq!(auth.verified.lock().expect("lock").len(), 1);
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert_eq!(reason(&auth, &token).await, "TOKEN_EXPIRED");

        // A remembered token whose key was withdrawn at identity stops verifying once the keys are
        // refreshed.
        let token = jwt::sign(&claims(), KID, &key(1));
        auth.verify(&token).await.expect("valid");
        *source.keys.lock().expect("lock") = vec![PublicKey { kid: KID.into(), key: key(2).verifying_key() }];
        auth.refresh_keys().await.expect("refresh");
        assert_eq!(reason(&auth, &token).await, "INVALID_TOKEN");
        // A forged token never enters the set.
        let forged = jwt::sign(&claims(), KID, &key(3));
        assert_eq!(reason(&auth, &forged).await, "INVALID_TOKEN");
        assert_eq!(reason(&auth, &forged).await, "INVALID_TOKEN");
    }

    #[tokio::test]
    async fn a_token_signed_by_another_key_is_rejected() {
        let token = jwt::sign(&claims(), KID, &key(2));
        assert_eq!(reason(&authenticator(), &token).await, "INVALID_TOKEN");
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let header = encode_json(&serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": KID}));
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).expect("json"));
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
            assert_eq!(reason(&authenticator(), &token).await, "INVALID_TOKEN");
        }
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_rejected() {
        let header = encode_json(&serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": KID}));
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).expect("json"));
        let input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(key(1).verifying_key().as_bytes()).expect("hmac key");
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        assert_eq!(reason(&authenticator(), &token).await, "INVALID_TOKEN");
    }

    #[tokio::test]
    async fn an_expired_token_is_rejected_as_expired() {
        let mut c = claims();
        c.exp = chrono::Utc::now().timestamp() - LEEWAY_SECONDS - 1;
        assert_eq!(reason(&authenticator(), &jwt::sign(&c, KID, &key(1))).await, "TOKEN_EXPIRED");
        // Within the leeway it still verifies.
        c.exp = chrono::Utc::now().timestamp() - 5;
        assert!(authenticator().verify(&jwt::sign(&c, KID, &key(1))).await.is_ok());
    }

    #[tokio::test]
    async fn a_token_not_yet_valid_is_rejected() {
        let mut c = claims();
        c.nbf = Some(chrono::Utc::now().timestamp() + 600);
        assert_eq!(reason(&authenticator(), &jwt::sign(&c, KID, &key(1))).await, "INVALID_TOKEN");
    }

    #[tokio::test]
    async fn wrong_audience_or_issuer_is_rejected() {
        let mut c = claims();
        c.aud = "someone-else".into();
        assert_eq!(reason(&authenticator(), &jwt::sign(&c, KID, &key(1))).await, "INVALID_TOKEN");
        let mut c = claims();
        c.iss = "https://evil.test".into();
        assert_eq!(reason(&authenticator(), &jwt::sign(&c, KID, &key(1))).await, "INVALID_TOKEN");
    }

    #[tokio::test]
    async fn an_unknown_kid_is_rejected() {
        let token = jwt::sign(&claims(), "k-unknown", &key(1));
        assert_eq!(reason(&authenticator(), &token).await, "INVALID_TOKEN");
    }

    #[tokio::test]
    async fn a_tampered_payload_or_wrong_typ_is_rejected() {
        let token = jwt::sign(&claims(), KID, &key(1));
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c.roles = vec!["admin".into()];
        let forged =
            format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("json")), parts[2]);
        assert_eq!(reason(&authenticator(), &forged).await, "INVALID_TOKEN");
        let header = encode_json(&serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": KID}));
        let retyped = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(reason(&authenticator(), &retyped).await, "INVALID_TOKEN");
        assert_eq!(reason(&authenticator(), "not-a-token").await, "INVALID_TOKEN");
    }

    #[derive(Debug)]
    struct Rotating {
        keys: std::sync::Mutex<Vec<PublicKey>>,
        fetches: std::sync::atomic::AtomicUsize,
    }

    impl JwksSource for Rotating {
        fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<PublicKey>>> {
            self.fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let keys = self.keys.lock().expect("lock").clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_triggers_one_refresh_then_is_rate_limited() {
        let source = Arc::new(Rotating {
            keys: std::sync::Mutex::new(vec![PublicKey { kid: KID.into(), key: key(1).verifying_key() }]),
            fetches: Default::default(),
        });
        let auth = Authenticator::with_source(&config(), source.clone());
        auth.verify(&jwt::sign(&claims(), KID, &key(1))).await.expect("first key");
        assert_eq!(source.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);

        // A new key appears at identity: the first token naming it triggers a refresh.
        source.keys.lock().expect("lock").push(PublicKey { kid: "k2".into(), key: key(2).verifying_key() });
        auth.verify(&jwt::sign(&claims(), "k2", &key(2))).await.expect("rotated key after refresh");
        assert_eq!(source.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);

        // Garbage kids cannot make the verifier hammer identity.
        for _ in 0..5 {
            let _ = auth.verify(&jwt::sign(&claims(), "bogus", &key(3))).await;
        }
        assert_eq!(source.fetches.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn service_client_secrets_are_hmacs_of_the_name_under_the_cell_secret() {
        let a = service_client_secret("cell-secret", "tasks");
        assert_eq!(a, service_client_secret("cell-secret", "tasks"));
        assert_ne!(a, service_client_secret("cell-secret", "crm"));
        assert_ne!(a, service_client_secret("other-cell", "tasks"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"cell-secret").expect("key");
        mac.update(b"trellis.service-client:tasks");
        assert_eq!(a, URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    }

    #[tokio::test]
    async fn public_methods_drop_invalid_credentials_and_others_reject_them() {
        let auth = authenticator();
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer garbage".parse().expect("header"));
        let ctx = auth.authenticate(&headers, true).await.expect("public");
        assert_eq!(ctx.subject, Subject::Anonymous);
        assert_eq!(auth.authenticate(&headers, false).await.expect_err("private").reason(), "INVALID_TOKEN");
        let empty = http::HeaderMap::new();
        assert_eq!(auth.authenticate(&empty, false).await.expect_err("missing").reason(), "UNAUTHENTICATED");
    }
}
