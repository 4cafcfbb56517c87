-- Time entries and running timers (spec Data model, Rules 21-24).

alter table tasks.tasks add column tracked_seconds bigint not null default 0 check (tracked_seconds >= 0);

create table tasks.time_entries (
    id uuid primary key,
    org_id uuid not null,
    user_id uuid not null,
    task_id uuid,
    board_id uuid,
    started_at timestamptz not null,
    -- NULL while the timer runs.
    ended_at timestamptz,
    duration_seconds int,
    description text not null default '' check (char_length(description) <= 2000),
    billable bool not null default true,
    source text not null check (source in ('timer', 'manual', 'import')),
    auto_stopped bool not null default false,
    invoice_id uuid,
    invoiced_at timestamptz,
    deleted_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint time_entries_ended_after_start check (ended_at is null or ended_at > started_at),
    constraint time_entries_duration check (duration_seconds between 1 and 86400),
    constraint time_entries_finished_have_duration check ((ended_at is null) = (duration_seconds is null)),
    -- Purging a task keeps its entries with task_id = NULL (Rule 24).
    constraint time_entries_task_fkey foreign key (org_id, task_id) references tasks.tasks (org_id, id)
        on delete set null (task_id)
);
-- One running timer per user per organization (Rule 21): of two concurrent starts one wins.
create unique index time_entries_one_running on tasks.time_entries (org_id, user_id)
    where ended_at is null and deleted_at is null;
create index time_entries_task on tasks.time_entries (org_id, task_id, started_at);
create index time_entries_user on tasks.time_entries (org_id, user_id, started_at);
create index time_entries_board on tasks.time_entries (org_id, board_id, started_at);
create index time_entries_unbilled on tasks.time_entries (org_id, started_at) where billable and invoice_id is null;

alter table tasks.time_entries enable row level security;
alter table tasks.time_entries force row level security;
create policy tenant_isolation on tasks.time_entries
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());
