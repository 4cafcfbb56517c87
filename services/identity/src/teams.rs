//! The TeamService flows: teams nest at most [`MAX_DEPTH`] levels without cycles, are public or
//! private, and are seen only by those who may `team#view` them (LookupResources / Check); a team
//! the caller may not see is NOT_FOUND. Every change bumps the team's (or team membership's)
//! version, publishes its event in the same transaction, and after commit writes the implied
//! relationships ([`trellis_kit::org_relationships`]).

use std::collections::{HashMap, HashSet};

use trellis_kit::authz::Ref;
use trellis_kit::db::{Tx, on_constraint};
use trellis_kit::org_relationships::{self, Change};
use trellis_kit::paging::{PageTokens, page_size};
use trellis_kit::{Error, RequestContext, Result};
use trellis_proto::trellis::identity::v1 as pb;
use uuid::Uuid;

use crate::accounts::Identity;
use crate::error::{IdentityError, Violation, Violations};
use crate::organizations::{parse_id, stage, subject};
use crate::team_store::{self, Team, TeamMember, TeamQuery};
use crate::user;

/// Deepest nesting: a top-level team is level 1.
pub const MAX_DEPTH: usize = 5;
/// Direct members a team may have (spec default of `IDENTITY_MAX_TEAM_SIZE`).
pub const MAX_TEAM_SIZE: i64 = 50;
/// Longest team name and description.
pub const MAX_TEAM_NAME_LEN: usize = 100;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1000;
/// Most users per AddTeamMembers.
pub const MAX_ADD: usize = 100;

/// `identity.team.created`
pub const TEAM_CREATED: &str = "identity.team.created";
/// `identity.team.updated`
pub const TEAM_UPDATED: &str = "identity.team.updated";
/// `identity.team.deleted`
pub const TEAM_DELETED: &str = "identity.team.deleted";
/// `identity.team_member.added`
pub const TEAM_MEMBER_ADDED: &str = "identity.team_member.added";
/// `identity.team_member.role_changed`
pub const TEAM_MEMBER_ROLE_CHANGED: &str = "identity.team_member.role_changed";
/// `identity.team_member.removed`
pub const TEAM_MEMBER_REMOVED: &str = "identity.team_member.removed";

/// Whether placing a team with a subtree `height` levels tall (1 = no children) under a parent
/// with `parent_ancestors` ancestors keeps every team within [`MAX_DEPTH`].
pub fn depth_ok(parent_ancestors: usize, height: usize) -> bool {
    // The parent sits at level parent_ancestors + 1; the team one below.
    parent_ancestors + 1 + height <= MAX_DEPTH
}

/// The height of the subtree rooted at a team from its descendants' depths (1 when it has none).
pub fn height(descendant_depths: impl IntoIterator<Item = i32>) -> usize {
    1 + descendant_depths.into_iter().max().map_or(0, |d| d.max(0) as usize)
}

/// Members of descendant teams not already direct members, each once, through the nearest team
/// (`descendants` ordered by depth).
pub fn nested_members<'a>(
    direct: &[TeamMember],
    descendants: &[(Uuid, Uuid, i32)],
    members: &'a [TeamMember],
) -> Vec<&'a TeamMember> {
    let mut seen: HashSet<Uuid> = direct.iter().map(|m| m.user_id).collect();
    let order: HashMap<Uuid, usize> = descendants.iter().enumerate().map(|(i, (id, _, _))| (*id, i)).collect();
    let mut by_depth: Vec<&TeamMember> = members.iter().filter(|m| order.contains_key(&m.team_id)).collect();
    by_depth.sort_by_key(|m| order[&m.team_id]);
    let mut out: Vec<&TeamMember> = by_depth.into_iter().filter(|m| seen.insert(m.user_id)).collect();
    out.sort_by_key(|m| (user::display_name(&m.first_name, &m.last_name).to_lowercase(), m.user_id));
    out
}

fn visibility_name(v: i32) -> Option<&'static str> {
    match pb::TeamVisibility::try_from(v).ok()? {
        pb::TeamVisibility::Unspecified => None,
        pb::TeamVisibility::Public => Some("public"),
        pb::TeamVisibility::Private => Some("private"),
    }
}

/// The stored name of a team role (`None` for unspecified).
pub fn team_role_name(r: i32) -> Option<&'static str> {
    match pb::TeamRole::try_from(r).ok()? {
        pb::TeamRole::Unspecified => None,
        pb::TeamRole::Member => Some("member"),
        pb::TeamRole::Maintainer => Some("maintainer"),
    }
}

/// Parses ListTeams' `filter` and `order_by`.
pub fn team_query(filter: &str, order_by: &str) -> std::result::Result<TeamQuery, Vec<Violation>> {
    let mut violations = Vec::new();
    let mut q = TeamQuery::default();
    for clause in filter.split(" AND ").map(str::trim).filter(|c| !c.is_empty()) {
        let Some((field, value)) = clause.split_once('=') else {
            violations.push(Violation::new("filter", format!("`{clause}` is not `field = value`")));
            continue;
        };
        let value = value.trim().trim_matches('"');
        match field.trim() {
            "visibility" if ["public", "private"].contains(&value) => q.visibility = Some(value.to_string()),
            "parent_team_id" if value.is_empty() => q.parent = Some(None),
            "parent_team_id" => match value.parse() {
                Ok(id) => q.parent = Some(Some(id)),
                Err(_) => violations.push(Violation::new("filter", "parent_team_id must be a UUID or \"\"")),
            },
            other => violations.push(Violation::new("filter", format!("cannot filter on `{other} = {value}`"))),
        }
    }
    match order_by.split_whitespace().collect::<Vec<_>>().as_slice() {
        [] | ["name"] | ["name", "asc"] => {}
        ["name", "desc"] => q.desc = true,
        _ => violations.push(Violation::new("order_by", "must be `name` or `name desc`")),
    }
    if violations.is_empty() { Ok(q) } else { Err(violations) }
}

fn team_event(team: &Team, old: Option<&Team>) -> pb::TeamChanged {
    pb::TeamChanged {
        org_id: team.org_id.to_string(),
        team_id: team.id.to_string(),
        name: team.name.clone(),
        visibility: team.visibility.clone(),
        parent_team_id: team.parent_team_id.map(|p| p.to_string()).unwrap_or_default(),
        old_parent_team_id: old.and_then(|o| o.parent_team_id).map(|p| p.to_string()).unwrap_or_default(),
        old_visibility: old.map(|o| o.visibility.clone()).unwrap_or_default(),
        version: team.version,
    }
}

fn placed(team: &Team, old_parent: Option<Uuid>) -> Change {
    org_relationships::team_placed(
        &team.org_id.to_string(),
        &team.id.to_string(),
        team.parent_team_id.map(|p| p.to_string()).as_deref(),
        old_parent.map(|p| p.to_string()).as_deref(),
        team.visibility == "public",
        team.version,
    )
}

fn member_event(org_id: Uuid, team_id: Uuid, user_id: Uuid, role: &str, version: i64) -> pb::TeamMemberChanged {
    pb::TeamMemberChanged {
        org_id: org_id.to_string(),
        team_id: team_id.to_string(),
        user_id: user_id.to_string(),
        role: role.to_string(),
        version,
    }
}

impl Identity {
    /// Whether the caller holds `permission` on `team:{team_id}`.
    async fn team_allowed(&self, ctx: &RequestContext, org_id: Uuid, team_id: Uuid, permission: &str) -> Result<bool> {
        let resource = Ref::new("team", team_id.to_string());
        self.authz.check(org_id, &resource, permission, &subject(ctx)?, None).await.map_err(|status| {
            tracing::warn!(code = ?status.code(), message = status.message(), "permission check failed");
            Error::unavailable("PERMISSIONS_UNAVAILABLE", "Permissions cannot be checked right now; try again")
        })
    }

    /// The live team if the caller may view it (else NOT_FOUND) and, with `permission`, also holds
    /// that (else PERMISSION_DENIED).
    async fn team_for(&self, ctx: &RequestContext, team_id: &str, permission: Option<&str>) -> Result<(Tx, Team)> {
        let team_id = parse_id("team_id", team_id)?;
        let org_id = ctx.org_id()?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        let team = team_store::team(&mut tx, team_id).await?.ok_or(IdentityError::TeamNotFound)?;
        if !self.team_allowed(ctx, org_id, team_id, "view").await? {
            return Err(IdentityError::TeamNotFound.into());
        }
        if let Some(p) = permission
            && !self.team_allowed(ctx, org_id, team_id, p).await?
        {
            return Err(IdentityError::PermissionDenied("You cannot manage this team").into());
        }
        Ok((tx, team))
    }

    /// Creates a team; the caller becomes its maintainer (see `TeamService.CreateTeam`).
    pub async fn create_team(&self, ctx: &RequestContext, req: &pb::CreateTeamRequest) -> Result<Team> {
        let user_id = ctx.user_id()?;
        let org_id = ctx.org_id()?;
        let mut violations = Violations::default();
        let name = req.name.trim();
        let description = req.description.trim();
        violations.check("name", user::check_name(name, true, MAX_TEAM_NAME_LEN));
        if description.chars().count() > MAX_DESCRIPTION_LEN {
            violations.push(Violation::new("description", "must be at most 1000 characters"));
        }
        let visibility = visibility_name(req.visibility).unwrap_or("public");
        let parent = match req.parent_team_id.trim() {
            "" => None,
            raw => match raw.parse::<Uuid>() {
                Ok(id) => Some(id),
                Err(_) => {
                    violations.push(Violation::new("parent_team_id", "must be a UUID"));
                    None
                }
            },
        };
        violations.finish()?;
        self.require(ctx, org_id, "create_team").await?;
        let mut tx = self.db.tenant_tx(ctx).await?;
        if let Some(parent) = parent {
            team_store::team(&mut tx, parent).await?.ok_or(IdentityError::TeamNotFound)?;
            if !self.team_allowed(ctx, org_id, parent, "manage").await? {
                return Err(IdentityError::PermissionDenied("You cannot manage the parent team").into());
            }
            if !depth_ok(team_store::ancestors(&mut tx, parent).await?.len(), 1) {
                return Err(IdentityError::TeamDepthExceeded.into());
            }
        }
        let team_id = Uuid::now_v7();
        let new = team_store::NewTeam {
            id: team_id,
            org_id,
            name,
            description,
            visibility,
            parent_team_id: parent,
            created_by: user_id,
        };
        team_store::insert_team(&mut tx, &new)
            .await
            .map_err(|e| on_constraint(e, "teams_name_key", || IdentityError::TeamNameTaken.into()))?;
        let (_, member_version) =
            team_store::upsert_team_member(&mut tx, org_id, team_id, user_id, "maintainer", user_id).await?;
        let team = team_store::team(&mut tx, team_id).await?.ok_or(IdentityError::TeamNotFound)?;
        stage(&mut tx, ctx, org_id, TEAM_CREATED, &team_event(&team, None)).await?;
        let added = member_event(org_id, team_id, user_id, "maintainer", member_version);
        stage(&mut tx, ctx, org_id, TEAM_MEMBER_ADDED, &added).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, team_id = %team_id, "team created");
        let maintainer = org_relationships::team_member(
            &team_id.to_string(),
            &user_id.to_string(),
            Some("maintainer"),
            member_version,
        );
        self.apply_relationships(org_id, &[placed(&team, None), maintainer]).await;
        Ok(team)
    }

    /// The teams the caller may view (see `ListTeams`).
    pub async fn list_teams(
        &self,
        ctx: &RequestContext,
        tokens: &PageTokens,
        req: &pb::ListTeamsRequest,
    ) -> Result<(Vec<Team>, String, i64)> {
        let org_id = ctx.org_id()?;
        let query = team_query(&req.filter, &req.order_by).map_err(IdentityError::Invalid)?;
        let size = page_size(req.page_size)?;
        let hash = PageTokens::query_hash(&[&org_id.to_string(), req.filter.trim(), req.order_by.trim()]);
        let offset: i64 = tokens.decode(&hash, &req.page_token)?.unwrap_or(0);
        let visible =
            self.authz.lookup_resources(org_id, "team", "view", &subject(ctx)?, 1000, None).await.map_err(|_| {
                Error::unavailable("PERMISSIONS_UNAVAILABLE", "Permissions cannot be checked right now")
            })?;
        let ids: Vec<Uuid> = visible.iter().filter_map(|id| id.parse().ok()).collect();
        let mut tx = self.db.tenant_tx(ctx).await?;
        let (teams, total) = team_store::teams_page(&mut tx, &ids, &query, offset, i64::from(size)).await?;
        tx.commit().await?;
        let next = offset + teams.len() as i64;
        let token = if next < total { tokens.encode(&hash, &next) } else { String::new() };
        Ok((teams, token, total))
    }

    /// One team (see `GetTeam`).
    pub async fn get_team(&self, ctx: &RequestContext, team_id: &str) -> Result<Team> {
        let (tx, team) = self.team_for(ctx, team_id, None).await?;
        tx.commit().await?;
        Ok(team)
    }

    /// Updates a team (see `UpdateTeam`).
    pub async fn update_team(&self, ctx: &RequestContext, req: &pb::UpdateTeamRequest) -> Result<Team> {
        let org_id = ctx.org_id()?;
        let mask: Vec<String> = match &req.update_mask {
            Some(m) if !m.paths.is_empty() => m.paths.clone(),
            _ => {
                let mut paths = Vec::new();
                if !req.name.is_empty() {
                    paths.push("name".to_string());
                }
                if !req.description.is_empty() {
                    paths.push("description".to_string());
                }
                if req.visibility != 0 {
                    paths.push("visibility".to_string());
                }
                if !req.parent_team_id.is_empty() {
                    paths.push("parent_team_id".to_string());
                }
                paths
            }
        };
        let mut violations = Violations::default();
        let (mut name, mut description, mut visibility, mut parent) = (None, None, None, None);
        for path in &mask {
            match path.as_str() {
                "name" => {
                    violations.check("name", user::check_name(req.name.trim(), true, MAX_TEAM_NAME_LEN));
                    name = Some(req.name.trim());
                }
                "description" => {
                    if req.description.trim().chars().count() > MAX_DESCRIPTION_LEN {
                        violations.push(Violation::new("description", "must be at most 1000 characters"));
                    }
                    description = Some(req.description.trim());
                }
                "visibility" => match visibility_name(req.visibility) {
                    Some(v) => visibility = Some(v),
                    None => violations.push(Violation::new("visibility", "must be public or private")),
                },
                "parent_team_id" => match req.parent_team_id.trim() {
                    "" => parent = Some(None),
                    raw => match raw.parse::<Uuid>() {
                        Ok(id) => parent = Some(Some(id)),
                        Err(_) => violations.push(Violation::new("parent_team_id", "must be a UUID")),
                    },
                },
                other => violations.push(Violation::new("update_mask", format!("`{other}` cannot be updated"))),
            }
        }
        violations.finish()?;
        let (mut tx, before) = self.team_for(ctx, &req.team_id, Some("manage")).await?;
        let team_id = before.id;
        if let Some(Some(new_parent)) = parent
            && Some(new_parent) != before.parent_team_id
        {
            if new_parent == team_id {
                return Err(IdentityError::TeamCycle.into());
            }
            team_store::team(&mut tx, new_parent).await?.ok_or(IdentityError::TeamNotFound)?;
            let ancestors = team_store::ancestors(&mut tx, new_parent).await?;
            if ancestors.contains(&team_id) {
                return Err(IdentityError::TeamCycle.into());
            }
            let below = team_store::descendants(&mut tx, team_id).await?;
            if !depth_ok(ancestors.len(), height(below.iter().map(|d| d.2))) {
                return Err(IdentityError::TeamDepthExceeded.into());
            }
            if !self.team_allowed(ctx, org_id, new_parent, "manage").await? {
                return Err(IdentityError::PermissionDenied("You cannot manage the new parent team").into());
            }
        }
        team_store::update_team(&mut tx, team_id, name, description, visibility, parent)
            .await
            .map_err(|e| on_constraint(e, "teams_name_key", || IdentityError::TeamNameTaken.into()))?;
        let team = team_store::team(&mut tx, team_id).await?.ok_or(IdentityError::TeamNotFound)?;
        stage(&mut tx, ctx, org_id, TEAM_UPDATED, &team_event(&team, Some(&before))).await?;
        tx.commit().await?;
        self.apply_relationships(org_id, &[placed(&team, before.parent_team_id)]).await;
        Ok(team)
    }

    /// Soft-deletes a team; its children move up to its parent (see `DeleteTeam`).
    pub async fn delete_team(&self, ctx: &RequestContext, team_id: &str) -> Result<()> {
        let org_id = ctx.org_id()?;
        let (mut tx, team) = self.team_for(ctx, team_id, Some("manage")).await?;
        let mut changes = Vec::new();
        let children: Vec<Uuid> = team_store::descendants(&mut tx, team.id)
            .await?
            .into_iter()
            .filter(|(_, _, depth)| *depth == 1)
            .map(|(id, _, _)| id)
            .collect();
        for child in children {
            let before = team_store::team(&mut tx, child).await?.ok_or(IdentityError::TeamNotFound)?;
            team_store::update_team(&mut tx, child, None, None, None, Some(team.parent_team_id)).await?;
            let moved = team_store::team(&mut tx, child).await?.ok_or(IdentityError::TeamNotFound)?;
            stage(&mut tx, ctx, org_id, TEAM_UPDATED, &team_event(&moved, Some(&before))).await?;
            changes.push(placed(&moved, Some(team.id)));
        }
        let version = team_store::delete_team(&mut tx, team.id).await?;
        let deleted = Team { version, ..team };
        stage(&mut tx, ctx, org_id, TEAM_DELETED, &team_event(&deleted, None)).await?;
        tx.commit().await?;
        tracing::info!(org_id = %org_id, team_id = %deleted.id, "team deleted");
        changes.push(org_relationships::team_deleted(
            &org_id.to_string(),
            &deleted.id.to_string(),
            deleted.parent_team_id.map(|p| p.to_string()).as_deref(),
            version,
        ));
        self.apply_relationships(org_id, &changes).await;
        Ok(())
    }

    /// Adds members or changes their role (see `AddTeamMembers`).
    pub async fn add_team_members(
        &self,
        ctx: &RequestContext,
        req: &pb::AddTeamMembersRequest,
    ) -> Result<Vec<TeamMember>> {
        let caller = ctx.user_id()?;
        let org_id = ctx.org_id()?;
        let role = match req.role {
            0 => "member",
            r => team_role_name(r).ok_or_else(|| Error::validation("role", "must be member or maintainer"))?,
        };
        if req.user_ids.is_empty() || req.user_ids.len() > MAX_ADD {
            return Err(Error::validation("user_ids", "must name 1 to 100 users"));
        }
        let (mut tx, team) = self.team_for(ctx, &req.team_id, Some("manage")).await?;
        let mut error: Option<Error> = None;
        let mut users = Vec::new();
        for (i, raw) in req.user_ids.iter().enumerate() {
            let field = format!("user_ids[{i}]");
            let member = match raw.trim().parse::<Uuid>() {
                Ok(id) => crate::org_store::member(&mut tx, org_id, id).await?.filter(|m| m.status == "active"),
                Err(_) => None,
            };
            match member {
                Some(m) if !users.contains(&m.user_id) => users.push(m.user_id),
                Some(_) => {}
                None => {
                    let e = error
                        .take()
                        .unwrap_or_else(|| Error::invalid_argument("VALIDATION_ERROR", "Request validation failed"));
                    error = Some(
                        e.with_metadata(field.clone(), "NOT_A_MEMBER")
                            .with_field(field, "NOT_A_MEMBER: is not an active member of the organization"),
                    );
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let mut changes = Vec::new();
        for user_id in &users {
            let (before, version) =
                team_store::upsert_team_member(&mut tx, org_id, team.id, *user_id, role, caller).await?;
            match before.as_deref() {
                Some(r) if r == role => continue,
                Some(_) => {
                    stage(
                        &mut tx,
                        ctx,
                        org_id,
                        TEAM_MEMBER_ROLE_CHANGED,
                        &member_event(org_id, team.id, *user_id, role, version),
                    )
                    .await?
                }
                None => {
                    stage(
                        &mut tx,
                        ctx,
                        org_id,
                        TEAM_MEMBER_ADDED,
                        &member_event(org_id, team.id, *user_id, role, version),
                    )
                    .await?
                }
            }
            changes.push(org_relationships::team_member(
                &team.id.to_string(),
                &user_id.to_string(),
                Some(role),
                version,
            ));
        }
        let members = team_store::team_members(&mut tx, &[team.id]).await?;
        if members.len() as i64 > MAX_TEAM_SIZE {
            return Err(IdentityError::TeamFull.into());
        }
        tx.commit().await?;
        self.apply_relationships(org_id, &changes).await;
        Ok(members.into_iter().filter(|m| users.contains(&m.user_id)).collect())
    }

    /// Direct (and with `include_nested`, nested) members (see `ListTeamMembers`).
    pub async fn list_team_members(
        &self,
        ctx: &RequestContext,
        team_id: &str,
        include_nested: bool,
    ) -> Result<Vec<(TeamMember, Option<Uuid>)>> {
        let (mut tx, team) = self.team_for(ctx, team_id, None).await?;
        let direct = team_store::team_members(&mut tx, &[team.id]).await?;
        let mut out: Vec<(TeamMember, Option<Uuid>)> = Vec::new();
        if include_nested {
            let below = team_store::descendants(&mut tx, team.id).await?;
            let ids: Vec<Uuid> = below.iter().map(|d| d.0).collect();
            let nested = team_store::team_members(&mut tx, &ids).await?;
            let extra: Vec<(TeamMember, Option<Uuid>)> =
                nested_members(&direct, &below, &nested).into_iter().map(|m| (m.clone(), Some(m.team_id))).collect();
            out.extend(direct.into_iter().map(|m| (m, None)));
            out.extend(extra);
        } else {
            out.extend(direct.into_iter().map(|m| (m, None)));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Changes a member's role (see `UpdateTeamMember`).
    pub async fn update_team_member(
        &self,
        ctx: &RequestContext,
        req: &pb::UpdateTeamMemberRequest,
    ) -> Result<TeamMember> {
        let caller = ctx.user_id()?;
        let org_id = ctx.org_id()?;
        let user_id = parse_id("user_id", &req.user_id)?;
        let role = team_role_name(req.role).ok_or_else(|| Error::validation("role", "must be member or maintainer"))?;
        let (mut tx, team) = self.team_for(ctx, &req.team_id, Some("manage")).await?;
        let current =
            team_store::team_member(&mut tx, team.id, user_id).await?.ok_or(IdentityError::TeamMemberNotFound)?;
        if current.role == role {
            return Ok(current);
        }
        let (_, version) = team_store::upsert_team_member(&mut tx, org_id, team.id, user_id, role, caller).await?;
        stage(&mut tx, ctx, org_id, TEAM_MEMBER_ROLE_CHANGED, &member_event(org_id, team.id, user_id, role, version))
            .await?;
        tx.commit().await?;
        let change = org_relationships::team_member(&team.id.to_string(), &user_id.to_string(), Some(role), version);
        self.apply_relationships(org_id, &[change]).await;
        Ok(TeamMember { role: role.to_string(), version, ..current })
    }

    /// Removes a member; members may remove themselves (see `RemoveTeamMember`).
    pub async fn remove_team_member(&self, ctx: &RequestContext, team_id: &str, user_id: &str) -> Result<()> {
        let caller = ctx.user_id()?;
        let org_id = ctx.org_id()?;
        let user_id = parse_id("user_id", user_id)?;
        let permission = if user_id == caller { None } else { Some("manage") };
        let (mut tx, team) = self.team_for(ctx, team_id, permission).await?;
        let (role, version) = team_store::delete_team_member(&mut tx, team.id, user_id)
            .await?
            .ok_or(IdentityError::TeamMemberNotFound)?;
        stage(&mut tx, ctx, org_id, TEAM_MEMBER_REMOVED, &member_event(org_id, team.id, user_id, &role, version))
            .await?;
        tx.commit().await?;
        let change = org_relationships::team_member(&team.id.to_string(), &user_id.to_string(), None, version);
        self.apply_relationships(org_id, &[change]).await;
        Ok(())
    }

    /// Removes the user from every team of the org in `tx`, publishing `team_member.removed` for
    /// each; returns the team ids (for the relationships of the member's removal).
    pub(crate) async fn leave_all_teams(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        org_id: Uuid,
        user_id: Uuid,
    ) -> Result<Vec<String>> {
        let mut teams = Vec::new();
        for (team_id, _) in team_store::teams_of_user(tx, org_id, user_id).await? {
            if let Some((role, version)) = team_store::delete_team_member(tx, team_id, user_id).await? {
                stage(tx, ctx, org_id, TEAM_MEMBER_REMOVED, &member_event(org_id, team_id, user_id, &role, version))
                    .await?;
                teams.push(team_id.to_string());
            }
        }
        Ok(teams)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn nesting_stops_at_five_levels() {
        assert!(depth_ok(0, 1), "a child of a top-level team is level 2");
        assert!(depth_ok(3, 1), "level 5");
        assert!(!depth_ok(4, 1), "level 6");
        assert!(!depth_ok(2, 3), "a subtree three levels tall under level 3");
        assert_eq!(height([]), 1);
        assert_eq!(height([1, 2, 1]), 3);
    }

    fn member(team: Uuid, user: Uuid, name: &str) -> TeamMember {
        TeamMember {
            team_id: team,
            user_id: user,
            first_name: name.into(),
            last_name: String::new(),
            email: format!("{name}@example.com"),
            role: "member".into(),
            version: 1,
            added_at: Utc::now(),
        }
    }

    #[test]
    fn nested_members_come_once_through_the_nearest_team() {
        let (root, child, grandchild) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (ada, bob, cy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let direct = vec![member(root, ada, "Ada")];
        let descendants = vec![(child, root, 1), (grandchild, child, 2)];
        let all = vec![
            member(grandchild, bob, "Bob"),
            member(child, bob, "Bob"),
            member(grandchild, ada, "Ada"),
            member(grandchild, cy, "Cy"),
        ];
        let nested = nested_members(&direct, &descendants, &all);
        let got: Vec<(Uuid, Uuid)> = nested.iter().map(|m| (m.user_id, m.team_id)).collect();
        assert_eq!(got, vec![(bob, child), (cy, grandchild)]);
    }

    #[test]
    fn team_filters_parse() {
        let q = team_query("visibility = private AND parent_team_id = \"\"", "name desc").expect("valid");
        assert_eq!((q.visibility.as_deref(), q.parent, q.desc), (Some("private"), Some(None), true));
        assert!(team_query("name = x", "").is_err());
        assert!(team_query("", "created_at").is_err());
    }
}
