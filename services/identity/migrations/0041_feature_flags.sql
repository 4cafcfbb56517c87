-- Feature flags of the cell (spec rule 29, ADR 0017): a global table, evaluated by identity.

create table identity.feature_flags (
    key text primary key constraint feature_flags_key_format check (key ~ '^[a-z][a-z0-9_]{1,99}$'),
    description varchar(500) not null default '',
    -- The answer when no rule matches.
    enabled boolean not null default false,
    -- Ordered rules: [{"type":"user"|"org","ids":[...],"enabled":bool} | {"type":"percentage","value":0..100,"enabled":bool}].
    rules jsonb not null default '[]' check (jsonb_typeof(rules) = 'array'),
    updated_by text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
