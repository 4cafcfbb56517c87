//! API keys at the edge (spec Rule 18): `Authorization: Bearer tk_live_…` is exchanged through
//! identity's internal `ApiKeyService.ResolveApiKey` for a short-lived access token, which is what
//! the backends receive.
//!
//! Resolved keys are cached by SHA-256 of the key (the key itself is never stored) until 30 s
//! before their token's `exp`; unknown, revoked or expired keys are cached negatively for 30 s,
//! so guessing cannot hammer identity. The token is verified like any other (kit), so a key can
//! never carry more than identity signed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::metadata::MetadataMap;
use trellis_kit::auth::Authenticator;
use trellis_kit::context::RequestContext;
use trellis_proto::trellis::identity::v1::{ResolveApiKeyRequest, ResolveApiKeyResponse};

use crate::errors::ApiError;
use crate::upstream::{UpstreamError, Upstreams};

/// identity's method, by gRPC path.
pub const RESOLVE_PATH: &str = "/trellis.identity.v1.ApiKeyService/ResolveApiKey";
/// How long an invalid key is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// A resolved key is dropped this long before its token expires.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Entry {
    Valid { header: HeaderValue, context: Box<RequestContext>, until: Instant },
    Invalid { until: Instant },
}

/// The cache of resolved keys.
#[derive(Debug, Default)]
pub struct ApiKeys {
    cache: Mutex<HashMap<[u8; 32], Entry>>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Forgets every cached key (e.g. when a key is revoked).
    pub fn clear(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// The token header and caller for `key`, from the cache or identity.
    pub async fn resolve(
        &self,
        key: &str,
        upstreams: &Upstreams,
        auth: &Authenticator,
        correlation_id: &str,
    ) -> Result<(HeaderValue, RequestContext), ApiError> {
        let hash = digest(key);
        let now = Instant::now();
        if let Ok(mut cache) = self.cache.lock() {
            match cache.get(&hash) {
                Some(Entry::Valid { header, context, until }) if *until > now => {
                    return Ok((header.clone(), (**context).clone()));
                }
                Some(Entry::Invalid { until }) if *until > now => return Err(ApiError::invalid_api_key()),
                Some(_) => {
                    cache.remove(&hash);
                }
                None => {}
            }
            if cache.len() > 100_000 {
                cache.retain(|_, e| match e {
                    Entry::Valid { until, .. } | Entry::Invalid { until } => *until > now,
                });
            }
        }
        let mut metadata = MetadataMap::new();
        if let Ok(v) = correlation_id.parse() {
            metadata.insert(trellis_kit::context::CORRELATION_ID, v);
        }
        let request = ResolveApiKeyRequest { key: key.to_string() }.encode_to_vec();
        let answer = upstreams.unary("identity", RESOLVE_PATH, request.into(), metadata, Duration::from_secs(5)).await;
        let bytes = match answer {
            Ok((_, bytes)) => bytes,
            Err(UpstreamError::Status(status)) if status.code() == Code::Unauthenticated => {
                self.remember(hash, Entry::Invalid { until: now + NEGATIVE_TTL });
                return Err(ApiError::invalid_api_key());
            }
            Err(UpstreamError::Status(status)) => {
                tracing::warn!(status = %status, "ResolveApiKey failed");
                return Err(ApiError::unavailable("identity").with_retry(5));
            }
            Err(_) => return Err(ApiError::unavailable("identity").with_retry(5)),
        };
        let response = ResolveApiKeyResponse::decode(bytes).map_err(|e| {
            tracing::error!(error = %e, "undecodable ResolveApiKey response");
            ApiError::internal()
        })?;
        let token = response.access_token;
        let claims = auth.verify(&token).await.map_err(|e| {
            tracing::error!(error = %e, "identity returned a token for an API key that does not verify");
            ApiError::invalid_api_key()
        })?;
        let header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError::invalid_api_key())?;
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(http::header::AUTHORIZATION, header.clone());
        let context = auth.authenticate(&headers, false).await.map_err(ApiError::from_kit)?;
        let left = Duration::from_secs((claims.exp - chrono::Utc::now().timestamp()).max(0) as u64);
        let until = now + left.saturating_sub(EXPIRY_MARGIN);
        if left > EXPIRY_MARGIN {
            self.remember(hash, Entry::Valid { header: header.clone(), context: Box::new(context.clone()), until });
        }
        Ok((header, context))
    }

    fn remember(&self, hash: [u8; 32], entry: Entry) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(hash, entry);
        }
    }
}
