-- Email: the log of every message (status, attempts, provider answer; never a body or a link)
-- and the transient queue of rendered messages waiting to be sent. Both are tenant-owned (RLS
-- enabled and forced); mail that belongs to no tenant (password resets) lives under the platform
-- org 00000000-0000-0000-0000-000000000000, which no org's API can read.

create table notifications.email_log (
    id uuid primary key,
    org_id uuid not null,
    user_id uuid,
    to_address varchar(254) not null,
    template_slug text not null check (template_slug ~ '^[a-z0-9_]{1,100}$'),
    locale text not null,
    subject varchar(500) not null,
    -- queued → sent (→ delivered | bounced, from provider feedback); failed is final.
    status text not null default 'queued' check (status in ('queued', 'sent', 'delivered', 'bounced', 'failed')),
    -- smtp, or file for the development sink.
    provider text not null check (provider in ('smtp', 'file')),
    -- The Message-ID the email carries, set when it is accepted.
    provider_message_id text,
    attempts int not null default 0 check (attempts >= 0),
    -- The last SMTP error (or rendering error); never the message.
    error varchar(2000),
    notification_id uuid,
    digest_id uuid,
    -- The event a transactional email came from.
    event_id uuid,
    created_at timestamptz not null default now(),
    sent_at timestamptz,
    -- A redelivered event sends nothing more (deduplication per event, template and address).
    constraint email_log_event_key unique (org_id, event_id, template_slug, to_address)
);
create index email_log_recent on notifications.email_log (org_id, created_at desc);
create index email_log_to_address on notifications.email_log (org_id, to_address, created_at desc);

-- The rendered MIME message (which may hold a reset or invitation link) lives only here, and the
-- row is deleted at the email's final status, so links never outlive sending.
create table notifications.email_queue (
    email_log_id uuid primary key references notifications.email_log (id) on delete cascade,
    org_id uuid not null,
    message bytea not null,
    next_attempt_at timestamptz not null default now()
);
create index email_queue_org on notifications.email_queue (org_id);
create index email_queue_due on notifications.email_queue (next_attempt_at);

alter table notifications.email_log enable row level security;
alter table notifications.email_log force row level security;
create policy tenant_isolation on notifications.email_log
    using (org_id = notifications.current_org_id()) with check (org_id = notifications.current_org_id());

alter table notifications.email_queue enable row level security;
alter table notifications.email_queue force row level security;
create policy tenant_isolation on notifications.email_queue
    using (org_id = notifications.current_org_id()) with check (org_id = notifications.current_org_id());

-- The sender's cross-tenant scan: only (org_id, email_log_id) of due messages; each is then sent
-- inside a tenant transaction of its org. A SECURITY DEFINER function runs as its owner, so it
-- pins its search_path.
create function notifications.due_emails(p_limit int)
    returns table (org_id uuid, email_log_id uuid)
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$
        select q.org_id, q.email_log_id from notifications.email_queue q
        where q.next_attempt_at <= now() order by q.next_attempt_at limit p_limit
    $$;
revoke all on function notifications.due_emails(int) from public;

-- Under FORCE ROW LEVEL SECURITY the owner is subject to the policies too (unless it is a
-- superuser or BYPASSRLS); this policy lets the definer function, and only the owner role, see
-- the queue across tenants. The service role is not the owner and gains nothing from it.
do $$
begin
    execute format(
        'create policy email_queue_owner_scan on notifications.email_queue for select to %I using (true)',
        current_user
    );
end $$;

-- What mail needs to know of users: a projection of identity's user events (registered,
-- email_verified, email_changed). Users belong to no single org, so there is no org_id and no
-- RLS; nothing here is secret beyond the address itself.
create table notifications.recipients (
    user_id uuid primary key,
    email varchar(254) not null,
    email_verified bool not null default false,
    display_name varchar(201) not null default '',
    -- BCP 47; mail falls back to the org default, then `en`.
    locale text not null default 'en',
    time_zone text not null default 'UTC',
    active bool not null default true,
    updated_at timestamptz not null default now()
);
