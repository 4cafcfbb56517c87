-- Checklists of a task and their items (spec Data model, Rule 14).

create table tasks.checklists (
    id uuid primary key,
    org_id uuid not null,
    task_id uuid not null,
    title text not null check (char_length(title) between 1 and 200),
    position text collate "C" not null check (position ~ '^[0-9A-Za-z]+$'),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint checklists_org_id_id_key unique (org_id, id),
    constraint checklists_task_fkey foreign key (org_id, task_id) references tasks.tasks (org_id, id) on delete cascade
);
create index checklists_task on tasks.checklists (org_id, task_id, position);

create table tasks.checklist_items (
    id uuid primary key,
    org_id uuid not null,
    checklist_id uuid not null,
    title text not null check (char_length(title) between 1 and 500),
    done bool not null default false,
    done_by uuid,
    done_at timestamptz,
    position text collate "C" not null check (position ~ '^[0-9A-Za-z]+$'),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    -- done_at and done go together: unticking clears it.
    constraint checklist_items_done_at check (done = (done_at is not null)),
    constraint checklist_items_checklist_fkey foreign key (org_id, checklist_id)
        references tasks.checklists (org_id, id) on delete cascade
);
create index checklist_items_order on tasks.checklist_items (org_id, checklist_id, position);

alter table tasks.checklists enable row level security;
alter table tasks.checklists force row level security;
create policy tenant_isolation on tasks.checklists
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());

alter table tasks.checklist_items enable row level security;
alter table tasks.checklist_items force row level security;
create policy tenant_isolation on tasks.checklist_items
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());
