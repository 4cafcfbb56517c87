-- Versions of memberships (and, later, teams and team memberships) are drawn from one sequence,
-- so a version only ever grows: also across a removal and a later re-join of the same user, which
-- reuses the (org_id, user_id) key. The permissions service's source-version guard compares them
-- (a late event with an older version never undoes a newer state); see ADR 0014.
create sequence identity.relationship_versions;
alter table identity.org_members alter column version set default nextval('identity.relationship_versions');
-- Existing memberships keep their versions; the sequence continues above all of them (at 1 in an
-- empty cell).
select setval('identity.relationship_versions', coalesce((select max(version) from identity.org_members), 0) + 1, false);

-- Listing members by name or email: a case-insensitive search over users joined to members.
create index org_members_org_joined on identity.org_members (org_id, joined_at, user_id);
