-- Overdue detection (Rules 16-17): how many daily task.overdue events a task has had since it
-- became overdue, and its entry in scheduled_work while it is live, open and has a due date.
alter table tasks.tasks
    add column overdue_days_emitted smallint check (overdue_days_emitted between 0 and 30),
    add column due_soon_emitted bool not null default false;

-- Changing the due date or closing the task starts the count again (Rule 17).
create function tasks.reset_overdue() returns trigger
    language plpgsql
    as $$
begin
    if new.due_date is distinct from old.due_date
        or (new.status in ('done', 'cancelled') and old.status not in ('done', 'cancelled')) then
        new.overdue_days_emitted := null;
        new.due_soon_emitted := false;
    end if;
    return new;
end $$;
create trigger tasks_reset_overdue before update of due_date, status on tasks.tasks
    for each row execute function tasks.reset_overdue();

-- Keeps the task's 'overdue' entry of scheduled_work: due at the due date while the task is live,
-- open and not yet counted; removed otherwise. The sweep moves it forward a day per event. Runs in
-- the task's tenant transaction, so the entry commits with the change.
create function tasks.schedule_overdue() returns trigger
    language plpgsql
    as $$
begin
    if new.deleted_at is null and new.due_date is not null and new.status not in ('done', 'cancelled') then
        if tg_op = 'INSERT' or new.overdue_days_emitted is null then
            insert into tasks.scheduled_work (org_id, kind, ref_id, due_at)
                values (new.org_id, 'overdue', new.id, new.due_date)
                on conflict (kind, ref_id) do update set due_at = excluded.due_at;
        elsif old.deleted_at is not null then
            -- Restored: the count goes on at the next sweep.
            insert into tasks.scheduled_work (org_id, kind, ref_id, due_at)
                values (new.org_id, 'overdue', new.id, now())
                on conflict (kind, ref_id) do update set due_at = excluded.due_at;
        end if;
    else
        delete from tasks.scheduled_work where kind = 'overdue' and ref_id = new.id;
    end if;
    return null;
end $$;
create trigger tasks_schedule_overdue_insert after insert on tasks.tasks
    for each row when (new.due_date is not null) execute function tasks.schedule_overdue();
create trigger tasks_schedule_overdue_update after update of due_date, status, deleted_at on tasks.tasks
    for each row execute function tasks.schedule_overdue();

-- Tasks that already have a due date.
insert into tasks.scheduled_work (org_id, kind, ref_id, due_at)
    select org_id, 'overdue', id, due_date from tasks.tasks
    where deleted_at is null and due_date is not null and status not in ('done', 'cancelled')
    on conflict do nothing;
