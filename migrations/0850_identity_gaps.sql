-- Identity gaps (issue 16 item 8), beside the Account events that say what happened:
-- a disabled account (every request's principal lookup refuses it in the same query), the
-- one-time password reset tokens admins issue (hashed, like refresh tokens), and the tenants'
-- count of unknown-username failures past the security stream's per-minute budget
-- (domain/security.py), which the next recorded failure takes.
ALTER TABLE accounts ADD COLUMN disabled_at timestamptz;

CREATE TABLE password_resets (
    token_digest bytea PRIMARY KEY,         -- HMAC-SHA256 of the token, which is shown once to the admin
    account_id uuid NOT NULL REFERENCES accounts,
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz                     -- spent: a token sets one password, once
);
CREATE INDEX password_resets_account ON password_resets (account_id);

CREATE TABLE unknown_logins_suppressed (
    tenant_id text PRIMARY KEY,
    attempts bigint NOT NULL DEFAULT 0,     -- not recorded yet: the next recorded event carries them
    since timestamptz NOT NULL DEFAULT now()
);
