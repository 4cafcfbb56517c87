-- Installed by trellis-kit in every service schema (search_path is that schema).

-- The tenant of the current transaction, NULL outside a tenant transaction. RLS policies use these
-- rather than current_setting(...)::uuid, which fails on the empty string a pooled connection
-- keeps after its first SET LOCAL.
create function current_org_id() returns uuid
    language sql stable
    as $$ select nullif(current_setting('app.org_id', true), '')::uuid $$;

create function current_user_id() returns uuid
    language sql stable
    as $$ select nullif(current_setting('app.user_id', true), '')::uuid $$;

-- Transactional outbox: a handler inserts its events in the same transaction as its change; the
-- relay publishes them with publisher confirms and marks them sent. No org_id column: the relay
-- reads across tenants, and the org travels inside the envelope.
create table outbox (
    id uuid primary key,
    event_type text not null,
    envelope bytea not null,
    created_at timestamptz not null default now(),
    attempts int not null default 0,
    last_error text,
    sent_at timestamptz
);
create index outbox_unsent on outbox (created_at, id) where sent_at is null;

-- Wakes the relay as soon as an event commits (polling remains the fallback).
create function outbox_notify() returns trigger
    language plpgsql
    as $$ begin perform pg_notify(tg_table_schema || '_outbox', ''); return null; end $$;
create trigger outbox_notify after insert on outbox for each statement execute function outbox_notify();

-- Idempotent consumers: an event id is recorded in the same transaction as its effect.
create table inbox (
    consumer text not null,
    event_id uuid not null,
    event_type text not null,
    processed_at timestamptz not null default now(),
    primary key (consumer, event_id)
);
