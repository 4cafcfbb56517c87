//! Passwords: the policy (spec rule 2) and Argon2id hashing.
//!
//! Passwords are compared and hashed in Unicode NFKC form, so the same password typed on two
//! keyboards that compose characters differently still matches. Hashing takes tens of
//! milliseconds of CPU, so the async entry points run it on tokio's blocking pool.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization;

use crate::user::local_part;

/// Shortest password, in code points after NFKC.
pub const MIN_LEN: usize = 12;
/// Longest password, in code points after NFKC.
pub const MAX_LEN: usize = 128;
/// Argon2id memory cost in KiB (OWASP: 19 MiB).
pub const M_COST: u32 = 19_456;
/// Argon2id iterations (OWASP: 2).
pub const T_COST: u32 = 2;
/// Argon2id parallelism (OWASP: 1).
pub const P_COST: u32 = 1;

/// A local part shorter than this is not checked for (too many false positives).
const MIN_LOCAL_PART_CHECKED: usize = 4;

/// The bundled list of common passwords, one per line, lowercase.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Why a password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordProblem {
    /// Fewer than [`MIN_LEN`] characters.
    TooShort,
    /// More than [`MAX_LEN`] characters.
    TooLong,
    /// On the common-password list, or built around the product name.
    TooCommon,
    /// Equal to the email, or containing its local part.
    ContainsEmail,
}

impl PasswordProblem {
    /// The stable reason.
    pub fn reason(self) -> &'static str {
        match self {
            PasswordProblem::TooShort => "PASSWORD_TOO_SHORT",
            PasswordProblem::TooLong => "PASSWORD_TOO_LONG",
            PasswordProblem::TooCommon => "PASSWORD_TOO_COMMON",
            PasswordProblem::ContainsEmail => "PASSWORD_CONTAINS_EMAIL",
        }
    }

    /// What the user should change.
    pub fn description(self) -> &'static str {
        match self {
            PasswordProblem::TooShort => "must be at least 12 characters",
            PasswordProblem::TooLong => "must be at most 128 characters",
            PasswordProblem::TooCommon => "is too common; choose a less predictable password",
            PasswordProblem::ContainsEmail => "must not contain your email address",
        }
    }
}

/// The password in the form it is checked and hashed in.
pub fn normalize(password: &str) -> String {
    password.nfkc().collect()
}

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

/// Checks `password` against the policy for an account with `email` (already normalised).
/// There are no composition rules: length, the common list and the email are what matter.
pub fn check_policy(password: &str, email: &str) -> Result<(), PasswordProblem> {
    let normalized = normalize(password);
    let len = normalized.chars().count();
    if len < MIN_LEN {
        return Err(PasswordProblem::TooShort);
    }
    if len > MAX_LEN {
        return Err(PasswordProblem::TooLong);
    }
    let lower = normalized.to_lowercase();
    let local = local_part(email);
    if (!email.is_empty() && lower == email)
        || (local.chars().count() >= MIN_LOCAL_PART_CHECKED && lower.contains(local))
    {
        return Err(PasswordProblem::ContainsEmail);
    }
    if common_passwords().contains(lower.as_str()) || lower.contains("trellis") {
        return Err(PasswordProblem::TooCommon);
    }
    Ok(())
}

/// The hasher with the current parameters: Argon2id v0x13, m=19456 KiB, t=2, p=1.
fn hasher() -> Argon2<'static> {
    let params = Params::new(M_COST, T_COST, P_COST, None).unwrap_or_else(|e| unreachable!("OWASP params: {e}"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (blocking; see [`hash_blocking`]).
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = hasher()
        .hash_password(normalize(password).as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches.
    Match {
        /// The stored hash uses other parameters than [`hash`] would: store a new one.
        needs_rehash: bool,
    },
    /// It does not (or the stored hash is unreadable).
    Mismatch,
}

/// Checks a password against a PHC string (blocking; see [`verify_blocking`]).
pub fn verify(phc: &str, password: &str) -> Verification {
    let Ok(parsed) = PasswordHash::new(phc) else {
        tracing::warn!("a stored password hash is not a PHC string");
        return Verification::Mismatch;
    };
    if hasher().verify_password(normalize(password).as_bytes(), &parsed).is_err() {
        return Verification::Mismatch;
    }
    let current = parsed.algorithm == Algorithm::Argon2id.ident()
        && parsed.version == Some(Version::V0x13.into())
        && Params::try_from(&parsed)
            .is_ok_and(|p| p.m_cost() == M_COST && p.t_cost() == T_COST && p.p_cost() == P_COST);
    Verification::Match { needs_rehash: !current }
}

/// A hash of a random password, verified against when an email is unknown so that a failed
/// sign-in costs the same whether or not the account exists.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = SaltString::generate(&mut OsRng);
        hash(random.as_str()).unwrap_or_else(|e| unreachable!("hashing with fixed parameters: {e}"))
    })
}

/// [`hash`] on the blocking pool.
pub async fn hash_blocking(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash(&password)).await?
}

/// [`verify`] on the blocking pool; `None` as hash verifies against [`dummy_hash`] and never
/// matches.
pub async fn verify_blocking(phc: Option<String>, password: String) -> anyhow::Result<Verification> {
    Ok(tokio::task::spawn_blocking(move || match phc {
        Some(phc) => verify(&phc, &password),
        None => {
            let _ = verify(dummy_hash(), &password);
            Verification::Mismatch
        }
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_code_points_after_nfkc() {
        assert_eq!(check_policy("short-pass1", "ada@example.com"), Err(PasswordProblem::TooShort));
        assert_eq!(check_policy("violet-harbor-42", "ada@example.com"), Ok(()));
        // Twelve accented letters are twelve characters, not twenty-four bytes' worth.
        assert_eq!(check_policy(&"é".repeat(12), "ada@example.com"), Ok(()));
        assert_eq!(check_policy(&"é".repeat(11), "ada@example.com"), Err(PasswordProblem::TooShort));
        // A decomposed "e" + combining acute composes to one character under NFKC.
        assert_eq!(check_policy(&"e\u{0301}".repeat(11), "ada@example.com"), Err(PasswordProblem::TooShort));
        assert_eq!(check_policy(&"x".repeat(129), "ada@example.com"), Err(PasswordProblem::TooLong));
        assert_eq!(check_policy(&"xy".repeat(64), "ada@example.com"), Ok(()));
    }

    #[test]
    fn common_passwords_are_refused_case_insensitively() {
        assert_eq!(check_policy("passwordpassword", "ada@example.com"), Err(PasswordProblem::TooCommon));
        assert_eq!(check_policy("PasswordPassword", "ada@example.com"), Err(PasswordProblem::TooCommon));
        assert_eq!(check_policy("123456789012", "ada@example.com"), Err(PasswordProblem::TooCommon));
        assert_eq!(check_policy("my-Trellis-account", "ada@example.com"), Err(PasswordProblem::TooCommon));
    }

    #[test]
    fn the_email_and_its_local_part_are_refused() {
        assert_eq!(check_policy("lovelace@example.com", "lovelace@example.com"), Err(PasswordProblem::ContainsEmail));
        assert_eq!(check_policy("i-am-LOVELACE-1815", "lovelace@example.com"), Err(PasswordProblem::ContainsEmail));
        // Local parts under four characters are not checked.
        assert_eq!(check_policy("violet-ada-harbor", "ada@example.com"), Ok(()));
    }

    #[test]
    fn the_common_list_is_lowercase_and_long_enough_to_matter() {
        let list = common_passwords();
        assert!(list.len() >= 100);
        assert!(list.iter().all(|p| *p == p.to_lowercase()), "entries are compared lowercase");
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_with_owasp_parameters() {
        let phc = hash("violet-harbor-42").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(verify(&phc, "violet-harbor-42"), Verification::Match { needs_rehash: false });
        assert_eq!(verify(&phc, "violet-harbor-43"), Verification::Mismatch);
        assert_eq!(verify("not a hash", "violet-harbor-42"), Verification::Mismatch);
    }

    #[test]
    fn equivalent_unicode_forms_verify() {
        let phc = hash("café-harbor-42!").expect("hash");
        assert!(matches!(verify(&phc, "cafe\u{0301}-harbor-42!"), Verification::Match { .. }));
    }

    #[test]
    fn hashes_with_old_parameters_ask_for_a_rehash() {
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8, 1, 1, None).expect("params"));
        let salt = SaltString::generate(&mut OsRng);
        let phc = weak.hash_password(b"violet-harbor-42", &salt).expect("hash").to_string();
        assert_eq!(verify(&phc, "violet-harbor-42"), Verification::Match { needs_rehash: true });
    }

    #[tokio::test]
    async fn unknown_accounts_verify_against_the_dummy_hash_and_fail() {
        assert_eq!(verify_blocking(None, "anything-at-all".into()).await.expect("verify"), Verification::Mismatch);
    }
}
