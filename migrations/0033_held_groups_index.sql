-- The held-keys pass walks a tenant's held groups (key, kind, lane) one
-- index probe a group, and frees a group's executions in claim order.
--
-- `executions_concurrency_blocked_idx` orders a key's held executions by
-- claim order, not by kind and lane, so finding a tenant's distinct groups
-- read every held execution of every key it passed, on every pass: a
-- tenant with a large backlog behind one key made each pass read all of it.
-- Here the groups are the index's leading columns, so the pass skips from
-- one group to the next, and a group's executions come out in claim order.
-- Only held executions are in it.
CREATE INDEX executions_concurrency_held_groups_idx ON executions
    (tenant_id, concurrency_key, kind, lane, priority DESC, eligible_at, execution_id)
    WHERE eligibility_state = 'blocked_by_concurrency_key';
