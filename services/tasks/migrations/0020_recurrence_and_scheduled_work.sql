-- Recurrence rules (spec Data model, Rules 18-20) and the scheduled-work index the sweeps read.

-- An occurrence records the rule and the scheduled time it was created for; the unique pair makes
-- creating an occurrence idempotent (a retried sweep finds it and creates nothing).
alter table tasks.tasks
    add column recurrence_rule_id uuid,
    add column occurrence_at timestamptz,
    add constraint tasks_occurrence_key unique (recurrence_rule_id, occurrence_at);

create table tasks.recurrence_rules (
    id uuid primary key,
    org_id uuid not null,
    board_id uuid not null,
    -- The task the template was snapshotted from (kept for reference; it may change or go).
    source_task_id uuid not null,
    -- The template (title, description, priority, assignee_id, estimate_minutes, metadata,
    -- checklists) lives in the rule, so no hidden template task can appear in lists, views,
    -- search or counts (ADR 0044).
    template jsonb not null check (jsonb_typeof(template) = 'object'),
    cron_expression text not null check (char_length(cron_expression) between 1 and 100),
    time_zone text not null,
    -- NULL once the rule is disabled or past ends_at.
    next_run_at timestamptz,
    last_run_at timestamptz,
    assignee_strategy text not null default 'same' check (assignee_strategy in ('same', 'rotate', 'round_robin')),
    assignee_pool uuid[] not null default '{}' check (cardinality(assignee_pool) <= 50),
    rotation_index int not null default 0 check (rotation_index >= 0),
    due_offset_days int check (due_offset_days between 0 and 365),
    starts_at timestamptz not null,
    ends_at timestamptz,
    include_subtasks bool not null default false,
    include_checklists bool not null default true,
    enabled bool not null default true,
    occurrences_created int not null default 0,
    created_by uuid,
    version bigint not null default 1,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    constraint recurrence_rules_org_id_id_key unique (org_id, id),
    constraint recurrence_rules_ends_after_start check (ends_at is null or ends_at > starts_at),
    constraint recurrence_rules_board_fkey foreign key (org_id, board_id) references tasks.boards (org_id, id)
);
create index recurrence_rules_board on tasks.recurrence_rules (org_id, board_id);
create index recurrence_rules_newest on tasks.recurrence_rules (org_id, created_at desc, id desc) where deleted_at is null;

alter table tasks.recurrence_rules enable row level security;
alter table tasks.recurrence_rules force row level security;
create policy tenant_isolation on tasks.recurrence_rules
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());

-- What the sweeps have to do and when: ids and times only, written in the same transaction as
-- the row it refers to. Tenant transactions see their own rows; a sweep transaction (which sets
-- app.sweep) may read every organization's rows to find what is due, then handles each item in
-- a tenant transaction of its organization.
create table tasks.scheduled_work (
    org_id uuid not null,
    kind text not null check (kind in ('recurrence', 'overdue', 'due_soon', 'timer_cap', 'purge')),
    ref_id uuid not null,
    due_at timestamptz not null,
    primary key (kind, ref_id)
);
create index scheduled_work_due on tasks.scheduled_work (kind, due_at);

alter table tasks.scheduled_work enable row level security;
alter table tasks.scheduled_work force row level security;
create policy tenant_isolation on tasks.scheduled_work
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());
create policy sweep_read on tasks.scheduled_work for select
    using (current_setting('app.sweep', true) = 'on');
