-- Relationships, revisions and the changelog (spec "Data model"), plus the registered schemas.
--
-- Tenant rows have RLS enabled and forced. Reads see the caller's org and the platform scope (the
-- nil org); writes are checked against the caller's org only, so platform rows can be written
-- only in a transaction whose app.org_id is the nil uuid.

create table permissions.schema_modules (
    module text primary key check (module ~ '^[a-z][a-z0-9_]{1,31}$'),
    source text not null,
    hash bytea not null,
    compiled jsonb not null,
    version int not null default 1,
    updated_at timestamptz not null default now(),
    updated_by text not null
);

create table permissions.schema_history (
    id bigint generated always as identity primary key,
    module text not null,
    source text not null,
    hash bytea not null,
    compiled jsonb not null,
    version int not null,
    updated_at timestamptz not null,
    updated_by text not null,
    applied_at timestamptz not null default now(),
    diff jsonb not null
);

create table permissions.merged_schema (
    singleton bool primary key default true check (singleton),
    text text not null,
    hash bytea not null,
    grantable jsonb not null,
    updated_at timestamptz not null default now()
);

create table permissions.relationships (
    org_id uuid not null,
    resource_type varchar(64) not null,
    resource_id varchar(128) not null,
    relation varchar(64) not null,
    subject_type varchar(64) not null,
    subject_id varchar(128) not null,
    subject_relation varchar(64) not null default '',
    created_revision bigint not null,
    created_at timestamptz not null default now(),
    -- The PK prefix serves direct reads and the expansion of subject sets.
    primary key (org_id, resource_type, resource_id, relation, subject_type, subject_id, subject_relation)
);
-- Reverse walks (LookupResources, cleanup by subject).
create index relationships_by_subject on permissions.relationships
    (org_id, subject_type, subject_id, subject_relation, resource_type, relation);
-- Relation scans.
create index relationships_by_relation on permissions.relationships
    (org_id, resource_type, relation, subject_type, subject_relation);

-- Every transaction that changes relationships of an org increments its revision under this
-- row's lock, so revisions are in commit order within an org.
create table permissions.org_revisions (
    org_id uuid primary key,
    revision bigint not null default 0 check (revision >= 0)
);

create table permissions.changelog (
    org_id uuid not null,
    revision bigint not null,
    ordinal int not null,
    operation text not null check (operation in ('touch', 'create', 'delete')),
    resource_type varchar(64) not null,
    resource_id varchar(128) not null,
    relation varchar(64) not null,
    subject_type varchar(64) not null,
    subject_id varchar(128) not null,
    subject_relation varchar(64) not null default '',
    actor text not null,
    correlation_id text not null default '',
    created_at timestamptz not null default now(),
    primary key (org_id, revision, ordinal)
);
create index changelog_created_at on permissions.changelog (created_at);

-- The monotonic guard of writes derived from another service's entity (rule 13).
create table permissions.source_versions (
    org_id uuid not null,
    source_key varchar(200) not null,
    version bigint not null,
    updated_at timestamptz not null default now(),
    primary key (org_id, source_key)
);

do $$
declare t text;
begin
    foreach t in array array['relationships', 'org_revisions', 'changelog', 'source_versions'] loop
        execute format('alter table permissions.%I enable row level security', t);
        execute format('alter table permissions.%I force row level security', t);
        execute format(
            'create policy tenant_isolation on permissions.%I
                using (org_id = permissions.current_org_id()
                       or org_id = ''00000000-0000-0000-0000-000000000000''::uuid)
                with check (org_id = permissions.current_org_id())', t);
    end loop;
end $$;
