//! Relationship storage in Postgres: snapshot reads for the evaluator, validated all-or-nothing
//! writes with preconditions, per-org revisions and the changelog (spec "Data model", rules 1–3,
//! 12–13), and consistency tokens.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::{PgConnection, Postgres, Transaction};
use trellis_kit::db::Db;
use uuid::Uuid;

use crate::eval::{EvalError, ObjectRef, SubjectRef, Tuple, TupleReader};
use crate::schema::{AllowedSubject, Schema};

/// The platform scope (`platform:cell`), readable from every org.
pub const PLATFORM_ORG: Uuid = Uuid::nil();

/// A consistency token: the org and a revision of its relationships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zookie {
    pub org: Uuid,
    pub revision: i64,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this service issued (INVALID_ARGUMENT).
    Malformed,
    /// Issued for another org (INVALID_ARGUMENT TOKEN_ORG_MISMATCH).
    OrgMismatch,
}

impl Zookie {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("z1:{}:{}", self.org.simple(), self.revision))
    }

    /// Parses a token and checks that it belongs to `org`.
    pub fn decode(token: &str, org: Uuid) -> Result<Zookie, TokenError> {
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Malformed)?;
        let text = std::str::from_utf8(&raw).map_err(|_| TokenError::Malformed)?;
        let mut parts = text.split(':');
        let (Some("z1"), Some(o), Some(r), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let token_org = Uuid::parse_str(o).map_err(|_| TokenError::Malformed)?;
        let revision: i64 = r.parse().map_err(|_| TokenError::Malformed)?;
        if revision < 0 {
            return Err(TokenError::Malformed);
        }
        if token_org != org {
            return Err(TokenError::OrgMismatch);
        }
        Ok(Zookie { org, revision })
    }
}

/// A REPEATABLE READ, read-only transaction of `org`: one snapshot for a whole evaluation
/// (rule 2). The session settings are local to the transaction.
pub async fn snapshot(db: &Db, org: Uuid) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    // One round trip: the snapshot's BEGIN and its tenant scope together.
    db.pool()
        .begin_with(trellis_kit::db::scoped_begin("begin isolation level repeatable read, read only", org, None))
        .await
}

/// [`snapshot`] for Check and CheckBulk, whose statements run with cached generic plans
/// (`plan_cache_mode = force_generic_plan`): planning a relationship read costs more than
/// executing it (about 0.2 ms against 0.05 ms), and a cold check makes several. The reads of
/// [`PgReader`] are written so that the generic plan is the primary-key scan (see
/// [`relation_rows_sql`]).
pub async fn check_snapshot(db: &Db, org: Uuid) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    db.pool()
        .begin_with(trellis_kit::db::scoped_begin(
            "begin isolation level repeatable read, read only; set local plan_cache_mode = force_generic_plan",
            org,
            None,
        ))
        .await
}

/// The org's current revision (0 before its first write) as seen by `conn`'s snapshot.
pub async fn revision(conn: &mut PgConnection, org: Uuid) -> Result<i64, sqlx::Error> {
    let r: Option<i64> = sqlx::query_scalar("select revision from permissions.org_revisions where org_id = $1")
        .bind(org)
        .fetch_optional(conn)
        .await?;
    Ok(r.unwrap_or(0))
}

/// The evaluator's reader over one transaction. Reads are restricted to the org and the
/// platform scope explicitly (RLS enforces the same), so the planner uses the index prefixes.
#[derive(Debug)]
pub struct PgReader<'c> {
    conn: &'c mut PgConnection,
    orgs: [Uuid; 2],
    /// Number of queries issued.
    pub queries: usize,
}

impl<'c> PgReader<'c> {
    pub fn new(conn: &'c mut PgConnection, org: Uuid) -> Self {
        Self { conn, orgs: [org, PLATFORM_ORG], queries: 0 }
    }
}

type Row = (String, String, String, String, String, String);

/// Up to this many object ids are bound as separate parameters rather than as one array.
const SCALAR_IDS: usize = 4;

/// The relationships of `relations` on `ids` objects of one type, in the org or the platform
/// scope: `$1`, `$2` the two scopes, `$3` the type, then the ids (one parameter each up to
/// [`SCALAR_IDS`], else one array), then one parameter per relation.
///
/// Scalar parameters matter under generic plans ([`check_snapshot`]): the planner costs an
/// array parameter of unknown length as ten elements per `= any(...)` clause, and with three
/// such clauses the primary-key scan looked dearer than a bitmap scan of
/// `relationships_by_relation` that reads every row of the relation in the org (4.7 ms for 4
/// rows at 10,000 relationships). With the scopes, the relations and small id batches as
/// separate parameters the estimate is exact and the primary key wins.
pub fn relation_rows_sql(ids: usize, relations: usize) -> String {
    let mut n = 3;
    let mut params = |count: usize| {
        let list: Vec<String> = (0..count).map(|i| format!("${}", n + 1 + i)).collect();
        n += count;
        list.join(", ")
    };
    let ids = if ids <= SCALAR_IDS { format!("in ({})", params(ids)) } else { format!("= any({})", params(1)) };
    let relations = params(relations);
    format!(
        "select resource_type::text, resource_id::text, relation::text, subject_type::text, subject_id::text, subject_relation::text
           from permissions.relationships
          where org_id in ($1, $2) and resource_type = $3 and resource_id {ids} and relation in ({relations})"
    )
}

fn to_tuple((rt, rid, rel, st, sid, srel): Row) -> Tuple {
    Tuple {
        resource: ObjectRef { ty: rt, id: rid },
        relation: rel,
        subject: SubjectRef { ty: st, id: sid, relation: srel },
    }
}

fn store_err(e: sqlx::Error) -> EvalError {
    EvalError::Store(e.to_string())
}

impl PgReader<'_> {
    async fn read_rows(&mut self, ty: &str, ids: &[String], relations: &[&str]) -> Result<Vec<Tuple>, EvalError> {
        if ids.is_empty() || relations.is_empty() {
            return Ok(Vec::new());
        }
        self.queries += 1;
        let sql = relation_rows_sql(ids.len(), relations.len());
        let mut query = sqlx::query_as::<_, Row>(&sql).bind(self.orgs[0]).bind(self.orgs[1]).bind(ty);
        if ids.len() <= SCALAR_IDS {
            for id in ids {
                query = query.bind(id);
            }
        } else {
            query = query.bind(ids);
        }
        for relation in relations {
            query = query.bind(*relation);
        }
        let rows = query.fetch_all(&mut *self.conn).await.map_err(store_err)?;
        Ok(rows.into_iter().map(to_tuple).collect())
    }
}

impl TupleReader for PgReader<'_> {
    async fn read(&mut self, ty: &str, ids: &[String], relation: &str) -> Result<Vec<Tuple>, EvalError> {
        self.read_rows(ty, ids, std::slice::from_ref(&relation)).await
    }

    async fn read_many(&mut self, ty: &str, ids: &[String], relations: &[String]) -> Result<Vec<Tuple>, EvalError> {
        let relations: Vec<&str> = relations.iter().map(String::as_str).collect();
        self.read_rows(ty, ids, &relations).await
    }

    async fn read_by_subject(&mut self, ty: &str, ids: &[String]) -> Result<Vec<Tuple>, EvalError> {
        self.queries += 1;
        let rows: Vec<Row> = sqlx::query_as(
            "select resource_type::text, resource_id::text, relation::text, subject_type::text, subject_id::text, subject_relation::text
               from permissions.relationships
              where org_id = any($1) and subject_type = $2 and subject_id = any($3)",
        )
        .bind(&self.orgs[..])
        .bind(ty)
        .bind(ids)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(store_err)?;
        Ok(rows.into_iter().map(to_tuple).collect())
    }

    async fn read_reverse(
        &mut self,
        ty: &str,
        relation: &str,
        subject_type: &str,
        subject_ids: &[String],
        subject_relation: &str,
    ) -> Result<Vec<String>, EvalError> {
        self.queries += 1;
        // The prefix of `relationships_by_subject`, in full.
        sqlx::query_scalar(
            "select resource_id::text from permissions.relationships
              where org_id = any($1) and subject_type = $2 and subject_id = any($3) and subject_relation = $4
                and resource_type = $5 and relation = $6",
        )
        .bind(&self.orgs[..])
        .bind(subject_type)
        .bind(subject_ids)
        .bind(subject_relation)
        .bind(ty)
        .bind(relation)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(store_err)
    }
}

/// A relationship write operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Touch,
    Create,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Touch => "touch",
            Operation::Create => "create",
            Operation::Delete => "delete",
        }
    }
}

/// A filter over relationships (`resource_type` required; the rest optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub relation: Option<String>,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    pub subject_relation: Option<String>,
}

/// A precondition of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    MustMatch(Filter),
    MustNotMatch(Filter),
}

/// One invalid field of a write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

/// Why a write was refused; nothing was written.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    /// INVALID_ARGUMENT with field violations.
    Invalid(Vec<Violation>),
    /// ALREADY_EXISTS: a CREATE of an existing relationship (`index` of the update).
    AlreadyExists { index: usize },
    /// FAILED_PRECONDITION PRECONDITION_FAILED (`index` of the precondition).
    PreconditionFailed { index: usize },
    /// FAILED_PRECONDITION TOO_MANY_MATCHES: a delete by filter matched more than `limit` rows.
    TooManyMatches { limit: usize },
    /// The database failed.
    Store(String),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Store(e.to_string())
    }
}

/// Object ids: `^[A-Za-z0-9/_|\-=+@.:]{1,128}$` (rule 12).
pub fn valid_object_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_alphanumeric() || b"/_|-=+@.:".contains(&c))
}

/// Validates updates against the schema (rule 12 and the WriteRelationships table): the resource
/// type exists, the relation is a relation (not a permission), the subject is allowed, ids are
/// well formed, and no relationship appears twice.
pub fn validate_updates(schema: &Schema, updates: &[(Operation, Tuple)]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, (_, t)) in updates.iter().enumerate() {
        let f = |s: &str| format!("updates[{i}].relationship.{s}");
        let mut bad =
            |field: String, reason: &'static str, message: String| out.push(Violation { field, reason, message });
        let Some(def) = schema.definition(&t.resource.ty) else {
            bad(f("resource.object_type"), "UNKNOWN_TYPE", format!("unknown type `{}`", t.resource.ty));
            continue;
        };
        if !valid_object_id(&t.resource.id) {
            bad(f("resource.object_id"), "INVALID_ID", format!("`{}` is not a valid object id", t.resource.id));
        }
        let Some(allowed) = def.relations.get(&t.relation) else {
            let why = if def.permissions.contains_key(&t.relation) {
                format!("`{}` is a permission of `{}`; only relations can be written", t.relation, def.name)
            } else {
                format!("`{}` has no relation `{}`", def.name, t.relation)
            };
            bad(f("relation"), "UNKNOWN_RELATION", why);
            continue;
        };
        let s = &t.subject;
        let wildcard = s.id == "*";
        if !wildcard && !valid_object_id(&s.id) {
            bad(f("subject.object.object_id"), "INVALID_ID", format!("`{}` is not a valid object id", s.id));
        }
        let ok = allowed.iter().any(|a| match a {
            AllowedSubject::Direct(ty) => *ty == s.ty && s.relation.is_empty() && !wildcard,
            AllowedSubject::Wildcard(ty) => *ty == s.ty && s.relation.is_empty() && wildcard,
            AllowedSubject::Set(ty, r) => *ty == s.ty && *r == s.relation && !wildcard,
        });
        if !ok {
            let field = if allowed.iter().any(|a| a.ty() == s.ty) && !wildcard {
                f("subject.optional_relation")
            } else {
                f("subject.object.object_type")
            };
            let names: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            bad(
                field,
                "SUBJECT_NOT_ALLOWED",
                format!("`{}#{}` allows {}, not `{s}`", def.name, t.relation, names.join(" | ")),
            );
        }
        if !seen.insert(t.clone()) {
            bad(format!("updates[{i}]"), "DUPLICATE_UPDATE", format!("`{t}` appears twice in the request"));
        }
    }
    out
}

/// The outcome of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The revision after the write (unchanged when nothing changed).
    pub revision: i64,
    /// Whether anything changed.
    pub changed: bool,
}

/// SQL conditions for a filter, with `$first..` placeholders; an empty `resource_type` matches
/// every type.
fn filter_sql(f: &Filter, first: usize) -> (String, Vec<String>) {
    let mut sql = String::from("true");
    let mut binds = Vec::new();
    let resource_type = (!f.resource_type.is_empty()).then(|| f.resource_type.clone());
    for (col, v) in [
        ("resource_type", &resource_type),
        ("resource_id", &f.resource_id),
        ("relation", &f.relation),
        ("subject_type", &f.subject_type),
        ("subject_id", &f.subject_id),
        ("subject_relation", &f.subject_relation),
    ] {
        if let Some(v) = v {
            binds.push(v.clone());
            sql.push_str(&format!(" and {col} = ${}", first + binds.len() - 1));
        }
    }
    (sql, binds)
}

/// Takes the org's revision row lock (creating the row) and returns the current revision, so
/// concurrent writers of the org serialize here.
async fn lock_revision(tx: &mut PgConnection, org: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query("insert into permissions.org_revisions (org_id, revision) values ($1, 0) on conflict do nothing")
        .bind(org)
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar("select revision from permissions.org_revisions where org_id = $1 for update")
        .bind(org)
        .fetch_one(&mut *tx)
        .await
}

async fn check_preconditions(
    tx: &mut PgConnection,
    org: Uuid,
    preconditions: &[Precondition],
) -> Result<(), WriteError> {
    for (i, p) in preconditions.iter().enumerate() {
        let (f, must) = match p {
            Precondition::MustMatch(f) => (f, true),
            Precondition::MustNotMatch(f) => (f, false),
        };
        let (cond, binds) = filter_sql(f, 2);
        let sql = format!("select exists(select 1 from permissions.relationships where org_id = $1 and {cond})");
        let mut q = sqlx::query_scalar::<_, bool>(&sql).bind(org);
        for b in &binds {
            q = q.bind(b);
        }
        if q.fetch_one(&mut *tx).await? != must {
            return Err(WriteError::PreconditionFailed { index: i });
        }
    }
    Ok(())
}

async fn set_revision(tx: &mut PgConnection, org: Uuid, revision: i64) -> Result<(), sqlx::Error> {
    sqlx::query("update permissions.org_revisions set revision = $2 where org_id = $1")
        .bind(org)
        .bind(revision)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The outcome of a delete by filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The relationships deleted, in primary-key order.
    pub tuples: Vec<Tuple>,
    /// More rows matched than the limit (only with `allow_partial`).
    pub partial: bool,
    /// The revision after the delete (unchanged when nothing matched).
    pub revision: i64,
}

/// Deletes the relationships of `org` matching `filter` in one revision (DeleteRelationships):
/// preconditions first, then at most `limit` rows in primary-key order. More matches than
/// `limit` without `allow_partial` → [`WriteError::TooManyMatches`], nothing deleted. One
/// changelog row per deleted relationship. The caller commits.
pub async fn delete_by_filter(
    tx: &mut PgConnection,
    org: Uuid,
    filter: &Filter,
    preconditions: &[Precondition],
    limit: usize,
    allow_partial: bool,
    actor: &str,
) -> Result<Deleted, WriteError> {
    let current = lock_revision(tx, org).await?;
    check_preconditions(tx, org, preconditions).await?;
    let (cond, binds) = filter_sql(filter, 2);
    let sql = format!(
        "select count(*) from (select 1 from permissions.relationships where org_id = $1 and {cond} limit {}) matched",
        limit + 1
    );
    let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(org);
    for b in &binds {
        q = q.bind(b);
    }
    let matched = q.fetch_one(&mut *tx).await? as usize;
    if matched > limit && !allow_partial {
        return Err(WriteError::TooManyMatches { limit });
    }
    if matched == 0 {
        return Ok(Deleted { tuples: Vec::new(), partial: false, revision: current });
    }
    let next = current + 1;
    let n = binds.len();
    let sql = format!(
        "with gone as (
             -- By ctid: the org's revision lock is held, so no other writer moves these rows, and
             -- a TID scan does not depend on the planner's estimate of the table.
             delete from permissions.relationships r
              using (select ctid as doomed
                       from permissions.relationships
                      where org_id = $1 and {cond}
                      order by resource_type, resource_id, relation, subject_type, subject_id, subject_relation
                      limit {limit}) d
              where r.ctid = d.doomed
          returning r.resource_type, r.resource_id, r.relation, r.subject_type, r.subject_id, r.subject_relation)
         insert into permissions.changelog
             (org_id, revision, ordinal, operation, resource_type, resource_id, relation,
              subject_type, subject_id, subject_relation, actor)
         select $1, ${rev}, (row_number() over (order by resource_type, resource_id, relation, subject_type, subject_id, subject_relation) - 1)::int,
                'delete', resource_type, resource_id, relation, subject_type, subject_id, subject_relation, ${actor}
           from gone
         returning resource_type::text, resource_id::text, relation::text, subject_type::text, subject_id::text, subject_relation::text",
        rev = n + 2,
        actor = n + 3,
    );
    let mut q = sqlx::query_as::<_, Row>(&sql).bind(org);
    for b in &binds {
        q = q.bind(b);
    }
    let mut tuples: Vec<Tuple> =
        q.bind(next).bind(actor).fetch_all(&mut *tx).await?.into_iter().map(to_tuple).collect();
    tuples.sort();
    set_revision(tx, org, next).await?;
    Ok(Deleted { tuples, partial: matched > limit, revision: next })
}

/// One page of the relationships of `org` (and the platform scope) matching `filter`, in primary-key
/// order after `after`, at most `limit`.
pub async fn read_page(
    conn: &mut PgConnection,
    org: Uuid,
    filter: &Filter,
    after: Option<&Tuple>,
    limit: usize,
) -> Result<Vec<Tuple>, sqlx::Error> {
    let (cond, binds) = filter_sql(filter, 2);
    let n = binds.len();
    let after_sql = if after.is_some() {
        format!(
            " and (resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
                > (${}, ${}, ${}, ${}, ${}, ${})",
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7
        )
    } else {
        String::new()
    };
    let sql = format!(
        "select resource_type::text, resource_id::text, relation::text, subject_type::text, subject_id::text, subject_relation::text
           from permissions.relationships
          where org_id = $1 and {cond}{after_sql}
          order by resource_type, resource_id, relation, subject_type, subject_id, subject_relation
          limit {limit}"
    );
    let mut q = sqlx::query_as::<_, Row>(&sql).bind(org);
    for b in &binds {
        q = q.bind(b);
    }
    if let Some(t) = after {
        q = q
            .bind(&t.resource.ty)
            .bind(&t.resource.id)
            .bind(&t.relation)
            .bind(&t.subject.ty)
            .bind(&t.subject.id)
            .bind(&t.subject.relation);
    }
    Ok(q.fetch_all(conn).await?.into_iter().map(to_tuple).collect())
}

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub operation: Operation,
    pub tuple: Tuple,
}

/// A changelog row: revision, operation, then the relationship's columns.
type ChangeRow = (i64, String, String, String, String, String, String, String);

/// Why a changelog read was refused.
#[derive(Debug)]
pub enum ChangesError {
    /// The changes after the cursor are no longer retained.
    Expired,
    Store(sqlx::Error),
}

impl From<sqlx::Error> for ChangesError {
    fn from(e: sqlx::Error) -> Self {
        ChangesError::Store(e)
    }
}

/// Changes of `org` after revision `after`, in revision order, whole revisions only, up to about
/// `limit` rows. Every revision has changelog rows (rule 3), so when the org is past `after` and
/// the row of `after + 1` is gone, the cursor has expired.
pub async fn changes_after(
    conn: &mut PgConnection,
    org: Uuid,
    after: i64,
    types: &[String],
    limit: i64,
) -> Result<Vec<Change>, ChangesError> {
    let rows: Vec<ChangeRow> = sqlx::query_as(
        "select revision, operation, resource_type::text, resource_id::text, relation::text,
                subject_type::text, subject_id::text, subject_relation::text
           from permissions.changelog
          where org_id = $1 and revision > $2
            and revision <= (select coalesce(max(revision), $2) from (
                    select revision from permissions.changelog
                     where org_id = $1 and revision > $2 order by revision, ordinal limit $3) l)
          order by revision, ordinal",
    )
    .bind(org)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    if rows.first().is_none_or(|r| r.0 != after + 1) {
        let current = revision(conn, org).await?;
        if current > after {
            return Err(ChangesError::Expired);
        }
    }
    Ok(rows
        .into_iter()
        .filter(|r| types.is_empty() || types.contains(&r.2))
        .map(|(revision, op, rt, rid, rel, st, sid, srel)| Change {
            revision,
            operation: match op.as_str() {
                "create" => Operation::Create,
                "delete" => Operation::Delete,
                _ => Operation::Touch,
            },
            tuple: to_tuple((rt, rid, rel, st, sid, srel)),
        })
        .collect())
}

/// Deletes changelog rows older than `retention` in every org (a SECURITY DEFINER function, as
/// the sweep spans orgs). Returns the number of rows removed.
pub async fn purge_changelog(db: &Db, retention: std::time::Duration) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select permissions.purge_changelog($1)")
        .bind(retention.as_secs_f64())
        .fetch_one(db.pool())
        .await
}

/// Applies a validated batch in one transaction of `org` and one revision (rule 3): checks the
/// preconditions, takes the org's revision row lock, applies TOUCH/CREATE/DELETE, records one
/// changelog row per effective change and returns the new revision. The caller commits.
pub async fn write(
    tx: &mut PgConnection,
    org: Uuid,
    schema: &Schema,
    updates: &[(Operation, Tuple)],
    preconditions: &[Precondition],
    actor: &str,
) -> Result<Written, WriteError> {
    let violations = validate_updates(schema, updates);
    if !violations.is_empty() {
        return Err(WriteError::Invalid(violations));
    }
    // The revision lock first, so concurrent writers of the org serialize here.
    let current = lock_revision(tx, org).await?;
    check_preconditions(tx, org, preconditions).await?;
    let next = current + 1;
    let mut ordinal = 0i32;
    for (i, (op, t)) in updates.iter().enumerate() {
        let changed = match op {
            Operation::Touch | Operation::Create => {
                let inserted = sqlx::query(
                    "insert into permissions.relationships
                        (org_id, resource_type, resource_id, relation, subject_type, subject_id, subject_relation, created_revision)
                     values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing",
                )
                .bind(org)
                .bind(&t.resource.ty)
                .bind(&t.resource.id)
                .bind(&t.relation)
                .bind(&t.subject.ty)
                .bind(&t.subject.id)
                .bind(&t.subject.relation)
                .bind(next)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !inserted && *op == Operation::Create {
                    return Err(WriteError::AlreadyExists { index: i });
                }
                inserted
            }
            Operation::Delete => {
                sqlx::query(
                    "delete from permissions.relationships
                      where org_id = $1 and resource_type = $2 and resource_id = $3 and relation = $4
                        and subject_type = $5 and subject_id = $6 and subject_relation = $7",
                )
                .bind(org)
                .bind(&t.resource.ty)
                .bind(&t.resource.id)
                .bind(&t.relation)
                .bind(&t.subject.ty)
                .bind(&t.subject.id)
                .bind(&t.subject.relation)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            }
        };
        if changed {
            sqlx::query(
                "insert into permissions.changelog
                    (org_id, revision, ordinal, operation, resource_type, resource_id, relation,
                     subject_type, subject_id, subject_relation, actor)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(org)
            .bind(next)
            .bind(ordinal)
            .bind(op.as_str())
            .bind(&t.resource.ty)
            .bind(&t.resource.id)
            .bind(&t.relation)
            .bind(&t.subject.ty)
            .bind(&t.subject.id)
            .bind(&t.subject.relation)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
            ordinal += 1;
        }
    }
    if ordinal == 0 {
        return Ok(Written { revision: current, changed: false });
    }
    set_revision(tx, org, next).await?;
    Ok(Written { revision: next, changed: true })
}

/// Claims `version` for the source entity `key` in `org` (the source-version guard, rule 13):
/// true, and the stored version raised, when `version` is newer than the stored one (or equal,
/// with `or_equal`); false when the write derived from it must be skipped. The row lock taken
/// here serializes concurrent writers of one source until commit.
pub async fn claim_source_version(
    tx: &mut PgConnection,
    org: Uuid,
    key: &str,
    version: i64,
    or_equal: bool,
) -> Result<bool, sqlx::Error> {
    let claimed: Option<i64> = sqlx::query_scalar(
        "insert into permissions.source_versions (org_id, source_key, version) values ($1, $2, $3)
         on conflict (org_id, source_key) do update set version = excluded.version, updated_at = now()
          where permissions.source_versions.version < excluded.version
             or ($4 and permissions.source_versions.version = excluded.version)
         returning version",
    )
    .bind(org)
    .bind(key)
    .bind(version)
    .bind(or_equal)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(claimed.is_some())
}

/// Every relationship in `org` (the org only, not the platform scope) whose resource, or whose
/// subject (under any subject relation), is `ty:id`.
pub async fn relationships_of_object(
    tx: &mut PgConnection,
    org: Uuid,
    ty: &str,
    id: &str,
    as_subject: bool,
) -> Result<Vec<Tuple>, sqlx::Error> {
    let column = if as_subject { "subject" } else { "resource" };
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "select resource_type::text, resource_id::text, relation::text, subject_type::text, subject_id::text, subject_relation::text
           from permissions.relationships
          where org_id = $1 and {column}_type = $2 and {column}_id = $3"
    ))
    .bind(org)
    .bind(ty)
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(to_tuple).collect())
}
