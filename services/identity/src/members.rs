//! The members of an organization: ListMembers, ChangeMemberRole, RemoveMember and
//! TransferOwnership. Each change bumps the membership `version` (from one sequence, so versions
//! only grow, ADR 0014), publishes its event in the same transaction, and after commit writes the
//! implied relationships ([`trellis_kit::org_relationships`]) so the change takes effect at once.

use trellis_kit::org_relationships;
use trellis_kit::paging::{PageTokens, page_size};
use trellis_kit::{RequestContext, Result};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{IdentityError, Violation, Violations};
use crate::org_store::{self, Member, MemberField, MemberQuery};
use crate::organization::Role;
use crate::organizations::{InOrg, parse_id, stage};

/// `identity.member.role_changed`
pub const MEMBER_ROLE_CHANGED: &str = "identity.member.role_changed";
/// `identity.member.removed`
pub const MEMBER_REMOVED: &str = "identity.member.removed";
/// `identity.organization.ownership_transferred`
pub const OWNERSHIP_TRANSFERRED: &str = "identity.organization.ownership_transferred";

/// Parses ListMembers' `filter` (`role = admin AND status != suspended`), `q` and `order_by`
/// (`name` or `joined_at`, optionally `desc`).
pub fn member_query(filter: &str, q: &str, order_by: &str) -> std::result::Result<MemberQuery, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut query = MemberQuery::default();
    let filter = filter.trim();
    if !filter.is_empty() {
        for clause in split_and(filter) {
            let (field, equals, value) = match clause.split_once("!=") {
                Some((f, v)) => (f, false, v),
                None => match clause.split_once('=') {
                    Some((f, v)) => (f, true, v),
                    None => {
                        violations.push(Violation::new("filter", format!("`{clause}` is not `field = value`")));
                        continue;
                    }
                },
            };
            let value = value.trim().trim_matches('"').to_lowercase();
            let field = match field.trim() {
                "role" if Role::parse(&value).is_some() => MemberField::Role,
                "status" if ["active", "suspended"].contains(&value.as_str()) => MemberField::Status,
                "role" | "status" => {
                    violations.push(Violation::new("filter", format!("`{value}` is not a valid {}", field.trim())));
                    continue;
                }
                other => {
                    violations.push(Violation::new("filter", format!("cannot filter on `{other}` (role, status)")));
                    continue;
                }
            };
            query.conditions.push((field, equals, value));
        }
    }
    let q = q.trim();
    if q.chars().count() > 100 {
        violations.push(Violation::new("q", "must be at most 100 characters"));
    } else if !q.is_empty() {
        query.q = Some(q.to_lowercase());
    }
    let mut words = order_by.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (None, _, _) | (Some("name"), None, _) => {}
        (Some("joined_at"), None, _) => query.by_joined_at = true,
        (Some(field @ ("name" | "joined_at")), Some(dir @ ("asc" | "desc")), None) => {
            query.by_joined_at = field == "joined_at";
            query.desc = dir == "desc";
        }
        _ => violations.push(Violation::new("order_by", "must be `name` or `joined_at`, optionally `desc`")),
    }
    if violations.is_empty() { Ok(query) } else { Err(violations) }
}

fn split_and(filter: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = filter;
    loop {
        let upper = rest.to_ascii_uppercase();
        match upper.find(" AND ") {
            Some(i) => {
                out.push(rest[..i].trim());
                rest = &rest[i + 5..];
            }
            None => {
                out.push(rest.trim());
                return out;
            }
        }
    }
}

/// A page of members.
#[derive(Debug)]
pub struct MembersPage {
    pub members: Vec<Member>,
    pub next_page_token: String,
    pub total_size: i64,
}

impl Identity {
    /// Lists an organization's members (see `OrganizationService.ListMembers`).
    pub async fn list_members(
        &self,
        ctx: &RequestContext,
        tokens: &PageTokens,
        req: &pb::ListMembersRequest,
    ) -> Result<MembersPage> {
        let org_id = parse_id("org_id", &req.org_id)?;
        let query = member_query(&req.filter, &req.q, &req.order_by).map_err(IdentityError::Invalid)?;
        let size = page_size(req.page_size)?;
        let hash = PageTokens::query_hash(&[&org_id.to_string(), req.filter.trim(), req.q.trim(), req.order_by.trim()]);
        let offset: i64 = tokens.decode(&hash, &req.page_token)?.unwrap_or(0);
        let InOrg { mut tx, .. } = self.enter_org(ctx, org_id, false).await?;
        let (members, total) = org_store::members_page(&mut tx, org_id, &query, offset, i64::from(size)).await?;
        tx.commit().await?;
        self.require(ctx, org_id, "view").await?;
        let next = offset + members.len() as i64;
        let next_page_token = if next < total { tokens.encode(&hash, &next) } else { String::new() };
        Ok(MembersPage { members, next_page_token, total_size: total })
    }

    /// Changes a member's role (see `ChangeMemberRole`).
    pub async fn change_member_role(
        &self,
        ctx: &RequestContext,
        org_id: &str,
        user_id: &str,
        role: Option<Role>,
    ) -> Result<Member> {
        let org_id = parse_id("org_id", org_id)?;
        let user_id = parse_id("user_id", user_id)?;
        let role = role
            .ok_or_else(|| IdentityError::Invalid(vec![Violation::new("role", "must be admin, member or viewer")]))?;
        let InOrg { mut tx, .. } = self.enter_org(ctx, org_id, false).await?;
        Self::require_active(ctx, org_id)?;
        let target = org_store::member(&mut tx, org_id, user_id).await?.ok_or(IdentityError::MemberNotFound)?;
        self.require(ctx, org_id, "manage_members").await?;
        if target.role == "owner" || role == Role::Owner {
            return Err(IdentityError::OwnerImmutable.into());
        }
        if target.role == role.as_str() {
            return Ok(target);
        }
        if target.role == "admin" || role == Role::Admin {
            self.require(ctx, org_id, "administer").await?;
        }
        let old_role = Role::parse(&target.role).unwrap_or(Role::Member);
        let version = org_store::set_member_role(&mut tx, org_id, user_id, role.as_str()).await?;
        let payload = pb::MemberRoleChanged {
            org_id: org_id.to_string(),
            user_id: user_id.to_string(),
            old_role: old_role.to_proto().into(),
            new_role: role.to_proto().into(),
            version,
        };
        stage(&mut tx, ctx, org_id, MEMBER_ROLE_CHANGED, &payload).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, user_id = %user_id, role = role.as_str(), "member role changed");
        let change = org_relationships::member_role(&org_id.to_string(), &user_id.to_string(), role.as_str(), version);
        self.apply_relationships(org_id, &[change]).await;
        Ok(Member { role: role.as_str().to_string(), version, ..target })
    }

    /// Removes a member, or the caller leaving (see `RemoveMember`).
    pub async fn remove_member(
        &self,
        ctx: &RequestContext,
        org_id: &str,
        user_id: &str,
        reassign_to: &str,
    ) -> Result<()> {
        let caller = ctx.user_id()?;
        let org_id = parse_id("org_id", org_id)?;
        let user_id = parse_id("user_id", user_id)?;
        let reassign_to = match reassign_to.trim() {
            "" => None,
            raw => Some(parse_id("reassign_to", raw)?),
        };
        let InOrg { mut tx, .. } = self.enter_org(ctx, org_id, false).await?;
        Self::require_active(ctx, org_id)?;
        let target = org_store::member(&mut tx, org_id, user_id).await?.ok_or(IdentityError::MemberNotFound)?;
        let leaving = user_id == caller;
        if !leaving {
            self.require(ctx, org_id, "manage_members").await?;
        }
        if target.role == "owner" {
            return Err(IdentityError::OwnerImmutable.into());
        }
        if target.role == "admin" && !leaving {
            self.require(ctx, org_id, "administer").await?;
        }
        let heir = match reassign_to {
            Some(heir) => {
                let m = org_store::member(&mut tx, org_id, heir).await?;
                if heir == user_id || m.is_none_or(|m| m.status != "active") {
                    return Err(IdentityError::Invalid(vec![Violation::new(
                        "reassign_to",
                        "must be another active member of the organization",
                    )])
                    .into());
                }
                heir
            }
            None => org_store::owner(&mut tx, org_id).await?.map(|o| o.user_id).ok_or(IdentityError::OwnerImmutable)?,
        };
        let teams = self.leave_all_teams(&mut tx, ctx, org_id, user_id).await?;
        let version = org_store::delete_member(&mut tx, org_id, user_id).await?;
        let reason = if leaving { pb::MemberRemovalReason::Left } else { pb::MemberRemovalReason::Removed };
        let payload = pb::MemberRemoved {
            org_id: org_id.to_string(),
            user_id: user_id.to_string(),
            role: Role::parse(&target.role).map_or(pb::OrgRole::Unspecified, Role::to_proto).into(),
            removed_by: caller.to_string(),
            reassign_to: heir.to_string(),
            reason: reason.into(),
            version,
        };
        stage(&mut tx, ctx, org_id, MEMBER_REMOVED, &payload).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, user_id = %user_id, leaving, "member removed");
        let change = org_relationships::member_removed(&org_id.to_string(), &user_id.to_string(), &teams, version);
        self.apply_relationships(org_id, &[change]).await;
        Ok(())
    }

    /// Makes another member the owner (see `TransferOwnership`).
    pub async fn transfer_ownership(
        &self,
        ctx: &RequestContext,
        org_id: &str,
        new_owner_id: &str,
        password: String,
    ) -> Result<(Member, Member)> {
        let caller = ctx.user_id()?;
        let org_id = parse_id("org_id", org_id)?;
        let mut violations = Violations::default();
        let new_owner_id = match new_owner_id.trim().parse::<Uuid>() {
            Ok(id) => id,
            Err(_) => {
                violations.push(Violation::new("new_owner_id", "must be a UUID"));
                Uuid::nil()
            }
        };
        if new_owner_id == caller {
            violations.push(Violation::new("new_owner_id", "must be another member"));
        }
        violations.finish()?;
        let InOrg { tx, .. } = self.enter_org(ctx, org_id, false).await?;
        tx.commit().await?;
        Self::require_active(ctx, org_id)?;
        self.require(ctx, org_id, "transfer").await?;
        self.require_password(caller, password).await?;

        let InOrg { mut tx, caller: Some(old), .. } = self.enter_org(ctx, org_id, false).await? else {
            return Err(IdentityError::OrganizationNotFound.into());
        };
        if old.role != "owner" {
            return Err(IdentityError::PermissionDenied("Only the owner can transfer the organization").into());
        }
        let new = org_store::member(&mut tx, org_id, new_owner_id)
            .await?
            .filter(|m| m.status == "active")
            .ok_or(IdentityError::MemberNotFound)?;
        if !new.email_verified {
            return Err(IdentityError::EmailNotVerified.into());
        }
        // Demote first: the unique index allows one owner at a time.
        let from_version = org_store::set_member_role(&mut tx, org_id, caller, Role::Admin.as_str()).await?;
        let to_version = org_store::set_member_role(&mut tx, org_id, new_owner_id, Role::Owner.as_str()).await?;
        let payload = pb::OwnershipTransferred {
            org_id: org_id.to_string(),
            from_user_id: caller.to_string(),
            to_user_id: new_owner_id.to_string(),
            from_version,
            to_version,
        };
        stage(&mut tx, ctx, org_id, OWNERSHIP_TRANSFERRED, &payload).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, from = %caller, to = %new_owner_id, "ownership transferred");
        let changes = org_relationships::ownership_transferred(
            &org_id.to_string(),
            &caller.to_string(),
            &new_owner_id.to_string(),
            from_version,
            to_version,
        );
        self.apply_relationships(org_id, &changes).await;
        Ok((
            Member { role: "admin".into(), version: from_version, ..old },
            Member { role: "owner".into(), version: to_version, ..new },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_filters_parse_the_supported_subset() {
        let q = member_query("role = admin AND status != suspended", " Ada ", "joined_at desc").expect("valid");
        assert_eq!(
            q.conditions,
            vec![(MemberField::Role, true, "admin".into()), (MemberField::Status, false, "suspended".into())]
        );
        assert_eq!(q.q.as_deref(), Some("ada"));
        assert!(q.by_joined_at && q.desc);
        assert_eq!(member_query("", "", "").expect("empty"), MemberQuery::default());
        assert_eq!(member_query("role=\"viewer\"", "", "name").expect("quoted").conditions.len(), 1);
    }

    #[test]
    fn unknown_fields_values_and_orders_are_violations() {
        let fields = |r: std::result::Result<MemberQuery, Vec<Violation>>| {
            r.expect_err("invalid").into_iter().map(|v| v.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(member_query("email = x", "", "")), ["filter"]);
        assert_eq!(fields(member_query("role = god", "", "")), ["filter"]);
        assert_eq!(fields(member_query("role admin", "", "")), ["filter"]);
        assert_eq!(fields(member_query("", "", "email")), ["order_by"]);
        assert_eq!(fields(member_query("", "", "name sideways")), ["order_by"]);
    }
}
