-- Onboarding checklists (spec rule 31, ADR 0017).

-- Registered steps: global. A step its module stops registering gets retired_at and is hidden;
-- the progress rows stay.
create table identity.onboarding_steps (
    module text not null,
    step text not null check (step ~ '^[a-z][a-z0-9_]{1,49}$'),
    title varchar(200) not null,
    required boolean not null default false,
    position int not null default 0,
    scope text not null check (scope in ('user', 'org')),
    -- The routing key whose event completes the step for its actor.
    completed_by_event text,
    registered_at timestamptz not null default now(),
    retired_at timestamptz,
    primary key (module, step)
);
create index onboarding_steps_event on identity.onboarding_steps (completed_by_event)
    where completed_by_event is not null and retired_at is null;

create table identity.onboarding_progress (
    org_id uuid not null references identity.organizations (id),
    -- The user, or the org itself for org-scope steps.
    subject_id uuid not null,
    module text not null,
    step text not null,
    completed_at timestamptz not null default now(),
    completed_by uuid,
    primary key (org_id, subject_id, module, step)
);

create table identity.onboarding_dismissals (
    org_id uuid not null references identity.organizations (id),
    user_id uuid not null,
    dismissed_at timestamptz not null default now(),
    primary key (org_id, user_id)
);

alter table identity.onboarding_progress enable row level security;
alter table identity.onboarding_progress force row level security;
create policy onboarding_progress_tenant on identity.onboarding_progress
    using (org_id = identity.current_org_id())
    with check (org_id = identity.current_org_id());
alter table identity.onboarding_dismissals enable row level security;
alter table identity.onboarding_dismissals force row level security;
create policy onboarding_dismissals_tenant on identity.onboarding_dismissals
    using (org_id = identity.current_org_id())
    with check (org_id = identity.current_org_id());
