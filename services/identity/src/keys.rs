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
//!
//! # Rotation
//! [`plan`] is the whole schedule as a pure function of the keys, the [`RotationPolicy`] and the
//! time; [`Keys::advance`] applies it in one transaction under an advisory lock, so replicas
//! running the scheduler ([`Keys::run_scheduler`]) never race:
//! - a `next` key is created one publish lead (10 min) before the active key's period (30 days)
//!   ends, and is published in the JWKS from then on;
//! - when its `activate_after` has passed, it becomes `active` and the old key `retiring`;
//! - a `retiring` key stays published for the retiring period (24 h, longer than any access token
//!   lives), then becomes `retired`: it leaves the JWKS and its private half is erased.
//!
//! [`Keys::rotate_now`] (RotateSigningKey, `trellis rotate-signing-key`) asks for a rotation now:
//! it creates the `next` key (or brings the existing one forward) to activate one publish lead
//! later, so verifiers that cache the JWKS know the key before the first token it signs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use trellis_kit::auth::jwt;
use trellis_kit::db::Db;
use trellis_kit::{Error, Result};
use trellis_proto::trellis::identity::v1::Jwk;

use crate::store;
use crate::store::signing_keys::KeyStateRow;

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
    /// Signs claims into a compact JWS (`alg: EdDSA`, `typ: at+jwt`, this `kid`): kit's
    /// [`trellis_kit::auth::Claims`],
    /// or a struct flattening them with more claims (`tokens::UserClaims`).
    pub fn sign<C: serde::Serialize>(&self, claims: &C) -> String {
        jwt::sign(claims, &self.kid, &self.key)
    }
}

/// Signing keys as the service uses them.
#[derive(Debug)]
pub struct Keys {
    db: Db,
    encryption: EncryptionKey,
    policy: RotationPolicy,
    active: RwLock<Option<(Instant, Arc<ActiveKey>)>>,
}

impl Keys {
    /// Loads the active key, creating one first when there is none (default rotation policy).
    pub async fn start(db: Db, encryption: EncryptionKey) -> anyhow::Result<Keys> {
        Self::start_with(db, encryption, RotationPolicy::default()).await
    }

    /// Loads the active key, creating one first when there is none, and catches up with any
    /// rotation step that fell due while no replica ran.
    pub async fn start_with(db: Db, encryption: EncryptionKey, policy: RotationPolicy) -> anyhow::Result<Keys> {
        let keys = Keys { db, encryption, policy, active: RwLock::new(None) };
        keys.ensure_active().await?;
        keys.advance(Utc::now()).await?;
        let active = keys.load_active().await?;
        tracing::info!(kid = %active.kid, "signing key loaded");
        Ok(keys)
    }

    /// The rotation policy in force.
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Applies every rotation step due at `now` (see [`plan`]); returns what it did. The active
    /// key is reloaded when it changed.
    pub async fn advance(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Step>> {
        self.apply(now, false).await
    }

    /// Starts a rotation now (RotateSigningKey): a `next` key that becomes active one publish
    /// lead from now. Returns the keys afterwards, newest first.
    pub async fn rotate_now(&self) -> anyhow::Result<Vec<KeyState>> {
        let steps = self.apply(Utc::now(), true).await?;
        tracing::info!(steps = ?steps, "signing-key rotation requested");
        self.states().await
    }

    /// Every key with its status, newest first.
    pub async fn states(&self) -> anyhow::Result<Vec<KeyState>> {
        let mut conn = self.db.pool().acquire().await?;
        let rows = store::signing_keys::all_keys(&mut conn).await?;
        rows.iter().map(|r| KeyState::from_row(r, &self.policy)).collect()
    }

    async fn apply(&self, now: DateTime<Utc>, rotate_now: bool) -> anyhow::Result<Vec<Step>> {
        let mut tx = self.db.pool().begin().await?;
        store::signing_keys::lock_rotation(&mut tx).await?;
        let rows = store::signing_keys::unretired_keys(&mut tx).await?;
        let states = rows.iter().map(|r| KeyState::from_row(r, &self.policy)).collect::<anyhow::Result<Vec<_>>>()?;
        let steps = plan(&states, &self.policy, now, rotate_now);
        let mut promoted = false;
        for step in &steps {
            match step {
                Step::CreateNext { activate_after } => {
                    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
                    let public = signing.verifying_key();
                    let kid = kid_for(&public);
                    let sealed = self.encryption.seal(signing.as_bytes(), kid.as_bytes());
                    store::signing_keys::insert_next_key(
                        &mut tx,
                        &kid,
                        public.as_bytes(),
                        &sealed,
                        self.encryption.id(),
                        now,
                        *activate_after,
                    )
                    .await?;
                    tracing::info!(kid = %kid, activate_after = %activate_after, "published the next signing key");
                }
                Step::Expedite { kid, activate_after } => {
                    store::signing_keys::expedite_next_key(&mut tx, kid, *activate_after).await?;
                    tracing::info!(kid = %kid, activate_after = %activate_after, "brought the next signing key forward");
                }
                Step::Promote { next, replaced } => {
                    store::signing_keys::promote_next_key(&mut tx, next, replaced.as_deref(), now).await?;
                    promoted = true;
                    tracing::info!(kid = %next, replaced = ?replaced, "activated the next signing key");
                }
                Step::Retire { kid } => {
                    store::signing_keys::retire_key(&mut tx, kid, now).await?;
                    tracing::info!(kid = %kid, "retired a signing key; it has left the JWKS");
                }
            }
        }
        tx.commit().await?;
        if promoted {
            self.load_active().await?;
        }
        Ok(steps)
    }

    /// Runs the rotation schedule every `interval` until `shutdown` (a worker of every replica;
    /// the advisory lock makes concurrent runs harmless). Also reloads the active key, so a
    /// rotation made by another replica is picked up within one interval.
    pub async fn run_scheduler(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.advance(Utc::now()).await {
                tracing::warn!(error = format!("{e:#}"), "signing-key rotation step failed; retrying next tick");
                continue;
            }
            if let Err(e) = self.load_active().await {
                tracing::warn!(error = format!("{e:#}"), "reloading the active signing key failed");
            }
        }
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

/// `trellis rotate-signing-key`: starts a rotation on identity's database directly (as identity's
/// role, with its encryption key), so it works whether or not identity is running. The running
/// replicas activate the new key on schedule. Returns every key, newest first.
pub async fn rotate_from_cli(
    config: &trellis_kit::config::Config,
    settings: &crate::IdentityConfig,
) -> anyhow::Result<Vec<KeyState>> {
    let db = Db::connect("identity", &config.db()).await?;
    let encryption = EncryptionKey::from_base64(&settings.encryption_key)?;
    let keys = Keys::start_with(db, encryption, settings.rotation_policy()).await?;
    keys.rotate_now().await
}

/// The rotation schedule (spec rule 14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a key is active before the scheduled rotation (30 days).
    pub period: Duration,
    /// How long a `next` key is published before it becomes active (10 minutes).
    pub publish_lead: Duration,
    /// How long a replaced key stays published as `retiring` (24 hours).
    pub retiring: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(30 * 86_400),
            publish_lead: Duration::from_secs(600),
            retiring: Duration::from_secs(86_400),
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A key's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Published, not yet signing.
    Next,
    /// Signs new tokens.
    Active,
    /// Replaced; published until its tokens have expired.
    Retiring,
    /// Gone from the JWKS.
    Retired,
}

impl KeyStatus {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "next" => Self::Next,
            "active" => Self::Active,
            "retiring" => Self::Retiring,
            "retired" => Self::Retired,
            other => anyhow::bail!("unknown signing key status {other:?}"),
        })
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
        }
    }
}

/// A key's place in the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// Key id.
    pub kid: String,
    /// Status.
    pub status: KeyStatus,
    /// Generated (and, for a `next` key, first published).
    pub created_at: DateTime<Utc>,
    /// Earliest activation.
    pub activate_after: DateTime<Utc>,
    /// Activated.
    pub activated_at: Option<DateTime<Utc>>,
    /// Replaced by another key.
    pub replaced_at: Option<DateTime<Utc>>,
    /// When it leaves (or left) the JWKS: replaced_at + the retiring period, or the time it did.
    pub retires_at: Option<DateTime<Utc>>,
}

impl KeyState {
    fn from_row(row: &KeyStateRow, policy: &RotationPolicy) -> anyhow::Result<Self> {
        Ok(Self {
            kid: row.kid.clone(),
            status: KeyStatus::parse(&row.status)?,
            created_at: row.created_at,
            activate_after: row.activate_after,
            activated_at: row.activated_at,
            replaced_at: row.replaced_at,
            retires_at: row.retired_at.or(row.replaced_at.map(|r| r + delta(policy.retiring))),
        })
    }
}

/// One change of the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Generate and publish a `next` key that may become active at `activate_after`.
    CreateNext {
        /// Earliest activation.
        activate_after: DateTime<Utc>,
    },
    /// Bring the `next` key's activation forward (a rotation requested now).
    Expedite {
        /// The next key.
        kid: String,
        /// The new earliest activation.
        activate_after: DateTime<Utc>,
    },
    /// Make the `next` key active and the active one retiring.
    Promote {
        /// The next key.
        next: String,
        /// The key it replaces (none when no key was active).
        replaced: Option<String>,
    },
    /// A retiring key's period is over: retire it.
    Retire {
        /// The key.
        kid: String,
    },
}

/// The rotation steps due at `now` for these (unretired) keys, in the order to apply them.
/// `rotate_now` asks for a rotation that activates one publish lead from now.
///
/// Invariants: a key becomes active only after it has been published for the publish lead; a
/// replaced key stays published for the retiring period; at most one key is `next`.
pub fn plan(keys: &[KeyState], policy: &RotationPolicy, now: DateTime<Utc>, rotate_now: bool) -> Vec<Step> {
    let lead = delta(policy.publish_lead);
    let mut steps = Vec::new();
    for key in keys.iter().filter(|k| k.status == KeyStatus::Retiring) {
        if key.replaced_at.is_some_and(|r| r + delta(policy.retiring) <= now) {
            steps.push(Step::Retire { kid: key.kid.clone() });
        }
    }
    let active = keys.iter().find(|k| k.status == KeyStatus::Active);
    let next = keys.iter().find(|k| k.status == KeyStatus::Next);
    // Never earlier than one publish lead after the key appeared in the JWKS.
    let earliest = |k: &KeyState| k.activate_after.max(k.created_at + lead);
    match next {
        Some(next) if earliest(next) <= now => {
            steps.push(Step::Promote { next: next.kid.clone(), replaced: active.map(|a| a.kid.clone()) });
        }
        Some(next) if rotate_now => {
            let activate_after = (now + lead).max(next.created_at + lead);
            if activate_after < next.activate_after {
                steps.push(Step::Expedite { kid: next.kid.clone(), activate_after });
            }
        }
        Some(_) => {}
        None => {
            let due = active.map(|a| a.activated_at.unwrap_or(a.activate_after) + delta(policy.period));
            if rotate_now {
                steps.push(Step::CreateNext { activate_after: now + lead });
            } else if let Some(due) = due
                && due - lead <= now
            {
                steps.push(Step::CreateNext { activate_after: due.max(now + lead) });
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time") + TimeDelta::minutes(minutes)
    }

    fn state(kid: &str, status: KeyStatus, created: i64) -> KeyState {
        KeyState {
            kid: kid.into(),
            status,
            created_at: at(created),
            activate_after: at(created),
            activated_at: (status != KeyStatus::Next).then(|| at(created)),
            replaced_at: None,
            retires_at: None,
        }
    }

    const DAY: i64 = 24 * 60;

    #[test]
    fn nothing_happens_while_the_active_key_is_young() {
        let policy = RotationPolicy::default();
        let keys = [state("a", KeyStatus::Active, 0)];
        assert_eq!(plan(&keys, &policy, at(29 * DAY), false), vec![]);
    }

    #[test]
    fn the_next_key_is_published_a_lead_before_the_period_ends_and_then_activated() {
        let policy = RotationPolicy::default();
        let keys = [state("a", KeyStatus::Active, 0)];
        // Ten minutes before day 30: publish the next key, to activate at day 30 exactly.
        let publish = at(30 * DAY - 10);
        assert_eq!(plan(&keys, &policy, publish, false), vec![Step::CreateNext { activate_after: at(30 * DAY) }]);
        let next = KeyState { activate_after: at(30 * DAY), ..state("b", KeyStatus::Next, 30 * DAY - 10) };
        let keys = [keys[0].clone(), next];
        assert_eq!(plan(&keys, &policy, at(30 * DAY - 1), false), vec![]);
        assert_eq!(
            plan(&keys, &policy, at(30 * DAY), false),
            vec![Step::Promote { next: "b".into(), replaced: Some("a".into()) }]
        );
    }

    #[test]
    fn an_overdue_rotation_still_publishes_the_key_for_a_full_lead() {
        // The cell was down past day 30: the next key still waits ten minutes in the JWKS.
        let policy = RotationPolicy::default();
        let keys = [state("a", KeyStatus::Active, 0)];
        let now = at(45 * DAY);
        assert_eq!(plan(&keys, &policy, now, false), vec![Step::CreateNext { activate_after: at(45 * DAY + 10) }]);
        // And a next key whose activate_after was tampered earlier than its lead still waits.
        let next = KeyState { activate_after: at(0), ..state("b", KeyStatus::Next, 45 * DAY) };
        assert_eq!(plan(&[keys[0].clone(), next], &policy, at(45 * DAY + 9), false), vec![]);
    }

    #[test]
    fn retiring_keys_stay_published_for_the_retiring_period() {
        let policy = RotationPolicy::default();
        let old = KeyState { replaced_at: Some(at(30 * DAY)), ..state("a", KeyStatus::Retiring, 0) };
        let keys = [old, state("b", KeyStatus::Active, 30 * DAY)];
        assert_eq!(plan(&keys, &policy, at(31 * DAY - 1), false), vec![]);
        assert_eq!(plan(&keys, &policy, at(31 * DAY), false), vec![Step::Retire { kid: "a".into() }]);
    }

    #[test]
    fn a_requested_rotation_activates_one_lead_later() {
        let policy = RotationPolicy::default();
        let keys = [state("a", KeyStatus::Active, 0)];
        assert_eq!(plan(&keys, &policy, at(60), true), vec![Step::CreateNext { activate_after: at(70) }]);
        // A next key scheduled for day 30 is brought forward, but never before its own lead.
        let next = KeyState { activate_after: at(30 * DAY), ..state("b", KeyStatus::Next, 55) };
        let keys = [keys[0].clone(), next];
        assert_eq!(
            plan(&keys, &policy, at(60), true),
            vec![Step::Expedite { kid: "b".into(), activate_after: at(70) }]
        );
        let late = KeyState { activate_after: at(30 * DAY), ..state("b", KeyStatus::Next, 58) };
        assert_eq!(
            plan(&[keys[0].clone(), late], &policy, at(58), true),
            vec![Step::Expedite { kid: "b".into(), activate_after: at(68) }]
        );
        // Already due: the request simply promotes it.
        let due = KeyState { activate_after: at(65), ..state("b", KeyStatus::Next, 55) };
        assert_eq!(
            plan(&[keys[0].clone(), due], &policy, at(66), true),
            vec![Step::Promote { next: "b".into(), replaced: Some("a".into()) }]
        );
    }

    #[test]
    fn at_most_one_next_key_is_planned_whatever_the_state() {
        let policy = RotationPolicy::default();
        for minutes in [0, 10, 30 * DAY - 11, 30 * DAY - 10, 30 * DAY, 90 * DAY] {
            for rotate_now in [false, true] {
                let keys = [state("a", KeyStatus::Active, 0)];
                let creates = plan(&keys, &policy, at(minutes), rotate_now)
                    .iter()
                    .filter(|s| matches!(s, Step::CreateNext { .. }))
                    .count();
                assert!(creates <= 1);
                let with_next = [keys[0].clone(), state("b", KeyStatus::Next, minutes)];
                assert!(
                    !plan(&with_next, &policy, at(minutes), rotate_now)
                        .iter()
                        .any(|s| matches!(s, Step::CreateNext { .. }))
                );
            }
        }
    }

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
