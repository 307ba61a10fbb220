-- Identity: account lookups and credentials, beside the event store.
--
-- The Account aggregate's events (domain/account.py) say what happened; these tables hold what
-- must never enter the immutable log (password hashes, encrypted TOTP secrets, digests of
-- tokens, keys and recovery codes) and what every request needs in one indexed read (who an
-- account is, its roles and shops). Rows that follow an account event are written in the same
-- transaction as the event (commands/identity.py), so they never disagree with the log.

CREATE TABLE accounts (
    account_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    username text NOT NULL UNIQUE,          -- lower-cased; one namespace so login needs no tenant
    kind text NOT NULL CHECK (kind IN ('user', 'service')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_tenant ON accounts (tenant_id);

-- The account's current roles (the aggregate's state), replaced whenever a role event is saved.
CREATE TABLE account_roles (
    account_id uuid NOT NULL REFERENCES accounts,
    role text NOT NULL CHECK (role IN ('admin', 'seller', 'analyst', 'auditor', 'service')),
    shops uuid[],                           -- NULL: every shop of the tenant
    PRIMARY KEY (account_id, role)
);

CREATE TABLE password_credentials (
    account_id uuid PRIMARY KEY REFERENCES accounts,
    hash text NOT NULL,                     -- argon2id, parameters inside the hash string
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE totp_credentials (
    account_id uuid PRIMARY KEY REFERENCES accounts,
    secret_encrypted bytea NOT NULL,        -- AES-GCM under a key derived from ETSYPRO_SECRET_KEY
    confirmed boolean NOT NULL DEFAULT false,
    last_used_step bigint NOT NULL DEFAULT 0 -- a code of this 30 s step or older is a replay
);

CREATE TABLE recovery_codes (
    account_id uuid NOT NULL REFERENCES accounts,
    code_digest bytea NOT NULL,             -- HMAC-SHA256 under a server key
    used_at timestamptz,
    PRIMARY KEY (account_id, code_digest)
);

-- Between a correct password and a correct second factor.
CREATE TABLE mfa_challenges (
    challenge_digest bytea PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES accounts,
    expires_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    used_at timestamptz
);
CREATE INDEX mfa_challenges_expiry ON mfa_challenges (expires_at);

-- A login session: every refresh token issued from one login belongs to one family. Access
-- tokens name their family, so revoking it (logout, reuse) ends the session at once.
CREATE TABLE token_families (
    family_id uuid PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES accounts,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,        -- absolute lifetime: refreshing cannot extend it
    revoked_at timestamptz,
    revoked_reason text
);
CREATE INDEX token_families_account ON token_families (account_id);

CREATE TABLE refresh_tokens (
    token_digest bytea PRIMARY KEY,         -- HMAC-SHA256 of the opaque token
    family_id uuid NOT NULL REFERENCES token_families,
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz                     -- rotated; presenting it again revokes the family
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    key_id uuid PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES accounts,
    key_digest bytea NOT NULL UNIQUE,       -- HMAC-SHA256 of the key, which is shown once
    prefix text NOT NULL,                   -- the key's first characters, to recognise it in a list
    scopes text[] NOT NULL,
    shops uuid[],                           -- NULL: every shop the account may use
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);
