-- The governed source a promotion belongs to, so that one store can hold
-- the promotions of several sources. Promotions written before sources
-- existed belong to the default source.
ALTER TABLE promotions ADD COLUMN source TEXT NOT NULL DEFAULT 'default';

CREATE INDEX promotions_by_source_phase ON promotions (source, phase, id);
