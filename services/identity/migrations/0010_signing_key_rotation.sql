-- Signing-key rotation (spec rule 14). A key moves next -> active -> retiring -> retired:
--   * a `next` key is published in the JWKS before it signs anything; `activate_after` is the
--     earliest moment it may become active, never less than the publish lead after `created_at`;
--   * `replaced_at` is when an active key was replaced; it stays published as `retiring` until
--     replaced_at + the retiring period, then becomes `retired` (and its private half is erased).

alter table identity.signing_keys
    add column activate_after timestamptz,
    add column replaced_at timestamptz;

-- The first key of a cell was active from the start.
update identity.signing_keys set activate_after = coalesce(activated_at, created_at) where activate_after is null;
alter table identity.signing_keys alter column activate_after set not null, alter column activate_after set default now();

alter table identity.signing_keys
    add constraint signing_keys_retiring_has_replaced_at
        check (status not in ('retiring', 'retired') or replaced_at is not null),
    add constraint signing_keys_active_has_activated_at
        check (status = 'next' or activated_at is not null);

-- At most one key waits to become active; with signing_keys_one_active this keeps rotation
-- race-free across replicas (the scheduler also serialises on an advisory lock).
create unique index signing_keys_one_next on identity.signing_keys (status) where status = 'next';
