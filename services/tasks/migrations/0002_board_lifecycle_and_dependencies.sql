-- Completion notes and estimates on tasks, and task dependencies (spec Data model, Rules 9-11).

alter table tasks.tasks
    add column resolution_notes text not null default '' check (char_length(resolution_notes) <= 5000),
    add column estimate_minutes int check (estimate_minutes between 1 and 100000);

-- Trash listings by batch.
create index tasks_delete_batch on tasks.tasks (org_id, delete_batch_id) where delete_batch_id is not null;

-- "task_id depends on depends_on_id": depends_on_id is the blocker. The graph stays acyclic: every
-- insert runs its reachability check under a per-organization transaction advisory lock.
create table tasks.dependencies (
    id uuid primary key,
    org_id uuid not null,
    task_id uuid not null,
    depends_on_id uuid not null,
    type text not null default 'finish_to_start'
        check (type in ('finish_to_start', 'start_to_start', 'finish_to_finish', 'start_to_finish')),
    lag_days int not null default 0 check (lag_days between -365 and 365),
    created_by uuid,
    created_at timestamptz not null default now(),
    constraint dependencies_pair_key unique (task_id, depends_on_id),
    constraint dependencies_not_self check (task_id <> depends_on_id),
    constraint dependencies_task_fkey foreign key (org_id, task_id) references tasks.tasks (org_id, id) on delete cascade,
    constraint dependencies_blocker_fkey foreign key (org_id, depends_on_id)
        references tasks.tasks (org_id, id) on delete cascade
);
create index dependencies_blocker on tasks.dependencies (org_id, depends_on_id);
create index dependencies_task on tasks.dependencies (org_id, task_id);

alter table tasks.dependencies enable row level security;
alter table tasks.dependencies force row level security;
create policy tenant_isolation on tasks.dependencies
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());
