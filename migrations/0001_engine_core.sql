-- FlowFabric engine core: tenants, executions, attempts, idempotency keys and the
-- completion outbox.
--
-- Conventions (see host/src/backend/postgres/mod.rs):
--   * every table carries tenant_id and every index leads with it;
--   * times are timestamptz and always come from the database clock (now()), so
--     several hosts agree on lease expiry without trusting their own clocks;
--   * the live lease is mirrored on the execution row, so every fenced write locks
--     exactly one row (the execution) first: no lock-order deadlocks between
--     workers, operators and scanners.

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE executions (
    tenant_id             uuid NOT NULL REFERENCES tenants (tenant_id),
    execution_id          uuid NOT NULL,
    kind                  text NOT NULL,
    lane                  text NOT NULL,
    priority              integer NOT NULL,
    required_capabilities text[] NOT NULL DEFAULT '{}',
    tags                  jsonb NOT NULL DEFAULT '{}',
    input                 bytea NOT NULL,
    policy                jsonb NOT NULL,
    idempotency_key       text,

    -- State vector (flowfabric-upstream.md §3). public_state is derived, never written.
    lifecycle_phase   text NOT NULL CHECK (lifecycle_phase IN
                          ('submitted', 'runnable', 'active', 'suspended', 'terminal')),
    ownership_state   text NOT NULL CHECK (ownership_state IN
                          ('unowned', 'leased', 'lease_expired_reclaimable', 'lease_revoked')),
    eligibility_state text NOT NULL CHECK (eligibility_state IN
                          ('eligible_now', 'not_eligible_until_time', 'blocked_by_dependencies',
                           'blocked_by_budget', 'blocked_by_quota', 'blocked_by_operator',
                           'not_applicable')),
    blocking_reason   text,
    terminal_outcome  text CHECK (terminal_outcome IN
                          ('success', 'failed', 'cancelled', 'expired', 'skipped')),
    attempt_state     text NOT NULL CHECK (attempt_state IN
                          ('pending_first_attempt', 'running_attempt', 'attempt_interrupted',
                           'pending_retry_attempt', 'pending_replay_attempt',
                           'pending_delayed_attempt', 'attempt_terminal')),
    public_state      text GENERATED ALWAYS AS (
        CASE lifecycle_phase
            WHEN 'terminal' THEN CASE terminal_outcome
                WHEN 'success' THEN 'completed'
                ELSE coalesce(terminal_outcome, 'failed') END
            WHEN 'active' THEN 'active'
            WHEN 'suspended' THEN 'suspended'
            ELSE CASE eligibility_state
                WHEN 'not_eligible_until_time' THEN 'delayed'
                WHEN 'blocked_by_dependencies' THEN 'waiting_children'
                WHEN 'blocked_by_budget' THEN 'rate_limited'
                WHEN 'blocked_by_quota' THEN 'rate_limited'
                ELSE 'waiting' END
        END) STORED,

    -- Attempts and the live lease (mirrored on the attempt row it belongs to).
    attempt_index     integer NOT NULL DEFAULT 0,
    lease_epoch       bigint NOT NULL DEFAULT 0,
    lease_id          uuid,
    lease_expires_at  timestamptz,
    attempt_timeout_at timestamptz,
    retry_count       integer NOT NULL DEFAULT 0,
    reclaim_count     integer NOT NULL DEFAULT 0,

    eligible_at       timestamptz NOT NULL,
    deadline_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,

    result            bytea,
    last_failure      jsonb,
    cancellation_reason text,

    PRIMARY KEY (tenant_id, execution_id),
    CHECK ((lifecycle_phase = 'active') = (lease_id IS NOT NULL))
);

-- Claim: per tenant, per lane, highest priority then oldest eligibility first.
CREATE INDEX executions_claim_idx ON executions (tenant_id, lane, priority DESC, eligible_at, execution_id)
    WHERE lifecycle_phase = 'runnable' AND eligibility_state = 'eligible_now';
-- Scanners.
CREATE INDEX executions_delayed_idx ON executions (tenant_id, eligible_at)
    WHERE lifecycle_phase = 'runnable' AND eligibility_state = 'not_eligible_until_time';
CREATE INDEX executions_lease_expiry_idx ON executions (tenant_id, lease_expires_at)
    WHERE lifecycle_phase = 'active';
CREATE INDEX executions_attempt_timeout_idx ON executions (tenant_id, attempt_timeout_at)
    WHERE lifecycle_phase = 'active' AND attempt_timeout_at IS NOT NULL;
CREATE INDEX executions_deadline_idx ON executions (tenant_id, deadline_at)
    WHERE lifecycle_phase <> 'terminal' AND deadline_at IS NOT NULL;
-- Listing by state (keyset on the time-ordered uuid v7 id).
CREATE INDEX executions_state_idx ON executions (tenant_id, public_state, execution_id);

CREATE TABLE attempts (
    tenant_id       uuid NOT NULL,
    execution_id    uuid NOT NULL,
    attempt_index   integer NOT NULL,
    attempt_type    text NOT NULL CHECK (attempt_type IN
                        ('initial', 'retry', 'reclaim', 'replay', 'delayed')),
    lease_id        uuid NOT NULL,
    lease_epoch     bigint NOT NULL,
    worker_id       text NOT NULL,
    worker_instance text NOT NULL,
    state           text NOT NULL CHECK (state IN
                        ('running', 'succeeded', 'failed', 'cancelled', 'delayed',
                         'lease_expired', 'expired')),
    failure         jsonb,
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    PRIMARY KEY (tenant_id, execution_id, attempt_index),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
);

-- Idempotent create: a key maps to one execution until its dedup window ends.
CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL,
    key           text NOT NULL,
    execution_id  uuid NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Completion outbox: the table is the durable truth; NOTIFY carries only the id.
CREATE TABLE completion_events (
    tenant_id     uuid NOT NULL,
    event_id      bigint GENERATED ALWAYS AS IDENTITY,
    execution_id  uuid NOT NULL,
    attempt_index integer NOT NULL,
    outcome       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
-- NOTIFY flowfabric_completion (payload: the newest event id) is sent by the
-- statement that writes the events, once per statement, not by a per-row trigger.
