//! The queries of teams and team members, each inside the organization's tenant transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

/// A live team with its direct member count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Team {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub description: String,
    pub visibility: String,
    pub parent_team_id: Option<Uuid>,
    pub version: i64,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub member_count: i64,
}

const TEAM_SELECT: &str = "select t.id, t.org_id, t.name, t.description, t.visibility, t.parent_team_id, t.version, \
                           t.created_by, t.created_at, t.updated_at, \
                           (select count(*) from identity.team_members tm where tm.team_id = t.id) as member_count \
                           from identity.teams t";

/// A live team of the transaction's org.
pub async fn team(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Team>> {
    sqlx::query_as(&format!("{TEAM_SELECT} where t.id = $1 and t.deleted_at is null"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// What a new team is created with.
#[derive(Debug)]
pub struct NewTeam<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: &'a str,
    pub description: &'a str,
    pub visibility: &'a str,
    pub parent_team_id: Option<Uuid>,
    pub created_by: Uuid,
}

/// Inserts a team. Fails on `teams_name_key` when the name is taken in the org.
pub async fn insert_team(conn: &mut PgConnection, t: &NewTeam<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "insert into identity.teams (id, org_id, name, description, visibility, parent_team_id, created_by)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(t.id)
    .bind(t.org_id)
    .bind(t.name)
    .bind(t.description)
    .bind(t.visibility)
    .bind(t.parent_team_id)
    .bind(t.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// The ancestors of a team, nearest first (live teams only).
pub async fn ancestors(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "with recursive up(id, parent, depth) as (
             select t.id, t.parent_team_id, 0 from identity.teams t where t.id = $1
             union all
             select p.id, p.parent_team_id, up.depth + 1
               from identity.teams p join up on p.id = up.parent
              where p.deleted_at is null and up.depth < 64
         )
         select id from up where depth > 0 order by depth",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}

/// The live descendants of a team with their parent and their depth below it (1 = child).
pub async fn descendants(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<(Uuid, Uuid, i32)>> {
    sqlx::query_as(
        "with recursive down(id, parent, depth) as (
             select t.id, t.parent_team_id, 1 from identity.teams t
              where t.parent_team_id = $1 and t.deleted_at is null
             union all
             select c.id, c.parent_team_id, down.depth + 1
               from identity.teams c join down on c.parent_team_id = down.id
              where c.deleted_at is null and down.depth < 64
         )
         select id, parent, depth from down order by depth, id",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}

/// Sets the changeable fields of a team (`None`: unchanged; `Some(None)` parent: top-level) and
/// a new version. Fails on `teams_name_key`.
pub async fn update_team(
    conn: &mut PgConnection,
    id: Uuid,
    name: Option<&str>,
    description: Option<&str>,
    visibility: Option<&str>,
    parent: Option<Option<Uuid>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "update identity.teams set
            name = coalesce($2, name),
            description = coalesce($3, description),
            visibility = coalesce($4, visibility),
            parent_team_id = case when $5 then $6 else parent_team_id end,
            version = nextval('identity.relationship_versions'),
            updated_at = now()
          where id = $1 and deleted_at is null",
    )
    .bind(id)
    .bind(name)
    .bind(description)
    .bind(visibility)
    .bind(parent.is_some())
    .bind(parent.flatten())
    .execute(conn)
    .await?;
    Ok(())
}

/// Soft-deletes a team; returns the version of the deletion.
pub async fn delete_team(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "update identity.teams set deleted_at = now(), updated_at = now(),
                version = nextval('identity.relationship_versions')
          where id = $1 returning version",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Filters and order of ListTeams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamQuery {
    /// public | private.
    pub visibility: Option<String>,
    /// `Some(None)`: top-level teams only.
    pub parent: Option<Option<Uuid>>,
    pub desc: bool,
}

fn team_where(b: &mut QueryBuilder<'_, Postgres>, ids: &[Uuid], q: &TeamQuery) {
    b.push(" where t.deleted_at is null and t.id = any(").push_bind(ids.to_vec()).push(")");
    if let Some(v) = &q.visibility {
        b.push(" and t.visibility = ").push_bind(v.clone());
    }
    match q.parent {
        Some(Some(p)) => {
            b.push(" and t.parent_team_id = ").push_bind(p);
        }
        Some(None) => {
            b.push(" and t.parent_team_id is null");
        }
        None => {}
    }
}

/// A page of the teams among `ids` and how many match.
pub async fn teams_page(
    conn: &mut PgConnection,
    ids: &[Uuid],
    q: &TeamQuery,
    offset: i64,
    limit: i64,
) -> sqlx::Result<(Vec<Team>, i64)> {
    let mut count = QueryBuilder::<Postgres>::new("select count(*) from identity.teams t");
    team_where(&mut count, ids, q);
    let total: i64 = count.build_query_scalar().fetch_one(&mut *conn).await?;
    let mut page = QueryBuilder::<Postgres>::new(TEAM_SELECT);
    team_where(&mut page, ids, q);
    let dir = if q.desc { "desc" } else { "asc" };
    page.push(format!(" order by lower(t.name) {dir}, t.id {dir} limit ")).push_bind(limit);
    page.push(" offset ").push_bind(offset);
    Ok((page.build_query_as().fetch_all(&mut *conn).await?, total))
}

/// The live teams of the org among `ids` (which of them exist).
pub async fn existing_teams(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("select id from identity.teams where id = any($1) and deleted_at is null")
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// A team member with the user's public fields.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamMember {
    pub team_id: Uuid,
    pub user_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub role: String,
    pub version: i64,
    pub added_at: DateTime<Utc>,
}

const MEMBER_SELECT: &str = "select tm.team_id, tm.user_id, u.first_name, u.last_name, u.email, tm.role, tm.version, \
                             tm.added_at from identity.team_members tm join identity.users u on u.id = tm.user_id";

/// The direct members of the teams, by name.
pub async fn team_members(conn: &mut PgConnection, team_ids: &[Uuid]) -> sqlx::Result<Vec<TeamMember>> {
    sqlx::query_as(&format!(
        "{MEMBER_SELECT} where tm.team_id = any($1) order by lower(u.first_name || ' ' || u.last_name), tm.user_id"
    ))
    .bind(team_ids)
    .fetch_all(conn)
    .await
}

/// One membership of a team.
pub async fn team_member(conn: &mut PgConnection, team_id: Uuid, user_id: Uuid) -> sqlx::Result<Option<TeamMember>> {
    sqlx::query_as(&format!("{MEMBER_SELECT} where tm.team_id = $1 and tm.user_id = $2"))
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// Adds a member or changes their role, with a new version; returns the role held before.
pub async fn upsert_team_member(
    conn: &mut PgConnection,
    org_id: Uuid,
    team_id: Uuid,
    user_id: Uuid,
    role: &str,
    added_by: Uuid,
) -> sqlx::Result<(Option<String>, i64)> {
    let before: Option<String> =
        sqlx::query_scalar("select role from identity.team_members where team_id = $1 and user_id = $2 for update")
            .bind(team_id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let version: i64 = sqlx::query_scalar(
        "insert into identity.team_members (team_id, user_id, org_id, role, added_by) values ($1, $2, $3, $4, $5)
         on conflict (team_id, user_id) do update
            set role = excluded.role, version = nextval('identity.relationship_versions')
         returning version",
    )
    .bind(team_id)
    .bind(user_id)
    .bind(org_id)
    .bind(role)
    .bind(added_by)
    .fetch_one(&mut *conn)
    .await?;
    Ok((before, version))
}

/// Removes a team membership; returns the role held and the version of the removal.
pub async fn delete_team_member(
    conn: &mut PgConnection,
    team_id: Uuid,
    user_id: Uuid,
) -> sqlx::Result<Option<(String, i64)>> {
    let role: Option<String> =
        sqlx::query_scalar("delete from identity.team_members where team_id = $1 and user_id = $2 returning role")
            .bind(team_id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(role) = role else { return Ok(None) };
    let version: i64 = sqlx::query_scalar("select nextval('identity.relationship_versions')").fetch_one(conn).await?;
    Ok(Some((role, version)))
}

/// The teams of the org the user is a direct member of (live or deleted), with role.
pub async fn teams_of_user(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        "select team_id, role from identity.team_members where org_id = $1 and user_id = $2 order by team_id",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_all(conn)
    .await
}
