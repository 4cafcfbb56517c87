//! Tokens and session rules: opaque tokens (refresh tokens, invitation tokens) and their hashes,
//! the verdict on a presented refresh token (spec rules 7 and 9), which organization a session
//! acts in, and the claims of access tokens (rule 6).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use trellis_kit::auth::Claims;
use uuid::Uuid;

use crate::store::{Membership, PresentedRefreshToken};

/// Random bytes in an opaque token.
pub const TOKEN_BYTES: usize = 32;
/// A session ends at the latest this long after sign-in, however often it is refreshed.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// `token_type` of every token response.
pub const TOKEN_TYPE: &str = "Bearer";

/// The SHA-256 of an opaque token: the only form in which tokens are stored.
pub type TokenHash = [u8; 32];

/// A new opaque token: 32 random bytes, base64url without padding, and its hash.
pub fn new_opaque_token() -> (String, TokenHash) {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a presented token. Lookups are by this hash (an index probe), so no
/// comparison of secrets happens in application code.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a presented string can be an opaque token at all (saves a lookup on garbage).
pub fn looks_like_token(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What happens to a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Rotate it: issue the next token of the session.
    Rotate,
    /// Refuse it: expired, session ended, or the user is no longer active.
    Invalid,
    /// It was already rotated: someone replayed it. Revoke the whole session.
    Reused,
}

/// The verdict on a presented refresh token at `now`. A session that has already ended makes
/// every one of its tokens merely invalid (revoking again would change nothing).
pub fn judge_refresh(token: &PresentedRefreshToken, now: DateTime<Utc>) -> RefreshVerdict {
    if token.session_revoked_at.is_some() || token.session_expires_at <= now || token.user_status != "active" {
        return RefreshVerdict::Invalid;
    }
    if token.rotated_at.is_some() {
        return RefreshVerdict::Reused;
    }
    if token.expires_at <= now {
        return RefreshVerdict::Invalid;
    }
    RefreshVerdict::Rotate
}

/// The organization a new session acts in: the one the user used most recently, else their
/// personal organization, else the one they joined first. `None` when they belong to none.
pub fn org_for_login(memberships: &[Membership]) -> Option<&Membership> {
    memberships
        .iter()
        .filter(|m| m.last_used_at.is_some())
        .max_by_key(|m| m.last_used_at)
        .or_else(|| memberships.iter().find(|m| m.personal))
        .or_else(|| memberships.iter().min_by_key(|m| m.joined_at))
}

/// The organization a refreshed session acts in: still `current` when the user remains an
/// active member; otherwise the personal organization, else the most recently used remaining
/// one, else the first joined. The flag says whether it changed.
pub fn org_after_refresh(current: Option<Uuid>, memberships: &[Membership]) -> (Option<&Membership>, bool) {
    if let Some(kept) = current.and_then(|id| memberships.iter().find(|m| m.org_id == id)) {
        return (Some(kept), false);
    }
    let next = memberships
        .iter()
        .find(|m| m.personal)
        .or_else(|| memberships.iter().filter(|m| m.last_used_at.is_some()).max_by_key(|m| m.last_used_at))
        .or_else(|| memberships.iter().min_by_key(|m| m.joined_at));
    let changed = next.map(|m| m.org_id) != current;
    (next, changed)
}

/// The claims of a user's access token for a session acting in `org`.
pub fn user_claims(
    issuer: &str,
    audience: &str,
    user_id: Uuid,
    session_id: Uuid,
    org: Option<&Membership>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Claims {
    let iat = now.timestamp();
    Claims {
        iss: issuer.to_string(),
        sub: user_id.to_string(),
        aud: audience.to_string(),
        exp: iat + ttl.as_secs() as i64,
        nbf: Some(iat),
        iat,
        jti: Uuid::now_v7().to_string(),
        org: org.map(|m| m.org_id.to_string()),
        sid: Some(session_id.to_string()),
        roles: org.map(|m| vec![m.role.clone()]).unwrap_or_default(),
        scopes: Vec::new(),
        plan: org.map(|m| m.plan.clone()),
    }
}

/// A user's access-token claims: kit's [`Claims`] plus `amr`, the authentication methods of the
/// session (`pwd`, `otp`), so that a service can ask for a second factor where it matters. Kit's
/// verifier reads the common claims and ignores `amr`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserClaims {
    /// The common claims.
    #[serde(flatten)]
    pub claims: Claims,
    /// Authentication methods (RFC 8176 values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// The authentication methods of a password sign-in.
pub fn password_amr() -> Vec<String> {
    vec!["pwd".to_string()]
}

/// The claims of a service token: `sub = service:<name>`, acting in `org` when given (rule: 5 min
/// lifetime, no session, no roles; the permissions service authorizes by the service name).
pub fn service_claims(
    issuer: &str,
    audience: &str,
    service: &str,
    org: Option<Uuid>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Claims {
    let iat = now.timestamp();
    Claims {
        iss: issuer.to_string(),
        sub: format!("service:{service}"),
        aud: audience.to_string(),
        exp: iat + ttl.as_secs() as i64,
        nbf: Some(iat),
        iat,
        jti: Uuid::now_v7().to_string(),
        org: org.map(|o| o.to_string()),
        sid: None,
        roles: Vec::new(),
        scopes: Vec::new(),
        plan: None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn presented(now: DateTime<Utc>) -> PresentedRefreshToken {
        PresentedRefreshToken {
            id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            expires_at: now + TimeDelta::days(30),
            rotated_at: None,
            user_id: Uuid::now_v7(),
            user_status: "active".into(),
            active_org_id: None,
            session_revoked_at: None,
            session_expires_at: now + TimeDelta::days(90),
            session_amr: password_amr(),
        }
    }

    fn membership(personal: bool, joined_days_ago: i64, used_days_ago: Option<i64>) -> Membership {
        let now = Utc::now();
        Membership {
            org_id: Uuid::now_v7(),
            role: "member".into(),
            plan: "free".into(),
            personal,
            joined_at: now - TimeDelta::days(joined_days_ago),
            last_used_at: used_days_ago.map(|d| now - TimeDelta::days(d)),
        }
    }

    #[test]
    fn opaque_tokens_are_32_random_bytes_in_base64url() {
        let (token, hash) = new_opaque_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).expect("base64url").len(), TOKEN_BYTES);
        assert!(looks_like_token(&token));
        assert_eq!(hash, hash_token(&token));
        let (other, other_hash) = new_opaque_token();
        assert_ne!(token, other);
        assert_ne!(hash, other_hash);
        assert!(!looks_like_token("short"));
        assert!(!looks_like_token(&format!("{}=", &token[..42])));
    }

    #[test]
    fn token_hashes_are_sha256_of_the_token_text() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = hash_token("abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn a_fresh_token_rotates() {
        let now = Utc::now();
        assert_eq!(judge_refresh(&presented(now), now), RefreshVerdict::Rotate);
    }

    #[test]
    fn a_rotated_token_is_reuse() {
        let now = Utc::now();
        let t = PresentedRefreshToken { rotated_at: Some(now - TimeDelta::seconds(1)), ..presented(now) };
        assert_eq!(judge_refresh(&t, now), RefreshVerdict::Reused);
    }

    #[test]
    fn expired_tokens_ended_sessions_and_inactive_users_are_invalid() {
        let now = Utc::now();
        let cases = [
            PresentedRefreshToken { expires_at: now - TimeDelta::seconds(1), ..presented(now) },
            PresentedRefreshToken { session_revoked_at: Some(now), ..presented(now) },
            PresentedRefreshToken { session_expires_at: now, ..presented(now) },
            PresentedRefreshToken { user_status: "deactivated".into(), ..presented(now) },
            // A replay on a session that already ended revokes nothing more.
            PresentedRefreshToken { rotated_at: Some(now), session_revoked_at: Some(now), ..presented(now) },
        ];
        for t in cases {
            assert_eq!(judge_refresh(&t, now), RefreshVerdict::Invalid, "{t:?}");
        }
    }

    #[test]
    fn login_prefers_the_most_recently_used_org_then_the_personal_one() {
        let personal = membership(true, 10, None);
        let used_long_ago = membership(false, 9, Some(5));
        let used_lately = membership(false, 8, Some(1));
        let all = vec![personal.clone(), used_long_ago, used_lately.clone()];
        assert_eq!(org_for_login(&all).map(|m| m.org_id), Some(used_lately.org_id));
        let never_used = vec![membership(false, 3, None), personal.clone()];
        assert_eq!(org_for_login(&never_used).map(|m| m.org_id), Some(personal.org_id));
        let first = membership(false, 30, None);
        assert_eq!(org_for_login(&[membership(false, 3, None), first.clone()]).map(|m| m.org_id), Some(first.org_id));
        assert!(org_for_login(&[]).is_none());
    }

    #[test]
    fn refresh_keeps_the_org_while_the_membership_lasts() {
        let personal = membership(true, 10, None);
        let team = membership(false, 5, Some(1));
        let all = vec![personal.clone(), team.clone()];
        let (org, changed) = org_after_refresh(Some(team.org_id), &all);
        assert_eq!((org.map(|m| m.org_id), changed), (Some(team.org_id), false));
        // Removed from `team`: back to the personal organization.
        let (org, changed) = org_after_refresh(Some(team.org_id), std::slice::from_ref(&personal));
        assert_eq!((org.map(|m| m.org_id), changed), (Some(personal.org_id), true));
        // No personal organization left: the most recently used remaining one.
        let other = membership(false, 2, Some(3));
        let (org, changed) = org_after_refresh(Some(team.org_id), std::slice::from_ref(&other));
        assert_eq!((org.map(|m| m.org_id), changed), (Some(other.org_id), true));
        // No organization at all.
        assert!(org_after_refresh(Some(team.org_id), &[]).1);
        assert_eq!(org_after_refresh(None, &[]), (None, false));
    }

    #[test]
    fn access_claims_carry_the_session_org_role_and_plan() {
        let now = Utc::now();
        let m = Membership { role: "owner".into(), plan: "pro".into(), ..membership(true, 1, None) };
        let (user, sid) = (Uuid::now_v7(), Uuid::now_v7());
        let c = user_claims("https://id.test", "trellis", user, sid, Some(&m), now, Duration::from_secs(900));
        assert_eq!(c.sub, user.to_string());
        assert_eq!(c.sid, Some(sid.to_string()));
        assert_eq!(c.org, Some(m.org_id.to_string()));
        assert_eq!(c.roles, vec!["owner".to_string()]);
        assert_eq!(c.plan.as_deref(), Some("pro"));
        assert_eq!(c.exp - c.iat, 900);
        assert_eq!(c.nbf, Some(c.iat));
        assert_eq!((c.iss.as_str(), c.aud.as_str()), ("https://id.test", "trellis"));
    }

    #[test]
    fn user_claims_serialise_amr_beside_the_common_claims() {
        let now = Utc::now();
        let claims = user_claims("i", "trellis", Uuid::now_v7(), Uuid::now_v7(), None, now, Duration::from_secs(60));
        let with = UserClaims { claims: claims.clone(), amr: vec!["pwd".into(), "otp".into()] };
        let json = serde_json::to_value(&with).expect("json");
        assert_eq!(json["amr"], serde_json::json!(["pwd", "otp"]));
        assert_eq!(json["sub"], serde_json::json!(claims.sub));
        // Kit's verifier reads the same token as plain claims.
        let plain: Claims = serde_json::from_value(json).expect("claims");
        assert_eq!(plain, claims);
    }

    #[test]
    fn service_claims_name_the_service_and_carry_no_session_or_roles() {
        let (now, org) = (Utc::now(), Uuid::now_v7());
        let c = service_claims("https://id.test", "trellis", "tasks", Some(org), now, Duration::from_secs(300));
        assert_eq!(c.sub, "service:tasks");
        assert_eq!(c.org, Some(org.to_string()));
        assert_eq!((c.sid.clone(), c.roles.len(), c.plan.clone()), (None, 0, None));
        assert_eq!(c.exp - c.iat, 300);
        assert_eq!(service_claims("i", "a", "tasks", None, now, Duration::from_secs(300)).org, None);
    }
}
