-- TimescaleDB upgrade of the analytics schema, applied only where the server has the extension.
-- On plain PostgreSQL this migration records the settings below and does nothing else: the
-- schema already works there (date_bin buckets, BRIN indexes on time, rollups maintained by the
-- projector).
--
-- Where TimescaleDB is present, the high-volume fact tables become hypertables partitioned on
-- business time, compressed once they are old enough (segmented by listing, so a listing's
-- history decompresses on its own) and, for raw competitor observations, dropped after a
-- retention period (their hourly price histogram, which the bands are computed from, is kept).
--
-- Continuous aggregates: none. They cannot compute the percentile bands (ordered-set aggregates
-- are not allowed in them), and the projector's hourly rollups already answer the units/revenue
-- questions from a few rows per bucket, exactly once, on both kinds of server; a continuous
-- aggregate would duplicate them and lag behind by its refresh policy.

-- What each upgraded table needs. Rebuild (projections/rebuild.py) applies the same settings to
-- the fresh copy of a table before swapping it in, so a rebuilt view is a hypertable again.
CREATE TABLE analytics.timescale_settings (
    table_name text PRIMARY KEY,      -- a table in the analytics schema
    time_column text NOT NULL,
    chunk_interval interval NOT NULL,
    segment_by text NOT NULL,
    compress_after interval NOT NULL,
    retain_for interval               -- NULL: keep forever
);
INSERT INTO analytics.timescale_settings VALUES
    ('competitor_observations', 'observed_at', '7 days', 'listing_id', '14 days', '400 days'),
    ('sales', 'sold_at', '30 days', 'listing_id', '60 days', NULL);

-- Turn one table into a hypertable with the settings of `settings_of` (the table itself, or
-- the live table a rebuild copy stands in for). Idempotent.
CREATE FUNCTION analytics.timescale_apply(target regclass, settings_of text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s analytics.timescale_settings;
    pk record;
BEGIN
    SELECT * INTO STRICT s FROM analytics.timescale_settings WHERE table_name = settings_of;
    IF EXISTS (SELECT 1 FROM timescaledb_information.hypertables h
               WHERE format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass = target) THEN
        RETURN;
    END IF;
    -- A hypertable's unique indexes must include its time column. log_position alone is
    -- unique; (log_position, time) is unique for the same reason and still deduplicates a
    -- redelivered event, whose time never changes.
    SELECT c.conname INTO pk FROM pg_constraint c WHERE c.conrelid = target AND c.contype = 'p';
    IF FOUND THEN
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', target, pk.conname);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (log_position, %I)', target, s.time_column);
    -- No default time index: the tables already have their own indexes on time (BRIN and
    -- per-listing btree), and a rebuild copies exactly the live table's indexes.
    PERFORM create_hypertable(target, by_range(s.time_column, s.chunk_interval), migrate_data => true,
                              create_default_indexes => false);
    EXECUTE format('ALTER TABLE %s SET (timescaledb.compress, timescaledb.compress_segmentby = %L,'
                   ' timescaledb.compress_orderby = %L)', target, s.segment_by, s.time_column || ' DESC, log_position DESC');
    PERFORM add_compression_policy(target, s.compress_after, if_not_exists => true);
    IF s.retain_for IS NOT NULL THEN
        PERFORM add_retention_policy(target, s.retain_for, if_not_exists => true);
    END IF;
END $$;

DO $$
DECLARE
    s analytics.timescale_settings;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
           OR current_setting('shared_preload_libraries') NOT LIKE '%timescaledb%' THEN
            RAISE NOTICE 'timescaledb is not available: analytics stays on plain PostgreSQL';
            RETURN;
        END IF;
        CREATE EXTENSION timescaledb;
    END IF;
    FOR s IN SELECT * FROM analytics.timescale_settings ORDER BY table_name LOOP
        PERFORM analytics.timescale_apply(format('analytics.%I', s.table_name)::regclass, s.table_name);
    END LOOP;
END $$;
