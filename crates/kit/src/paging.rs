//! Opaque, tamper-evident page tokens (AIP-158).
//!
//! A token is `base64url(json) . base64url(hmac-sha256)` under the cell secret. It binds the
//! query it was issued for (a hash of the filter, order and other parameters), so a token reused
//! with different filters is INVALID_ARGUMENT rather than a silently wrong page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Default page size when the request asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 25;
/// Largest page a list returns.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Normalises a requested page size: 0 → default, above max → max, negative → INVALID_ARGUMENT.
pub fn page_size(requested: i32) -> Result<u32> {
    match requested {
        n if n < 0 => Err(Error::validation("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

/// Signs and checks page tokens.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens")
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<C> {
    /// Hash of the query the token belongs to.
    q: String,
    /// The cursor (e.g. the last row's sort key and id).
    c: C,
}

impl PageTokens {
    /// Tokens signed with `secret` (the cell secret).
    pub fn new(secret: &[u8]) -> Self {
        let mut key = Sha256::new();
        key.update(b"trellis page token v1");
        key.update(secret);
        Self { key: key.finalize().to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("hmac takes any key length"))
    }

    /// A digest of the query parameters a token is bound to.
    pub fn query_hash(parts: &[&str]) -> String {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(&h.finalize()[..12])
    }

    /// Encodes `cursor` for the query identified by `query_hash`.
    pub fn encode<C: Serialize>(&self, query_hash: &str, cursor: &C) -> String {
        let body = serde_json::to_vec(&Envelope { q: query_hash.to_string(), c: cursor }).unwrap_or_default();
        let mut mac = self.mac();
        mac.update(&body);
        let sig = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(body), URL_SAFE_NO_PAD.encode(sig))
    }

    /// Decodes a token: `None` for an empty token (the first page), INVALID_ARGUMENT
    /// `INVALID_PAGE_TOKEN` for one that was altered or issued for another query.
    pub fn decode<C: DeserializeOwned>(&self, query_hash: &str, token: &str) -> Result<Option<C>> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            Error::invalid_argument("INVALID_PAGE_TOKEN", "The page token is invalid or belongs to another query")
                .with_field("page_token", "invalid or issued for other parameters")
        };
        let (body, sig) = token.split_once('.').ok_or_else(invalid)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid())?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(&body);
        mac.verify_slice(&sig).map_err(|_| invalid())?;
        let envelope: Envelope<C> = serde_json::from_slice(&body).map_err(|_| invalid())?;
        if envelope.q != query_hash {
            return Err(invalid());
        }
        Ok(Some(envelope.c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_for_the_same_query() {
        let tokens = PageTokens::new(b"secret");
        let q = PageTokens::query_hash(&["status=todo", "created_at desc"]);
        let t = tokens.encode(&q, &("2025-01-01", 42));
        let back: Option<(String, i32)> = tokens.decode(&q, &t).expect("valid");
        assert_eq!(back, Some(("2025-01-01".to_string(), 42)));
    }

    #[test]
    fn altered_or_foreign_tokens_are_rejected() {
        let tokens = PageTokens::new(b"secret");
        let q = PageTokens::query_hash(&["a"]);
        let t = tokens.encode(&q, &1);
        let mut altered = t.clone();
        altered.replace_range(0..1, if t.starts_with('e') { "f" } else { "e" });
        assert!(tokens.decode::<i32>(&q, &altered).is_err());
        assert!(tokens.decode::<i32>(&PageTokens::query_hash(&["b"]), &t).is_err());
        assert!(PageTokens::new(b"other").decode::<i32>(&q, &t).is_err());
        assert_eq!(tokens.decode::<i32>(&q, "").expect("first page"), None);
    }

    #[test]
    fn page_sizes_are_normalised() {
        assert_eq!(page_size(0).expect("default"), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(500).expect("clamped"), MAX_PAGE_SIZE);
        assert_eq!(page_size(7).expect("as asked"), 7);
        assert!(page_size(-1).is_err());
    }
}
