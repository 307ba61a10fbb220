-- The event store, in exactly the layout the eventsourcing library's PostgreSQL recorder expects
-- (we create it here rather than letting the library do it, so every table we own has a migration).
CREATE TYPE stored_event_uuid AS (
    originator_id uuid,
    originator_version bigint,
    topic text,
    state bytea
);

CREATE TABLE pricing_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
) WITH (autovacuum_vacuum_threshold = 100000000, autovacuum_vacuum_scale_factor = 0.5,
        autovacuum_analyze_threshold = 1000, autovacuum_analyze_scale_factor = 0.01);

CREATE UNIQUE INDEX pricing_events_notification_id_idx ON pricing_events (notification_id ASC);

-- Snapshots are a cache of aggregate state: derived, may be dropped and retaken.
CREATE TABLE pricing_snapshots (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    PRIMARY KEY (originator_id, originator_version)
);
