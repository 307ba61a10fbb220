-- Lookup tables for readers, written by the command that makes the fact true, in its transaction
-- (so a shop or rule is listed the moment its command answers, with no projection lag):
-- which tenant owns each shop and what it sells in, and which rules each shop has.
CREATE TABLE shop_directory (
    shop_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    currency text NOT NULL
);
CREATE INDEX shop_directory_tenant ON shop_directory (tenant_id, shop_id);

CREATE TABLE shop_rules (
    shop_id uuid NOT NULL,
    rule_id uuid NOT NULL,
    PRIMARY KEY (shop_id, rule_id)
);

-- Shops and rules made before these tables existed: their opening events hold the facts.
INSERT INTO shop_directory (shop_id, tenant_id, currency)
SELECT r.aggregate_id, r.key, convert_from(e.state, 'UTF8')::jsonb ->> 'currency'
FROM reservations r
JOIN pricing_events e ON e.originator_id = r.aggregate_id AND e.originator_version = 1
WHERE r.kind = 'tenant';

INSERT INTO shop_rules (shop_id, rule_id)
SELECT shop_id, aggregate_id FROM reservations WHERE kind = 'rule';
