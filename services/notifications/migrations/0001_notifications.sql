-- In-app (and later email/push) notifications: one row per (event, user). Tenant-owned: RLS
-- enabled and forced with org_id = notifications.current_org_id() (kit's function; NULL outside a
-- tenant transaction, so a query that forgets its tenant sees nothing).

create table notifications.notifications (
    id uuid primary key,
    org_id uuid not null,
    user_id uuid not null,
    -- The event the notification came from; with user_id it makes redelivery harmless (Rule 1),
    -- even after the inbox is purged.
    event_id uuid not null,
    type text not null check (char_length(type) between 1 and 100),
    reason text not null check (reason in ('assigned', 'unassigned', 'mentioned', 'approver', 'subject', 'owner',
        'participant', 'created', 'watching', 'admin', 'system')),
    actor_kind text not null check (actor_kind in ('user', 'api_key', 'service', 'system', 'anonymous')),
    -- A uuid for users and API keys, a name for services, empty for the system.
    actor_id text not null default '',
    entity_type text,
    entity_id uuid,
    title text not null check (char_length(title) between 1 and 200),
    body text not null default '' check (char_length(body) <= 2000),
    url text not null default '' check (char_length(url) <= 1000),
    data jsonb not null default '{}' check (jsonb_typeof(data) = 'object' and octet_length(data::text) <= 8192),
    -- false when the user's channels exclude in_app: the row still feeds email, push and digests,
    -- but lists and counts never show it (Rule 7).
    in_app bool not null default true,
    seen_at timestamptz,
    read_at timestamptz,
    created_at timestamptz not null default now(),
    constraint notifications_event_user_key unique (org_id, event_id, user_id),
    constraint notifications_entity_both check ((entity_type is null) = (entity_id is null))
);
-- The inbox list (newest first) and its keyset pagination.
create index notifications_inbox on notifications.notifications (org_id, user_id, created_at desc, id desc)
    where in_app;
-- Unread and unseen counts.
create index notifications_unread on notifications.notifications (org_id, user_id) where in_app and read_at is null;
create index notifications_unseen on notifications.notifications (org_id, user_id) where in_app and seen_at is null;

alter table notifications.notifications enable row level security;
alter table notifications.notifications force row level security;
create policy tenant_isolation on notifications.notifications
    using (org_id = notifications.current_org_id()) with check (org_id = notifications.current_org_id());
