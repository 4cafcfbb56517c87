-- The schema of the `evtest` module the event tests run: one tenant table an event handler
-- writes its effect to. Kit's own tables (outbox, inbox) are installed before this.

-- One row per handled event; `seq` records the order the handler ran in. No unique constraint on
-- event_id on purpose: the tests count duplicates rather than have the database refuse them.
create table evtest.effects (
    seq bigint generated always as identity primary key,
    org_id uuid not null,
    event_id uuid not null,
    event_type text not null,
    label text not null
);
create index effects_org_seq on evtest.effects (org_id, seq);

alter table evtest.effects enable row level security;
alter table evtest.effects force row level security;
create policy effects_tenant on evtest.effects using (org_id = evtest.current_org_id());
