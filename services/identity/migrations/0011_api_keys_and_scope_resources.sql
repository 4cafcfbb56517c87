-- API keys (tenant table) and the registry of API-key scope resources (global table, rule 13).

create table identity.scope_resources (
    -- `tasks`, `contacts`, ...: the scopes `<resource>:read|write` are valid only for these.
    resource text primary key constraint scope_resources_format check (resource ~ '^[a-z][a-z_]{1,49}$'),
    module text not null,
    description varchar(500) not null default '',
    registered_at timestamptz not null default now()
);

create table identity.api_keys (
    id uuid primary key,
    org_id uuid not null,
    name varchar(200) not null,
    -- `tk_live_` + the first 4 characters of the secret part: enough to recognise a key in a list.
    key_prefix char(12) not null,
    -- SHA-256 of the full key; the key itself is shown once and never stored.
    key_hash bytea not null constraint api_keys_key_hash_key unique,
    scopes text[] not null,
    -- At most the creator's role (ROLE_EXCEEDS_CREATOR); never owner.
    role text not null check (role in ('admin', 'member', 'viewer')),
    expires_at timestamptz not null,
    last_used_at timestamptz,
    last_used_ip inet,
    created_by uuid not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz,
    revoked_by uuid
);
create index api_keys_org_created on identity.api_keys (org_id, created_at desc);
-- Counting an org's active keys (100 at most).
create index api_keys_org_active on identity.api_keys (org_id) where revoked_at is null;

alter table identity.api_keys enable row level security;
alter table identity.api_keys force row level security;
create policy api_keys_tenant on identity.api_keys
    using (org_id = identity.current_org_id())
    with check (org_id = identity.current_org_id());

-- Resolving a key happens before its org is known: this definer function returns only the ids
-- needed to open a tenant transaction (the same pattern as find_invitation).
create function identity.find_api_key(p_key_hash bytea)
    returns table (id uuid, org_id uuid)
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select k.id, k.org_id from identity.api_keys k where k.key_hash = p_key_hash $$;
revoke all on function identity.find_api_key(bytea) from public;

-- GetSessionStatus answers `key:<id>` sids from the primary without knowing the org.
create function identity.api_key_status(p_ids uuid[])
    returns table (id uuid, revoked_at timestamptz, active boolean)
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select k.id, k.revoked_at, (k.revoked_at is null and k.expires_at > now())
          from identity.api_keys k where k.id = any(p_ids) $$;
revoke all on function identity.api_key_status(uuid[]) from public;

do $$
begin
    execute format(
        'create policy api_keys_owner_lookup on identity.api_keys for select to %I using (true)',
        current_user
    );
end $$;
