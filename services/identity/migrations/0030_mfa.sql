-- Multi-factor authentication (spec: MFA, rule 18; ADR 0015): TOTP secrets, backup codes, and the
-- short-lived challenges that sit between a correct password and a session. Global tables (no
-- org_id): only identity's sign-in code reads them.

-- One TOTP secret per user. confirmed_at stays NULL until Verify accepts a code; users.mfa_enabled
-- is set in the same transaction. The secret is AES-256-GCM ciphertext (nonce || ciphertext+tag,
-- bound to the user id) under the key named by key_id.
create table identity.mfa_totp (
    user_id uuid primary key references identity.users (id) on delete cascade,
    secret_ciphertext bytea not null,
    key_id text not null,
    confirmed_at timestamptz,
    -- The 30 s step of the last accepted code: a code of this step or an earlier one is a replay.
    last_used_step bigint,
    created_at timestamptz not null default now()
);

-- Exactly 10 per generation; a new generation deletes the previous one. Argon2id PHC strings.
create table identity.mfa_backup_codes (
    id uuid primary key,
    user_id uuid not null references identity.users (id) on delete cascade,
    code_hash text not null,
    used_at timestamptz,
    created_at timestamptz not null default now()
);
create index mfa_backup_codes_user_unused on identity.mfa_backup_codes (user_id) where used_at is null;

-- A password sign-in waiting for its second factor (kind mfa), or an OIDC login code. Only the
-- SHA-256 of the token is stored. At most 5 attempts, single use, short-lived.
create table identity.login_challenges (
    id uuid primary key,
    user_id uuid not null references identity.users (id) on delete cascade,
    token_hash bytea not null constraint login_challenges_token_hash_key unique,
    kind text not null check (kind in ('mfa', 'oidc_login_code')),
    attempts int not null default 0 check (attempts >= 0),
    expires_at timestamptz not null,
    used_at timestamptz,
    -- Where the sign-in came from (ip, user_agent) and the methods already passed (amr).
    session_hint jsonb not null default '{}',
    created_at timestamptz not null default now()
);
create index login_challenges_user on identity.login_challenges (user_id);
create index login_challenges_expires on identity.login_challenges (expires_at);
