-- The state columns' allowed values as domains instead of table CHECKs.
--
-- A table CHECK is evaluated on every row an INSERT or UPDATE writes, and its
-- expression is read from the catalog and planned again by every statement.
-- `executions` had seven such CHECKs on single columns; a claim's update of
-- one row cost 0.19 ms with them against 0.12 ms with the same values held by
-- domains (pgbench, prepared). A domain's CHECK runs where a value is
-- assigned to the column (a claim assigns the state columns and pays for
-- those; a statement that leaves them alone pays nothing), from a plan
-- Postgres keeps per session. The allowed spellings do not change, and the
-- rulebook test reads them from the domains now.
--
-- The checks that relate two columns stay table CHECKs.

CREATE DOMAIN lifecycle_phase AS text
    CHECK (VALUE IN ('submitted', 'runnable', 'active', 'suspended', 'terminal'));
CREATE DOMAIN ownership_state AS text
    CHECK (VALUE IN ('unowned', 'leased', 'lease_expired_reclaimable', 'lease_revoked'));
CREATE DOMAIN eligibility_state AS text
    CHECK (VALUE IN ('eligible_now', 'not_eligible_until_time', 'blocked_by_dependencies',
                     'blocked_by_budget', 'blocked_by_quota', 'blocked_by_operator',
                     'blocked_by_concurrency_key', 'not_applicable'));
CREATE DOMAIN attempt_state AS text
    CHECK (VALUE IN ('pending_first_attempt', 'running_attempt', 'attempt_interrupted',
                     'pending_retry_attempt', 'pending_replay_attempt',
                     'pending_delayed_attempt', 'attempt_suspended', 'pending_resume_attempt',
                     'attempt_terminal'));
CREATE DOMAIN terminal_outcome AS text
    CHECK (VALUE IN ('success', 'failed', 'cancelled', 'expired', 'skipped'));
CREATE DOMAIN concurrency_key AS text
    CHECK (octet_length(VALUE) BETWEEN 1 AND 256);
CREATE DOMAIN concurrency_scope AS text
    CHECK (VALUE IN ('kind', 'lane'));
CREATE DOMAIN attempt_type AS text
    CHECK (VALUE IN ('initial', 'retry', 'reclaim', 'replay', 'delayed'));
CREATE DOMAIN attempt_end_state AS text
    CHECK (VALUE IN ('running', 'suspended', 'succeeded', 'failed', 'cancelled', 'delayed',
                     'lease_expired', 'expired', 'revoked'));

ALTER TABLE executions
    DROP CONSTRAINT executions_lifecycle_phase_check,
    DROP CONSTRAINT executions_ownership_state_check,
    DROP CONSTRAINT executions_eligibility_state_check,
    DROP CONSTRAINT executions_attempt_state_check,
    DROP CONSTRAINT executions_terminal_outcome_check,
    DROP CONSTRAINT executions_concurrency_key_check,
    DROP CONSTRAINT executions_concurrency_held_check;

-- A column a generated column reads cannot change its type; public_state
-- (and its index) is made again, with the same expression, afterwards.
DROP INDEX executions_state_idx;
ALTER TABLE executions DROP COLUMN public_state;

ALTER TABLE executions
    ALTER COLUMN lifecycle_phase TYPE lifecycle_phase,
    ALTER COLUMN ownership_state TYPE ownership_state,
    ALTER COLUMN eligibility_state TYPE eligibility_state,
    ALTER COLUMN attempt_state TYPE attempt_state,
    ALTER COLUMN terminal_outcome TYPE terminal_outcome,
    ALTER COLUMN concurrency_key TYPE concurrency_key,
    ALTER COLUMN concurrency_held TYPE concurrency_scope;

ALTER TABLE executions ADD COLUMN public_state text GENERATED ALWAYS AS (
    CASE lifecycle_phase
        WHEN 'terminal' THEN
            CASE terminal_outcome
                WHEN 'success' THEN 'completed'
                ELSE coalesce(terminal_outcome, 'failed')
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
    END
) STORED;
CREATE INDEX executions_state_idx ON executions (tenant_id, public_state, execution_id);

ALTER TABLE attempts
    DROP CONSTRAINT attempts_attempt_type_check,
    DROP CONSTRAINT attempts_state_check;
ALTER TABLE attempts
    ALTER COLUMN attempt_type TYPE attempt_type,
    ALTER COLUMN state TYPE attempt_end_state;
