-- Versions of the relationships tasks writes to the permissions service (board placement and
-- members, task placement and assignee) come from one sequence, so a later change of a fact always
-- carries a higher source version than an earlier one, whichever path (direct write or the staged
-- event) delivers it first.
create sequence tasks.relationship_versions;
