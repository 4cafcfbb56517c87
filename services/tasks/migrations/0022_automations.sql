-- Board automations and their run log (spec Data model, Rules 29-34).
create table tasks.automations (
    id uuid primary key,
    org_id uuid not null,
    board_id uuid not null,
    name text not null check (char_length(name) between 1 and 200),
    trigger_event text not null,
    -- [{field, op, value}], at most 10; validated by the service on write.
    conditions jsonb not null default '[]' check (jsonb_typeof(conditions) = 'array'),
    -- [{type, ...}], 1-10.
    actions jsonb not null check (jsonb_typeof(actions) = 'array'),
    enabled bool not null default true,
    disabled_reason text,
    run_count bigint not null default 0,
    last_run_at timestamptz,
    last_run_status text check (last_run_status in ('succeeded', 'failed', 'skipped')),
    created_by uuid,
    version bigint not null default 1,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint automations_org_id_id_key unique (org_id, id),
    constraint automations_board_fkey foreign key (org_id, board_id) references tasks.boards (org_id, id)
        on delete cascade
);
create index automations_board_trigger on tasks.automations (org_id, board_id, trigger_event) where enabled;

create table tasks.automation_runs (
    id uuid primary key,
    org_id uuid not null,
    automation_id uuid not null,
    event_id uuid not null,
    task_id uuid,
    depth int not null default 0,
    status text not null check (status in ('succeeded', 'failed', 'skipped')),
    skip_reason text check (skip_reason in ('depth_limit', 'self_trigger', 'throttled')),
    actions_applied jsonb not null default '[]',
    error text,
    started_at timestamptz not null,
    duration_ms int not null default 0,
    -- A redelivered event never runs an automation twice.
    constraint automation_runs_event_key unique (automation_id, event_id),
    constraint automation_runs_automation_fkey foreign key (org_id, automation_id)
        references tasks.automations (org_id, id) on delete cascade
);
create index automation_runs_newest on tasks.automation_runs (org_id, automation_id, started_at desc);

alter table tasks.automations enable row level security;
alter table tasks.automations force row level security;
create policy tenant_isolation on tasks.automations
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());

alter table tasks.automation_runs enable row level security;
alter table tasks.automation_runs force row level security;
create policy tenant_isolation on tasks.automation_runs
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());
