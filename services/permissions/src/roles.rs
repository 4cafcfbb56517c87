//! Custom roles (spec "Custom roles", rules 17–18, 20): the rules that turn a role's patterns
//! into the relationships that make it work.
//!
//! - A pattern is `type:permission` or `type:*`. It must name a pair the schema makes grantable
//!   (a module references the hook `org->role__<type>__<permission>`); `type:*` stands for every
//!   grantable pair of the type, as the schema is *now*.
//! - A role `r` of org `o` is the relationships `role:r#org@organization:o`,
//!   `organization:o#custom_role@role:r`, and `role:r#grant__T__P@role:r#assignee` per pair.
//!   Assignments are `role:r#assignee@user:u`, `@team:t#member` or `@api_key:k`.
//! - On every schema change the grants of every live role are recomputed from its patterns
//!   ([`reconcile`]): pairs that became grantable are added, pairs that are gone are removed.
//!
//! SQL lives in [`store`].

pub mod store;

use std::collections::BTreeSet;

use crate::eval::{ObjectRef, SubjectRef, Tuple};
use crate::schema::{ORG_DEFINITION, ROLE_DEFINITION, Schema};

/// Most custom roles per org.
pub const MAX_ROLES: i64 = 100;
/// Most patterns per role.
pub const MAX_PATTERNS: usize = 200;
/// Longest name and description, in characters.
pub const MAX_NAME: usize = 64;
pub const MAX_DESCRIPTION: usize = 500;
/// The built-in roles (identity's membership roles), in rank order. Their names are reserved.
pub const SYSTEM_ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];
/// The subject types a role can be assigned to.
pub const ASSIGNABLE: [&str; 3] = ["user", "team", "api_key"];

/// Why a pattern was refused (INVALID_ARGUMENT with field `permissions[i]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pub index: usize,
    /// `VALIDATION_ERROR`, `UNKNOWN_PERMISSION` or `NOT_GRANTABLE`.
    pub reason: &'static str,
    pub message: String,
}

/// Expands `patterns` into the grantable `(type, permission)` pairs they name under `schema`.
/// Every pattern must be well formed and grantable; all errors are returned.
pub fn expand(schema: &Schema, patterns: &[String]) -> Result<BTreeSet<(String, String)>, Vec<PatternError>> {
    let mut out = BTreeSet::new();
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, p) in patterns.iter().enumerate() {
        let mut bad = |reason, message: String| errors.push(PatternError { index, reason, message });
        let Some((ty, perm)) = p.split_once(':') else {
            bad("VALIDATION_ERROR", format!("`{p}` is not `type:permission` or `type:*`"));
            continue;
        };
        if !seen.insert(p.as_str()) {
            bad("VALIDATION_ERROR", format!("`{p}` appears twice"));
            continue;
        }
        let Some(def) = schema.definition(ty).filter(|_| ty != ROLE_DEFINITION) else {
            bad("UNKNOWN_PERMISSION", format!("unknown type `{ty}`"));
            continue;
        };
        if perm == "*" {
            let pairs: Vec<_> = schema.grantable.iter().filter(|(t, _)| t == ty).cloned().collect();
            if pairs.is_empty() {
                bad(
                    "NOT_GRANTABLE",
                    format!(
                        "`{ty}` has no permission that roles may grant; its module must reference a hook such as `org->role__{ty}__<permission>`"
                    ),
                );
            }
            out.extend(pairs);
            continue;
        }
        if !def.permissions.contains_key(perm) || def.generated.contains(perm) {
            bad("UNKNOWN_PERMISSION", format!("`{ty}` has no permission `{perm}`"));
            continue;
        }
        let pair = (ty.to_owned(), perm.to_owned());
        if !schema.grantable.contains(&pair) {
            let hook =
                if ty == ORG_DEFINITION { format!("role__{ty}__{perm}") } else { format!("org->role__{ty}__{perm}") };
            bad(
                "NOT_GRANTABLE",
                format!(
                    "`{ty}:{perm}` is not grantable by roles; the schema of `{ty}` must reference the hook `{hook}`"
                ),
            );
            continue;
        }
        out.insert(pair);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The pairs `patterns` grant under `schema`, ignoring patterns that no longer resolve (a
/// schema change may remove a hook or a permission a role named).
pub fn expand_lenient(schema: &Schema, patterns: &[String]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for p in patterns {
        let Some((ty, perm)) = p.split_once(':') else { continue };
        out.extend(schema.grantable.iter().filter(|(t, q)| t == ty && (perm == "*" || q == perm)).cloned());
    }
    out
}

/// `type:permission` strings of `pairs`.
pub fn pair_names(pairs: &BTreeSet<(String, String)>) -> Vec<String> {
    pairs.iter().map(|(t, p)| format!("{t}:{p}")).collect()
}

/// The relation of `role` that grants `(ty, permission)`.
pub fn grant_relation(ty: &str, permission: &str) -> String {
    format!("grant__{ty}__{permission}")
}

/// The pair a `grant__T__P` relation grants.
pub fn granted_pair(relation: &str) -> Option<(String, String)> {
    let rest = relation.strip_prefix("grant__")?;
    let (t, p) = rest.split_once("__")?;
    Some((t.to_owned(), p.to_owned()))
}

/// The object of a role.
pub fn role_object(role_id: &str) -> ObjectRef {
    ObjectRef::new(ROLE_DEFINITION, role_id)
}

/// The relationships that tie role `role_id` to org `org_object`.
pub fn membership_tuples(role_id: &str, org_object: &ObjectRef) -> Vec<Tuple> {
    vec![
        Tuple {
            resource: role_object(role_id),
            relation: "org".into(),
            subject: SubjectRef::new(&org_object.ty, &org_object.id),
        },
        Tuple {
            resource: org_object.clone(),
            relation: "custom_role".into(),
            subject: SubjectRef::new(ROLE_DEFINITION, role_id),
        },
    ]
}

/// The grant relationship of one pair: `role:r#grant__T__P@role:r#assignee`.
pub fn grant_tuple(role_id: &str, (ty, permission): &(String, String)) -> Tuple {
    Tuple {
        resource: role_object(role_id),
        relation: grant_relation(ty, permission),
        subject: SubjectRef::set(ROLE_DEFINITION, role_id, "assignee"),
    }
}

/// The assignment relationship of a subject: users and API keys directly, teams through their
/// members.
pub fn assignment_tuple(role_id: &str, subject_type: &str, subject_id: &str) -> Tuple {
    let relation = if subject_type == "team" { "member" } else { "" };
    Tuple {
        resource: role_object(role_id),
        relation: "assignee".into(),
        subject: SubjectRef::set(subject_type, subject_id, relation),
    }
}

/// What to add and remove so that a role's grants are exactly `wanted`, given the grant
/// relations it has now.
pub fn reconcile(
    role_id: &str,
    current: &BTreeSet<(String, String)>,
    wanted: &BTreeSet<(String, String)>,
) -> (Vec<Tuple>, Vec<Tuple>) {
    let add = wanted.difference(current).map(|p| grant_tuple(role_id, p)).collect();
    let remove = current.difference(wanted).map(|p| grant_tuple(role_id, p)).collect();
    (add, remove)
}

/// Why a role name is refused, if it is.
pub fn name_problem(name: &str) -> Option<(&'static str, String)> {
    let n = name.chars().count();
    if n == 0 || name.trim().is_empty() {
        return Some(("VALIDATION_ERROR", "is required".into()));
    }
    if n > MAX_NAME {
        return Some(("VALIDATION_ERROR", format!("at most {MAX_NAME} characters")));
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Some(("VALIDATION_ERROR", "no leading or trailing spaces or control characters".into()));
    }
    if SYSTEM_ROLES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Some(("RESERVED_ROLE_NAME", format!("`{name}` is a built-in role")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ModuleSource, compile};

    fn schema(doc: &str) -> Schema {
        compile(&[
            ModuleSource { module: "identity", source: include_str!("../../identity/schema.zed") },
            ModuleSource { module: "permissions", source: crate::SCHEMA },
            ModuleSource { module: "acceptance", source: doc },
        ])
        .expect("schema")
    }

    const DOC: &str = "definition test_document {
          relation org: organization
          relation owner: user
          permission edit = owner + org->role__test_document__edit
          permission view = edit
          permission share = owner
        }
        definition test_task {
          relation org: organization
          permission view = org->view
        }";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn patterns_expand_to_grantable_pairs_only() {
        let s = schema(DOC);
        let pairs = expand(&s, &strings(&["test_document:*"])).expect("expands");
        assert_eq!(pair_names(&pairs), vec!["test_document:edit"]);
        let e = expand(&s, &strings(&["test_document:view", "nope:x", "test_document:zap", "test_task:*", "bad"]))
            .expect_err("refused");
        let got: Vec<(usize, &str)> = e.iter().map(|x| (x.index, x.reason)).collect();
        assert_eq!(
            got,
            vec![
                (0, "NOT_GRANTABLE"),
                (1, "UNKNOWN_PERMISSION"),
                (2, "UNKNOWN_PERMISSION"),
                (3, "NOT_GRANTABLE"),
                (4, "VALIDATION_ERROR")
            ]
        );
        assert!(e[0].message.contains("org->role__test_document__view"), "names the hook: {}", e[0].message);
        // Organization permissions are grantable through identity's own hooks.
        let org = expand(&s, &strings(&["organization:*"])).expect("org");
        assert_eq!(pair_names(&org), vec!["organization:invite", "organization:manage_settings"]);
    }

    #[test]
    fn a_wildcard_follows_the_schema_and_reconcile_gives_the_difference() {
        let before = schema(DOC);
        let after = schema(
            &DOC.replace("permission share = owner", "permission share = owner + org->role__test_document__share"),
        );
        let patterns = strings(&["test_document:*", "test_document:gone"]);
        let old = expand_lenient(&before, &patterns);
        let new = expand_lenient(&after, &patterns);
        assert_eq!(pair_names(&new), vec!["test_document:edit", "test_document:share"]);
        let (add, remove) = reconcile("r1", &old, &new);
        assert_eq!(
            add.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["role:r1#grant__test_document__share@role:r1#assignee"]
        );
        assert!(remove.is_empty());
        let (add, remove) = reconcile("r1", &new, &old);
        assert!(add.is_empty());
        assert_eq!(remove.len(), 1);
    }

    #[test]
    fn names_are_checked_and_built_in_names_reserved() {
        assert_eq!(name_problem("reviewer"), None);
        assert_eq!(name_problem("Admin").map(|p| p.0), Some("RESERVED_ROLE_NAME"));
        assert_eq!(name_problem("").map(|p| p.0), Some("VALIDATION_ERROR"));
        assert_eq!(name_problem(" x").map(|p| p.0), Some("VALIDATION_ERROR"));
        assert_eq!(name_problem(&"x".repeat(65)).map(|p| p.0), Some("VALIDATION_ERROR"));
        assert_eq!(assignment_tuple("r", "team", "qa").to_string(), "role:r#assignee@team:qa#member");
        assert_eq!(granted_pair("grant__test_document__edit"), Some(("test_document".into(), "edit".into())));
    }
}
