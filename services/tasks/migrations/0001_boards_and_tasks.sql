-- Boards, their columns, tasks and watchers. Every table is tenant-owned: org_id, Row-Level
-- Security enabled and forced with the policy org_id = tasks.current_org_id() (installed by kit;
-- NULL outside a tenant transaction, so a query that forgets its tenant sees nothing), and
-- foreign keys that include org_id, so a row can never point into another organization.

create table tasks.boards (
    id uuid primary key,
    org_id uuid not null,
    name text not null check (char_length(name) between 1 and 200),
    -- Prefix of the task keys (ENG-42).
    key text not null check (key ~ '^[A-Z][A-Z0-9]{1,9}$'),
    description text not null default '' check (char_length(description) <= 10000),
    -- Only the default rendering; every view works on every board.
    view_type text not null default 'kanban' check (view_type in ('kanban', 'list', 'calendar', 'gantt')),
    visibility text not null default 'org' check (visibility in ('org', 'private')),
    team_id uuid,
    settings jsonb not null default '{"enforce_wip_limits": false, "enforce_dependencies": false}',
    -- Task numbers come from UPDATE ... SET next_task_number = next_task_number + 1 RETURNING in the
    -- creating transaction: unique per board, never reused.
    next_task_number int not null default 1 check (next_task_number >= 1),
    is_default bool not null default false,
    -- NULL for boards the platform created (the default board).
    created_by uuid,
    archived_at timestamptz,
    deleted_at timestamptz,
    delete_batch_id uuid,
    version bigint not null default 1,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint boards_org_id_id_key unique (org_id, id)
);
create unique index boards_org_key on tasks.boards (org_id, key) where deleted_at is null;
-- At most one default board per organization; CreateTask creates it on first use with
-- INSERT ... ON CONFLICT DO NOTHING, so concurrent first tasks agree on one board.
create unique index boards_one_default on tasks.boards (org_id) where is_default;

create table tasks.board_columns (
    id uuid primary key,
    org_id uuid not null,
    board_id uuid not null,
    name text not null check (char_length(name) between 1 and 100),
    -- The status a task takes when moved here.
    status text not null
        check (status in ('backlog', 'todo', 'in_progress', 'in_review', 'blocked', 'done', 'cancelled')),
    -- Fractional key: base-62 digits compared bytewise.
    position text collate "C" not null check (position ~ '^[0-9A-Za-z]+$'),
    color text check (color ~ '^#[0-9A-Fa-f]{6}$'),
    wip_limit int check (wip_limit between 1 and 999),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint board_columns_org_id_id_key unique (org_id, id),
    -- Lets tasks reference (org, board, column), so a task's column is always of its board.
    constraint board_columns_org_board_id_key unique (org_id, board_id, id),
    constraint board_columns_board_fkey foreign key (org_id, board_id)
        references tasks.boards (org_id, id) on delete cascade
);
create index board_columns_order on tasks.board_columns (org_id, board_id, position, id);

create table tasks.tasks (
    id uuid primary key,
    org_id uuid not null,
    board_id uuid not null,
    column_id uuid not null,
    number int not null check (number >= 1),
    parent_id uuid,
    depth smallint not null default 0 check (depth between 0 and 9),
    title text not null check (char_length(title) between 1 and 500),
    description text not null default '' check (char_length(description) <= 50000),
    status text not null default 'todo'
        check (status in ('backlog', 'todo', 'in_progress', 'in_review', 'blocked', 'done', 'cancelled')),
    priority text not null default 'medium' check (priority in ('low', 'medium', 'high', 'urgent')),
    assignee_id uuid,
    -- The creating user or API key; NULL when the platform created the task.
    created_by uuid,
    start_date timestamptz,
    due_date timestamptz,
    started_at timestamptz,
    completed_at timestamptz,
    completed_by uuid,
    -- Fractional key within the column; order is (position, id).
    position text collate "C" not null check (position ~ '^[0-9A-Za-z]+$'),
    metadata jsonb not null default '{}' check (jsonb_typeof(metadata) = 'object'),
    version bigint not null default 1,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz,
    delete_batch_id uuid,
    constraint tasks_org_id_id_key unique (org_id, id),
    constraint tasks_board_number_key unique (board_id, number),
    constraint tasks_due_after_start check (due_date is null or start_date is null or due_date >= start_date),
    -- done and completed_at go together: reopening clears completed_at.
    constraint tasks_done_completed check ((status = 'done') = (completed_at is not null)),
    constraint tasks_board_fkey foreign key (org_id, board_id) references tasks.boards (org_id, id),
    constraint tasks_column_fkey foreign key (org_id, board_id, column_id)
        references tasks.board_columns (org_id, board_id, id),
    constraint tasks_parent_fkey foreign key (org_id, parent_id) references tasks.tasks (org_id, id)
);
create index tasks_column_order on tasks.tasks (org_id, board_id, column_id, position, id) where deleted_at is null;
create index tasks_assignee on tasks.tasks (org_id, assignee_id, status) where deleted_at is null;
create index tasks_parent on tasks.tasks (org_id, parent_id);
-- ListTasks' default order (newest first) and its keyset pagination.
create index tasks_newest on tasks.tasks (org_id, created_at desc, id desc) where deleted_at is null;

create table tasks.watchers (
    org_id uuid not null,
    task_id uuid not null,
    user_id uuid not null,
    reason text not null check (reason in ('manual', 'creator', 'assignee', 'comment', 'mention')),
    created_at timestamptz not null default now(),
    primary key (task_id, user_id),
    constraint watchers_task_fkey foreign key (org_id, task_id) references tasks.tasks (org_id, id) on delete cascade
);
create index watchers_user on tasks.watchers (org_id, user_id);

alter table tasks.boards enable row level security;
alter table tasks.boards force row level security;
create policy tenant_isolation on tasks.boards
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());

alter table tasks.board_columns enable row level security;
alter table tasks.board_columns force row level security;
create policy tenant_isolation on tasks.board_columns
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());

alter table tasks.tasks enable row level security;
alter table tasks.tasks force row level security;
create policy tenant_isolation on tasks.tasks
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());

alter table tasks.watchers enable row level security;
alter table tasks.watchers force row level security;
create policy tenant_isolation on tasks.watchers
    using (org_id = tasks.current_org_id()) with check (org_id = tasks.current_org_id());
