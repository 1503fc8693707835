-- The kv table without CHECK (json_valid(value)). Every value the store
-- writes is JSON by construction (serialised by the store, or text it is
-- given as a JsonText, which was parsed whole when it was made); the CHECK
-- parsed each value again inside the writer's lock, and a batch of device
-- reports writes a thousand values of a few KiB each. SQLite cannot drop a
-- CHECK in place, so the table is rebuilt with its rows.
CREATE TABLE kv_next (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

INSERT INTO kv_next (key, value, updated_at) SELECT key, value, updated_at FROM kv;

DROP TABLE kv;

ALTER TABLE kv_next RENAME TO kv;
