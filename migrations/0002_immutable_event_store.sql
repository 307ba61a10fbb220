-- History is never edited: stored events refuse UPDATE, DELETE and TRUNCATE from any role.
-- (Only a superuser disabling triggers can get past this, and the hash chain then tells.)
CREATE FUNCTION refuse_history_edit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the event log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER pricing_events_append_only
    BEFORE UPDATE OR DELETE ON pricing_events
    FOR EACH ROW EXECUTE FUNCTION refuse_history_edit();
CREATE TRIGGER pricing_events_no_truncate
    BEFORE TRUNCATE ON pricing_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_edit();
