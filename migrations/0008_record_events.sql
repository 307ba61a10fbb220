-- A command's few events, recorded by one statement: the lock, the notification, the events and
-- their audit index rows. The recorder sends it (after the command's side rows) in one pipeline
-- whose single Sync ends an implicit transaction, so a save is one round trip and the table
-- lock is held only while the server works and flushes the commit. Spelled as separate
-- statements it took seven (SET, LOCK, NOTIFY, INSERT, between BEGIN and COMMIT), each with its
-- own client and server overhead, and LOCK TABLE is refused outside a transaction block unless a
-- function issues it. The lock is what keeps notification ids committing in order (see
-- commands/persistence.py); large batches take it themselves around their COPY.
CREATE FUNCTION record_events(ids uuid[], versions bigint[], topics text[], states bytea[],
                              shops uuid[], actors text[], occurred timestamptz[], recorded timestamptz[],
                              lock_timeout_seconds integer)
RETURNS TABLE (log_position bigint, aggregate_id uuid, aggregate_version bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout_seconds || 's', true);
    LOCK TABLE pricing_events IN EXCLUSIVE MODE;
    PERFORM pg_notify('pricing_events', '');
    RETURN QUERY
    WITH event AS (
        INSERT INTO pricing_events (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING notification_id, originator_id, originator_version
    ), indexed AS (
        INSERT INTO event_index (notification_id, shop_id, actor_id, occurred_at, recorded_at)
        SELECT event.notification_id, i.shop_id, i.actor_id, i.occurred_at, i.recorded_at
        FROM event JOIN unnest(ids, versions, shops, actors, occurred, recorded)
             AS i(originator_id, originator_version, shop_id, actor_id, occurred_at, recorded_at)
        USING (originator_id, originator_version)
    )
    SELECT event.notification_id, event.originator_id, event.originator_version FROM event;
END $$;
