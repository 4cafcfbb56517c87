//! The queries of organizations and their members (the OrganizationService), each inside a
//! tenant transaction of the organization (or [`crate::store::scope_to_user`] for the caller's own
//! memberships). Kept apart from [`crate::store`], which holds the sign-in queries.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

/// An organization row with everything the API shows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub plan: String,
    pub personal: bool,
    pub default_timezone: String,
    pub default_locale: String,
    pub billing_email: Option<String>,
    pub member_limit: Option<i32>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
}

const ORG_COLUMNS: &str = "o.id, o.name, o.slug, o.plan, o.personal, o.default_timezone, o.default_locale, \
                           o.billing_email, o.member_limit, o.created_by, o.created_at, o.updated_at, o.deleted_at, \
                           o.purge_after";

/// The organization, deleted or not, when visible in the transaction.
pub async fn org(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Org>> {
    sqlx::query_as(&format!("select {ORG_COLUMNS} from identity.organizations o where o.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Inserts a (non-personal) organization. Fails on `organizations_slug_key` when the slug is taken.
pub async fn insert_org(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    slug: &str,
    plan: &str,
    created_by: Uuid,
) -> sqlx::Result<Org> {
    sqlx::query_as(&format!(
        "insert into identity.organizations as o (id, name, slug, plan, personal, created_by)
         values ($1, $2, $3, $4, false, $5)
         returning {ORG_COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(slug)
    .bind(plan)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

/// The changeable fields of an organization (`None`: unchanged).
#[derive(Debug, Default)]
pub struct OrgChanges {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub default_timezone: Option<String>,
    pub default_locale: Option<String>,
    /// `Some(None)` clears it.
    pub billing_email: Option<Option<String>>,
}

/// Applies changes to a live organization. Fails on `organizations_slug_key`.
pub async fn update_org(conn: &mut PgConnection, id: Uuid, c: &OrgChanges) -> sqlx::Result<Option<Org>> {
    sqlx::query_as(&format!(
        "update identity.organizations as o set
            name = coalesce($2, o.name),
            slug = coalesce($3, o.slug),
            default_timezone = coalesce($4, o.default_timezone),
            default_locale = coalesce($5, o.default_locale),
            billing_email = case when $6 then $7 else o.billing_email end,
            updated_at = now()
         where o.id = $1 and o.deleted_at is null
         returning {ORG_COLUMNS}"
    ))
    .bind(id)
    .bind(&c.name)
    .bind(&c.slug)
    .bind(&c.default_timezone)
    .bind(&c.default_locale)
    .bind(c.billing_email.is_some())
    .bind(c.billing_email.clone().flatten())
    .fetch_optional(conn)
    .await
}

/// Soft-deletes (`purge_after` set) or restores (`None`) an organization.
pub async fn set_org_deleted(
    conn: &mut PgConnection,
    id: Uuid,
    purge_after: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<Org>> {
    sqlx::query_as(&format!(
        "update identity.organizations as o
            set deleted_at = case when $2::timestamptz is null then null else now() end,
                purge_after = $2, updated_at = now()
          where o.id = $1
         returning {ORG_COLUMNS}"
    ))
    .bind(id)
    .bind(purge_after)
    .fetch_optional(conn)
    .await
}

/// The caller's active memberships with their organizations (live ones, or also deleted ones),
/// oldest first. Needs `app.user_id` = `user_id`.
pub async fn orgs_of_user(conn: &mut PgConnection, user_id: Uuid, deleted: bool) -> sqlx::Result<Vec<(Org, String)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        org: Org,
        role: String,
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "select {ORG_COLUMNS}, m.role
           from identity.org_members m join identity.organizations o on o.id = m.org_id
          where m.user_id = $1 and m.status = 'active' and ((o.deleted_at is null) or $2)
          order by m.joined_at, m.org_id"
    ))
    .bind(user_id)
    .bind(deleted)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.org, r.role)).collect())
}

/// A member with their user's public fields.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub email_verified: bool,
    pub role: String,
    pub status: String,
    pub version: i64,
    pub joined_at: DateTime<Utc>,
}

const MEMBER_SELECT: &str = "select m.user_id, u.first_name, u.last_name, u.email, u.email_verified_at is not null \
                             as email_verified, m.role, m.status, m.version, m.joined_at
                             from identity.org_members m join identity.users u on u.id = m.user_id";

/// One member of the organization (any status).
pub async fn member(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<Option<Member>> {
    sqlx::query_as(&format!("{MEMBER_SELECT} where m.org_id = $1 and m.user_id = $2"))
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The owner of the organization.
pub async fn owner(conn: &mut PgConnection, org_id: Uuid) -> sqlx::Result<Option<Member>> {
    sqlx::query_as(&format!("{MEMBER_SELECT} where m.org_id = $1 and m.role = 'owner'"))
        .bind(org_id)
        .fetch_optional(conn)
        .await
}

/// What ListMembers selects and how it orders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberQuery {
    /// `(field, equals?, value)` for role and status.
    pub conditions: Vec<(MemberField, bool, String)>,
    /// Substring of the name or email, lowercased.
    pub q: Option<String>,
    /// Order by joined_at instead of name.
    pub by_joined_at: bool,
    /// Descending.
    pub desc: bool,
}

/// A filterable member field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberField {
    Role,
    Status,
}

fn member_where(b: &mut QueryBuilder<'_, Postgres>, org_id: Uuid, query: &MemberQuery) {
    b.push(" where m.org_id = ").push_bind(org_id);
    for (field, equals, value) in &query.conditions {
        let column = match field {
            MemberField::Role => "m.role",
            MemberField::Status => "m.status",
        };
        b.push(format!(" and {column} {} ", if *equals { "=" } else { "<>" })).push_bind(value.clone());
    }
    if let Some(q) = &query.q {
        let pattern = format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        b.push(" and (lower(u.first_name || ' ' || u.last_name) like ")
            .push_bind(pattern.clone())
            .push(" or u.email like ")
            .push_bind(pattern)
            .push(")");
    }
}

/// A page of members (`offset`, `limit`) and how many match.
pub async fn members_page(
    conn: &mut PgConnection,
    org_id: Uuid,
    query: &MemberQuery,
    offset: i64,
    limit: i64,
) -> sqlx::Result<(Vec<Member>, i64)> {
    let mut count = QueryBuilder::<Postgres>::new(
        "select count(*) from identity.org_members m join identity.users u on u.id = m.user_id",
    );
    member_where(&mut count, org_id, query);
    let total: i64 = count.build_query_scalar().fetch_one(&mut *conn).await?;

    let mut page = QueryBuilder::<Postgres>::new(MEMBER_SELECT);
    member_where(&mut page, org_id, query);
    let dir = if query.desc { "desc" } else { "asc" };
    if query.by_joined_at {
        page.push(format!(" order by m.joined_at {dir}, m.user_id {dir}"));
    } else {
        page.push(format!(" order by lower(u.first_name || ' ' || u.last_name) {dir}, m.user_id {dir}"));
    }
    page.push(" limit ").push_bind(limit).push(" offset ").push_bind(offset);
    let rows = page.build_query_as().fetch_all(&mut *conn).await?;
    Ok((rows, total))
}

/// Sets a member's role and a new version; returns the version.
pub async fn set_member_role(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid, role: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "update identity.org_members
            set role = $3, version = nextval('identity.relationship_versions'), updated_at = now()
          where org_id = $1 and user_id = $2
         returning version",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role)
    .fetch_one(conn)
    .await
}

/// Deletes a membership; returns the version of the removal (newer than every earlier one).
pub async fn delete_member(conn: &mut PgConnection, org_id: Uuid, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query("delete from identity.org_members where org_id = $1 and user_id = $2")
        .bind(org_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("select nextval('identity.relationship_versions')").fetch_one(conn).await
}

/// How many live organizations the user is an active member of. Needs `app.user_id`.
pub async fn active_org_count(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from identity.org_members m join identity.organizations o on o.id = m.org_id
          where m.user_id = $1 and m.status = 'active' and o.deleted_at is null",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await
}

/// The user's password hash (`None` for OIDC-only accounts).
pub async fn password_hash(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select password_hash from identity.users where id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await
        .map(Option::flatten)
}
