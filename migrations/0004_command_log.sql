-- Accepted commands that carried an Idempotency-Key, written in the same transaction as their
-- events: a retried command finds its original answer here and writes nothing.
CREATE TABLE command_log (
    scope text NOT NULL,          -- whose key it is (tenant/actor); keys never collide across scopes
    idempotency_key text NOT NULL,
    request_hash text NOT NULL,   -- sha256 of the command: same key + other body is refused
    status integer NOT NULL,
    response jsonb NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, idempotency_key)
);

CREATE TRIGGER command_log_append_only
    BEFORE UPDATE OR DELETE ON command_log
    FOR EACH ROW EXECUTE FUNCTION refuse_history_edit();

-- Write-side uniqueness (set validation): what must be unique within a shop is reserved in the
-- same transaction as the events that claim it. 'listing' rows also answer "is this listing in
-- this shop?" for batches of thousands of facts with one query.
CREATE TABLE reservations (
    shop_id uuid NOT NULL,
    kind text NOT NULL,           -- listing | external_id | sku | sale_transaction
    key text NOT NULL,
    aggregate_id uuid NOT NULL,
    PRIMARY KEY (shop_id, kind, key)
);

-- "Which shops does this tenant own?" is asked on every log query.
CREATE INDEX reservations_tenant_shops ON reservations (key) WHERE kind = 'tenant';

CREATE TRIGGER command_log_no_truncate
    BEFORE TRUNCATE ON command_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_edit();
