-- Durable steps: each execution's journal of what its runs already did (see
-- the Postgres migration of the same name). With one writer, a record reads
-- the journal's count and bytes from this table's primary key in the same
-- transaction, so the execution row keeps no counters.
CREATE TABLE steps (
    tenant_id     BLOB NOT NULL,
    execution_id  BLOB NOT NULL,
    step_index    INTEGER NOT NULL CHECK (step_index >= 0),
    name          TEXT NOT NULL CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 128),
    kind          TEXT NOT NULL CHECK (kind IN ('completed', 'failed', 'sleep')),
    output        BLOB,
    error         TEXT,
    wake_at       INTEGER,
    size          INTEGER NOT NULL CHECK (size >= 0),
    attempt_index INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL CHECK (duration_ms >= 0),
    recorded_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, execution_id, step_index),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE,
    CHECK ((kind = 'completed') = (output IS NOT NULL)),
    CHECK ((kind = 'failed') = (error IS NOT NULL)),
    CHECK ((kind = 'sleep') = (wake_at IS NOT NULL))
) STRICT;
