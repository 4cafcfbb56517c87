-- The purge of deleted organizations past their window (spec rule 27, ADR 0018). The scheduler
-- runs without a tenant; this definer function names the due organizations and nothing else.
-- Each one is then purged in its own tenant transaction that locks the row with
-- `for update skip locked`, so replicas running the job at once never purge the same org twice.
create function identity.organizations_due_for_purge(p_limit int)
    returns table (id uuid)
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select o.id from identity.organizations o
          where o.deleted_at is not null and o.purge_after <= now()
          order by o.purge_after limit p_limit $$;
revoke all on function identity.organizations_due_for_purge(int) from public;
