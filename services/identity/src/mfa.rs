//! Multi-factor authentication (spec: MfaService, rule 18, flow 7; ADR 0015): TOTP enrolment and
//! confirmation, the second step of a sign-in, backup codes, and turning MFA off.
//!
//! TOTP is RFC 6238 with SHA-1, 6 digits and 30 s steps; a code of the current step or one step
//! either side is accepted, and a code of a step at or before the last accepted one is a replay.
//! The secret is sealed with AES-256-GCM under a key derived from the cell secret
//! ([`trellis_kit::auth::derived_key`], purpose [`TOTP_KEY_PURPOSE`]) and bound to the user id.
//! Backup codes are 8 characters of a 32-letter alphabet without look-alikes, stored as Argon2id
//! hashes and spent on use.
//!
//! A sign-in with MFA: `Login` checks the password and answers `requires_mfa` with an
//! `mfa_token` (a [`PendingMfa`]); `Challenge` counts an attempt on the token (5 at most, 5 min),
//! judges the code, and only then starts the session, whose `amr` is `["pwd","otp"]`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use subtle::ConstantTimeEq;
use trellis_kit::{RequestContext, Result, Subject};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::{Client, SignIn};
use crate::error::{IdentityError, mfa_code_invalid};
use crate::keys::EncryptionKey;
use crate::password::{self, Verification};
use crate::store::{self, mfa as mfa_store};
use crate::{Identity, tokens};

/// Seconds per TOTP step.
pub const STEP_SECONDS: i64 = 30;
/// Digits per TOTP code.
pub const DIGITS: u32 = 6;
/// Random bytes of a TOTP secret.
pub const SECRET_BYTES: usize = 20;
/// Backup codes per generation.
pub const BACKUP_CODES: usize = 10;
/// Characters of a backup code (shown as `xxxx-xxxx`).
pub const BACKUP_CODE_LEN: usize = 8;
/// The backup-code alphabet: digits 2-9 and letters without `i` and `o` (32 symbols, 5 bits each).
pub const BACKUP_ALPHABET: &[u8; 32] = b"23456789abcdefghjklmnpqrstuvwxyz";
/// How long an mfa_token lives.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Attempts one mfa_token allows.
pub const CHALLENGE_ATTEMPTS: i32 = 5;
/// The methods a challenge accepts (`mfa_methods` of the Login answer).
pub const METHODS: [&str; 2] = ["totp", "backup_code"];
/// Issuer shown by authenticator apps.
pub const ISSUER: &str = "Trellis";
/// The purpose under which the TOTP sealing key is derived from the cell secret.
pub const TOTP_KEY_PURPOSE: &str = "trellis.identity.totp-secrets";
/// Code checks per user (Verify, RegenerateBackupCodes, Disable) per window.
const CODE_CHECKS_PER_WINDOW: u32 = 10;
/// The window of [`CODE_CHECKS_PER_WINDOW`].
const CODE_CHECK_WINDOW: Duration = Duration::from_secs(900);

/// A sign-in waiting for its second factor.
#[derive(Debug)]
pub struct PendingMfa {
    /// The token for `Challenge` (shown once; only its hash is stored).
    pub mfa_token: String,
    /// The methods the challenge accepts.
    pub methods: Vec<String>,
}

/// A new enrolment: the secret for the authenticator app.
#[derive(Debug)]
pub struct Enrolment {
    /// Base32 secret.
    pub secret: String,
    /// `otpauth://` URL.
    pub otpauth_url: String,
}

/// A completed MFA sign-in.
#[derive(Debug)]
pub struct ChallengePassed {
    /// The session and its tokens.
    pub sign_in: SignIn,
    /// Unused backup codes left.
    pub backup_codes_remaining: i32,
}

/// The step containing `now`.
pub fn step_at(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(STEP_SECONDS)
}

/// The TOTP code of `secret` at `step` (RFC 6238 with HMAC-SHA-1, RFC 4226 truncation).
pub fn totp(secret: &[u8], step: i64) -> u32 {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let word = u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    word % 10u32.pow(DIGITS)
}

/// The code as a user types it: six digits, zero padded.
pub fn format_code(code: u32) -> String {
    format!("{code:0width$}", width = DIGITS as usize)
}

/// What a presented TOTP code is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpVerdict {
    /// It is the code of this step (not used before).
    Accept(i64),
    /// It is a valid code of a step already used.
    Replay,
    /// It is not a code of the accepted steps.
    Wrong,
}

/// Judges `presented` against `secret` at `now`: the current step or one either side, and only
/// steps after `last_used_step`. The comparison is constant-time.
pub fn judge_totp(secret: &[u8], presented: &str, now: DateTime<Utc>, last_used_step: Option<i64>) -> TotpVerdict {
    let presented: String = presented.chars().filter(|c| !c.is_whitespace()).collect();
    if presented.len() != DIGITS as usize || !presented.bytes().all(|b| b.is_ascii_digit()) {
        return TotpVerdict::Wrong;
    }
    let current = step_at(now);
    let mut verdict = TotpVerdict::Wrong;
    for step in [current - 1, current, current + 1] {
        let expected = format_code(totp(secret, step));
        if bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            verdict = match last_used_step {
                Some(last) if step <= last => match verdict {
                    TotpVerdict::Accept(_) => verdict,
                    _ => TotpVerdict::Replay,
                },
                _ => TotpVerdict::Accept(step),
            };
        }
    }
    verdict
}

/// RFC 4648 base32 without padding (the form authenticator apps take).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes [`base32`] (case-insensitive, padding and spaces ignored); `None` for other text.
pub fn from_base32(text: &str) -> Option<Vec<u8>> {
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let value = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://` URL of a secret (Google's key-URI format).
pub fn otpauth_url(email: &str, secret_base32: &str) -> String {
    let label = percent_encode(&format!("{ISSUER}:{email}"));
    format!(
        "otpauth://totp/{label}?secret={secret_base32}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}"
    )
}

/// Percent-encodes all but unreserved characters, `@` and `:`.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A new backup code, `xxxx-xxxx`.
pub fn new_backup_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let chars: String =
        (0..BACKUP_CODE_LEN).map(|_| char::from(BACKUP_ALPHABET[rng.gen_range(0..BACKUP_ALPHABET.len())])).collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// A presented backup code in the form that was hashed (`xxxxxxxx`): lowercase, without dashes
/// or spaces; `None` when it cannot be a backup code.
pub fn normalize_backup_code(presented: &str) -> Option<String> {
    let code: String =
        presented.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_lowercase()).collect();
    (code.len() == BACKUP_CODE_LEN && code.bytes().all(|b| BACKUP_ALPHABET.contains(&b))).then_some(code)
}

/// Argon2id memory for backup codes, in KiB. Backup codes are random (40 bits) rather than
/// chosen by people, and ten are hashed per generation, so they use a lighter cost than passwords
/// (ADR 0015): 8 MiB and one pass, about a fifth of a password hash.
pub const BACKUP_CODE_M_COST: u32 = 8 * 1024;

/// The Argon2id hash (PHC string) of a normalised backup code.
pub fn hash_backup_code(code: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(BACKUP_CODE_M_COST, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hash =
        hasher.hash_password(code.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("hashing a backup code: {e}"))?;
    Ok(hash.to_string())
}

/// Ten new backup codes and their Argon2id hashes (hashed on the blocking pool).
async fn new_backup_codes() -> Result<(Vec<String>, Vec<String>)> {
    let codes: Vec<String> = (0..BACKUP_CODES).map(|_| new_backup_code()).collect();
    let normalized: Vec<String> = codes.iter().map(|c| normalize_backup_code(c).unwrap_or_default()).collect();
    let hashes = tokio::task::spawn_blocking(move || {
        normalized.iter().map(|c| hash_backup_code(c)).collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| trellis_kit::Error::internal(anyhow::anyhow!("backup code hashing: {e}")))?
    .map_err(trellis_kit::Error::internal)?;
    Ok((codes, hashes))
}

/// The unused backup code matching `presented`, if any (one Argon2id verification per code).
async fn matching_backup_code(unused: Vec<(Uuid, String)>, presented: &str) -> Result<Option<Uuid>> {
    let Some(code) = normalize_backup_code(presented) else {
        return Ok(None);
    };
    let found = tokio::task::spawn_blocking(move || {
        unused.into_iter().find(|(_, hash)| matches!(password::verify(hash, &code), Verification::Match { .. }))
    })
    .await
    .map_err(|e| trellis_kit::Error::internal(anyhow::anyhow!("backup code check: {e}")))?;
    Ok(found.map(|(id, _)| id))
}

/// The key that seals TOTP secrets, derived from the cell secret.
fn sealing_key(cell_secret: &str) -> EncryptionKey {
    EncryptionKey::new(&trellis_kit::auth::derived_key(cell_secret, TOTP_KEY_PURPOSE))
}

/// The context of account events: the platform org, the user as actor.
fn account_event_ctx(correlation_id: &str, user_id: Uuid) -> RequestContext {
    let mut ctx = RequestContext::system(Uuid::nil(), correlation_id.to_string());
    ctx.subject = Subject::User(user_id);
    ctx
}

impl Identity {
    /// Checks the caller's password (a step-up before a sensitive change) and returns the user.
    pub(crate) async fn step_up(&self, user_id: Uuid, presented: String) -> Result<store::User> {
        self.require_password(user_id, presented).await?;
        let mut conn = self.db.pool().acquire().await?;
        store::user_by_id(&mut conn, user_id)
            .await?
            .filter(|u| u.status == "active")
            .ok_or_else(|| IdentityError::InvalidCredentials.into())
    }

    /// Enroll: a new pending secret after a password check.
    pub async fn enroll_mfa(&self, ctx: &RequestContext, password: String) -> Result<Enrolment> {
        let user = self.step_up(ctx.user_id()?, password).await?;
        if user.mfa_enabled {
            return Err(IdentityError::MfaAlreadyEnabled.into());
        }
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let key = sealing_key(&self.cell_secret);
        let sealed = key.seal(&secret, user.id.as_bytes());
        let mut conn = self.db.pool().acquire().await?;
        mfa_store::upsert_pending_totp(&mut conn, user.id, &sealed, key.id()).await?;
        let encoded = base32(&secret);
        tracing::info!(user_id = %user.id, "MFA enrolment started");
        Ok(Enrolment { otpauth_url: otpauth_url(&user.email, &encoded), secret: encoded })
    }

    /// The user's TOTP secret in clear, from its row.
    fn open_secret(&self, user_id: Uuid, row: &mfa_store::TotpRow) -> Result<Vec<u8>> {
        sealing_key(&self.cell_secret)
            .open(&row.key_id, &row.secret_ciphertext, user_id.as_bytes())
            .map_err(trellis_kit::Error::internal)
    }

    /// Judges a TOTP code inside `tx` (the secret row locked) and records its step when it is
    /// accepted. `confirmed` says whether the secret must be confirmed (MFA on) or pending.
    async fn use_totp_code(
        &self,
        tx: &mut trellis_kit::db::Tx,
        user_id: Uuid,
        code: &str,
        confirmed: bool,
    ) -> Result<bool> {
        let row = mfa_store::totp_for_update(tx, user_id).await?;
        let row = match (row, confirmed) {
            (Some(row), true) if row.confirmed_at.is_some() => row,
            (Some(row), false) if row.confirmed_at.is_none() => row,
            (_, true) => return Err(IdentityError::MfaNotEnabled.into()),
            (_, false) => return Err(IdentityError::MfaNotEnrolled.into()),
        };
        let secret = self.open_secret(user_id, &row)?;
        match judge_totp(&secret, code, Utc::now(), row.last_used_step) {
            TotpVerdict::Accept(step) => Ok(mfa_store::use_step(tx, user_id, step).await?),
            TotpVerdict::Replay | TotpVerdict::Wrong => Ok(false),
        }
    }

    /// Counts a code check of a signed-in user (10 per 15 min).
    async fn count_code_check(&self, user_id: Uuid) -> Result<()> {
        self.limiter.hit(&format!("mfa:user:{user_id}"), CODE_CHECKS_PER_WINDOW, CODE_CHECK_WINDOW).await
    }

    /// Verify: confirms the pending secret with a code; MFA is on and 10 backup codes are issued.
    pub async fn confirm_mfa(&self, ctx: &RequestContext, code: &str) -> Result<Vec<String>> {
        let user_id = ctx.user_id()?;
        self.count_code_check(user_id).await?;
        let mut tx = self.db.tx().await?;
        let user = store::user_by_id(&mut tx, user_id).await?.ok_or(IdentityError::InvalidCredentials)?;
        if user.mfa_enabled {
            return Err(IdentityError::MfaAlreadyEnabled.into());
        }
        if !self.use_totp_code(&mut tx, user_id, code, false).await? {
            return Err(mfa_code_invalid());
        }
        // The step is spent even if what follows fails: the next code will do.
        tx.commit().await?;
        let (codes, hashes) = new_backup_codes().await?;
        let mut tx = self.db.tx().await?;
        mfa_store::confirm_totp(&mut tx, user_id).await?;
        mfa_store::replace_backup_codes(&mut tx, user_id, &hashes).await?;
        let payload = pb::MfaEnabled { user_id: user_id.to_string() };
        let ectx = account_event_ctx(&ctx.correlation_id, user_id);
        trellis_kit::events::stage(&mut tx, &ectx, crate::events::MFA_ENABLED, &payload).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, "MFA enabled");
        Ok(codes)
    }

    /// Starts the second step of a sign-in whose password was right.
    pub(crate) async fn start_mfa_challenge(&self, user: &store::User, client: &Client) -> Result<PendingMfa> {
        let (token, hash) = tokens::new_opaque_token();
        let expires_at = Utc::now() + CHALLENGE_TTL;
        let hint = serde_json::json!({
            "ip": client.ip.map(|ip| ip.to_string()),
            "user_agent": client.user_agent,
            "amr": ["pwd"],
        });
        mfa_store::insert_mfa_challenge(self.db.pool(), user.id, &hash, expires_at, hint).await?;
        tracing::info!(user_id = %user.id, "password accepted; second factor required");
        Ok(PendingMfa { mfa_token: token, methods: METHODS.iter().map(ToString::to_string).collect() })
    }

    /// Challenge: completes an MFA sign-in with a TOTP code or a backup code.
    pub async fn mfa_challenge(
        &self,
        mfa_token: &str,
        code: &str,
        backup_code: &str,
        client: &Client,
    ) -> Result<ChallengePassed> {
        let (code, backup_code) = (code.trim(), backup_code.trim());
        if code.is_empty() == backup_code.is_empty() {
            return Err(trellis_kit::Error::invalid_argument("VALIDATION_ERROR", "Request validation failed")
                .with_field("code", "give either code or backup_code"));
        }
        let token = mfa_token.trim();
        if !tokens::looks_like_token(token) {
            return Err(IdentityError::MfaTokenInvalid.into());
        }
        let attempt = mfa_store::attempt_mfa_challenge(self.db.pool(), &tokens::hash_token(token), CHALLENGE_ATTEMPTS)
            .await?
            .ok_or(IdentityError::MfaTokenInvalid)?;
        let user_id = attempt.user_id;
        let mut tx = self.db.tx().await?;
        let user = store::user_by_id(&mut tx, user_id).await?.ok_or(IdentityError::MfaTokenInvalid)?;
        let locked = mfa_store::password_and_lock(&mut tx, user_id).await?.and_then(|(_, lock)| lock);
        if user.status != "active" || locked.is_some_and(|until| until > Utc::now()) {
            return Err(IdentityError::MfaTokenInvalid.into());
        }
        let passed = if !code.is_empty() {
            self.use_totp_code(&mut tx, user_id, code, true).await?
        } else {
            let unused = mfa_store::unused_backup_codes(&mut tx, user_id).await?;
            match matching_backup_code(unused, backup_code).await? {
                Some(id) => mfa_store::spend_backup_code(&mut tx, id).await?,
                None => false,
            }
        };
        if !passed {
            drop(tx);
            let failure = crate::accounts::LoginFailure {
                email_hash: hex(&tokens::hash_token(&user.email)),
                client: client.clone(),
                reason: pb::LoginFailureReason::MfaFailed,
            };
            self.login_failed(Some(user_id), failure).await?;
            return Err(IdentityError::MfaCodeInvalid.into());
        }
        if !mfa_store::spend_challenge(&mut tx, attempt.id).await? {
            return Err(IdentityError::MfaTokenInvalid.into());
        }
        let remaining = mfa_store::count_unused_backup_codes(&mut tx, user_id).await?;
        tx.commit().await?;
        let amr = vec!["pwd".to_string(), "otp".to_string()];
        let sign_in = self.finish_sign_in(user, client, amr).await?;
        Ok(ChallengePassed { sign_in, backup_codes_remaining: i32::try_from(remaining).unwrap_or(i32::MAX) })
    }

    /// RegenerateBackupCodes: ten new codes after a current TOTP code.
    pub async fn regenerate_backup_codes(&self, ctx: &RequestContext, code: &str) -> Result<Vec<String>> {
        let user_id = ctx.user_id()?;
        self.count_code_check(user_id).await?;
        let mut tx = self.db.tx().await?;
        if !self.use_totp_code(&mut tx, user_id, code, true).await? {
            return Err(mfa_code_invalid());
        }
        tx.commit().await?;
        let (codes, hashes) = new_backup_codes().await?;
        let mut tx = self.db.tx().await?;
        if mfa_store::totp_for_update(&mut tx, user_id).await?.is_none_or(|row| row.confirmed_at.is_none()) {
            return Err(IdentityError::MfaNotEnabled.into());
        }
        mfa_store::replace_backup_codes(&mut tx, user_id, &hashes).await?;
        let payload = pb::BackupCodesRegenerated { user_id: user_id.to_string() };
        let ectx = account_event_ctx(&ctx.correlation_id, user_id);
        trellis_kit::events::stage(&mut tx, &ectx, crate::events::BACKUP_CODES_REGENERATED, &payload).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, "backup codes regenerated");
        Ok(codes)
    }

    /// Disable: after the password and a fresh code (TOTP, or an unused backup code), deletes
    /// the secret and the codes.
    pub async fn disable_mfa(&self, ctx: &RequestContext, password: String, code: &str) -> Result<()> {
        let user = self.step_up(ctx.user_id()?, password).await?;
        if !user.mfa_enabled {
            return Err(IdentityError::MfaNotEnabled.into());
        }
        self.count_code_check(user.id).await?;
        let mut tx = self.db.tx().await?;
        let passed = match normalize_backup_code(code) {
            Some(_) => {
                let unused = mfa_store::unused_backup_codes(&mut tx, user.id).await?;
                match matching_backup_code(unused, code).await? {
                    Some(id) => mfa_store::spend_backup_code(&mut tx, id).await?,
                    None => false,
                }
            }
            None => self.use_totp_code(&mut tx, user.id, code, true).await?,
        };
        if !passed {
            return Err(mfa_code_invalid());
        }
        mfa_store::delete_mfa(&mut tx, user.id).await?;
        let payload = pb::MfaDisabled { user_id: user.id.to_string() };
        let ectx = account_event_ctx(&ctx.correlation_id, user.id);
        trellis_kit::events::stage(&mut tx, &ectx, crate::events::MFA_DISABLED, &payload).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, "MFA disabled");
        Ok(())
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (the 8-digit values, whose last 6 digits are ours).
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight_digits) in
            [(59, 94287082u32), (1111111109, 7081804), (1111111111, 14050471), (1234567890, 89005924)]
        {
            let step = step_at(Utc.timestamp_opt(time, 0).single().expect("time"));
            assert_eq!(totp(secret, step), eight_digits % 1_000_000, "at {time}");
        }
        assert_eq!(format_code(7), "000007");
    }

    #[test]
    fn one_step_of_drift_is_accepted_and_used_steps_are_replays() {
        let secret = b"12345678901234567890";
        let now = Utc.timestamp_opt(1_700_000_000, 0).single().expect("time");
        let step = step_at(now);
        let code = |s: i64| format_code(totp(secret, s));
        assert_eq!(judge_totp(secret, &code(step), now, None), TotpVerdict::Accept(step));
        assert_eq!(judge_totp(secret, &code(step - 1), now, None), TotpVerdict::Accept(step - 1));
        assert_eq!(judge_totp(secret, &code(step + 1), now, None), TotpVerdict::Accept(step + 1));
        assert_eq!(judge_totp(secret, &code(step - 2), now, None), TotpVerdict::Wrong);
        assert_eq!(judge_totp(secret, &code(step + 2), now, None), TotpVerdict::Wrong);
        assert_eq!(judge_totp(secret, &code(step), now, Some(step)), TotpVerdict::Replay);
        assert_eq!(judge_totp(secret, &code(step - 1), now, Some(step - 1)), TotpVerdict::Replay);
        assert_eq!(judge_totp(secret, &code(step), now, Some(step - 1)), TotpVerdict::Accept(step));
        assert_eq!(judge_totp(secret, "12345", now, None), TotpVerdict::Wrong);
        assert_eq!(judge_totp(secret, "abcdef", now, None), TotpVerdict::Wrong);
        let spaced = format!("{} {}", &code(step)[..3], &code(step)[3..]);
        assert_eq!(judge_totp(secret, &spaced, now, None), TotpVerdict::Accept(step));
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        let secret = [7u8; SECRET_BYTES];
        assert_eq!(base32(&secret).len(), 32);
        assert_eq!(from_base32(&base32(&secret)).as_deref(), Some(&secret[..]));
        assert_eq!(from_base32("mzxw6ytboi").as_deref(), Some(&b"foobar"[..]));
        assert_eq!(from_base32("not base32!"), None);
    }

    #[test]
    fn otpauth_urls_name_the_issuer_and_the_parameters() {
        let url = otpauth_url("ada+mfa@example.com", "ABC");
        assert_eq!(
            url,
            "otpauth://totp/Trellis:ada%2Bmfa@example.com?secret=ABC&issuer=Trellis&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn backup_codes_have_the_shape_and_normalise_for_comparison() {
        let code = new_backup_code();
        assert_eq!(code.len(), 9);
        assert_eq!(code.as_bytes()[4], b'-');
        let normalized = normalize_backup_code(&code).expect("a backup code");
        assert_eq!(normalized, code.replace('-', ""));
        assert_eq!(normalize_backup_code(&code.to_uppercase()), Some(normalized.clone()));
        assert_eq!(normalize_backup_code(" abcd - efgh "), Some("abcdefgh".into()));
        assert_eq!(normalize_backup_code("abcd-efg"), None, "too short");
        assert_eq!(normalize_backup_code("abcd-efgo"), None, "o is not in the alphabet");
        assert_eq!(normalize_backup_code("123456"), None, "a TOTP code is not a backup code");
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| new_backup_code()).collect();
        assert_eq!(distinct.len(), 50);
    }

    #[test]
    fn backup_code_hashes_are_argon2id_and_verify_only_their_code() {
        let hash = hash_backup_code("abcdefgh").expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{hash}");
        assert!(matches!(password::verify(&hash, "abcdefgh"), Verification::Match { .. }));
        assert_eq!(password::verify(&hash, "abcdefgj"), Verification::Mismatch);
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_under_the_same_cell_secret() {
        let user = Uuid::now_v7();
        let key = sealing_key("cell-secret");
        let sealed = key.seal(b"secret bytes", user.as_bytes());
        assert_eq!(key.open(key.id(), &sealed, user.as_bytes()).expect("opens"), b"secret bytes");
        assert!(key.open(key.id(), &sealed, Uuid::now_v7().as_bytes()).is_err(), "bound to the user");
        let other = sealing_key("another-cell");
        assert_ne!(other.id(), key.id());
        assert!(other.open(key.id(), &sealed, user.as_bytes()).is_err());
    }
}
