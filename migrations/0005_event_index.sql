-- Who and which shop each stored event belongs to, written in the same transaction as the event,
-- so the audit log can be filtered by shop, actor and time without decoding every event.
CREATE TABLE event_index (
    notification_id bigint PRIMARY KEY,
    shop_id uuid,
    actor_id text,
    occurred_at timestamptz NOT NULL,   -- business time
    recorded_at timestamptz NOT NULL    -- when the event was recorded
);
CREATE INDEX event_index_shop ON event_index (shop_id, notification_id);
CREATE INDEX event_index_actor ON event_index (actor_id, notification_id);
CREATE INDEX event_index_recorded ON event_index USING brin (recorded_at);

CREATE TRIGGER event_index_append_only
    BEFORE UPDATE OR DELETE ON event_index
    FOR EACH ROW EXECUTE FUNCTION refuse_history_edit();
CREATE TRIGGER event_index_no_truncate
    BEFORE TRUNCATE ON event_index
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_edit();
