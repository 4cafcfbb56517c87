//! Compact JWS with EdDSA (RFC 8037) and nothing else.
//!
//! A deliberately small implementation: the header must say `alg: EdDSA` and `typ: at+jwt`
//! exactly, so `none`, HS256-with-the-public-key and every other algorithm confusion are rejected
//! before any key is touched (RFC 8725 §2.1, §3.1).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::Claims;

/// The only algorithm accepted.
pub const ALG: &str = "EdDSA";
/// The token type of access tokens (RFC 9068).
pub const TYP: &str = "at+jwt";

/// The protected header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Algorithm.
    pub alg: String,
    /// Type.
    #[serde(default)]
    pub typ: Option<String>,
    /// Key id.
    #[serde(default)]
    pub kid: Option<String>,
}

/// Why a token could not be decoded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not EdDSA or `typ` is not at+jwt.
    #[error("unsupported algorithm or type")]
    Algorithm,
    /// No `kid`, or one the verifier does not know.
    #[error("unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
}

/// Signs `claims` as a compact JWS under `kid`. Usually [`Claims`]; an issuer may sign a struct
/// that flattens [`Claims`] and adds claims of its own (identity's `amr`), which verifiers
/// ignore unless they look for them.
pub fn sign<C: serde::Serialize>(claims: &C, kid: &str, key: &SigningKey) -> String {
    let header = Header { alg: ALG.to_string(), typ: Some(TYP.to_string()), kid: Some(kid.to_string()) };
    // Serialising plain structs of strings and numbers cannot fail.
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// A token split and its header checked, not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The checked header.
    pub header: Header,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Signature,
}

/// Splits a token and checks its header (`alg`, `typ`, `kid` present).
pub fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    let mut parts = token.splitn(3, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    if s.contains('.') {
        return Err(JwtError::Malformed);
    }
    let header: Header =
        URL_SAFE_NO_PAD.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Malformed)?;
    if header.alg != ALG || header.typ.as_deref() != Some(TYP) {
        return Err(JwtError::Algorithm);
    }
    if header.kid.as_deref().is_none_or(str::is_empty) {
        return Err(JwtError::UnknownKey);
    }
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let signature = Signature::from_slice(&signature).map_err(|_| JwtError::Signature)?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(Parsed { header, signing_input, payload, signature })
}

impl Parsed<'_> {
    /// The key id.
    pub fn kid(&self) -> &str {
        self.header.kid.as_deref().unwrap_or_default()
    }

    /// Verifies the signature with `key` and decodes the claims.
    pub fn verify(self, key: &VerifyingKey) -> Result<Claims, JwtError> {
        key.verify_strict(self.signing_input.as_bytes(), &self.signature).map_err(|_| JwtError::Signature)?;
        serde_json::from_slice(&self.payload).map_err(|_| JwtError::Malformed)
    }
}

/// The base64url `x` of an Ed25519 public key in a JWK.
pub fn jwk_x(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Decodes the `x` of an OKP/Ed25519 JWK.
pub fn key_from_x(x: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}
