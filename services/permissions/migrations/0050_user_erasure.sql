-- `identity.user.erased` deletes the user's relationships in every organization (ADR 0019). The
-- consumer's transaction is scoped to one tenant, so listing the orgs where a subject appears
-- runs as the schema owner (SECURITY DEFINER, bypassing RLS) and returns only org ids; each org's
-- relationships are then deleted under that org's scope.
create function permissions.orgs_with_subject(p_type text, p_id text)
returns setof uuid
language sql stable security definer set search_path = permissions, pg_temp as $$
    select distinct org_id from permissions.relationships
     where subject_type = p_type and subject_id = p_id order by 1
$$;
