-- The permissions schema, its role permissions_svc, and kit's outbox and inbox tables are created by
-- `trellis migrate` (kit::db::migrate). This context's own tables arrive with its issue.
select 1;
