//! The relationships implied by identity's organization facts: membership roles, ownership,
//! teams, team memberships and API keys' roles (identity's `schema.zed`).
//!
//! One mapping, two paths: identity applies these changes right after its own commit (through
//! [`crate::authz::Authz::write_change`], so the caller can act at once), and the permissions
//! service applies the same changes when it consumes identity's events, so nothing is lost when
//! the direct write fails. Each change carries a source-version guard (`member:{user}`,
//! `team:{team}`, `team_member:{team}:{user}` with the version from identity's row;
//! `api_key:{key}` with [`API_KEY_CREATED_VERSION`] / [`API_KEY_REVOKED_VERSION`]), so a late
//! event never undoes a newer state; whichever path arrives second changes nothing.
//!
//! A change may also ask to *clear* every relationship of an object (a removed member's grants
//! anywhere in the org, a deleted team's tuples). Only the permissions service can do that (it
//! reads what is stored); the direct write applies the explicit updates only.

use prost::Name;
use trellis_proto::trellis::identity::v1 as idpb;

use crate::authz::Ref;

/// The organization roles, each a relation of `organization`.
pub const ORG_ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];

/// What an update does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Upsert.
    Touch,
    /// Delete (a missing relationship is a no-op).
    Delete,
}

/// One relationship update `resource#relation@subject`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub op: Op,
    pub resource: Ref,
    pub relation: String,
    pub subject: Ref,
}

/// Relationships to delete wholesale, whatever they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clear {
    /// Every relationship in the org whose subject is this object (with any subject relation).
    Subject(Ref),
    /// Every relationship in the org whose resource is this object.
    Resource(Ref),
}

/// One atomic write derived from one fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The source-version guard: key and version.
    pub source: Option<(String, i64)>,
    /// Explicit updates.
    pub updates: Vec<Update>,
    /// Wholesale deletions (applied by the permissions service only).
    pub clears: Vec<Clear>,
}

fn user(id: &str) -> Ref {
    Ref::new("user", id)
}

fn org(id: &str) -> Ref {
    Ref::new("organization", id)
}

fn api_key(id: &str) -> Ref {
    Ref::new("api_key", id)
}

fn team(id: &str) -> Ref {
    Ref::new("team", id)
}

fn update(op: Op, resource: Ref, relation: &str, subject: Ref) -> Update {
    Update { op, resource, relation: relation.to_string(), subject }
}

/// The member holds `role` (one of [`ORG_ROLES`]) and no other role in the org.
pub fn member_role(org_id: &str, user_id: &str, role: &str, version: i64) -> Change {
    let updates = ORG_ROLES
        .iter()
        .map(|r| update(if *r == role { Op::Touch } else { Op::Delete }, org(org_id), r, user(user_id)))
        .collect();
    Change { source: Some((format!("member:{user_id}"), version)), updates, clears: Vec::new() }
}

/// The user left the org: no role, and no relationship in the org names them any more (team
/// memberships, direct grants, role assignments). `teams` are the teams identity knows they were
/// in, deleted explicitly so the direct write covers them too.
pub fn member_removed(org_id: &str, user_id: &str, teams: &[String], version: i64) -> Change {
    let mut updates: Vec<Update> =
        ORG_ROLES.iter().map(|r| update(Op::Delete, org(org_id), r, user(user_id))).collect();
    for t in teams {
        updates.push(update(Op::Delete, team(t), "member", user(user_id)));
        updates.push(update(Op::Delete, team(t), "maintainer", user(user_id)));
    }
    Change {
        source: Some((format!("member:{user_id}"), version)),
        updates,
        clears: vec![Clear::Subject(user(user_id))],
    }
}

/// The new owner first, then the previous owner as admin (two guarded writes).
pub fn ownership_transferred(org_id: &str, from: &str, to: &str, from_version: i64, to_version: i64) -> Vec<Change> {
    vec![member_role(org_id, to, "owner", to_version), member_role(org_id, from, "admin", from_version)]
}

/// A team's place in the org now: its org, its parent (and membership of the parent through
/// `team:{parent}#member@team:{t}#member`), and `discoverable` while it is public. `old_parent`
/// is the parent it leaves, if it had one.
pub fn team_placed(
    org_id: &str,
    team_id: &str,
    parent: Option<&str>,
    old_parent: Option<&str>,
    public: bool,
    version: i64,
) -> Change {
    let mut updates = vec![update(Op::Touch, team(team_id), "org", org(org_id))];
    if let Some(old) = old_parent.filter(|old| Some(*old) != parent) {
        updates.push(update(Op::Delete, team(team_id), "parent", team(old)));
        updates.push(update(Op::Delete, team(old), "member", Ref::set("team", team_id, "member")));
    }
    if let Some(p) = parent {
        updates.push(update(Op::Touch, team(team_id), "parent", team(p)));
        updates.push(update(Op::Touch, team(p), "member", Ref::set("team", team_id, "member")));
    }
    let visibility = if public { Op::Touch } else { Op::Delete };
    updates.push(update(visibility, team(team_id), "discoverable", org(org_id)));
    Change { source: Some((format!("team:{team_id}"), version)), updates, clears: Vec::new() }
}

/// A deleted team: nothing refers to it and it refers to nothing.
pub fn team_deleted(org_id: &str, team_id: &str, parent: Option<&str>, version: i64) -> Change {
    let mut updates = vec![
        update(Op::Delete, team(team_id), "org", org(org_id)),
        update(Op::Delete, team(team_id), "discoverable", org(org_id)),
    ];
    if let Some(p) = parent {
        updates.push(update(Op::Delete, team(team_id), "parent", team(p)));
        updates.push(update(Op::Delete, team(p), "member", Ref::set("team", team_id, "member")));
    }
    Change {
        source: Some((format!("team:{team_id}"), version)),
        updates,
        clears: vec![Clear::Resource(team(team_id)), Clear::Subject(team(team_id))],
    }
}

/// A team membership: `maintainer` (also written as a member), `member`, or `None` when removed.
pub fn team_member(team_id: &str, user_id: &str, role: Option<&str>, version: i64) -> Change {
    let member = if role.is_some() { Op::Touch } else { Op::Delete };
    let maintainer = if role == Some("maintainer") { Op::Touch } else { Op::Delete };
    Change {
        source: Some((format!("team_member:{team_id}:{user_id}"), version)),
        updates: vec![
            update(member, team(team_id), "member", user(user_id)),
            update(maintainer, team(team_id), "maintainer", user(user_id)),
        ],
        clears: Vec::new(),
    }
}

/// The version of a created API key's role: a key's role never changes after creation.
pub const API_KEY_CREATED_VERSION: i64 = 1;
/// The version of a revoked key: revocation is final, so a late `created` never restores it.
pub const API_KEY_REVOKED_VERSION: i64 = 2;

/// The roles an API key can hold (`owner` is for users only).
pub const API_KEY_ROLES: [&str; 3] = ["admin", "member", "viewer"];

/// An API key acts in its org with `role` (`organization:{org}#{role}@api_key:{key}`).
pub fn api_key_created(org_id: &str, key_id: &str, role: &str) -> Change {
    let updates = API_KEY_ROLES
        .iter()
        .map(|r| update(if *r == role { Op::Touch } else { Op::Delete }, org(org_id), r, api_key(key_id)))
        .collect();
    Change { source: Some((format!("api_key:{key_id}"), API_KEY_CREATED_VERSION)), updates, clears: Vec::new() }
}

/// A revoked API key holds nothing in the org: no role, no grant, no role assignment.
pub fn api_key_revoked(org_id: &str, key_id: &str) -> Change {
    Change {
        source: Some((format!("api_key:{key_id}"), API_KEY_REVOKED_VERSION)),
        updates: API_KEY_ROLES.iter().map(|r| update(Op::Delete, org(org_id), r, api_key(key_id))).collect(),
        clears: vec![Clear::Subject(api_key(key_id))],
    }
}

/// The stored name of an org role on the wire.
fn role_name(role: i32) -> Option<&'static str> {
    match idpb::OrgRole::try_from(role).ok()? {
        idpb::OrgRole::Owner => Some("owner"),
        idpb::OrgRole::Admin => Some("admin"),
        idpb::OrgRole::Member => Some("member"),
        idpb::OrgRole::Viewer => Some("viewer"),
        idpb::OrgRole::Unspecified => None,
    }
}

fn decode<M: Name + Default>(payload: &prost_types::Any) -> Result<M, String> {
    payload.to_msg::<M>().map_err(|e| e.to_string())
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The routing keys [`changes_for_event`] maps (the permissions consumer binds to these).
pub const EVENT_TYPES: [&str; 12] = [
    "identity.api_key.created",
    "identity.api_key.revoked",
    "identity.member.added",
    "identity.member.role_changed",
    "identity.member.removed",
    "identity.organization.ownership_transferred",
    "identity.team.created",
    "identity.team.updated",
    "identity.team.deleted",
    "identity.team_member.added",
    "identity.team_member.role_changed",
    "identity.team_member.removed",
];

/// The changes one of identity's events in `org_id` (the envelope's org) implies, in order;
/// empty for other events. `identity.organization.created` implies nothing here: the
/// `member.added {role: owner}` of the same transaction carries the owner tuple with its version
/// guard.
pub fn changes_for_event(event_type: &str, org_id: &str, payload: &prost_types::Any) -> Result<Vec<Change>, String> {
    Ok(match event_type {
        "identity.api_key.created" => {
            let m: idpb::ApiKeyCreated = decode(payload)?;
            let role = role_name(m.role).ok_or("api_key.created without a role")?;
            vec![api_key_created(org_id, &m.api_key_id, role)]
        }
        "identity.api_key.revoked" => {
            let m: idpb::ApiKeyRevoked = decode(payload)?;
            vec![api_key_revoked(org_id, &m.api_key_id)]
        }
        "identity.member.added" => {
            let m: idpb::MemberAdded = decode(payload)?;
            let role = role_name(m.role).ok_or("member.added without a role")?;
            vec![member_role(&m.org_id, &m.user_id, role, m.version)]
        }
        "identity.member.role_changed" => {
            let m: idpb::MemberRoleChanged = decode(payload)?;
            let role = role_name(m.new_role).ok_or("member.role_changed without a role")?;
            vec![member_role(&m.org_id, &m.user_id, role, m.version)]
        }
        "identity.member.removed" => {
            let m: idpb::MemberRemoved = decode(payload)?;
            vec![member_removed(&m.org_id, &m.user_id, &[], m.version)]
        }
        "identity.organization.ownership_transferred" => {
            let m: idpb::OwnershipTransferred = decode(payload)?;
            ownership_transferred(&m.org_id, &m.from_user_id, &m.to_user_id, m.from_version, m.to_version)
        }
        "identity.team.created" | "identity.team.updated" => {
            let m: idpb::TeamChanged = decode(payload)?;
            vec![team_placed(
                &m.org_id,
                &m.team_id,
                opt(&m.parent_team_id),
                opt(&m.old_parent_team_id),
                m.visibility == "public",
                m.version,
            )]
        }
        "identity.team.deleted" => {
            let m: idpb::TeamChanged = decode(payload)?;
            vec![team_deleted(&m.org_id, &m.team_id, opt(&m.parent_team_id), m.version)]
        }
        "identity.team_member.added" | "identity.team_member.role_changed" => {
            let m: idpb::TeamMemberChanged = decode(payload)?;
            vec![team_member(&m.team_id, &m.user_id, Some(m.role.as_str()), m.version)]
        }
        "identity.team_member.removed" => {
            let m: idpb::TeamMemberChanged = decode(payload)?;
            vec![team_member(&m.team_id, &m.user_id, None, m.version)]
        }
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Change) -> Vec<String> {
        c.updates
            .iter()
            .map(|u| {
                let s = if u.subject.relation.is_empty() {
                    format!("{}:{}", u.subject.ty, u.subject.id)
                } else {
                    format!("{}:{}#{}", u.subject.ty, u.subject.id, u.subject.relation)
                };
                format!("{:?} {}:{}#{}@{s}", u.op, u.resource.ty, u.resource.id, u.relation)
            })
            .collect()
    }

    #[test]
    fn a_role_replaces_every_other_role() {
        let c = member_role("o", "u", "admin", 7);
        assert_eq!(c.source, Some(("member:u".into(), 7)));
        assert_eq!(
            text(&c),
            [
                "Delete organization:o#owner@user:u",
                "Touch organization:o#admin@user:u",
                "Delete organization:o#member@user:u",
                "Delete organization:o#viewer@user:u"
            ]
        );
    }

    #[test]
    fn removal_clears_the_user_in_the_org() {
        let c = member_removed("o", "u", &["t".into()], 9);
        assert!(text(&c).iter().all(|t| t.starts_with("Delete")));
        assert!(text(&c).contains(&"Delete team:t#maintainer@user:u".to_string()));
        assert_eq!(c.clears, vec![Clear::Subject(Ref::new("user", "u"))]);
    }

    #[test]
    fn ownership_moves_new_owner_first() {
        let c = ownership_transferred("o", "a", "b", 3, 4);
        assert_eq!(c[0].source, Some(("member:b".into(), 4)));
        assert!(text(&c[0]).contains(&"Touch organization:o#owner@user:b".to_string()));
        assert!(text(&c[1]).contains(&"Touch organization:o#admin@user:a".to_string()));
        assert!(text(&c[1]).contains(&"Delete organization:o#owner@user:a".to_string()));
    }

    #[test]
    fn a_team_moving_between_parents_swaps_both_tuples() {
        let c = team_placed("o", "t", Some("p2"), Some("p1"), false, 2);
        assert_eq!(
            text(&c),
            [
                "Touch team:t#org@organization:o",
                "Delete team:t#parent@team:p1",
                "Delete team:p1#member@team:t#member",
                "Touch team:t#parent@team:p2",
                "Touch team:p2#member@team:t#member",
                "Delete team:t#discoverable@organization:o"
            ]
        );
        // Same parent: nothing to swap.
        assert_eq!(team_placed("o", "t", Some("p"), Some("p"), true, 3).updates.len(), 4);
    }

    #[test]
    fn maintainers_are_members_too() {
        assert_eq!(
            text(&team_member("t", "u", Some("maintainer"), 1)),
            ["Touch team:t#member@user:u", "Touch team:t#maintainer@user:u"]
        );
        assert_eq!(
            text(&team_member("t", "u", Some("member"), 2)),
            ["Touch team:t#member@user:u", "Delete team:t#maintainer@user:u"]
        );
        assert_eq!(
            text(&team_member("t", "u", None, 3)),
            ["Delete team:t#member@user:u", "Delete team:t#maintainer@user:u"]
        );
    }

    #[test]
    fn events_map_to_the_same_changes() {
        let added = idpb::MemberAdded {
            org_id: "o".into(),
            user_id: "u".into(),
            role: idpb::OrgRole::Member.into(),
            via: 0,
            version: 5,
        };
        let any = prost_types::Any::from_msg(&added).expect("encode");
        assert_eq!(changes_for_event("identity.member.added", "o", &any), Ok(vec![member_role("o", "u", "member", 5)]));
        assert_eq!(changes_for_event("identity.user.registered", "o", &any), Ok(vec![]));
        assert!(changes_for_event("identity.team.created", "o", &any).is_err(), "payload of another type");
    }

    #[test]
    fn an_api_key_holds_its_role_until_revoked() {
        let created =
            idpb::ApiKeyCreated { api_key_id: "k".into(), role: idpb::OrgRole::Viewer.into(), ..Default::default() };
        let any = prost_types::Any::from_msg(&created).expect("encode");
        let changes = changes_for_event("identity.api_key.created", "o", &any).expect("created");
        assert_eq!(changes, vec![api_key_created("o", "k", "viewer")]);
        assert!(text(&changes[0]).contains(&"Touch organization:o#viewer@api_key:k".to_string()));
        assert_eq!(changes[0].source, Some(("api_key:k".into(), API_KEY_CREATED_VERSION)));
        let revoked = idpb::ApiKeyRevoked { api_key_id: "k".into(), ..Default::default() };
        let any = prost_types::Any::from_msg(&revoked).expect("encode");
        let changes = changes_for_event("identity.api_key.revoked", "o", &any).expect("revoked");
        assert!(text(&changes[0]).iter().all(|t| t.starts_with("Delete")), "{changes:?}");
        assert_eq!(changes[0].clears, vec![Clear::Subject(Ref::new("api_key", "k"))]);
        // Revocation outranks a late `created`.
        assert!(changes[0].source.as_ref().map(|s| s.1) > Some(API_KEY_CREATED_VERSION));
    }
}
