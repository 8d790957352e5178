-- The held-keys pass walks a tenant's held groups (key, kind, lane) one
-- index probe a group, and frees a group's executions in claim order (as
-- Postgres's migration 0033): before, finding a tenant's groups read every
-- held execution of every key the pass went by.
CREATE INDEX executions_concurrency_held_groups_idx ON executions
    (tenant_id, concurrency_key, kind, lane, priority DESC, eligible_at, execution_id)
    WHERE eligibility_state = 'blocked_by_concurrency_key';
