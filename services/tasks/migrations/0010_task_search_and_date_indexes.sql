-- Full-text search of tasks (Rule 26): the `simple` configuration (no stemming, so names, codes
-- and words of any language match as typed), title weighted A and description B; GIN-indexed.
alter table tasks.tasks add column search tsvector generated always as (
    setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', description), 'B')
) stored;
create index tasks_search on tasks.tasks using gin (search);

-- Overdue counts and due-date filters over open tasks; calendar and gantt ranges.
create index tasks_open_due on tasks.tasks (org_id, due_date)
    where deleted_at is null and status not in ('done', 'cancelled');
create index tasks_dates on tasks.tasks (org_id, start_date, due_date);
