-- Durable steps: each execution's journal of what its runs already did.
--
-- A guest names a step; the first run records its result (or its permanent
-- failure, or for a durable sleep its wake time) at the step's position, and
-- every later run of the execution is handed that record instead of running
-- the step again. Only the lease holder writes, fenced like a frame: the
-- execution row keeps the journal's step count and bytes, so the fenced
-- UPDATE checks the caps without a scan. Steps go with their execution.
ALTER TABLE executions
    ADD COLUMN step_count integer NOT NULL DEFAULT 0,
    ADD COLUMN step_bytes bigint NOT NULL DEFAULT 0;

CREATE TABLE steps (
    tenant_id     uuid NOT NULL,
    execution_id  uuid NOT NULL,
    -- Positions are dense per run but not per journal: parallel steps may
    -- record out of order, and a transient failure leaves a gap.
    step_index    integer NOT NULL CHECK (step_index >= 0),
    name          text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 128),
    kind          text NOT NULL CHECK (kind IN ('completed', 'failed', 'sleep')),
    output        bytea,
    error         text,
    wake_at       timestamptz,
    -- Bytes counted against the journal's cap: the output or the error.
    size          bigint NOT NULL CHECK (size >= 0),
    attempt_index integer NOT NULL,
    duration_ms   bigint NOT NULL CHECK (duration_ms >= 0),
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    -- The journal read, the record's position check and the listing are all
    -- range scans of this key.
    PRIMARY KEY (tenant_id, execution_id, step_index),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE,
    CHECK ((kind = 'completed') = (output IS NOT NULL)),
    CHECK ((kind = 'failed') = (error IS NOT NULL)),
    CHECK ((kind = 'sleep') = (wake_at IS NOT NULL))
);
