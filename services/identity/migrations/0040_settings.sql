-- Organization and user settings (spec rule 28, ADR 0017).

-- What the modules registered: global, read by every org.
create table identity.setting_definitions (
    namespace text not null constraint setting_definitions_namespace_format
        check (namespace ~ '^[a-z][a-z0-9_]{0,49}$' and namespace <> 'custom'),
    key text not null constraint setting_definitions_key_format check (key ~ '^[a-z][a-z0-9_.]{0,99}$'),
    -- The module that registered the namespace; another module may not register into it.
    module text not null,
    scopes text[] not null constraint setting_definitions_scopes
        check (cardinality(scopes) > 0 and scopes <@ array['org', 'user']),
    default_value jsonb,
    json_schema jsonb,
    -- Who writes the user-scope value: the user (self) or nobody but org admins (admin).
    writable_by text not null default 'self' check (writable_by in ('admin', 'self')),
    registered_at timestamptz not null default now(),
    primary key (namespace, key)
);

create table identity.settings (
    id uuid primary key,
    org_id uuid not null references identity.organizations (id),
    scope text not null check (scope in ('org', 'user')),
    -- The org itself for org scope, the user for user scope.
    scope_id uuid not null,
    namespace text not null check (namespace ~ '^[a-z][a-z0-9_]{0,49}$'),
    key text not null check (key ~ '^[a-z][a-z0-9_.]{0,99}$'),
    -- At most 16 KB serialized (the service checks first; this is the backstop).
    value jsonb not null constraint settings_value_size check (octet_length(value::text) <= 16384),
    updated_by uuid,
    updated_at timestamptz not null default now(),
    constraint settings_scope_key unique (org_id, scope, scope_id, namespace, key)
);
create index settings_org_scope_namespace on identity.settings (org_id, scope, scope_id, namespace);

alter table identity.settings enable row level security;
alter table identity.settings force row level security;
create policy settings_tenant on identity.settings
    using (org_id = identity.current_org_id())
    with check (org_id = identity.current_org_id());
