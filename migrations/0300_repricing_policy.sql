-- The automated repricing policy (streams/repricing.py): where it is in the global log, and the
-- small index it keeps while following it. Both commit in one transaction per page, after the
-- page's price changes were committed (each idempotent per cause), so a crash or a replay from
-- an earlier position re-reads pages whose changes are then found done and not made again.

CREATE SCHEMA IF NOT EXISTS streams;

CREATE TABLE IF NOT EXISTS streams.policy_positions (
    policy text PRIMARY KEY,                 -- 'repricing' (one row per policy that follows the log)
    log_position bigint NOT NULL DEFAULT 0,  -- last pricing_events.notification_id acted on
    events_seen bigint NOT NULL DEFAULT 0,   -- events of interest read (duplicates after a replay included)
    evaluations bigint NOT NULL DEFAULT 0,   -- listings evaluated
    changes bigint NOT NULL DEFAULT 0,       -- of which changed a price
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Which listing uses which rule (from RuleAssigned / RuleUnassigned), for "re-evaluate the
-- listings of rule R" when R is revised; and the position of the latest event that asked for
-- a listing's re-evaluation, so a replay acts only on the latest cause of each listing (an older
-- one was either acted on already or is superseded by the newer).
CREATE TABLE IF NOT EXISTS streams.repricing_listings (
    listing_id uuid PRIMARY KEY,
    shop_id uuid NOT NULL,
    rule_id uuid,                            -- NULL: no rule (unassigned)
    assignment_version bigint NOT NULL,      -- the listing's version of the (un)assignment: moves forward only
    last_trigger bigint NOT NULL DEFAULT 0,  -- log position of the latest event that triggers an evaluation
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS repricing_listings_rule ON streams.repricing_listings (rule_id) WHERE rule_id IS NOT NULL;
