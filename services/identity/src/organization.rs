//! Organizations (the tenant) and the roles of their members: names, slugs, roles.

use rand::Rng;
use trellis_proto::trellis::identity::v1::OrgRole;
use unicode_normalization::UnicodeNormalization;

/// Longest organization name, in characters.
pub const MAX_ORG_NAME_LEN: usize = 100;
/// Slug length bounds.
pub const MIN_SLUG_LEN: usize = 3;
/// Slug length bounds.
pub const MAX_SLUG_LEN: usize = 50;
/// Length of the random suffix added to a slug that is taken.
pub const SLUG_SUFFIX_LEN: usize = 6;
/// The plan of a new organization.
pub const DEFAULT_PLAN: &str = "free";

/// A member's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The single owner.
    Owner,
    /// An administrator.
    Admin,
    /// A regular member.
    Member,
    /// Read-only.
    Viewer,
}

impl Role {
    /// The stored and claimed name (`owner`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "member" => Role::Member,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }

    /// The wire enum.
    pub fn to_proto(self) -> OrgRole {
        match self {
            Role::Owner => OrgRole::Owner,
            Role::Admin => OrgRole::Admin,
            Role::Member => OrgRole::Member,
            Role::Viewer => OrgRole::Viewer,
        }
    }

    /// From the wire enum; `None` for unspecified.
    pub fn from_proto(role: OrgRole) -> Option<Role> {
        match role {
            OrgRole::Unspecified => None,
            OrgRole::Owner => Some(Role::Owner),
            OrgRole::Admin => Some(Role::Admin),
            OrgRole::Member => Some(Role::Member),
            OrgRole::Viewer => Some(Role::Viewer),
        }
    }

    /// Whether the role administers the organization (members, invitations).
    pub fn administers(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// The name of a personal organization when the user gives none: "{first_name}'s workspace",
/// cut to fit [`MAX_ORG_NAME_LEN`].
pub fn default_org_name(first_name: &str) -> String {
    const SUFFIX: &str = "'s workspace";
    let room = MAX_ORG_NAME_LEN - SUFFIX.len();
    let first: String = first_name.chars().take(room).collect();
    format!("{first}{SUFFIX}")
}

/// Derives a slug from a name: accents dropped, lowercase ASCII letters and digits, words joined
/// by single hyphens, at most [`MAX_SLUG_LEN`] characters. A name with fewer than
/// [`MIN_SLUG_LEN`] usable characters gives `workspace`.
pub fn slug_from_name(name: &str) -> String {
    let mut slug = String::new();
    let mut pending_hyphen = false;
    for c in name.nfkd() {
        if c.is_ascii_alphanumeric() {
            if pending_hyphen && !slug.is_empty() {
                slug.push('-');
            }
            pending_hyphen = false;
            slug.push(c.to_ascii_lowercase());
        } else if unicode_normalization::char::is_combining_mark(c) {
            // an accent split off by NFKD: drop it, keep the word together
        } else {
            pending_hyphen = true;
        }
        if slug.len() >= MAX_SLUG_LEN {
            break;
        }
    }
    slug.truncate(MAX_SLUG_LEN);
    let slug = slug.trim_end_matches('-').to_string();
    if slug.len() < MIN_SLUG_LEN { "workspace".to_string() } else { slug }
}

/// `base` with a hyphen and `suffix` appended, `base` cut so the whole fits [`MAX_SLUG_LEN`].
pub fn slug_with_suffix(base: &str, suffix: &str) -> String {
    let room = MAX_SLUG_LEN.saturating_sub(suffix.len() + 1);
    let base = base[..base.len().min(room)].trim_end_matches('-');
    format!("{base}-{suffix}")
}

/// A short random suffix of lowercase letters and digits.
pub fn random_slug_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..SLUG_SUFFIX_LEN).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Whether `slug` is a valid slug: 3-50 characters of `^[a-z0-9]+(-[a-z0-9]+)*$`.
pub fn is_valid_slug(slug: &str) -> bool {
    (MIN_SLUG_LEN..=MAX_SLUG_LEN).contains(&slug.len())
        && slug
            .split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_storage_and_the_wire() {
        for role in [Role::Owner, Role::Admin, Role::Member, Role::Viewer] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(Role::from_proto(role.to_proto()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
        assert!(Role::Owner.administers() && Role::Admin.administers());
        assert!(!Role::Member.administers() && !Role::Viewer.administers());
    }

    #[test]
    fn default_names_use_the_first_name() {
        assert_eq!(default_org_name("Ada"), "Ada's workspace");
        assert_eq!(default_org_name(&"x".repeat(100)).chars().count(), MAX_ORG_NAME_LEN);
    }

    #[test]
    fn slugs_are_derived_from_names() {
        assert_eq!(slug_from_name("Ada's workspace"), "ada-s-workspace");
        assert_eq!(slug_from_name("  Zoë & Co.  "), "zoe-co");
        assert_eq!(slug_from_name("日本"), "workspace");
        assert_eq!(slug_from_name("AB"), "workspace");
        let long = slug_from_name(&"word ".repeat(30));
        assert!(long.len() <= MAX_SLUG_LEN && is_valid_slug(&long), "{long}");
        for name in ["Ada's workspace", "  Zoë & Co.  ", "--x--y--z--", "a-b"] {
            assert!(is_valid_slug(&slug_from_name(name)), "{name}");
        }
    }

    #[test]
    fn suffixed_slugs_stay_valid_and_short() {
        let suffix = random_slug_suffix();
        assert_eq!(suffix.len(), SLUG_SUFFIX_LEN);
        let slug = slug_with_suffix(&"a".repeat(50), &suffix);
        assert_eq!(slug.len(), MAX_SLUG_LEN);
        assert!(is_valid_slug(&slug));
        assert!(is_valid_slug(&slug_with_suffix("ada-s-workspace", &suffix)));
    }
}
