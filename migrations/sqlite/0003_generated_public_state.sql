-- The public state is derived from the state vector by SQLite itself, as the
-- Postgres generated column derives it, instead of by the code that writes
-- the row. The rule is written in model/rules.rs too; a test holds the
-- Postgres column, this column and the Rust rule to the same answers for
-- every combination of the vector.
DROP INDEX executions_state_idx;
ALTER TABLE executions DROP COLUMN public_state;
ALTER TABLE executions ADD COLUMN public_state TEXT GENERATED ALWAYS AS (
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
) VIRTUAL;
CREATE INDEX executions_state_idx ON executions (tenant_id, public_state, execution_id);
