-- Custom roles per organization (spec "Custom roles", rule 17). A role's grants and assignments
-- are ordinary relationships on `role:{id}`; this table holds what the relationships cannot:
-- the name, the description and the patterns as written (`document:*` is re-expanded on every
-- schema change).

create table permissions.roles (
    id uuid primary key,
    org_id uuid not null,
    name varchar(64) not null check (char_length(name) between 1 and 64),
    description varchar(500) not null default '',
    -- Patterns `type:permission` or `type:*`, 1 to 200 of them.
    permissions text[] not null check (cardinality(permissions) between 1 and 200),
    created_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz
);
-- Names are unique per org among live roles, case-insensitively (ALREADY_EXISTS ROLE_NAME_TAKEN).
create unique index roles_org_name_key on permissions.roles (org_id, lower(name)) where deleted_at is null;
create index roles_org_created on permissions.roles (org_id, created_at);

alter table permissions.roles enable row level security;
alter table permissions.roles force row level security;
-- Roles never live in the platform scope: an org sees and writes only its own.
create policy tenant_isolation on permissions.roles
    using (org_id = permissions.current_org_id())
    with check (org_id = permissions.current_org_id());

-- A schema change re-expands every live role of every org (rule 17) in the registration's
-- transaction. Listing the orgs that have roles spans orgs, so it runs as the schema owner
-- (SECURITY DEFINER, bypassing RLS) and returns only org ids.
create function permissions.orgs_with_roles()
returns setof uuid
language sql stable security definer set search_path = permissions, pg_temp as $$
    select distinct org_id from permissions.roles where deleted_at is null order by 1
$$;
