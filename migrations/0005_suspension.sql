-- Suspension and signals: waitpoints, delivered signals, and the suspension
-- state of an execution.

-- A suspended execution resumes on the same attempt (new lease epoch); the
-- claim recognises it by this attempt state.
ALTER TABLE executions DROP CONSTRAINT executions_attempt_state_check;
ALTER TABLE executions ADD CONSTRAINT executions_attempt_state_check CHECK (attempt_state IN
    ('pending_first_attempt', 'running_attempt', 'attempt_interrupted',
     'pending_retry_attempt', 'pending_replay_attempt', 'pending_delayed_attempt',
     'attempt_suspended', 'pending_resume_attempt', 'attempt_terminal'));
ALTER TABLE attempts DROP CONSTRAINT attempts_state_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_state_check CHECK (state IN
    ('running', 'suspended', 'succeeded', 'failed', 'cancelled', 'delayed', 'lease_expired',
     'expired'));

ALTER TABLE executions
    -- Counts suspensions; signals consumed by a resume carry the number.
    ADD COLUMN suspension_seq integer NOT NULL DEFAULT 0,
    -- The live suspension: {condition, on_timeout}.
    ADD COLUMN suspension jsonb,
    ADD COLUMN suspension_timeout_at timestamptz;

CREATE INDEX executions_suspension_timeout_idx ON executions (tenant_id, suspension_timeout_at)
    WHERE lifecycle_phase = 'suspended' AND suspension_timeout_at IS NOT NULL;

-- A waitpoint is `pending` from creation, `active` once a suspension waits on
-- it, and `closed` when that suspension resumes (or it expires): signals to a
-- closed waitpoint are refused, which is what stops a signal being replayed.
CREATE TABLE waitpoints (
    tenant_id      uuid NOT NULL,
    execution_id   uuid NOT NULL,
    waitpoint_id   uuid NOT NULL,
    waitpoint_key  text NOT NULL,
    state          text NOT NULL CHECK (state IN ('pending', 'active', 'closed')),
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, execution_id, waitpoint_id),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
);
-- One open waitpoint per key: creating it again (a resumed guest re-running)
-- returns the same one.
CREATE UNIQUE INDEX waitpoints_open_key_idx ON waitpoints (tenant_id, execution_id, waitpoint_key)
    WHERE state <> 'closed';

CREATE TABLE signals (
    tenant_id        uuid NOT NULL,
    execution_id     uuid NOT NULL,
    signal_id        uuid NOT NULL,
    waitpoint_id     uuid NOT NULL,
    waitpoint_key    text NOT NULL,
    name             text NOT NULL,
    payload          bytea NOT NULL,
    idempotency_key  text,
    -- The suspension whose resume consumed it; NULL while buffered.
    consumed_in      integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, execution_id, signal_id),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
);
CREATE UNIQUE INDEX signals_idempotency_idx ON signals (tenant_id, execution_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX signals_buffered_idx ON signals (tenant_id, execution_id, waitpoint_id)
    WHERE consumed_in IS NULL;
CREATE INDEX signals_consumed_idx ON signals (tenant_id, execution_id, consumed_in)
    WHERE consumed_in IS NOT NULL;
