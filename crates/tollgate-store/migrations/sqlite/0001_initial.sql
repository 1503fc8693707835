-- Tollgate controller state, SQLite flavour. Keep in step with
-- migrations/postgres: the same tables, columns and rules.
--
-- Timestamps are TEXT in one fixed-width RFC 3339 form
-- (2026-11-22T10:00:00.000000Z), so they sort as they compare.
-- JSON is TEXT, checked with json_valid.

-- Ids handed out for promotions, including reserved ones that were never
-- used, so that an id is never given twice.
CREATE TABLE id_sequences (
    name TEXT PRIMARY KEY,
    last INTEGER NOT NULL
) STRICT;

INSERT INTO id_sequences (name, last) VALUES ('promotions', 0);

CREATE TABLE promotions (
    id INTEGER PRIMARY KEY,
    revision TEXT NOT NULL,
    kind TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    body TEXT NOT NULL CHECK (json_valid(body))
) STRICT;

CREATE INDEX promotions_by_phase ON promotions (phase, id);
CREATE INDEX promotions_by_revision ON promotions (revision, id);

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    promotion_id INTEGER NOT NULL REFERENCES promotions (id),
    reviewer TEXT NOT NULL,
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL CHECK (json_valid(body))
) STRICT;

CREATE INDEX reviews_by_promotion ON reviews (promotion_id, id);

-- The hash-chained audit log. seq is the primary key (unique); the store
-- checks that each transaction continues the chain, and the triggers below
-- make the table append-only for every client, not just for Tollgate.
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY CHECK (seq >= 1),
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL CHECK (json_valid(details)),
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
) STRICT;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE rejected');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: DELETE rejected');
END;

-- Desired state per ring, pins, source status, cursors. Keys compare
-- byte-wise (BINARY), like PostgreSQL's "C" collation.
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL CHECK (json_valid(value)),
    updated_at TEXT NOT NULL
) STRICT;
