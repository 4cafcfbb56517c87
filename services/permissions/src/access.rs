//! End-user sharing (spec "End-user access", rules 15–16): Grant and Revoke, the REST surface of
//! AccessService. Both run for the caller (a user or an API key) in the caller's org:
//! - the type must have a `share` permission (FAILED_PRECONDITION NOT_SHAREABLE) and the caller
//!   must hold it on the object;
//! - structural relations (every allowed subject a plain non-principal object) cannot be granted
//!   (INVALID_ARGUMENT NOT_GRANTABLE_RELATION);
//! - no escalation: the caller must hold every permission in which the relation occurs positively
//!   (PERMISSION_DENIED ESCALATION);
//! - a granted user must be an org member (FAILED_PRECONDITION NOT_A_MEMBER); a wildcard needs
//!   `organization#administer`.
//!
//! The write and its event (`permissions.access.granted` / `revoked`) commit together.

use std::collections::BTreeSet;

use crate::eval::{EvalError, Evaluator, ObjectRef, SubjectRef, Tuple, TupleReader};
use crate::schema::{AllowedSubject, Definition, Expr};

/// Principal types: subjects that stand for people or credentials rather than objects.
pub const PRINCIPALS: [&str; 2] = ["user", "api_key"];

/// Whether `relation` of `def` is structural: every allowed subject is a plain object of a
/// non-principal type (`org`, `folder`, `parent`).
pub fn is_structural(def: &Definition, relation: &str) -> bool {
    def.relations.get(relation).is_some_and(|allowed| {
        allowed.iter().all(|a| matches!(a, AllowedSubject::Direct(t) if !PRINCIPALS.contains(&t.as_str())))
    })
}

/// The permissions of `def` in which `relation` occurs positively (not only under the right side
/// of `-`), following references to other permissions of the same definition.
pub fn positive_permissions(def: &Definition, relation: &str) -> Vec<String> {
    def.permissions.keys().filter(|p| reaches(def, p, relation, &mut BTreeSet::new())).cloned().collect()
}

fn reaches(def: &Definition, name: &str, relation: &str, seen: &mut BTreeSet<String>) -> bool {
    if !seen.insert(name.to_owned()) {
        return false;
    }
    match def.permissions.get(name) {
        Some(e) => positive_in(def, e, relation, seen),
        None => false,
    }
}

fn positive_in(def: &Definition, e: &Expr, relation: &str, seen: &mut BTreeSet<String>) -> bool {
    match e {
        Expr::Nil => false,
        Expr::Name(n) => n == relation || reaches(def, n, relation, seen),
        Expr::Arrow(l, _) => l == relation,
        Expr::Union(v) | Expr::Intersection(v) => v.iter().any(|x| positive_in(def, x, relation, seen)),
        Expr::Exclusion(l, _) => positive_in(def, l, relation, seen),
    }
}

/// Why a grant or revoke was refused (mapped to statuses by the API).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownType,
    UnknownRelation,
    NotShareable,
    NotGrantableRelation,
    NotSharer,
    Escalation(String),
    WildcardNeedsAdmin,
    NotAMember,
}

/// Checks rules 15–16 for `caller` granting (or revoking) `t`, in `org_object`'s org.
pub async fn authorize<R: TupleReader>(
    ev: &mut Evaluator<'_, R>,
    def: &Definition,
    t: &Tuple,
    caller: &SubjectRef,
    org_object: &ObjectRef,
    granting: bool,
) -> Result<Result<(), Refusal>, EvalError> {
    if !def.permissions.contains_key("share") {
        return Ok(Err(Refusal::NotShareable));
    }
    if !def.relations.contains_key(&t.relation) {
        return Ok(Err(Refusal::UnknownRelation));
    }
    if is_structural(def, &t.relation) {
        return Ok(Err(Refusal::NotGrantableRelation));
    }
    if !ev.check(&t.resource, "share", caller).await? {
        return Ok(Err(Refusal::NotSharer));
    }
    for p in positive_permissions(def, &t.relation) {
        if !ev.check(&t.resource, &p, caller).await? {
            return Ok(Err(Refusal::Escalation(p)));
        }
    }
    if t.subject.id == "*" {
        if !ev.check(org_object, "administer", caller).await? {
            return Ok(Err(Refusal::WildcardNeedsAdmin));
        }
    } else if granting
        && t.subject.ty == "user"
        && t.subject.relation.is_empty()
        && !ev.check(org_object, "view", &t.subject).await?
    {
        return Ok(Err(Refusal::NotAMember));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ModuleSource, compile};

    #[test]
    fn escalation_follows_positive_occurrences_only() {
        let identity = include_str!("../../identity/schema.zed");
        let doc = "definition test_document {
              relation org: organization
              relation owner: user
              relation editor: user | team#member
              relation viewer: user | user:* | team#member
              relation approver: user | team#member
              relation banned: user
              permission edit = owner + editor + org->administer
              permission view = (viewer + edit) - banned
              permission approve = approver & org->contribute
              permission share = owner + org->administer
            }";
        let schema = compile(&[
            ModuleSource { module: "identity", source: identity },
            ModuleSource { module: "acceptance", source: doc },
        ])
        .expect("schema");
        let def = schema.definition("test_document").expect("def");
        assert_eq!(positive_permissions(def, "viewer"), vec!["view"]);
        assert_eq!(positive_permissions(def, "editor"), vec!["edit", "view"]);
        assert_eq!(positive_permissions(def, "approver"), vec!["approve"]);
        assert_eq!(positive_permissions(def, "owner"), vec!["edit", "share", "view"]);
        assert!(positive_permissions(def, "banned").is_empty(), "only under the right of `-`");
        assert!(is_structural(def, "org"));
        assert!(!is_structural(def, "editor"));
    }
}
