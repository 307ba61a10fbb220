"""The read side: everything that only reads the event log or the views (audit history, export and
chain verification, shop lookups). It has its own connection pool, decodes with the shared codec
and never builds the write application (commands/)."""
