-- `executions` rewritten with its columns ordered by when they change.
--
-- A claim and a run's end each write a new version of the row, on the same
-- page (fillfactor 50), and the write-ahead log carries only the bytes
-- between the first and the last that differ from the old version. The
-- columns each of them sets were spread between the state columns (11th)
-- and the result (31st), so each record carried the unchanged retry and
-- reclaim counts, eligibility and creation times with them, and the end's
-- carried the attempt index, lease epoch and start time as well. Ordered
-- now: what never changes after creation, then what only a claim sets
-- (attempt index, lease epoch, start), what both set (the states, the
-- lease, progress, `updated_at`), what only an end sets (outcome, finish,
-- result, failure), and the counters a running execution's frames and steps
-- move.
--
-- Postgres cannot move a column, so the table is copied: the upgrade
-- rewrites every execution once, holding the table's lock, and rebuilds its
-- indexes, constraints, triggers and the foreign keys that point at it
-- under the same names.
CREATE TABLE executions_reordered (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    kind text NOT NULL,
    lane text NOT NULL,
    priority integer NOT NULL,
    required_capabilities text[] DEFAULT '{}'::text[] NOT NULL,
    tags jsonb DEFAULT '{}'::jsonb NOT NULL,
    input bytea NOT NULL,
    policy jsonb NOT NULL,
    idempotency_key text,
    flow_id uuid,
    flow_key text,
    parent_id uuid,
    concurrency_key text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    eligible_at timestamp with time zone NOT NULL,
    deadline_at timestamp with time zone,
    retry_count integer DEFAULT 0 NOT NULL,
    reclaim_count integer DEFAULT 0 NOT NULL,
    attempt_index integer DEFAULT 0 NOT NULL,
    lease_epoch bigint DEFAULT 0 NOT NULL,
    started_at timestamp with time zone,
    lifecycle_phase text NOT NULL,
    ownership_state text NOT NULL,
    eligibility_state text NOT NULL,
    blocking_reason text,
    attempt_state text NOT NULL,
    public_state text GENERATED ALWAYS AS (
        CASE lifecycle_phase
            WHEN 'terminal' THEN
                CASE terminal_outcome
                    WHEN 'success' THEN 'completed'
                    ELSE COALESCE(terminal_outcome, 'failed')
                END
            WHEN 'active' THEN 'active'
            WHEN 'suspended' THEN 'suspended'
            ELSE
                CASE eligibility_state
                    WHEN 'not_eligible_until_time' THEN 'delayed'
                    WHEN 'blocked_by_dependencies' THEN 'waiting_children'
                    WHEN 'blocked_by_budget' THEN 'rate_limited'
                    WHEN 'blocked_by_quota' THEN 'rate_limited'
                    ELSE 'waiting'
                END
        END) STORED,
    lease_id uuid,
    lease_expires_at timestamp with time zone,
    attempt_timeout_at timestamp with time zone,
    concurrency_held text,
    progress_percent smallint,
    progress_message text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    terminal_outcome text,
    finished_at timestamp with time zone,
    result bytea,
    last_failure jsonb,
    cancellation_reason text,
    replay_count integer DEFAULT 0 NOT NULL,
    suspension_seq integer DEFAULT 0 NOT NULL,
    suspension jsonb,
    suspension_timeout_at timestamp with time zone,
    frame_seq bigint DEFAULT 0 NOT NULL,
    frame_bytes bigint DEFAULT 0 NOT NULL,
    step_bytes bigint DEFAULT 0 NOT NULL,
    step_count integer DEFAULT 0 NOT NULL
) WITH (fillfactor = 50);

INSERT INTO executions_reordered (tenant_id, execution_id, kind, lane, priority,
    required_capabilities, tags, input, policy, idempotency_key, flow_id, flow_key, parent_id,
    concurrency_key, created_at, eligible_at, deadline_at, retry_count, reclaim_count,
    attempt_index, lease_epoch, started_at, lifecycle_phase, ownership_state, eligibility_state,
    blocking_reason, attempt_state, lease_id, lease_expires_at, attempt_timeout_at,
    concurrency_held, progress_percent, progress_message, updated_at, terminal_outcome,
    finished_at, result, last_failure, cancellation_reason, replay_count, suspension_seq,
    suspension, suspension_timeout_at, frame_seq, frame_bytes, step_bytes, step_count)
SELECT tenant_id, execution_id, kind, lane, priority,
    required_capabilities, tags, input, policy, idempotency_key, flow_id, flow_key, parent_id,
    concurrency_key, created_at, eligible_at, deadline_at, retry_count, reclaim_count,
    attempt_index, lease_epoch, started_at, lifecycle_phase, ownership_state, eligibility_state,
    blocking_reason, attempt_state, lease_id, lease_expires_at, attempt_timeout_at,
    concurrency_held, progress_percent, progress_message, updated_at, terminal_outcome,
    finished_at, result, last_failure, cancellation_reason, replay_count, suspension_seq,
    suspension, suspension_timeout_at, frame_seq, frame_bytes, step_bytes, step_count
FROM executions;

ALTER TABLE execution_counters DROP CONSTRAINT execution_counters_tenant_id_execution_id_fkey;
ALTER TABLE flow_groups DROP CONSTRAINT flow_groups_tenant_id_downstream_id_fkey;
ALTER TABLE frames DROP CONSTRAINT frames_tenant_id_execution_id_fkey;
ALTER TABLE signals DROP CONSTRAINT signals_tenant_id_execution_id_fkey;
ALTER TABLE steps DROP CONSTRAINT steps_tenant_id_execution_id_fkey;
ALTER TABLE stream_summaries DROP CONSTRAINT stream_summaries_tenant_id_execution_id_fkey;
ALTER TABLE usage_reports DROP CONSTRAINT usage_reports_tenant_id_execution_id_fkey;
ALTER TABLE waitpoints DROP CONSTRAINT waitpoints_tenant_id_execution_id_fkey;
DROP TABLE executions;
ALTER TABLE executions_reordered RENAME TO executions;

ALTER TABLE executions
    ADD CONSTRAINT executions_pkey PRIMARY KEY (tenant_id, execution_id),
    ADD CONSTRAINT executions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(tenant_id),
    ADD CONSTRAINT executions_flow_fk FOREIGN KEY (tenant_id, flow_id)
        REFERENCES flows(tenant_id, flow_id),
    ADD CONSTRAINT executions_attempt_state_check CHECK (attempt_state IN ('pending_first_attempt',
        'running_attempt', 'attempt_interrupted', 'pending_retry_attempt', 'pending_replay_attempt',
        'pending_delayed_attempt', 'attempt_suspended', 'pending_resume_attempt',
        'attempt_terminal')),
    ADD CONSTRAINT executions_check CHECK ((lifecycle_phase = 'active') = (lease_id IS NOT NULL)),
    ADD CONSTRAINT executions_concurrency_held_check CHECK (concurrency_held IN ('kind', 'lane')),
    ADD CONSTRAINT executions_concurrency_key_check CHECK (concurrency_key IS NULL
        OR (octet_length(concurrency_key) >= 1 AND octet_length(concurrency_key) <= 256)),
    ADD CONSTRAINT executions_eligibility_state_check CHECK (eligibility_state IN ('eligible_now',
        'not_eligible_until_time', 'blocked_by_dependencies', 'blocked_by_budget',
        'blocked_by_quota', 'blocked_by_operator', 'blocked_by_concurrency_key',
        'not_applicable')),
    ADD CONSTRAINT executions_flow_key_check CHECK ((flow_id IS NULL) = (flow_key IS NULL)),
    ADD CONSTRAINT executions_lifecycle_phase_check CHECK (lifecycle_phase IN ('submitted',
        'runnable', 'active', 'suspended', 'terminal')),
    ADD CONSTRAINT executions_ownership_state_check CHECK (ownership_state IN ('unowned', 'leased',
        'lease_expired_reclaimable', 'lease_revoked')),
    ADD CONSTRAINT executions_terminal_outcome_check CHECK (terminal_outcome IN ('success',
        'failed', 'cancelled', 'expired', 'skipped'));

CREATE INDEX executions_attempt_timeout_idx ON executions (tenant_id, attempt_timeout_at)
    WHERE lifecycle_phase = 'active' AND attempt_timeout_at IS NOT NULL;
CREATE INDEX executions_budget_blocked_idx ON executions (tenant_id, execution_id)
    WHERE eligibility_state = 'blocked_by_budget';
CREATE INDEX executions_children_idx ON executions (tenant_id, parent_id, lifecycle_phase)
    WHERE parent_id IS NOT NULL;
CREATE INDEX executions_claim_idx ON executions (tenant_id, lane, priority DESC, eligible_at,
    execution_id) WHERE lifecycle_phase = 'runnable' AND eligibility_state = 'eligible_now';
CREATE INDEX executions_concurrency_blocked_idx ON executions (tenant_id, concurrency_key,
    priority DESC, eligible_at, execution_id) WHERE eligibility_state = 'blocked_by_concurrency_key';
CREATE INDEX executions_concurrency_held_groups_idx ON executions (tenant_id, concurrency_key, kind,
    lane, priority DESC, eligible_at, execution_id)
    WHERE eligibility_state = 'blocked_by_concurrency_key';
CREATE INDEX executions_concurrency_key_idx ON executions (tenant_id, concurrency_key,
    priority DESC, eligible_at, execution_id)
    WHERE concurrency_key IS NOT NULL AND lifecycle_phase = 'runnable'
      AND eligibility_state = 'eligible_now';
CREATE INDEX executions_deadline_idx ON executions (tenant_id, deadline_at)
    WHERE lifecycle_phase <> 'terminal' AND deadline_at IS NOT NULL;
CREATE INDEX executions_delayed_idx ON executions (tenant_id, eligible_at)
    WHERE lifecycle_phase = 'runnable' AND eligibility_state = 'not_eligible_until_time';
CREATE UNIQUE INDEX executions_flow_key_idx ON executions (tenant_id, flow_id, flow_key)
    WHERE flow_id IS NOT NULL;
CREATE INDEX executions_lease_expiry_idx ON executions (tenant_id, lease_expires_at)
    WHERE lifecycle_phase = 'active';
CREATE INDEX executions_state_idx ON executions (tenant_id, public_state DESC, execution_id)
    WHERE public_state <> 'active';
CREATE INDEX executions_suspension_timeout_idx ON executions (tenant_id, suspension_timeout_at)
    WHERE lifecycle_phase = 'suspended' AND suspension_timeout_at IS NOT NULL;
CREATE INDEX executions_waiting_children_idx ON executions (tenant_id, execution_id)
    WHERE lifecycle_phase = 'suspended' AND blocking_reason = 'waiting_for_children';

CREATE TRIGGER executions_lease_events AFTER UPDATE ON executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_lease_events();
CREATE TRIGGER executions_release_concurrency_slots AFTER UPDATE ON executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_release_concurrency_slots();

ALTER TABLE execution_counters ADD CONSTRAINT execution_counters_tenant_id_execution_id_fkey
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;
ALTER TABLE flow_groups ADD CONSTRAINT flow_groups_tenant_id_downstream_id_fkey
    FOREIGN KEY (tenant_id, downstream_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;
ALTER TABLE frames ADD CONSTRAINT frames_tenant_id_execution_id_fkey
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;
ALTER TABLE signals ADD CONSTRAINT signals_tenant_id_execution_id_fkey
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;
ALTER TABLE steps ADD CONSTRAINT steps_tenant_id_execution_id_fkey
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;
ALTER TABLE stream_summaries ADD CONSTRAINT stream_summaries_tenant_id_execution_id_fkey
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;
ALTER TABLE usage_reports ADD CONSTRAINT usage_reports_tenant_id_execution_id_fkey
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;
ALTER TABLE waitpoints ADD CONSTRAINT waitpoints_tenant_id_execution_id_fkey
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions(tenant_id, execution_id)
    ON DELETE CASCADE;

ANALYZE executions;
