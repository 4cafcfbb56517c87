//! Rules for the fields of a user: email addresses and names (spec rule 1).

/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest first or last name, in characters.
pub const MAX_NAME_LEN: usize = 100;

/// Trims and lowercases an email address and checks its basic syntax: at most 254 characters,
/// exactly one `@` with something before it, a domain containing a dot that neither starts nor
/// ends it, and no whitespace or control characters. Returns what is wrong otherwise.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("is required");
    }
    if email.chars().count() > MAX_EMAIL_LEN {
        return Err("must be at most 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("must be an email address");
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.starts_with('-');
    if local.is_empty() || !domain_ok {
        return Err("must be an email address");
    }
    Ok(email)
}

/// The part of an email address before the `@`.
pub fn local_part(email: &str) -> &str {
    email.split('@').next().unwrap_or_default()
}

/// Checks a trimmed name: any Unicode letters, no control characters, at most `max` characters,
/// and not empty when `required`. Returns what is wrong otherwise.
pub fn check_name(name: &str, required: bool, max: usize) -> Option<&'static str> {
    if name.is_empty() {
        return required.then_some("is required");
    }
    if name.chars().any(char::is_control) {
        return Some("must not contain control characters");
    }
    if name.chars().count() > max {
        return Some(if max == MAX_NAME_LEN { "must be at most 100 characters" } else { "is too long" });
    }
    None
}

/// The display name: first and last name joined by a space.
pub fn display_name(first: &str, last: &str) -> String {
    if last.is_empty() { first.to_string() } else { format!("{first} {last}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(normalize_email("  Ada@Example.COM "), Ok("ada@example.com".to_string()));
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in
            ["", "ada", "ada@", "@example.com", "a@b@example.com", "ada@example", "ada@.com", "ada@com.", "a da@x.io"]
        {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn names_keep_unicode_and_reject_control_characters() {
        assert_eq!(check_name("Zoë Ødegård", true, MAX_NAME_LEN), None);
        assert_eq!(check_name("", true, MAX_NAME_LEN), Some("is required"));
        assert_eq!(check_name("", false, MAX_NAME_LEN), None);
        assert!(check_name("a\u{0007}b", true, MAX_NAME_LEN).is_some());
        assert!(check_name(&"é".repeat(101), true, MAX_NAME_LEN).is_some());
        assert_eq!(check_name(&"é".repeat(100), true, MAX_NAME_LEN), None);
    }

    #[test]
    fn display_names_join_first_and_last() {
        assert_eq!(display_name("Ada", "Lovelace"), "Ada Lovelace");
        assert_eq!(display_name("Ada", ""), "Ada");
    }
}
