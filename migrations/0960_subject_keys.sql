-- Crypto-shredding (issue 16 item 5): one key per data subject, outside the immutable log.
-- Personal data inside events is sealed under its subject's key (domain/personal.py); erasing
-- the subject deletes its row here, and every value sealed under the key reads as erased from
-- then on. The key is stored wrapped (AES-256-GCM under a key derived from ETSYPRO_SECRET_KEY,
-- the subject id authenticated), so a copy of this table alone opens nothing.
CREATE TABLE subject_keys (
    subject_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('account', 'buyer', 'reason', 'attempt', 'lookup')),  -- lookup: a tenant's key for lookup hashes
    owner uuid,                 -- the account that wrote a reason: erasing the account erases it too
    lookup text,                -- keyed hash that finds a buyer's subject again (shop + name), or the
                                -- attempts (failed logins naming no account) that named a username
    wrapped_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX subject_keys_buyer ON subject_keys (tenant_id, lookup) WHERE kind = 'buyer';
CREATE INDEX subject_keys_lookup ON subject_keys (tenant_id, kind, lookup) WHERE kind <> 'buyer';
CREATE INDEX subject_keys_owner ON subject_keys (owner) WHERE owner IS NOT NULL;
