-- The read side lives in its own schema, `analytics`: every table in it is derived from the
-- event log by a projection (projections/), can be dropped and rebuilt by replay, and is what
-- analysts query (docs/views.md documents each column).
CREATE SCHEMA IF NOT EXISTS analytics;

COMMENT ON SCHEMA analytics IS
    'Read models projected from the event log (pricing_events). Derived data: rebuilt by replay, never edited by hand.';

-- Where each projection is in the global log. A projection's view rows and its row here
-- commit in the same transaction, which is what makes it exactly-once in effect: after a crash
-- the projection resumes from the position its last committed rows correspond to.
CREATE TABLE IF NOT EXISTS analytics.projection_tracking (
    projection text PRIMARY KEY,            -- a view's name, or 'rebuild:<name>' for a rebuild in progress
    log_position bigint NOT NULL DEFAULT 0, -- last applied pricing_events.notification_id
    events_applied bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Buckets: every time bucket is date_bin(width, t, origin) with this origin, a Monday at
-- midnight UTC, so hour and day buckets align to UTC and week buckets start on Mondays
-- (the same convention as TimescaleDB's time_bucket).
CREATE OR REPLACE FUNCTION analytics.bucket(width interval, t timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN date_bin(width, t, TIMESTAMPTZ '2000-01-03 00:00:00+00');

COMMENT ON FUNCTION analytics.bucket(interval, timestamptz) IS
    'Start of the time bucket of width `width` (1 hour, 1 day, 7 days) containing t; weeks start Monday 00:00 UTC.';
