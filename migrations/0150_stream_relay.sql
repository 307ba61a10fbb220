-- The Kafka path (streams/): where the relay is in the global log, and where each Kafka sink is
-- in each topic partition it consumes.

CREATE SCHEMA IF NOT EXISTS streams;

COMMENT ON SCHEMA streams IS
    'Progress of the Kafka path: the relay''s published log position and the sinks'' consumed offsets.';

-- The relay publishes pricing_events to Kafka in log order and records here the last position
-- the broker acknowledged, only after the acknowledgement. A restart resumes after it: an event
-- is never skipped; events published but not yet recorded are published again (harmless
-- duplicates: every sink is idempotent per event).
CREATE TABLE IF NOT EXISTS streams.relay_positions (
    relay text PRIMARY KEY,                  -- a relay's name (several may publish to different clusters)
    log_position bigint NOT NULL DEFAULT 0,  -- last pricing_events.notification_id acknowledged by the broker
    events_published bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A Kafka sink (a faust worker applying projections) records the last offset it applied of each
-- topic partition in the same transaction as the view rows those records produced. Records at
-- or below it are skipped when redelivered, so redelivery changes nothing.
CREATE TABLE IF NOT EXISTS streams.sink_offsets (
    sink text NOT NULL,                      -- the sink's name (its faust app id)
    topic text NOT NULL,
    partition integer NOT NULL,
    last_offset bigint NOT NULL DEFAULT -1,  -- last applied offset; -1 = nothing applied yet
    records_applied bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sink, topic, partition)
);
