-- The changelog is retained for PERMISSIONS_CHANGELOG_RETENTION (7 days by default) and feeds
-- Watch. The sweep spans every org, so it runs as the schema owner (SECURITY DEFINER, bypassing
-- RLS) and returns only the number of rows removed.

create function permissions.purge_changelog(p_retention_seconds double precision)
returns bigint
language sql volatile security definer set search_path = permissions, pg_temp as $$
    with gone as (
        delete from permissions.changelog
         where created_at < now() - make_interval(secs => p_retention_seconds)
     returning 1)
    select count(*) from gone
$$;
