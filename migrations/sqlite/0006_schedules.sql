-- Schedules (see the Postgres migration of the same name). With one writer,
-- the scanner's read of due schedules and its writes share one transaction.
CREATE TABLE schedules (
    tenant_id         BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    schedule_id       BLOB NOT NULL,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    spec              TEXT NOT NULL,
    input             BLOB NOT NULL,
    paused            INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_fire_at      INTEGER NOT NULL,
    last_fire_at      INTEGER,
    last_execution_id BLOB,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, schedule_id),
    UNIQUE (tenant_id, name)
) STRICT;

CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE paused = 0;
