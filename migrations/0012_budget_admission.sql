-- Budget admission at claim (upstream's `blocked_by_budget`).
--
-- A budget dimension is exhausted once its usage reaches the hard limit, or a
-- report was refused for crossing it, and stays so until the budget is reset.
-- The flag lives on the dimension row, which a report already holds locked,
-- so marking it adds no lock. A claim does not start an execution that an
-- exhausted budget covers: it moves it to `blocked_by_budget` instead (public
-- state `rate_limited`) in the same statement, so the next claim looks past
-- it. A reset unblocks the tenant's blocked executions; any still covered by
-- another exhausted budget are blocked again by the next claim reaching them.
ALTER TABLE budget_dimensions ADD COLUMN exhausted boolean NOT NULL DEFAULT false;
-- The claim asks, once per tenant, whether it has an exhausted budget at all,
-- and only then checks each candidate's scopes.
CREATE INDEX budget_dimensions_exhausted_idx ON budget_dimensions (tenant_id, budget_id)
    WHERE exhausted;
-- A reset finds the tenant's blocked executions.
CREATE INDEX executions_budget_blocked_idx ON executions (tenant_id, execution_id)
    WHERE eligibility_state = 'blocked_by_budget';
