//! Signing keys and secrets at rest.
//!
//! Access tokens are signed with Ed25519 keys kept in `identity.signing_keys` with a status
//! `next | active | retiring | retired` (spec rule 14; exactly one is active, enforced by a unique
//! partial index). Private keys are stored encrypted with AES-256-GCM under
//! `IDENTITY_ENCRYPTION_KEY`; each row records the id of the key that sealed it, so that key can
//! rotate. A key id (`kid`) is the RFC 7638 thumbprint of the public key.
//!
//! On start, [`Keys::start`] creates an active key when there is none. Several replicas starting
//! at once race safely: the insert does nothing when another replica's key won, and everyone then
//! reads the winner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use trellis_kit::auth::{Claims, jwt};
use trellis_kit::db::Db;
use trellis_kit::{Error, Result};
use trellis_proto::trellis::identity::v1::Jwk;

use crate::store;

/// How long a replica trusts its cached active key before reading it again (so a rotation made
/// by another replica is picked up).
pub const ACTIVE_KEY_CACHE: Duration = Duration::from_secs(60);
/// AES-GCM nonce length.
const NONCE_LEN: usize = 12;

/// The symmetric key that encrypts identity's secrets at rest.
pub struct EncryptionKey {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        let digest = Sha256::new().chain_update(b"trellis.identity.key-id\0").chain_update(key).finalize();
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self { id, cipher: Aes256Gcm::new(key.into()) }
    }

    /// A key from base64 (`IDENTITY_ENCRYPTION_KEY`).
    pub fn from_base64(encoded: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD.decode(encoded.trim())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| anyhow::anyhow!("encryption key must be 32 bytes, got {}", b.len()))?;
        Ok(Self::new(&key))
    }

    /// The key's id, stored beside every ciphertext it seals (a fingerprint, not the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` bound to `aad` (the row's identity): `nonce || ciphertext+tag`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .unwrap_or_else(|_| unreachable!("AES-GCM encryption of a short message cannot fail"));
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Decrypts what [`EncryptionKey::seal`] produced under the key `key_id` with the same `aad`.
    pub fn open(&self, key_id: &str, sealed: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            key_id == self.id,
            "sealed with encryption key {key_id}, but IDENTITY_ENCRYPTION_KEY is key {}",
            self.id
        );
        anyhow::ensure!(sealed.len() > NONCE_LEN, "ciphertext too short");
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| anyhow::anyhow!("ciphertext does not authenticate (wrong key or tampered row)"))
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of its canonical JWK).
pub fn kid_for(key: &VerifyingKey) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, jwt::jwk_x(key));
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The public JWK of a key (RFC 8037).
pub fn jwk(kid: &str, key: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: jwt::jwk_x(key),
        kid: kid.to_string(),
        r#use: "sig".into(),
        alg: jwt::ALG.into(),
    }
}

/// The key that signs new tokens.
pub struct ActiveKey {
    /// Its key id.
    pub kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl ActiveKey {
    /// Signs claims into a compact JWS (`alg: EdDSA`, `typ: at+jwt`, this `kid`).
    pub fn sign(&self, claims: &Claims) -> String {
        jwt::sign(claims, &self.kid, &self.key)
    }
}

/// Signing keys as the service uses them.
#[derive(Debug)]
pub struct Keys {
    db: Db,
    encryption: EncryptionKey,
    active: RwLock<Option<(Instant, Arc<ActiveKey>)>>,
}

impl Keys {
    /// Loads the active key, creating one first when there is none.
    pub async fn start(db: Db, encryption: EncryptionKey) -> anyhow::Result<Keys> {
        let keys = Keys { db, encryption, active: RwLock::new(None) };
        keys.ensure_active().await?;
        let active = keys.load_active().await?;
        tracing::info!(kid = %active.kid, "signing key loaded");
        Ok(keys)
    }

    /// Inserts a fresh active key unless one exists (race-safe across replicas).
    async fn ensure_active(&self) -> anyhow::Result<()> {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let public = signing.verifying_key();
        let kid = kid_for(&public);
        let sealed = self.encryption.seal(signing.as_bytes(), kid.as_bytes());
        let created = store::insert_active_signing_key_if_none(
            self.db.pool(),
            &kid,
            public.as_bytes(),
            &sealed,
            self.encryption.id(),
        )
        .await?;
        if created {
            tracing::info!(kid = %kid, "created the first signing key");
        }
        Ok(())
    }

    async fn load_active(&self) -> anyhow::Result<Arc<ActiveKey>> {
        let row =
            store::active_signing_key(self.db.pool()).await?.ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
        let seed = self
            .encryption
            .open(&row.key_id, &row.private_key_ciphertext, row.kid.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing key {}: {e}", row.kid))?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| anyhow::anyhow!("signing key {}: bad length", row.kid))?;
        let key = SigningKey::from_bytes(&seed);
        anyhow::ensure!(
            key.verifying_key().as_bytes().as_slice() == row.public_key.as_slice(),
            "signing key {}: the private key does not match the public key",
            row.kid
        );
        let active = Arc::new(ActiveKey { kid: row.kid, key });
        *self.active.write().await = Some((Instant::now(), active.clone()));
        Ok(active)
    }

    /// The key that signs new tokens (cached for [`ACTIVE_KEY_CACHE`]).
    pub async fn active(&self) -> Result<Arc<ActiveKey>> {
        if let Some((loaded, key)) = self.active.read().await.as_ref()
            && loaded.elapsed() < ACTIVE_KEY_CACHE
        {
            return Ok(key.clone());
        }
        match self.load_active().await {
            Ok(key) => Ok(key),
            Err(e) => {
                // Keep signing with the cached key through a database hiccup.
                if let Some((_, key)) = self.active.read().await.as_ref() {
                    tracing::warn!(error = format!("{e:#}"), "reloading the signing key failed; using the cached one");
                    return Ok(key.clone());
                }
                Err(Error::internal(e))
            }
        }
    }

    /// The published keys: status next, active or retiring.
    pub async fn jwks(&self) -> Result<Vec<Jwk>> {
        let rows = store::published_signing_keys(self.db.pool()).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let bytes: Option<[u8; 32]> = row.public_key.as_slice().try_into().ok();
            match bytes.and_then(|b| VerifyingKey::from_bytes(&b).ok()) {
                Some(public) => keys.push(jwk(&row.kid, &public)),
                None => tracing::error!(kid = %row.kid, "a stored public key is not an Ed25519 key; not published"),
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_row() {
        let key = EncryptionKey::new(&[7; 32]);
        let sealed = key.seal(b"private seed", b"kid-1");
        assert_ne!(&sealed[NONCE_LEN..], b"private seed");
        assert_eq!(key.open(key.id(), &sealed, b"kid-1").expect("opens"), b"private seed");
        // Bound to its row: moving the ciphertext to another kid fails.
        assert!(key.open(key.id(), &sealed, b"kid-2").is_err());
        // Another key fails, and says which key sealed it.
        let other = EncryptionKey::new(&[8; 32]);
        assert_ne!(other.id(), key.id());
        assert!(other.open(key.id(), &sealed, b"kid-1").is_err());
        // Tampering fails.
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open(key.id(), &tampered, b"kid-1").is_err());
        // Two seals of the same secret differ (random nonce).
        assert_ne!(key.seal(b"private seed", b"kid-1"), sealed);
    }

    #[test]
    fn the_dev_key_decodes() {
        let key = EncryptionKey::from_base64(crate::config::DEV_ENCRYPTION_KEY).expect("32 bytes");
        assert_eq!(key.id().len(), 16);
        assert!(EncryptionKey::from_base64("c2hvcnQ=").is_err());
        assert!(!format!("{key:?}").contains("cipher"));
    }

    #[test]
    fn kids_are_rfc7638_thumbprints() {
        // RFC 8037 appendix A.1/A.3: this public key's thumbprint.
        let x = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").expect("x");
        let public = VerifyingKey::from_bytes(&x.try_into().expect("32 bytes")).expect("key");
        assert_eq!(kid_for(&public), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn jwks_entries_describe_ed25519_signing_keys() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let jwk = jwk("k1", &key.verifying_key());
        assert_eq!(
            (jwk.kty.as_str(), jwk.crv.as_str(), jwk.r#use.as_str(), jwk.alg.as_str()),
            ("OKP", "Ed25519", "sig", "EdDSA")
        );
        assert_eq!(jwt::key_from_x(&jwk.x), Some(key.verifying_key()));
    }
}
