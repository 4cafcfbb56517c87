//! Collaboration on a module's own entities: comments with mentions, tags, entity links and
//! activity entries (ARCHITECTURE §3 `collab`).
//!
//! A module mounts it with [`crate::Module::with_collab`]: kit then installs the tables
//! (`comments`, `tags`, `entity_tags`, `entity_links`, `activity`, see
//! `crates/kit/migrations/collab_0001.sql`) in the module's own schema, before the module's
//! migrations, so crm, documents and finance get the same tables and rules without copying DDL.
//! The tables are generic over `(entity_type, entity_id)`; the module decides who may do what
//! (its access checks) and what an entity is (existence, trash). Every function here runs inside
//! the caller's tenant transaction, so the change, its activity entry and its events commit
//! together; Row-Level Security scopes every query.
//!
//! Links: [`Collab::create_link`] and [`Collab::delete_link`] stage `<context>.link.created` /
//! `.deleted` ([`trellis_proto::trellis::common::v1::LinkChanged`]); [`Collab::mirror`] stores or
//! removes the copy of another module's link whose target is one of this module's entities, so
//! both sides list it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use trellis_proto::trellis::common::v1::{EntityRef as EntityRefProto, LinkChanged};
use uuid::Uuid;

use crate::context::RequestContext;
use crate::db::{Tx, on_constraint};
use crate::error::{Error, Result, Violations};

/// Longest comment body, in characters.
pub const COMMENT_MAX: usize = 10_000;
/// Longest tag name, in characters.
pub const TAG_NAME_MAX: usize = 50;
/// Default relationship of a link.
pub const DEFAULT_RELATIONSHIP: &str = "related";

/// An entity of some module: `{type: "task", id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityRef {
    /// Entity type (`task`, `contact`, ...).
    pub entity_type: String,
    /// Its id.
    pub id: Uuid,
}

impl EntityRef {
    /// A reference.
    pub fn new(entity_type: impl Into<String>, id: Uuid) -> Self {
        Self { entity_type: entity_type.into(), id }
    }

    fn to_proto(&self) -> EntityRefProto {
        EntityRefProto { r#type: self.entity_type.clone(), id: self.id.to_string() }
    }
}

/// The mentions in a markdown body: `@[Name](user:<uuid>)`, each user once, in order.
pub fn mentions(body: &str) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("@[") {
        rest = &rest[start + 2..];
        let Some(close) = rest.find("](user:") else { break };
        let after = &rest[close + 7..];
        if let Some(end) = after.find(')')
            && let Ok(id) = after[..end].trim().parse::<Uuid>()
            && seen.insert(id)
        {
            out.push(id);
        }
    }
    out
}

/// The actor string of an activity entry: `user:<id>`, `api_key:<id>`, `service:<name>`, `system`.
pub fn actor_of(ctx: &RequestContext) -> String {
    match ctx.actor() {
        (kind, id) if id.is_empty() => kind.to_string(),
        (kind, id) => format!("{kind}:{id}"),
    }
}

/// Validates a tag name (trimmed, 1-50 characters, no control characters).
pub fn tag_name(v: &mut Violations, field: &str, raw: &str) -> String {
    let name = raw.trim().to_string();
    let n = name.chars().count();
    v.check((1..=TAG_NAME_MAX).contains(&n), field, "must be 1-50 characters");
    v.check(!name.chars().any(char::is_control), field, "must not contain control characters");
    name
}

/// Validates a relationship slug (`^[a-z][a-z0-9_]{0,49}$`; empty = `related`).
pub fn relationship(v: &mut Violations, raw: &str) -> String {
    let slug = raw.trim();
    if slug.is_empty() {
        return DEFAULT_RELATIONSHIP.to_string();
    }
    let ok = slug.len() <= 50
        && slug.starts_with(|c: char| c.is_ascii_lowercase())
        && slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    v.check(ok, "relationship", "must be a lowercase slug of at most 50 characters");
    slug.to_string()
}

/// A comment row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Comment {
    /// Id.
    pub id: Uuid,
    /// The entity type.
    pub entity_type: String,
    /// The entity.
    pub entity_id: Uuid,
    /// Author.
    pub author_id: Option<Uuid>,
    /// Markdown body (`[deleted]` once deleted).
    pub body: String,
    /// The thread's root.
    pub parent_id: Option<Uuid>,
    /// Mentioned users who may view the entity.
    pub mentions: Vec<Uuid>,
    /// Last edit.
    pub edited_at: Option<DateTime<Utc>>,
    /// Soft deletion.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Creation.
    pub created_at: DateTime<Utc>,
}

/// A tag row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tag {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// `#RRGGBB`.
    pub color: Option<String>,
    /// Free category.
    pub category: Option<String>,
    /// Creation.
    pub created_at: DateTime<Utc>,
}

/// A link as one side lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Link {
    /// Id.
    pub id: Uuid,
    /// Source type.
    pub source_type: String,
    /// Source id.
    pub source_id: Uuid,
    /// Target type.
    pub target_type: String,
    /// Target id.
    pub target_id: Uuid,
    /// Relationship slug.
    pub relationship: String,
    /// A copy of another module's link.
    pub mirrored: bool,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Creation.
    pub created_at: DateTime<Utc>,
}

/// An activity entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Activity {
    /// Id.
    pub id: Uuid,
    /// Actor (`user:<id>`, `automation:<id>`, `system`, ...).
    pub actor: String,
    /// What happened (`created`, `updated`, `moved`, `commented`, ...).
    pub action: String,
    /// `{field: {from, to}}`.
    pub changes: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A comment to add.
#[derive(Debug, Clone, Copy)]
pub struct NewComment<'a> {
    /// Author; `None` for the platform.
    pub author_id: Option<Uuid>,
    /// Markdown body, already validated.
    pub body: &'a str,
    /// The comment replied to.
    pub parent_id: Option<Uuid>,
    /// Mentioned users who may view the entity.
    pub mentions: &'a [Uuid],
}

/// What [`Collab::update_tag`] changes: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TagChanges<'a> {
    /// The new name (validated by [`tag_name`]).
    pub name: Option<&'a str>,
    /// The new color; `Some(None)` clears it.
    pub color: Option<Option<&'a str>>,
    /// The new category; `Some(None)` clears it.
    pub category: Option<Option<&'a str>>,
}

/// Where a tag to attach comes from.
#[derive(Debug, Clone)]
pub enum TagRef {
    /// An existing tag.
    Id(Uuid),
    /// A name; the tag is created when missing (names match ignoring case).
    Name(String),
}

/// The collab component of one module: `context` prefixes its link events (`tasks.link.created`).
#[derive(Debug, Clone, Copy)]
pub struct Collab {
    context: &'static str,
}

const COMMENT_COLUMNS: &str = "id, entity_type, entity_id, author_id, \
     case when deleted_at is null then body else '[deleted]' end as body, parent_id, mentions, edited_at, \
     deleted_at, created_at";

impl Collab {
    /// The component of module `context`.
    pub const fn new(context: &'static str) -> Self {
        Self { context }
    }

    // ---- Activity -------------------------------------------------------------------------

    /// Records an activity entry on `entity` in the caller's transaction.
    pub async fn record(
        &self,
        tx: &mut Tx,
        org_id: Uuid,
        entity: &EntityRef,
        actor: &str,
        action: &str,
        changes: Value,
    ) -> Result<()> {
        sqlx::query(
            "insert into activity (id, org_id, entity_type, entity_id, actor, action, changes) \
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(org_id)
        .bind(&entity.entity_type)
        .bind(entity.id)
        .bind(actor)
        .bind(action)
        .bind(changes)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// An entity's activity, newest first, before the entry `before` (keyset), at most `limit`.
    pub async fn activity(
        &self,
        tx: &mut Tx,
        entity: &EntityRef,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Activity>> {
        let (at, id) = before.map_or((None, None), |(a, i)| (Some(a), Some(i)));
        Ok(sqlx::query_as(
            "select id, actor, action, changes, created_at from activity \
             where entity_type = $1 and entity_id = $2 and ($3::timestamptz is null or (created_at, id) < ($3, $4)) \
             order by created_at desc, id desc limit $5",
        )
        .bind(&entity.entity_type)
        .bind(entity.id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?)
    }

    // ---- Comments -------------------------------------------------------------------------

    /// Adds a comment; a reply to a reply attaches to the thread's root; `mentions` are the users
    /// the module found may view the entity (see [`mentions`]). NOT_FOUND when the parent is not a
    /// comment of the same entity.
    pub async fn add_comment(
        &self,
        tx: &mut Tx,
        org_id: Uuid,
        entity: &EntityRef,
        new: NewComment<'_>,
    ) -> Result<Comment> {
        let NewComment { author_id, body, parent_id, mentions } = new;
        let root = match parent_id {
            None => None,
            Some(parent) => {
                let row: Option<(Option<Uuid>,)> = sqlx::query_as(
                    "select parent_id from comments where id = $1 and entity_type = $2 and entity_id = $3",
                )
                .bind(parent)
                .bind(&entity.entity_type)
                .bind(entity.id)
                .fetch_optional(&mut **tx)
                .await?;
                let (grand,) = row.ok_or_else(|| {
                    Error::not_found("NOT_FOUND", "The comment does not exist").with_metadata("resource", "comment")
                })?;
                Some(grand.unwrap_or(parent))
            }
        };
        Ok(sqlx::query_as(&format!(
            "insert into comments (id, org_id, entity_type, entity_id, author_id, body, parent_id, mentions) \
             values ($1, $2, $3, $4, $5, $6, $7, $8) returning {COMMENT_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(org_id)
        .bind(&entity.entity_type)
        .bind(entity.id)
        .bind(author_id)
        .bind(body)
        .bind(root)
        .bind(mentions)
        .fetch_one(&mut **tx)
        .await?)
    }

    /// A comment of `entity` (deleted ones too, shown as `[deleted]`).
    pub async fn comment(&self, tx: &mut Tx, entity: &EntityRef, comment_id: Uuid) -> Result<Option<Comment>> {
        Ok(sqlx::query_as(&format!(
            "select {COMMENT_COLUMNS} from comments where id = $1 and entity_type = $2 and entity_id = $3"
        ))
        .bind(comment_id)
        .bind(&entity.entity_type)
        .bind(entity.id)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// An entity's comments, oldest first, after `after` (keyset), at most `limit`; `q` searches
    /// bodies (websearch syntax). Deleted comments stay only while they have live replies.
    pub async fn comments(
        &self,
        tx: &mut Tx,
        entity: &EntityRef,
        q: Option<&str>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Comment>> {
        let (at, id) = after.map_or((None, None), |(a, i)| (Some(a), Some(i)));
        Ok(sqlx::query_as(&format!(
            "select {COMMENT_COLUMNS} from comments c where entity_type = $1 and entity_id = $2 \
             and (deleted_at is null or exists (select 1 from comments r where r.parent_id = c.id and r.deleted_at is null)) \
             and ($3::text is null or search @@ websearch_to_tsquery('simple', $3)) \
             and ($4::timestamptz is null or (created_at, id) > ($4, $5)) order by created_at, id limit $6"
        ))
        .bind(&entity.entity_type)
        .bind(entity.id)
        .bind(q)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?)
    }

    /// Earlier authors of a thread (root and replies), for reply notifications.
    pub async fn thread_participants(&self, tx: &mut Tx, root_id: Uuid) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "select distinct author_id from comments where (id = $1 or parent_id = $1) and author_id is not null",
        )
        .bind(root_id)
        .fetch_all(&mut **tx)
        .await?)
    }

    /// Replaces a comment's body (sets edited_at).
    pub async fn edit_comment(&self, tx: &mut Tx, comment_id: Uuid, body: &str, mentions: &[Uuid]) -> Result<Comment> {
        let row: Option<Comment> = sqlx::query_as(&format!(
            "update comments set body = $2, mentions = $3, edited_at = now(), updated_at = now() \
             where id = $1 and deleted_at is null returning {COMMENT_COLUMNS}"
        ))
        .bind(comment_id)
        .bind(body)
        .bind(mentions)
        .fetch_optional(&mut **tx)
        .await?;
        row.ok_or_else(|| {
            Error::not_found("NOT_FOUND", "The comment does not exist").with_metadata("resource", "comment")
        })
    }

    /// Soft-deletes a comment (idempotent).
    pub async fn delete_comment(&self, tx: &mut Tx, comment_id: Uuid) -> Result<()> {
        sqlx::query("update comments set deleted_at = coalesce(deleted_at, now()) where id = $1")
            .bind(comment_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    // ---- Tags -----------------------------------------------------------------------------

    /// Creates a tag; a name taken ignoring case is ALREADY_EXISTS `TAG_EXISTS` (field `name`).
    pub async fn create_tag(
        &self,
        tx: &mut Tx,
        org_id: Uuid,
        name: &str,
        color: Option<&str>,
        category: Option<&str>,
    ) -> Result<Tag> {
        sqlx::query_as(
            "insert into tags (id, org_id, name, color, category) values ($1, $2, $3, $4, $5) \
             returning id, name, color, category, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(org_id)
        .bind(name)
        .bind(color)
        .bind(category)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| {
            on_constraint(e, "tags_org_name", || {
                Error::already_exists("TAG_EXISTS", "A tag with this name exists").with_field("name", "is taken")
            })
        })
    }

    /// Changes a tag's name, color or category (each `Some` is written; `Some(None)` clears a
    /// color or category). A name taken ignoring case is ALREADY_EXISTS `TAG_EXISTS`; an unknown
    /// tag is NOT_FOUND.
    pub async fn update_tag(&self, tx: &mut Tx, tag_id: Uuid, changes: &TagChanges<'_>) -> Result<Tag> {
        sqlx::query_as(
            "update tags set name = coalesce($2, name),
                    color = case when $3 then $4 else color end,
                    category = case when $5 then $6 else category end
              where id = $1
              returning id, name, color, category, created_at",
        )
        .bind(tag_id)
        .bind(changes.name)
        .bind(changes.color.is_some())
        .bind(changes.color.flatten())
        .bind(changes.category.is_some())
        .bind(changes.category.flatten())
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| {
            on_constraint(e, "tags_org_name", || {
                Error::already_exists("TAG_EXISTS", "A tag with this name exists").with_field("name", "is taken")
            })
        })?
        .ok_or_else(|| Error::not_found("NOT_FOUND", "The tag does not exist").with_metadata("resource", "tag"))
    }

    /// The organization's tags by name.
    pub async fn tags(&self, tx: &mut Tx) -> Result<Vec<Tag>> {
        Ok(sqlx::query_as("select id, name, color, category, created_at from tags order by lower(name), id")
            .fetch_all(&mut **tx)
            .await?)
    }

    /// Deletes a tag, untagging everything; NOT_FOUND when absent.
    pub async fn delete_tag(&self, tx: &mut Tx, tag_id: Uuid) -> Result<()> {
        let done = sqlx::query("delete from tags where id = $1").bind(tag_id).execute(&mut **tx).await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("NOT_FOUND", "The tag does not exist").with_metadata("resource", "tag"));
        }
        Ok(())
    }

    /// Tags an entity (idempotent); a name is created when missing. At most `max` tags per
    /// entity, beyond which INVALID_ARGUMENT `TOO_MANY_TAGS`.
    pub async fn tag(&self, tx: &mut Tx, org_id: Uuid, entity: &EntityRef, tag: TagRef, max: usize) -> Result<Tag> {
        let tag: Tag = match tag {
            TagRef::Id(id) => sqlx::query_as("select id, name, color, category, created_at from tags where id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| {
                    Error::not_found("NOT_FOUND", "The tag does not exist").with_metadata("resource", "tag")
                })?,
            TagRef::Name(name) => {
                sqlx::query(
                    "insert into tags (id, org_id, name) values ($1, $2, $3) on conflict (org_id, lower(name)) do nothing",
                )
                .bind(Uuid::now_v7())
                .bind(org_id)
                .bind(&name)
                .execute(&mut **tx)
                .await?;
                sqlx::query_as("select id, name, color, category, created_at from tags where lower(name) = lower($1)")
                    .bind(&name)
                    .fetch_one(&mut **tx)
                    .await?
            }
        };
        // Serialises concurrent tagging of one entity, so the limit holds.
        sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("collab.tags:{}:{}", entity.entity_type, entity.id))
            .execute(&mut **tx)
            .await?;
        let tags: Vec<Uuid> =
            sqlx::query_scalar("select tag_id from entity_tags where entity_type = $1 and entity_id = $2")
                .bind(&entity.entity_type)
                .bind(entity.id)
                .fetch_all(&mut **tx)
                .await?;
        if tags.contains(&tag.id) {
            return Ok(tag);
        }
        if tags.len() >= max {
            return Err(Error::invalid_argument("TOO_MANY_TAGS", format!("An entity carries at most {max} tags"))
                .with_field("tag", format!("at most {max} tags")));
        }
        sqlx::query("insert into entity_tags (org_id, tag_id, entity_type, entity_id) values ($1, $2, $3, $4)")
            .bind(org_id)
            .bind(tag.id)
            .bind(&entity.entity_type)
            .bind(entity.id)
            .execute(&mut **tx)
            .await?;
        Ok(tag)
    }

    /// Removes a tag from an entity (idempotent); whether it was there.
    pub async fn untag(&self, tx: &mut Tx, entity: &EntityRef, tag_id: Uuid) -> Result<bool> {
        let done = sqlx::query("delete from entity_tags where entity_type = $1 and entity_id = $2 and tag_id = $3")
            .bind(&entity.entity_type)
            .bind(entity.id)
            .bind(tag_id)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// An entity's tags by name.
    pub async fn entity_tags(&self, tx: &mut Tx, entity: &EntityRef) -> Result<Vec<Tag>> {
        Ok(sqlx::query_as(
            "select g.id, g.name, g.color, g.category, g.created_at from entity_tags e join tags g on g.id = e.tag_id \
             where e.entity_type = $1 and e.entity_id = $2 order by lower(g.name), g.id",
        )
        .bind(&entity.entity_type)
        .bind(entity.id)
        .fetch_all(&mut **tx)
        .await?)
    }

    // ---- Links ----------------------------------------------------------------------------

    /// Links `source` (an entity of this module) to `target` and stages `<context>.link.created`.
    /// The same (source, target, relationship) again is ALREADY_EXISTS `LINK_EXISTS`. The module
    /// checks beforehand that the target exists and that the caller may view it.
    pub async fn create_link(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        source: &EntityRef,
        target: &EntityRef,
        relationship: &str,
    ) -> Result<Link> {
        let org_id = ctx.org_id()?;
        let link: Link = sqlx::query_as(
            "insert into entity_links (id, org_id, source_type, source_id, target_type, target_id, relationship, created_by) \
             values ($1, $2, $3, $4, $5, $6, $7, $8) returning id, source_type, source_id, target_type, target_id, \
             relationship, mirrored, created_by, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(org_id)
        .bind(&source.entity_type)
        .bind(source.id)
        .bind(&target.entity_type)
        .bind(target.id)
        .bind(relationship)
        .bind(ctx.user_id_opt())
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| {
            on_constraint(e, "entity_links_pair_key", || {
                Error::already_exists("LINK_EXISTS", "These entities are already linked this way")
            })
        })?;
        self.stage_link(tx, ctx, "created", &link).await?;
        Ok(link)
    }

    async fn stage_link(&self, tx: &mut Tx, ctx: &RequestContext, verb: &str, link: &Link) -> Result<()> {
        let payload = LinkChanged {
            link_id: link.id.to_string(),
            source: Some(EntityRef::new(&link.source_type, link.source_id).to_proto()),
            target: Some(EntityRef::new(&link.target_type, link.target_id).to_proto()),
            relationship: link.relationship.clone(),
        };
        crate::events::stage(tx, ctx, &format!("{}.link.{verb}", self.context), &payload).await?;
        Ok(())
    }

    /// Deletes a link this module owns that touches `entity` and stages `<context>.link.deleted`;
    /// NOT_FOUND when there is none (mirrored links are removed by their owner's event).
    pub async fn delete_link(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        entity: &EntityRef,
        link_id: Uuid,
    ) -> Result<Link> {
        let link: Link = sqlx::query_as(
            "delete from entity_links where id = $1 and not mirrored \
             and ((source_type = $2 and source_id = $3) or (target_type = $2 and target_id = $3)) \
             returning id, source_type, source_id, target_type, target_id, relationship, mirrored, created_by, created_at",
        )
        .bind(link_id)
        .bind(&entity.entity_type)
        .bind(entity.id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("NOT_FOUND", "The link does not exist").with_metadata("resource", "link"))?;
        self.stage_link(tx, ctx, "deleted", &link).await?;
        Ok(link)
    }

    /// The visible links touching an entity, in either direction, oldest first.
    pub async fn links(&self, tx: &mut Tx, entity: &EntityRef) -> Result<Vec<Link>> {
        Ok(sqlx::query_as(
            "select id, source_type, source_id, target_type, target_id, relationship, mirrored, created_by, created_at \
             from entity_links where not hidden and ((source_type = $1 and source_id = $2) \
             or (target_type = $1 and target_id = $2)) order by created_at, id",
        )
        .bind(&entity.entity_type)
        .bind(entity.id)
        .fetch_all(&mut **tx)
        .await?)
    }

    /// The ids of entities of `own_type` linked (either direction, visible links) to `other`.
    pub async fn linked(&self, tx: &mut Tx, other: &EntityRef, own_type: &str) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "select distinct case when source_type = $3 and not (source_type = $1 and source_id = $2) \
             then source_id else target_id end from entity_links where not hidden and \
             ((source_type = $1 and source_id = $2 and target_type = $3) or (target_type = $1 and target_id = $2 and source_type = $3))",
        )
        .bind(&other.entity_type)
        .bind(other.id)
        .bind(own_type)
        .fetch_all(&mut **tx)
        .await?)
    }

    /// Applies another module's link event (`<context>.link.created` / `.deleted`) whose target
    /// is one of `own_types`: stores or removes the mirrored row. Other events are ignored.
    pub async fn mirror(
        &self,
        tx: &mut Tx,
        org_id: Uuid,
        created: bool,
        event: &LinkChanged,
        own_types: &[&str],
    ) -> Result<()> {
        let (Some(source), Some(target)) = (&event.source, &event.target) else { return Ok(()) };
        if !own_types.contains(&target.r#type.as_str()) {
            return Ok(());
        }
        let (Ok(link_id), Ok(source_id), Ok(target_id)) =
            (event.link_id.parse::<Uuid>(), source.id.parse::<Uuid>(), target.id.parse::<Uuid>())
        else {
            return Ok(());
        };
        if created {
            sqlx::query(
                "insert into entity_links (id, org_id, source_type, source_id, target_type, target_id, relationship, mirrored) \
                 values ($1, $2, $3, $4, $5, $6, $7, true) on conflict do nothing",
            )
            .bind(link_id)
            .bind(org_id)
            .bind(&source.r#type)
            .bind(source_id)
            .bind(&target.r#type)
            .bind(target_id)
            .bind(&event.relationship)
            .execute(&mut **tx)
            .await?;
        } else {
            sqlx::query("delete from entity_links where id = $1 and mirrored").bind(link_id).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The consumer (`<context>.links`) that mirrors the links other modules publish
    /// (`<other>.link.created` / `.deleted`) whose target is one of `own_types`. Redelivery is
    /// harmless: the inbox drops repeats and the mirrored row is keyed by the link id.
    pub fn link_mirror(self, own_types: &'static [&'static str]) -> crate::events::Consumer {
        crate::events::Consumer::new(
            format!("{}.links", self.context),
            &["*.link.created", "*.link.deleted"],
            LinkMirror { collab: self, own_types },
        )
    }

    /// Hides or shows the links touching an entity of another module (it went to or came back
    /// from its trash).
    pub async fn set_links_hidden(&self, tx: &mut Tx, other: &EntityRef, hidden: bool) -> Result<()> {
        sqlx::query(
            "update entity_links set hidden = $3 where (source_type = $1 and source_id = $2) \
             or (target_type = $1 and target_id = $2)",
        )
        .bind(&other.entity_type)
        .bind(other.id)
        .bind(hidden)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    // ---- Trash ----------------------------------------------------------------------------

    /// Deletes everything collab holds about entities being purged: comments, tags, links and
    /// activity. Links this module owned publish `<context>.link.deleted`.
    pub async fn purge(&self, tx: &mut Tx, ctx: &RequestContext, entity_type: &str, ids: &[Uuid]) -> Result<()> {
        let owned: Vec<Link> = sqlx::query_as(
            "delete from entity_links where (source_type = $1 and source_id = any($2)) \
             or (target_type = $1 and target_id = any($2)) returning id, source_type, source_id, target_type, \
             target_id, relationship, mirrored, created_by, created_at",
        )
        .bind(entity_type)
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?;
        for link in owned.iter().filter(|l| !l.mirrored) {
            self.stage_link(tx, ctx, "deleted", link).await?;
        }
        for table in ["comments", "entity_tags", "activity"] {
            sqlx::query(&format!("delete from {table} where entity_type = $1 and entity_id = any($2)"))
                .bind(entity_type)
                .bind(ids)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

struct LinkMirror {
    collab: Collab,
    own_types: &'static [&'static str],
}

impl crate::events::Handler for LinkMirror {
    fn handle<'a>(
        &'a self,
        event: &'a crate::events::Event,
        tx: &'a mut Tx,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let kind = event.envelope.r#type.as_str();
            // This module's own links are stored as owned rows already.
            if kind.starts_with(&format!("{}.", self.collab.context)) {
                return Ok(());
            }
            let created = kind.ends_with(".link.created");
            let payload: LinkChanged = event.payload()?;
            self.collab.mirror(tx, event.org_id, created, &payload, self.own_types).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_found_once_in_order_and_malformed_ones_ignored() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let body = format!("Hi @[Ann](user:{a}) and @[Bob](user:{b}), again @[Ann](user:{a}); @[x](user:nope) @[y]");
        assert_eq!(mentions(&body), vec![a, b]);
        assert!(mentions("no mentions, just @someone").is_empty());
    }

    #[test]
    fn relationships_and_tag_names_are_validated() {
        let mut v = Violations::default();
        assert_eq!(relationship(&mut v, ""), "related");
        assert_eq!(relationship(&mut v, "blocks_deal"), "blocks_deal");
        assert_eq!(tag_name(&mut v, "name", "  urgent "), "urgent");
        assert!(v.finish().is_ok());
        relationship(&mut v, "Not A Slug");
        tag_name(&mut v, "name", "");
        tag_name(&mut v, "name", &"x".repeat(51));
        assert_eq!(v.finish().expect_err("three").violations().len(), 3);
    }
}
