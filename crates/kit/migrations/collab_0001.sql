-- kit::collab: comments, tags on entities, entity links and activity entries, installed by
-- trellis-kit in the schema of a module that mounts collab (Module::with_collab). The tables are
-- generic over the module's own entity types (entity_type, entity_id): no foreign keys into the
-- module's tables, so purging an entity deletes its rows here explicitly (collab::purge_entity).
-- Every table is tenant-owned: org_id, RLS enabled and forced, indexes that start with org_id.

create table comments (
    id uuid primary key,
    org_id uuid not null,
    entity_type text not null,
    entity_id uuid not null,
    -- NULL when the platform wrote it.
    author_id uuid,
    body text not null check (char_length(body) between 1 and 10000),
    -- The thread's root (a reply to a reply attaches to the root).
    parent_id uuid,
    -- Users mentioned as @[Name](user:<uuid>) who may view the entity.
    mentions uuid[] not null default '{}',
    edited_at timestamptz,
    deleted_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    search tsvector generated always as (to_tsvector('simple', body)) stored,
    constraint comments_org_id_id_key unique (org_id, id),
    constraint comments_parent_fkey foreign key (org_id, parent_id) references comments (org_id, id) on delete cascade
);
create index comments_entity on comments (org_id, entity_type, entity_id, created_at, id);
create index comments_search on comments using gin (search);

create table tags (
    id uuid primary key,
    org_id uuid not null,
    name text not null check (char_length(name) between 1 and 50),
    color text check (color ~ '^#[0-9A-Fa-f]{6}$'),
    category text check (char_length(category) <= 50),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint tags_org_id_id_key unique (org_id, id)
);
-- Names are unique per organization ignoring case.
create unique index tags_org_name on tags (org_id, lower(name));

create table entity_tags (
    org_id uuid not null,
    tag_id uuid not null,
    entity_type text not null,
    entity_id uuid not null,
    created_at timestamptz not null default now(),
    primary key (org_id, entity_type, entity_id, tag_id),
    constraint entity_tags_tag_fkey foreign key (org_id, tag_id) references tags (org_id, id) on delete cascade
);
create index entity_tags_tag on entity_tags (org_id, tag_id);

create table entity_links (
    id uuid primary key,
    org_id uuid not null,
    source_type text not null,
    source_id uuid not null,
    target_type text not null,
    target_id uuid not null,
    relationship text not null check (relationship ~ '^[a-z][a-z0-9_]{0,49}$'),
    -- A copy of a link another module owns (its source is that module's entity).
    mirrored bool not null default false,
    -- Set while the other end is in its module's trash.
    hidden bool not null default false,
    created_by uuid,
    created_at timestamptz not null default now(),
    constraint entity_links_pair_key unique (org_id, source_type, source_id, target_type, target_id, relationship)
);
create index entity_links_target on entity_links (org_id, target_type, target_id);

create table activity (
    id uuid primary key,
    org_id uuid not null,
    entity_type text not null,
    entity_id uuid not null,
    -- `user:<id>`, `api_key:<id>`, `automation:<id>`, `recurrence:<id>` or `system`.
    actor text not null,
    action text not null,
    -- {field: {from, to}}.
    changes jsonb not null default '{}',
    created_at timestamptz not null default now()
);
create index activity_entity on activity (org_id, entity_type, entity_id, created_at desc, id desc);

alter table comments enable row level security;
alter table comments force row level security;
create policy tenant_isolation on comments
    using (org_id = current_org_id()) with check (org_id = current_org_id());
alter table tags enable row level security;
alter table tags force row level security;
create policy tenant_isolation on tags
    using (org_id = current_org_id()) with check (org_id = current_org_id());
alter table entity_tags enable row level security;
alter table entity_tags force row level security;
create policy tenant_isolation on entity_tags
    using (org_id = current_org_id()) with check (org_id = current_org_id());
alter table entity_links enable row level security;
alter table entity_links force row level security;
create policy tenant_isolation on entity_links
    using (org_id = current_org_id()) with check (org_id = current_org_id());
alter table activity enable row level security;
alter table activity force row level security;
create policy tenant_isolation on activity
    using (org_id = current_org_id()) with check (org_id = current_org_id());
