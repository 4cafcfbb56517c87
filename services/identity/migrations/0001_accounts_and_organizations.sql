-- Identity: users and credentials, sessions and refresh tokens, signing keys (global tables), and
-- organizations, memberships and invitations (tenant tables, with RLS).
--
-- Runs as the schema owner with search_path = identity, after kit's tables (outbox, inbox and the
-- functions identity.current_org_id() / identity.current_user_id()). Enum columns are text with a
-- CHECK; tokens are stored only as SHA-256 hashes, passwords as Argon2id PHC strings, private keys
-- encrypted (AES-256-GCM) with the id of the key that sealed them.

-- ---------------------------------------------------------------------------------------------
-- Global tables: no org_id, no RLS. Only identity's auth code reads them.
-- ---------------------------------------------------------------------------------------------

create table identity.users (
    id uuid primary key,
    -- Trimmed and lowercased by the service; the CHECK keeps every writer honest, so the unique
    -- constraint is a case-insensitive uniqueness of addresses.
    email varchar(254) not null constraint users_email_normalized check (email = lower(btrim(email))),
    first_name varchar(100) not null,
    last_name varchar(100) not null default '',
    avatar_key text,
    timezone text not null default 'UTC',
    locale text not null default 'en',
    status text not null default 'active' check (status in ('active', 'deactivated', 'erased')),
    email_verified_at timestamptz,
    -- NULL for users who sign in only through OIDC.
    password_hash text,
    password_changed_at timestamptz,
    failed_login_count int not null default 0,
    locked_until timestamptz,
    last_login_at timestamptz,
    login_count int not null default 0,
    mfa_enabled boolean not null default false,
    deactivated_at timestamptz,
    erase_after timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    -- EMAIL_TAKEN is derived from this constraint's name.
    constraint users_email_key unique (email)
);
create index users_status_erase_after on identity.users (status, erase_after);

-- A session is a family of refresh tokens descending from one sign-in; its id is the `sid` claim.
create table identity.sessions (
    id uuid primary key,
    user_id uuid not null references identity.users (id) on delete cascade,
    -- The organization its access tokens name. No foreign key: organizations are tenant rows
    -- that are soft-deleted and purged on their own schedule; refresh re-checks membership.
    active_org_id uuid,
    amr text[] not null default '{}',
    ip inet,
    user_agent varchar(512),
    created_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    -- Absolute limit (90 days after sign-in), however often the session is refreshed.
    expires_at timestamptz not null,
    revoked_at timestamptz,
    revoke_reason text check (revoke_reason in (
        'logout', 'logout_all', 'user', 'password_changed', 'password_reset', 'reuse_detected', 'deactivated', 'expired'
    )),
    constraint sessions_revocation_has_reason check ((revoked_at is null) = (revoke_reason is null))
);
create index sessions_user_active on identity.sessions (user_id) where revoked_at is null;
create index sessions_user_last_seen on identity.sessions (user_id, last_seen_at desc);

create table identity.refresh_tokens (
    id uuid primary key,
    session_id uuid not null references identity.sessions (id) on delete cascade,
    token_hash bytea not null constraint refresh_tokens_token_hash_key unique,
    issued_at timestamptz not null default now(),
    expires_at timestamptz not null,
    -- Set when the token was exchanged; presenting it again is reuse (the session is revoked).
    rotated_at timestamptz,
    replaced_by uuid references identity.refresh_tokens (id),
    constraint refresh_tokens_rotation check ((rotated_at is null) = (replaced_by is null))
);
create index refresh_tokens_session on identity.refresh_tokens (session_id);

create table identity.signing_keys (
    -- RFC 7638 thumbprint of the public key.
    kid text primary key,
    public_key bytea not null,
    private_key_ciphertext bytea not null,
    -- Which IDENTITY_ENCRYPTION_KEY sealed private_key_ciphertext.
    key_id text not null,
    status text not null check (status in ('next', 'active', 'retiring', 'retired')),
    created_at timestamptz not null default now(),
    activated_at timestamptz,
    retired_at timestamptz
);
-- Exactly one active key; also what makes the first-start insert race-safe across replicas.
create unique index signing_keys_one_active on identity.signing_keys (status) where status = 'active';

-- ---------------------------------------------------------------------------------------------
-- Tenant tables: RLS enabled and forced; policies read identity.current_org_id() and
-- identity.current_user_id(), set by kit's tenant transactions.
-- ---------------------------------------------------------------------------------------------

create table identity.organizations (
    -- This is the org_id of every tenant row in every service.
    id uuid primary key,
    name varchar(100) not null,
    slug varchar(50) not null
        constraint organizations_slug_format check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and char_length(slug) between 3 and 50),
    plan text not null default 'free' check (plan in ('free', 'pro', 'enterprise')),
    personal boolean not null default false,
    logo_key text,
    default_timezone text not null default 'UTC',
    default_locale text not null default 'en',
    billing_email varchar(254),
    -- NULL = unlimited; active members plus pending invitations may not exceed it.
    member_limit int check (member_limit > 0),
    created_by uuid not null references identity.users (id),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    purge_after timestamptz,
    -- SLUG_TAKEN is derived from this constraint's name (slugs are unique across the cell).
    constraint organizations_slug_key unique (slug)
);

create table identity.org_members (
    org_id uuid not null references identity.organizations (id),
    user_id uuid not null references identity.users (id),
    role text not null check (role in ('owner', 'admin', 'member', 'viewer')),
    status text not null default 'active' check (status in ('active', 'suspended')),
    -- +1 on every change; events carry it so consumers can ignore stale ones.
    version bigint not null default 1,
    invited_by uuid references identity.users (id),
    joined_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (org_id, user_id)
);
-- Exactly one owner per organization (rule 19).
create unique index org_members_one_owner on identity.org_members (org_id) where role = 'owner';
create index org_members_user on identity.org_members (user_id);

create table identity.invitations (
    id uuid primary key,
    org_id uuid not null references identity.organizations (id),
    email varchar(254) not null check (email = lower(btrim(email))),
    role text not null check (role in ('admin', 'member', 'viewer')),
    team_ids uuid[] not null default '{}',
    message varchar(1000),
    token_hash bytea not null constraint invitations_token_hash_key unique,
    -- `expired` is computed (pending and expires_at < now()), never stored.
    status text not null default 'pending' check (status in ('pending', 'accepted', 'revoked')),
    invited_by uuid not null references identity.users (id),
    expires_at timestamptz not null,
    accepted_at timestamptz,
    accepted_by uuid references identity.users (id),
    revoked_at timestamptz,
    send_count int not null default 1,
    last_sent_at timestamptz not null default now(),
    created_at timestamptz not null default now()
);
-- One pending invitation per (org, email): INVITATION_PENDING is derived from this index's name.
create unique index invitations_pending_email on identity.invitations (org_id, email) where status = 'pending';
create index invitations_org_status on identity.invitations (org_id, status, created_at desc);

alter table identity.organizations enable row level security;
alter table identity.organizations force row level security;
alter table identity.org_members enable row level security;
alter table identity.org_members force row level security;
alter table identity.invitations enable row level security;
alter table identity.invitations force row level security;

-- A member sees their own memberships in every org (the org switcher), and everyone's in the
-- active org.
create policy org_members_tenant on identity.org_members
    using (org_id = identity.current_org_id() or user_id = identity.current_user_id())
    with check (org_id = identity.current_org_id());

-- The active org, and every org where the current user holds an active membership.
create policy organizations_tenant on identity.organizations
    using (
        id = identity.current_org_id()
        or exists (
            select 1 from identity.org_members m
            where m.org_id = organizations.id
              and m.user_id = identity.current_user_id()
              and m.status = 'active'
        )
    )
    with check (id = identity.current_org_id());

create policy invitations_tenant on identity.invitations
    using (org_id = identity.current_org_id())
    with check (org_id = identity.current_org_id());

-- ---------------------------------------------------------------------------------------------
-- Lookups before the tenant is known. A SECURITY DEFINER function runs as its owner, so it must
-- not trust the caller's search_path, and it returns only the ids needed to open a tenant
-- transaction; everything else is read inside that transaction.
-- ---------------------------------------------------------------------------------------------

create function identity.find_invitation(p_token_hash bytea)
    returns table (id uuid, org_id uuid)
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select i.id, i.org_id from identity.invitations i where i.token_hash = p_token_hash $$;
revoke all on function identity.find_invitation(bytea) from public;

-- Under FORCE ROW LEVEL SECURITY the owner is subject to the policies too. A superuser or a
-- BYPASSRLS owner ignores them; for any other owner, this policy lets the definer function (and
-- only the owner role) read invitations by token. The service role is not the owner and gains
-- nothing from it.
do $$
begin
    execute format(
        'create policy invitations_owner_lookup on identity.invitations for select to %I using (true)',
        current_user
    );
end $$;
