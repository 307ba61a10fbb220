-- Events a follower could not process (the projector's projections, the repricing policy, the
-- Kafka sinks and the repricing worker): each is parked here with its error, and the follower
-- goes on with the rest of the log, so one poisoned event never holds back other tenants.
-- A parked row commits in the same transaction as the follower's position that passes over
-- the event, so an event is either applied, or parked, or still ahead: never lost, never twice.
-- A parked event is retried (on start, periodically and by `etsypro projections retry`); the
-- row goes once it is applied (or found superseded).

CREATE SCHEMA IF NOT EXISTS streams;

CREATE TABLE IF NOT EXISTS streams.parked_events (
    follower text NOT NULL,                   -- a projection ('price_board'), 'rebuild:<name>', a sink or a policy
    log_position bigint NOT NULL,             -- the event's pricing_events.notification_id
    originator_id uuid NOT NULL,              -- the event's aggregate
    originator_version bigint NOT NULL,
    topic text NOT NULL,                      -- the event's type, as the event store names it
    shop_id uuid,                             -- from event_index (NULL: an event of no shop)
    tenant_id text,                           -- the shop's tenant: who may see this row over HTTP
    error text NOT NULL,                      -- the last failure, 'Type: message'
    attempts integer NOT NULL DEFAULT 1,
    parked_at timestamptz NOT NULL DEFAULT now(),
    last_tried_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower, log_position)
);
CREATE INDEX IF NOT EXISTS parked_events_tenant ON streams.parked_events (tenant_id, follower);

COMMENT ON TABLE streams.parked_events IS
    'Events a follower could not process, with the error: passed over (not holding back the log) and retried.';
