-- Single-use tokens sent by email: email verification, password reset, email change. Only the
-- SHA-256 of a token is stored; a newer token for the same (user, purpose) invalidates the older
-- one (the service marks it used), so at most one per purpose is live.

create table identity.email_tokens (
    id uuid primary key,
    user_id uuid not null references identity.users (id) on delete cascade,
    purpose text not null check (purpose in ('verify_email', 'reset_password', 'change_email')),
    token_hash bytea not null constraint email_tokens_token_hash_key unique,
    new_email varchar(254),
    expires_at timestamptz not null,
    used_at timestamptz,
    created_at timestamptz not null default now()
);
create index email_tokens_user_purpose on identity.email_tokens (user_id, purpose) where used_at is null;
