-- Scheduled jobs (kit::jobs): one row per periodic job of the service. `next_run_at` is the
-- watermark: the replica that locks the row (FOR UPDATE SKIP LOCKED) runs the occurrence due at
-- that time and advances it in the same transaction, so each occurrence runs once across replicas
-- and one that fell due while the service was down is run after the restart. No org_id: jobs
-- belong to the service; each handler does its tenant work in tenant transactions.
create table kit_jobs (
    name text primary key,
    next_run_at timestamptz not null,
    last_occurrence_at timestamptz,
    last_run_at timestamptz,
    run_count bigint not null default 0,
    last_error text
);
