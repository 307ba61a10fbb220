-- The command log records whether a command created something, not the HTTP status the API
-- answered with: the API alone maps outcomes to statuses. 201 was the only creating answer.
ALTER TABLE command_log ALTER COLUMN status TYPE boolean USING status = 201;
ALTER TABLE command_log RENAME COLUMN status TO created;
