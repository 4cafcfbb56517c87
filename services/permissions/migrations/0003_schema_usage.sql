-- Schema changes are refused while stored relationships would be orphaned (RELATION_IN_USE,
-- DEFINITION_IN_USE). The check spans every org, so it runs as the schema owner (SECURITY
-- DEFINER, bypassing RLS) and returns only counts and one sample per group, never org data in bulk.

create function permissions.relation_usage(p_type text, p_relation text)
returns table (subject_type text, subject_relation text, wildcard bool, n bigint, sample text)
language sql stable security definer set search_path = permissions, pg_temp as $$
    select r.subject_type::text, r.subject_relation::text, r.subject_id = '*', count(*),
           min(r.resource_type || ':' || r.resource_id || '#' || r.relation || '@' || r.subject_type || ':' || r.subject_id
               || case when r.subject_relation = '' then '' else '#' || r.subject_relation end)
      from permissions.relationships r
     where r.resource_type = p_type and r.relation = p_relation
     group by 1, 2, 3
$$;

create function permissions.definition_usage(p_type text)
returns table (n bigint, sample text)
language sql stable security definer set search_path = permissions, pg_temp as $$
    select count(*),
           min(r.resource_type || ':' || r.resource_id || '#' || r.relation || '@' || r.subject_type || ':' || r.subject_id)
      from permissions.relationships r
     where r.resource_type = p_type or r.subject_type = p_type
$$;
