-- Concurrency keys (see the Postgres migration of the same name). With one
-- writer, a claim counts a key's running executions directly; the slot rows
-- keep only each key's start window.
ALTER TABLE executions ADD COLUMN concurrency_key TEXT
    CHECK (concurrency_key IS NULL OR length(CAST(concurrency_key AS BLOB)) BETWEEN 1 AND 256);
ALTER TABLE executions ADD COLUMN concurrency_held TEXT
    CHECK (concurrency_held IN ('kind', 'lane'));

CREATE TABLE concurrency_limits (
    tenant_id   BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    scope       TEXT NOT NULL CHECK (scope IN ('kind', 'lane')),
    name        TEXT NOT NULL,
    max_running INTEGER NOT NULL CHECK (max_running BETWEEN 1 AND 100000),
    max_starts  INTEGER CHECK (max_starts BETWEEN 1 AND 100000),
    window_ms   INTEGER CHECK (window_ms BETWEEN 100 AND 86400000),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, scope, name)
) STRICT;

CREATE TABLE concurrency_slots (
    tenant_id         BLOB NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    scope             TEXT NOT NULL,
    name              TEXT NOT NULL,
    key               TEXT NOT NULL,
    window_started_at INTEGER,
    window_starts     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, scope, name, key)
) STRICT;

-- A key's running executions, counted by the claim.
CREATE INDEX executions_concurrency_running_idx ON executions
    (tenant_id, concurrency_key, concurrency_held)
    WHERE concurrency_held IS NOT NULL AND lifecycle_phase = 'active';
-- A key's queue, to block the rest of it when the key is full.
CREATE INDEX executions_concurrency_key_idx ON executions
    (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id)
    WHERE concurrency_key IS NOT NULL AND lifecycle_phase = 'runnable'
      AND eligibility_state = 'eligible_now';
-- What a key's limit holds back, in claim order, to hand a freed slot on.
CREATE INDEX executions_concurrency_blocked_idx ON executions
    (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id)
    WHERE eligibility_state = 'blocked_by_concurrency_key';
