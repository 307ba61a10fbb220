-- Tamper evidence: each stored event gets hash = sha256(previous hash || the event's bytes),
-- computed in the inserting transaction. The recorder holds an EXCLUSIVE lock on pricing_events
-- while inserting, so statements chain strictly in notification_id order.
CREATE TABLE event_chain (
    notification_id bigint PRIMARY KEY,
    hash bytea NOT NULL
);

CREATE FUNCTION event_bytes(e pricing_events) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    -- Fixed-width fields first, the topic length-prefixed, so the encoding is unambiguous.
    SELECT int8send(e.notification_id) || uuid_send(e.originator_id) || int8send(e.originator_version)
        || int4send(octet_length(e.topic)) || convert_to(e.topic, 'UTF8') || coalesce(e.state, '')
$$;

CREATE FUNCTION chain_new_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head bytea;
    r record;
    ids bigint[] := '{}';
    hashes bytea[] := '{}';
BEGIN
    SELECT hash INTO head FROM event_chain ORDER BY notification_id DESC LIMIT 1;
    head := coalesce(head, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    -- The bytes are computed by the query (set-based, event_bytes inlined); only the chaining loops.
    FOR r IN SELECT e.notification_id AS id, event_bytes(e) AS bytes FROM new_events e ORDER BY e.notification_id LOOP
        head := sha256(head || r.bytes);
        ids := ids || r.id;
        hashes := hashes || head;
    END LOOP;
    INSERT INTO event_chain SELECT * FROM unnest(ids, hashes);
    RETURN NULL;
END $$;

CREATE TRIGGER pricing_events_chain
    AFTER INSERT ON pricing_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION chain_new_events();

CREATE TRIGGER event_chain_append_only
    BEFORE UPDATE OR DELETE ON event_chain
    FOR EACH ROW EXECUTE FUNCTION refuse_history_edit();
CREATE TRIGGER event_chain_no_truncate
    BEFORE TRUNCATE ON event_chain
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_edit();
