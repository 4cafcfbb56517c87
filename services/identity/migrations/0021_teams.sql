-- Teams (nestable, at most 5 levels; the service enforces depth and cycles) and their members.
-- Versions come from identity.relationship_versions, like memberships (ADR 0014), so a team
-- membership removed and added again never goes back in version.

create table identity.teams (
    id uuid primary key,
    org_id uuid not null references identity.organizations (id),
    name varchar(100) not null,
    description varchar(1000) not null default '',
    visibility text not null default 'public' check (visibility in ('public', 'private')),
    -- A team of the same organization (checked by the service; the tenant policy hides others).
    parent_team_id uuid references identity.teams (id),
    version bigint not null default nextval('identity.relationship_versions'),
    created_by uuid not null references identity.users (id),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    constraint teams_not_own_parent check (parent_team_id is distinct from id)
);
-- TEAM_NAME_TAKEN is derived from this index's name.
create unique index teams_name_key on identity.teams (org_id, lower(name)) where deleted_at is null;
create index teams_org_parent on identity.teams (org_id, parent_team_id) where deleted_at is null;

create table identity.team_members (
    team_id uuid not null references identity.teams (id),
    user_id uuid not null references identity.users (id),
    org_id uuid not null references identity.organizations (id),
    role text not null check (role in ('maintainer', 'member')),
    version bigint not null default nextval('identity.relationship_versions'),
    added_by uuid references identity.users (id),
    added_at timestamptz not null default now(),
    primary key (team_id, user_id)
);
create index team_members_org_user on identity.team_members (org_id, user_id);

alter table identity.teams enable row level security;
alter table identity.teams force row level security;
alter table identity.team_members enable row level security;
alter table identity.team_members force row level security;

create policy teams_tenant on identity.teams
    using (org_id = identity.current_org_id())
    with check (org_id = identity.current_org_id());
create policy team_members_tenant on identity.team_members
    using (org_id = identity.current_org_id())
    with check (org_id = identity.current_org_id());
