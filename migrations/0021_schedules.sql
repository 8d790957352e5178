-- Schedules: recurring executions, fired exactly once per fire time.
--
-- The schedule's document (cadence, jitter, policies, the execution
-- template without its input) is read and written whole; the input is a
-- column of its own. A scanner takes due schedules with FOR UPDATE SKIP
-- LOCKED through schedules_due_idx, creates their executions and moves
-- next_fire_at on in the same transaction, so concurrent scanners never
-- fire one twice.
CREATE TABLE schedules (
    tenant_id         uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    schedule_id       uuid NOT NULL,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    spec              jsonb NOT NULL,
    input             bytea NOT NULL,
    paused            boolean NOT NULL DEFAULT false,
    next_fire_at      timestamptz NOT NULL,
    last_fire_at      timestamptz,
    last_execution_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, schedule_id),
    UNIQUE (tenant_id, name)
);

CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE NOT paused;
